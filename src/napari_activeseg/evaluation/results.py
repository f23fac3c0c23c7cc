"""The outputs of a benchmark folder: every requested (or earlier finished) run's rows
gathered from its state file, ``results.json`` (settings, splits, curves with their picks,
AULC, summary, notes), ``results.csv`` and ``learning_curve.png``.

Written after every run (without the plot) and at the end, so a folder always holds the results
of what has finished. The row-level helpers (AULC, the CSV writer, the plot, the table) are in
:mod:`.report`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ..core.serialize import write_json
from .baselines import plateau_stop
from .experiment import Experiment
from .object_columns import OBJECT_COLUMNS, OBJECTS_DOC
from .report import BASELINES, plot_learning_curves, summarise, write_csv
from .resume import STATE_NAME, RunState, utc_now

__all__ = ["collect", "write_outputs"]


def run_names(exp: Experiment) -> list[str]:
    """The strategies and baselines to report: the requested ones, then any other whose run
    of a requested seed is on disk (an earlier invocation of the same experiment, e.g. the
    ceiling trained for seed 0 only: running more seeds without it must not drop it)."""
    names = [*exp.cfg.strategies, *exp.cfg.baselines]
    found = set()
    if exp.runs_dir.is_dir():
        seeds = {f"s{s}" for s in exp.cfg.seeds}
        for state in exp.runs_dir.glob(f"*/{STATE_NAME}"):
            name, _, seed = state.parent.name.rpartition("_")
            if name and seed in seeds and name not in names:
                found.add(name)
    return names + sorted(found)


def collect(exp: Experiment) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[dict]]]]:
    """Rows of every run to report (:func:`run_names`; rounds 0..rounds), and the curves with
    their picks."""
    rows, curves = [], {}
    names = run_names(exp)
    for name in names:
        for seed in exp.cfg.seeds:
            path = exp.run_dir(name, seed) / STATE_NAME
            if not path.is_file():
                continue
            kind = "baseline" if name in BASELINES else "strategy"
            st = RunState(path, kind, name, seed)
            exp.notes += [n for n in st.data.get("notes", []) if n not in exp.notes]
            mine = [r for r in st.rounds if r["round"] <= exp.cfg.rounds]
            if not mine:
                continue
            rows += [{k: v for k, v in r.items() if k != "picks"} for r in mine]
            curves.setdefault(name, {})[str(seed)] = mine
    return rows, curves


def write_outputs(exp: Experiment, *, plot: bool = True
                  ) -> tuple[list[dict], dict, dict[str, Path]]:
    """Write ``results.json``, ``results.csv`` (and the plot); returns rows, summary, paths."""
    from .. import __version__

    cfg = exp.cfg
    rows, curves = collect(exp)
    summary = summarise(rows, x=cfg.x_axis)
    keys = ("round", "n_labelled", "pixels_reviewed", "dice", "pixels_corrected",
            "objects_corrected", "seconds", "n_picked", "pixels_scratch", "objects_scratch",
            "total_pixels_corrected", "total_objects_corrected", "total_pixels_scratch",
            "total_objects_scratch", "train_steps", "train_s", "query_s", "eval_s")
    keys += tuple(sorted({k for r in rows for k in r if k.startswith("dice_")}))
    keys += tuple(k for k in OBJECT_COLUMNS if any(k in r for r in rows))
    json_curves = {
        name: {seed: {**{k: [r.get(k) for r in rs] for k in keys},
                      "picked": [[p["image"] for p in r.get("picks", [])] for r in rs],
                      "boxes": [[p.get("boxes") for p in r.get("picks", [])] for r in rs]
                      if cfg.regions else None}
               for seed, rs in by_seed.items()}
        for name, by_seed in curves.items()}
    splits, observer, plateau = {}, {}, {}
    for seed in cfg.seeds:
        pool, test = exp.splits[seed]
        splits[str(seed)] = {
            "pool": [exp.ds.names[i] for i in pool],
            "test": [exp.ds.names[i] for i in test],
            "initial": [n for n, _ in exp.initial_picks(seed)],
            "pool_pixels": int(sum(exp.ds.masks[i].size for i in pool))}
        second = exp.second_observer(seed)
        if second is not None:
            observer[str(seed)] = second
        path = exp.run_dir("full", seed) / STATE_NAME
        if path.is_file():
            st = RunState(path, "baseline", "full", seed).data
            if st.get("plateau"):
                plateau[str(seed)] = {"rounds": st["plateau"],
                                      "stop_reason": plateau_stop(st["plateau"], cfg)}
    if plot and importlib.util.find_spec("matplotlib") is None:
        plot = False
        exp.notes.append("No learning_curve.png: matplotlib is not installed "
                         "(pip install 'napari-activeseg[benchmark]').")
    doc = {
        "napari_activeseg": __version__,
        "created_at": utc_now(),
        "config": cfg.to_dict(),
        "model_config": exp.model_config.to_dict(),
        "train_config": exp.train_config.to_dict(),
        "inference_config": exp.inference_config.to_dict(),
        "dataset": {"root": str(exp.ds.root), "n_images": len(exp.ds),
                    "n_classes": exp.ds.n_classes, "in_channels": exp.ds.in_channels,
                    "files": list(exp.ds.names)},
        "splits": splits,
        "x_axis": cfg.x_axis,
        "metric": "mean over test images of the per-image foreground Dice",
        "objects": None if exp.ds.instances is None else OBJECTS_DOC,
        "rf_labelled_from": "random" if "random" in cfg.strategies else "own random draws",
        "classes": list(exp.classes),
        "second_observer": observer or None,
        "full_plateau": plateau or None,
        "curves": json_curves,
        "aulc": {name: {k: s["aulc"][k] for k in ("mean", "std", "per_seed")}
                 for name, s in summary.items()},
        "summary": summary,
        "notes": list(dict.fromkeys(exp.notes)),
    }
    files = {"json": cfg.out / "results.json", "csv": cfg.out / "results.csv",
             **({"png": cfg.out / "learning_curve.png"} if plot else {})}
    order = {n: i for i, n in enumerate(run_names(exp))}
    rows.sort(key=lambda r: (order.get(r["strategy"], 99), r["seed"], r["round"]))
    write_json(files["json"], doc)
    write_csv(files["csv"], rows)
    if plot and rows:
        seeds = len(cfg.seeds)
        refs = [] if not observer else [
            (float(np.mean(list(observer.values()))), "second human observer")]
        plot_learning_curves(
            files["png"], rows, x=cfg.x_axis, references=refs,
            title=f"{exp.ds.root.name}: {len(exp.ds)} images, {seeds} seed"
                  f"{'s' if seeds != 1 else ''}, {cfg.steps} steps/round"
                  f"{', regions ' + str(cfg.region_size) + ' px' if cfg.regions else ''}")
    return rows, summary, files
