"""GUI responsiveness with continuous training: the longest gap of a 10 ms QTimer, and the model lag.

Opens a real napari viewer with the ActiveSeg dock on a small project of synthetic blob images
(three labelled), measures the viewer alone first (the floor of this display), then ticks
*Train continuously* as a user would: the dock trains a round by itself, re-scores the pool
for each published model in the background, and trains again for what was submitted meanwhile.
While the first round runs, the script asks for a suggestion, paints its truth and presses
Submit. It stops when the round that learnt from that submission is published and the pool is
re-scored for it. A 10 ms QTimer on the GUI thread ticks all along.

Prints one JSON line: ``gui_max_stall_ms`` (the longest gap minus the 10 ms period, over the
whole run), the longest gap by what was running (``train``, ``score``, ``suggest``, ``none``),
the 99th percentile gap, ``gui_redraw_ms`` (the longest gap while the canvas redraws the run's
layers with nothing changed and the workers idle: the floor this display sets on any update),
``model_lag_s`` (submission -> first published model trained on it,
from :attr:`~napari_activeseg.core.session.ContinuousTrainer.model_lag_s`) and the rounds.

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
    p.add_argument("--profile", type=Path, default=None,
                   help="cProfile the GUI thread during the measurement, stats to this file")
    p.add_argument("--trace", action="store_true",
                   help="sample the GUI thread's stack during gaps over 60 ms (diagnosis)")
    args = p.parse_args(argv)

    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication
    from submit_next import blobs, open_dock

    from napari_activeseg._widgets._common import ANNOTATION, WARM_UP_DONE
    from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
    from napari_activeseg.core.project import Project

    size = 64 if args.tiny else 256
    n_images = 4 if args.tiny else 24
    arrays, masks = blobs(n_images, size)
    tmp = Path(tempfile.mkdtemp(prefix="activeseg-stall-"))
    project = Project.create(tmp / "p", arrays=arrays)
    budget = 2.0 if args.tiny else args.seconds
    project.set_setting("model_config", ModelConfig(in_channels=1).to_dict())
    project.set_setting("train_config", TrainConfig(time_budget_s=budget, max_steps=None,
                                                    patch_size=64 if args.tiny else 128,
                                                    num_threads=args.threads)
                        .to_dict())
    project.set_setting("inference_config", InferenceConfig().to_dict())
    project.set_setting("continuous_training", False)  # ticked after the idle floor
    truth = {r.id: masks[r.name] for r in project.images()}
    for i in list(truth)[:3]:
        project.submit(i, truth[i])
    project.close()

    t_open = time.perf_counter()
    viewer, widget = open_dock(tmp / "p")
    app = QApplication.instance()
    # the dock loads napari's labels-layer code in the background when it opens (a numba
    # compile that would hold the GUI thread at the first suggestion); a user opens the dock
    # before annotating, so the measurement starts once that is done (its time is reported)
    while not WARM_UP_DONE.is_set() and time.perf_counter() - t_open < 300:
        app.processEvents()
        time.sleep(0.01)
    warm_up_s = round(time.perf_counter() - t_open, 1)
    jobs = widget.jobs

    ticks: list[float] = []
    running: list[str] = []  # what held the dock at each tick

    def tick():
        ticks.append(time.perf_counter())
        running.append("+".join(s for s in ("train", "score", "suggest") if jobs.holds(s))
                       or "none")

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    done = {"score": False}
    opened: list[int] = []
    widget.image_opened.connect(opened.append)
    # the first image the dock shows adds its layers (napari: 0.3-1.5 s a layer on a loaded
    # 2-core CPU) and the canvas then draws them for the first time; what follows is what the
    # user lives with: ``gui_max_stall_after_first_view_ms`` starts at the end of that draw
    first_drawn: list[float] = []

    def drawn_once(_event):
        if opened and not first_drawn:
            first_drawn.append(time.perf_counter())

    viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(drawn_once,
                                                                      position="last")
    widget.scoring_finished.connect(lambda *_: done.__setitem__("score", True))
    # let the viewer settle before measuring
    t_end = time.perf_counter() + 1.0
    while time.perf_counter() < t_end:
        app.processEvents()
    stacks: dict[str, int] = {}
    watching = [True]  # the trace's sampler runs until the measurement ends
    slow: list[tuple[float, str]] = []  # (at_s, what) of slow callbacks and canvas draws
    if args.trace:
        import logging

        class Slow(logging.Handler):
            def emit(self, record):
                slow.append((time.perf_counter(), record.getMessage()))

        log = logging.getLogger("napari_activeseg._widgets._workers")
        log.setLevel(logging.DEBUG)
        log.addHandler(Slow())
        scene = viewer.window._qt_viewer.canvas._scene_canvas  # diagnosis only
        drawn = [0.0]

        def draw_start(_event):
            drawn[0] = time.perf_counter()

        def draw_end(_event):
            dt = time.perf_counter() - drawn[0]
            if dt > 0.05:
                slow.append((time.perf_counter(), f"canvas draw: {dt * 1e3:.0f} ms"))

        scene.events.draw.connect(draw_start, position="first")
        import gc

        collecting = [0.0]

        def gc_timer(phase, info):  # collections hold the GIL: every thread waits
            if phase == "start":
                collecting[0] = time.perf_counter()
            elif time.perf_counter() - collecting[0] > 0.02:
                ms = (time.perf_counter() - collecting[0]) * 1e3
                what = f"gc gen {info['generation']}: {ms:.0f} ms, {gc.get_freeze_count()} frozen"
                slow.append((time.perf_counter(), what))

        gc.callbacks.append(gc_timer)
        from vispy.gloo import glir

        def timed(cls, name):
            orig = getattr(cls, name)

            def wrapper(*a, **k):
                t = time.perf_counter()
                try:
                    return orig(*a, **k)
                finally:
                    dt = time.perf_counter() - t
                    if dt > 0.01:
                        what = f"  {cls.__name__}.{name}: {dt * 1e3:.0f} ms"
                        slow.append((time.perf_counter(), what))
            setattr(cls, name, wrapper)

        timed(glir.GlirProgram, "set_shaders")  # a shader (re)compiled and linked
        timed(glir.GlirTexture2D, "set_data")  # a texture uploaded
        timed(glir.GlirTexture2D, "set_size")
        scene.events.draw.connect(draw_end, position="last")
        import sys
        import threading
        import traceback

        main_id = threading.get_ident()

        def watch():
            while watching:
                time.sleep(0.02)
                if ticks and time.perf_counter() - ticks[-1] > 0.06:
                    frames = sys._current_frames()
                    for tid, frame in frames.items():
                        if tid == threading.get_ident():
                            continue
                        who = "GUI thread" if tid == main_id else "worker thread"
                        key = who + ":\n" + "".join(
                            traceback.format_stack(frame, limit=40)[-14:])
                        stacks[key] = stacks.get(key, 0) + 1

        threading.Thread(target=watch, daemon=True).start()
    prof = None
    if args.profile is not None:  # the dock's display of an image (what stalls most)
        import cProfile

        prof = cProfile.Profile()
        display = widget._display

        def profiled(*a, **k):
            return prof.runcall(display, *a, **k)

        widget._display = profiled
        draws = cProfile.Profile()  # and the canvas draws (what follows a layer change)
        scene_canvas = viewer.window._qt_viewer.canvas._scene_canvas
        draw_scene = scene_canvas._draw_scene

        def profiled_draw(*a, **k):
            return draws.runcall(draw_scene, *a, **k)

        scene_canvas._draw_scene = profiled_draw
    timer.start()
    # the floor: the viewer alone, no worker running
    t_idle = time.perf_counter() + (0.5 if args.tiny else args.idle_seconds)
    while time.perf_counter() < t_idle:
        app.processEvents()
        time.sleep(0.001)
    idle_gaps = np.diff(np.asarray(ticks)) * 1e3
    ticks.clear()
    running.clear()
    t0 = time.perf_counter()
    widget.train_panel.continuous_check.setChecked(True)  # what the user ticks
    trainer = widget.continuous.trainer
    submitted = False
    while time.perf_counter() - t0 < budget * 10 + 300:
        app.processEvents()
        time.sleep(0.001)
        # the user goes on annotating during the round (or just after it, in a tiny run)
        if not submitted and not opened and not jobs.holds("suggest") and (
                trainer.status.state == "training" or widget.session.model is not None):
            widget.suggest_next()
        if not submitted and opened and widget.current_id is not None:
            # painted as napari's brush paints: into the layer's own array
            viewer.layers[ANNOTATION].data[...] = truth[widget.current_id]
            viewer.layers[ANNOTATION].refresh()
            done["score"] = False
            widget.submit()
            submitted = True
        if submitted and trainer.model_lag_s and done["score"] and not jobs.busy:
            break  # the submission's model is published and the pool re-scored for it
    # the floor of a redraw on this display: the canvas with the run's layers redrawn alone,
    # nothing changed and the workers idle -- no update of the layers can stall less
    t_ticks_run, running_run = list(ticks), list(running)
    ticks.clear()
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    redraws = []
    for _ in range(1 if args.tiny else 10):
        before = time.perf_counter()
        canvas.update()
        t_end = before + 0.2
        while time.perf_counter() < t_end:
            app.processEvents()
            time.sleep(0.001)
        gaps_r = np.diff(np.asarray([before] + [t for t in ticks if t >= before]))
        redraws.append(float(gaps_r.max()) * 1e3 - 10.0 if gaps_r.size else 0.0)
    timer.stop()
    ticks[:], running[:] = t_ticks_run, running_run
    if prof is not None:
        prof.dump_stats(str(args.profile))
        draws.dump_stats(str(args.profile) + ".draw")
    watching.clear()
    t_ticks = np.asarray(ticks)
    gaps = np.diff(t_ticks) * 1e3
    # what was running when each gap began
    phase = np.asarray(running[:-1]) if gaps.size else np.asarray([])
    by_phase = {str(ph): round(float(gaps[phase == ph].max() - 10.0), 1)
                for ph in dict.fromkeys(phase.tolist())} if gaps.size else {}
    ends = t_ticks[1:] if gaps.size else t_ticks
    worst = np.argsort(gaps)[::-1][:5] if gaps.size else []
    out = {
        "gui_max_stall_ms": round(float(gaps.max() - 10.0), 1) if gaps.size else None,
        "gui_max_stall_after_first_view_ms": round(float(
            gaps[t_ticks[:-1] >= first_drawn[0]].max() - 10.0), 1)
        if gaps.size and first_drawn and (t_ticks[:-1] >= first_drawn[0]).any() else None,
        "gui_idle_max_stall_ms": round(float(idle_gaps.max() - 10.0), 1)
        if idle_gaps.size else None,
        "gui_redraw_ms": {"median": round(float(np.median(redraws)), 1),
                          "max": round(float(np.max(redraws)), 1)},
        "gui_p99_gap_ms": round(float(np.percentile(gaps, 99)), 1) if gaps.size else None,
        "gui_max_stall_by_running_ms": by_phase,
        "gui_worst_gaps": [{"ms": round(float(gaps[i]), 1),
                            "at_s": round(float(ends[i] - t0), 2), "running": str(phase[i])}
                           for i in worst],
        "model_lag_s": trainer.model_lag_s,
        "rounds": [r.note for r in trainer.rounds],
        "round_budget_s": budget,
        "dock_warm_up_s": warm_up_s,
        "ticks": len(ticks),
        "seconds": round(time.perf_counter() - t0, 1),
        "finished": bool(submitted and trainer.model_lag_s and done["score"]),
    }
    if args.trace:
        for at, what in slow:
            print(f"slow at {at - t0:7.2f} s: {what}")
        for key, n in sorted(stacks.items(), key=lambda kv: -kv[1])[:10]:
            print(f"--- {n} samples (x20 ms) during GUI gaps, {key}")
    widget.session.project.close()
    viewer.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
