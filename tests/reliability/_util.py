"""Helpers shared by the reliability tests: folder snapshots, a tiny project, a memory sampler.

A *snapshot* of a folder is what "nothing on disk changed" compares: every file and folder
name, every file's bytes, and the SQLite catalog as a logical dump (``iterdump``), because the
catalog file's bytes may legitimately differ (WAL checkpoints, page reuse) when no row did.
Left out: the ``-wal`` / ``-shm`` sidecars (SQLite's own), and ``project.lock``, whose content is
only a note of the last holder (PID, time), rewritten by every read-write open attempt.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil

from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.project import Project

from ..conftest import make_blobs

TINY_MODEL = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4)
TINY_TRAIN = TrainConfig(max_steps=2, time_budget_s=None, patch_size=32, batch_size=2)
TINY_INFER = InferenceConfig(tile_size=64, overlap=8, batch_size=2)
DB_NAME, LOCK_NAME = "project.sqlite", "project.lock"


def snapshot(folder: str | os.PathLike) -> dict[str, object]:
    """Every entry under `folder` (dirs as None, files as bytes), plus the catalog's dump."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    entries: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.name.endswith(("-wal", "-shm", "-journal")) or path.name == LOCK_NAME:
            continue
        if path.is_dir():
            entries[rel + "/"] = None
        elif path.name == DB_NAME:
            entries[rel] = _dump(path)
        else:
            entries[rel] = path.read_bytes()
    return entries


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        return [f"-- user_version {version}", *conn.iterdump()]
    finally:
        conn.close()


def diff(before: dict, after: dict) -> str:
    """A short description of what changed between two snapshots ('' if nothing)."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    parts = [f"{name}: {items[:5]}" for name, items in
             (("added", added), ("removed", removed), ("changed", changed)) if items]
    return "; ".join(parts)


@contextlib.contextmanager
def unchanged(*folders: str | os.PathLike) -> Iterator[None]:
    """Assert that the body leaves every folder exactly as it was (see :func:`snapshot`)."""
    before = [snapshot(f) for f in folders]
    yield
    for folder, old in zip(folders, before, strict=True):
        change = diff(old, snapshot(folder))
        assert not change, f"{folder} changed on disk: {change}"


def blob_arrays(n: int, shape=(32, 32), seed: int = 0):
    """`n` uint8 blob images and their class maps, named img00, img01, ..."""
    pairs = [make_blobs(shape=shape, n=3, radius=(3, 6), seed=seed + s) for s in range(n)]
    images = {f"img{s:02d}": (p[0] * 200).clip(0, 255).astype(np.uint8)
              for s, p in enumerate(pairs)}
    truth = {f"img{s:02d}": p[1] for s, p in enumerate(pairs)}
    return images, truth


def tiny_project(folder: Path, n: int = 4, shape=(32, 32), **kwargs) -> tuple[Project, dict]:
    """A read-write project of `n` blob images with the tiny configs saved as its settings;
    returns it and ``{image_id: true class map}``."""
    images, truth = blob_arrays(n, shape)
    project = Project.create(folder, arrays=images, classes=("background", "blob"), **kwargs)
    project.set_setting("model_config", TINY_MODEL.to_dict())
    project.set_setting("train_config", TINY_TRAIN.to_dict())
    project.set_setting("inference_config", TINY_INFER.to_dict())
    return project, {r.id: truth[r.name] for r in project.images()}


class PeakRSS:
    """Samples this process's resident memory in a thread; ``delta_mb`` = peak - start."""

    def __init__(self, interval: float = 0.02) -> None:
        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20
