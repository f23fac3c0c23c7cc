"""Shared fixtures: seeded synthetic images built on each other (tiny, CPU-fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018_nuclei"


def make_blobs(shape=(64, 64), n=6, radius=(4, 8), seed=0, noise=0.05):
    """Bright disks on a dark noisy background: (image (H, W) float32, labels (H, W) uint8)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros(shape, np.uint8)
    for _ in range(n):
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    image = 0.2 + 0.6 * labels + rng.normal(0, noise, shape)
    return image.astype(np.float32), labels


@pytest.fixture
def blobs():
    return make_blobs()


@pytest.fixture
def blob_set():
    """Four (1, H, W) images and their labels."""
    pairs = [make_blobs(seed=s) for s in range(4)]
    return [p[0][None] for p in pairs], [p[1] for p in pairs]


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "images").is_dir():
        pytest.skip(f"shared nuclei data not found at {SHARED_DATA}")
    return SHARED_DATA
