"""Submit -> next suggestion: how long the user waits after pressing Submit, in a real viewer.

Builds a project of synthetic 256x256 blob images (``--images``), trains one short round with
the default model (the "trained model" the suggestions come from), opens the ActiveSeg dock
in a napari viewer with the default strategy in box mode, asks for a first suggestion (it
scores the pool: ``first_suggestion_s``, not part of the figure), then submits
``--submissions`` times: paint the truth, press Submit, wait until the next suggestion's
layers are on screen (the dock's ``image_opened``, then one event-loop pass). Between two
submissions it waits for the dock's workers to finish (the user is correcting meanwhile).

Prints one JSON line: ``submit_to_next_ms`` (each submission), its median and max, and where
the time went: ``submit_sync_ms`` (saving the correction on the GUI thread, until Submit
returns) and the rest (the worker picking from the queue and building the view, the layers).

Needs a display (``xvfb-run -a`` on a headless machine). Usage::

    xvfb-run -a python benchmarks/submit_next.py --images 40 [--submissions 5] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def blobs(n: int, size: int, *, disks: int | None = None, seed: int = 0):
    """``n`` synthetic ``size`` x ``size`` images of bright disks on noise, and their masks
    (by name); ``disks`` per image (default: one per 12 px of side)."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    arrays, masks = {}, {}
    for k in range(n):
        lab = np.zeros((size, size), np.uint8)
        for _ in range(disks or max(3, size // 12)):
            rr, cc = disk(tuple(rng.integers(8, size - 8, 2)), int(rng.integers(4, 12)),
                          shape=lab.shape)
            lab[rr, cc] = 1
        arrays[f"blob{k:03d}"] = np.clip(lab * 150 + rng.normal(40, 20, lab.shape), 0, 255
                                         ).astype(np.uint8)
        masks[f"blob{k:03d}"] = lab
    return arrays, masks


def _trained_project(folder: Path, n: int, size: int, tiny: bool) -> dict[int, np.ndarray]:
    """A project of ``n`` images with one short round trained; the truth by image id."""
    from napari_activeseg.core.config import ModelConfig, TrainConfig
    from napari_activeseg.core.progress import run_to_end
    from napari_activeseg.core.project import Project
    from napari_activeseg.core.session import ActiveLearningSession

    arrays, masks = blobs(n, size)
    project = Project.create(folder, arrays=arrays)
    truth = {r.id: masks[r.name] for r in project.images()}
    model = ModelConfig(in_channels=1, width=4, depth=2) if tiny else ModelConfig(in_channels=1)
    train = TrainConfig(max_steps=3 if tiny else 30, time_budget_s=None,
                        patch_size=32 if tiny else 128, batch_size=2 if tiny else 8)
    with project:
        session = ActiveLearningSession(project, model_config=model, train_config=train)
        for i in list(truth)[:2]:
            session.submit(i, truth[i])
        run_to_end(session.train())
    return truth


def open_dock(folder: Path):
    """A napari viewer with the ActiveSeg dock on the project in ``folder``."""
    import napari

    from napari_activeseg._widgets import ActiveSegWidget

    viewer = napari.Viewer()
    widget = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.open_project(folder)
    return viewer, widget


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--submissions", type=int, default=5)
    p.add_argument("--tiny", action="store_true", help="6 small images, 2 submissions")
    args = p.parse_args(argv)
    n, size, subs = (6, 64, 2) if args.tiny else (args.images, 256, args.submissions)

    from qtpy.QtWidgets import QApplication

    from napari_activeseg._widgets._common import ANNOTATION

    tmp = Path(tempfile.mkdtemp(prefix="activeseg-submit-"))
    truth = _trained_project(tmp / "p", n, size, args.tiny)
    viewer, widget = open_dock(tmp / "p")
    app = QApplication.instance()
    opened: list[int] = []
    widget.image_opened.connect(opened.append)

    def wait(cond, seconds: float) -> bool:
        deadline = time.perf_counter() + seconds
        while not cond() and time.perf_counter() < deadline:
            app.processEvents()
            time.sleep(0.001)
        return cond()

    t0 = time.perf_counter()
    widget.suggest_next()
    ok = wait(lambda: bool(opened), 1800)
    first_s = time.perf_counter() - t0
    times, sync = [], []
    for _ in range(subs if ok else 0):
        wait(lambda: not widget.workers, 600)  # the user corrects while the dock works
        layer = viewer.layers[ANNOTATION]
        # painted as napari's brush paints: into the layer's own array
        layer.data[...] = truth[widget.current_id]
        layer.refresh()
        opened.clear()
        t0 = time.perf_counter()
        widget.submit()
        t_sync = time.perf_counter()
        if not wait(lambda: bool(opened), 600):
            break
        app.processEvents()  # the layers drawn
        t1 = time.perf_counter()
        times.append(round((t1 - t0) * 1e3, 1))
        sync.append(round((t_sync - t0) * 1e3, 1))
    out = {
        "images": n, "image_size": size, "strategy": widget.session.strategy.name,
        "boxes": widget.review.boxes_mode, "first_suggestion_s": round(first_s, 2),
        "submit_to_next_ms": times, "submit_sync_ms": sync,
        "median_ms": statistics.median(times) if times else None,
        "max_ms": max(times) if times else None,
        "finished": len(times) == subs,
    }
    print(json.dumps(out))
    widget.cancel()
    wait(lambda: not widget.workers, 60)
    widget.session.project.close()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
