"""Fixtures for the strategy tests: hand-made predictions and a tiny untrained U-Net."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_activeseg.core import uncertainty as unc
from napari_activeseg.core.config import ModelConfig
from napari_activeseg.core.model import UNet
from napari_activeseg.core.strategies import Candidate

from ...conftest import make_blobs


@pytest.fixture(autouse=True)
def _one_thread():
    """Keep CPU use modest (another benchmark shares this machine); restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def samples_of(*dists, shape=(8, 8)):
    """(T, 2, H, W) samples: one constant class distribution (p0, p1) per sample."""
    out = np.empty((len(dists), 2, *shape), np.float32)
    for t, (p0, p1) in enumerate(dists):
        out[t, 0], out[t, 1] = p0, p1
    return out


def candidate_from_samples(key, samples, **kw):
    """A Candidate with mean probs and every map computed from (T, C, H, W) samples."""
    maps = {name: unc.compute_maps(torch.from_numpy(samples)[:, None], [name])[name][0].numpy()
            for name in ("entropy", "margin", "least_confidence", "bald", "variance")}
    maps["tta"] = unc.tta_disagreement(samples)
    maps["ensemble"] = unc.ensemble_disagreement(samples)
    return Candidate(key=key, image_id=key, probs=samples.mean(0), maps=maps, **kw)


@pytest.fixture
def three_candidates():
    """confident / uniform / disagreeing MC samples: the classic known-answer trio."""
    confident = samples_of(*[(0.98, 0.02)] * 4)
    uniform = samples_of(*[(0.5, 0.5)] * 4)
    # mean (0.55, 0.45): a little less entropy than uniform, but samples disagree strongly
    disagreeing = samples_of((0.9, 0.1), (0.2, 0.8), (0.9, 0.1), (0.2, 0.8))
    return [candidate_from_samples("confident", confident),
            candidate_from_samples("uniform", uniform),
            candidate_from_samples("disagreeing", disagreeing)]


TINY = ModelConfig(in_channels=1, n_classes=2, width=4, depth=2, dropout=0.2)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return UNet(TINY).eval()


@pytest.fixture
def tiny_images():
    """Four (1, 32, 32) float32 images with blobs, and their labels."""
    pairs = [make_blobs(shape=(32, 32), n=3, radius=(3, 6), seed=s) for s in range(4)]
    return [p[0][None] for p in pairs], [p[1] for p in pairs]
