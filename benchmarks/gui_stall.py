"""GUI responsiveness: the longest gap of a 10 ms QTimer while training and scoring run.

Opens a real napari viewer with the ActiveSeg widget on a small synthetic project, starts a
training round in the widget's worker, then pool scoring, and records the time between the
ticks of a 10 ms QTimer on the GUI thread. Prints one JSON line with ``gui_max_stall_ms`` (the
longest gap minus the 10 ms period), the 99th percentile gap and the tick count.

Needs a display (run under ``xvfb-run -a`` on a headless machine). Usage::

    xvfb-run -a python benchmarks/gui_stall.py [--seconds 20] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="training time budget")
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_activeseg._widgets import ActiveSegWidget
    from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
    from napari_activeseg.core.project import Project

    rng = np.random.default_rng(0)
    size = 64 if args.tiny else 256
    n_images = 4 if args.tiny else 24
    arrays = {f"img{i:02d}": (rng.random((size, size)) * 255).astype(np.uint8)
              for i in range(n_images)}
    tmp = Path(tempfile.mkdtemp(prefix="activeseg-stall-"))
    project = Project.create(tmp / "p", arrays=arrays)
    budget = 2.0 if args.tiny else args.seconds
    project.set_setting("model_config", ModelConfig(in_channels=1).to_dict())
    project.set_setting("train_config", TrainConfig(time_budget_s=budget, max_steps=None,
                                                    patch_size=64 if args.tiny else 128)
                        .to_dict())
    project.set_setting("inference_config", InferenceConfig().to_dict())
    ids = [r.id for r in project.images()]
    for i in ids[:3]:
        project.submit(i, (rng.random((size, size)) > 0.7).astype(np.uint8))
    project.close()

    viewer = napari.Viewer()
    widget = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.open_project(tmp / "p")
    app = QApplication.instance()

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    done = {"train": False, "score": False}
    widget.training_finished.connect(lambda *_: done.__setitem__("train", True))
    widget.scoring_finished.connect(lambda *_: done.__setitem__("score", True))
    # let the viewer settle before measuring
    t_end = time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        app.processEvents()
    timer.start()
    t0 = time.perf_counter()
    widget.train()  # after training, the widget re-scores the pool in a second worker
    while not (done["train"] and done["score"]) and time.perf_counter() - t0 < budget * 10 + 120:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    gaps = np.diff(np.asarray(ticks)) * 1e3
    out = {
        "gui_max_stall_ms": round(float(gaps.max() - 10.0), 1) if gaps.size else None,
        "gui_p99_gap_ms": round(float(np.percentile(gaps, 99)), 1) if gaps.size else None,
        "ticks": int(len(ticks)),
        "seconds": round(time.perf_counter() - t0, 1),
        "finished": bool(done["train"] and done["score"]),
    }
    widget.session.project.close()
    viewer.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
