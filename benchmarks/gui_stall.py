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
    p.add_argument("--idle-seconds", type=float, default=3.0,
                   help="measure the viewer alone (no worker) this long first: the floor this "
                        "display/machine sets")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the training round (default: the widget's choice)")
    p.add_argument("--trace", action="store_true",
                   help="sample the GUI thread's stack during gaps over 60 ms (diagnosis)")
    args = p.parse_args(argv)

    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication
    from submit_next import open_dock

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
                                                    patch_size=64 if args.tiny else 128,
                                                    num_threads=args.threads)
                        .to_dict())
    project.set_setting("inference_config", InferenceConfig().to_dict())
    ids = [r.id for r in project.images()]
    for i in ids[:3]:
        project.submit(i, (rng.random((size, size)) > 0.7).astype(np.uint8))
    project.close()

    viewer, widget = open_dock(tmp / "p")
    app = QApplication.instance()

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    done = {"train": False, "score": False}
    marks: dict[str, float] = {}

    def mark(name):
        done[name] = True
        marks[name] = time.perf_counter()

    widget.training_finished.connect(lambda *_: mark("train"))
    widget.scoring_finished.connect(lambda *_: mark("score"))
    # let the viewer settle before measuring
    t_end = time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        app.processEvents()
    stacks: dict[str, int] = {}
    if args.trace:
        import sys
        import threading
        import traceback

        main_id = threading.get_ident()

        def watch():
            while not done["score"]:
                time.sleep(0.02)
                if ticks and time.perf_counter() - ticks[-1] > 0.06:
                    frames = sys._current_frames()
                    for tid, frame in frames.items():
                        if tid == threading.get_ident():
                            continue
                        who = "GUI thread" if tid == main_id else "worker thread"
                        key = who + ":\n" + "".join(
                            traceback.format_stack(frame, limit=12)[-6:])
                        stacks[key] = stacks.get(key, 0) + 1

        threading.Thread(target=watch, daemon=True).start()
    timer.start()
    # the floor: the viewer alone, no worker running
    t_idle = time.perf_counter() + (0.5 if args.tiny else args.idle_seconds)
    while time.perf_counter() < t_idle:
        app.processEvents()
        time.sleep(0.001)
    idle_gaps = np.diff(np.asarray(ticks)) * 1e3
    ticks.clear()
    t0 = time.perf_counter()
    widget.train()  # after training, the widget re-scores the pool in a second worker
    while not (done["train"] and done["score"]) and time.perf_counter() - t0 < budget * 10 + 120:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    t_ticks = np.asarray(ticks)
    gaps = np.diff(t_ticks) * 1e3
    # where the long gaps are: phase of the gap's end (training, after training = the GUI
    # thread's own work on finishing, scoring), and the five longest with their times
    t_train, t_score = marks.get("train", np.inf), marks.get("score", np.inf)
    ends = t_ticks[1:] if gaps.size else t_ticks
    phase = np.where(ends <= t_train, "training",
                     np.where(ends <= t_train + 0.5, "training finished",
                              np.where(ends <= t_score, "scoring", "after")))
    by_phase = {str(ph): round(float(gaps[phase == ph].max() - 10.0), 1)
                for ph in dict.fromkeys(phase.tolist())} if gaps.size else {}
    worst = np.argsort(gaps)[::-1][:5] if gaps.size else []
    out = {
        "gui_max_stall_ms": round(float(gaps.max() - 10.0), 1) if gaps.size else None,
        "gui_idle_max_stall_ms": round(float(idle_gaps.max() - 10.0), 1)
        if idle_gaps.size else None,
        "gui_p99_gap_ms": round(float(np.percentile(gaps, 99)), 1) if gaps.size else None,
        "gui_max_stall_by_phase_ms": by_phase,
        "gui_worst_gaps": [{"ms": round(float(gaps[i]), 1),
                            "at_s": round(float(ends[i] - t0), 2), "phase": str(phase[i])}
                           for i in worst],
        "ticks": int(len(ticks)),
        "seconds": round(time.perf_counter() - t0, 1),
        "finished": bool(done["train"] and done["score"]),
    }
    if args.trace:
        for key, n in sorted(stacks.items(), key=lambda kv: -kv[1])[:10]:
            print(f"--- {n} samples (x20 ms) during GUI gaps, {key}")
    widget.session.project.close()
    viewer.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
