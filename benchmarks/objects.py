"""Objects, not pixels (issue 18): U-Net + connected components vs the U-Net's instance mode vs
Cellpose trained from scratch, on the two nuclei sets with instance ground truth.

For each dataset two ``activeseg benchmark`` runs (:func:`run_benchmark`), both with the
``random`` strategy (4 labelled images, then 8 more per round: 4 / 12 / 20 / 28; the same
images in both, drawn by the seed):

``OUT/<dataset>``
    the semantic U-Net as today, scored as connected components of its class map (``cc_*``)
    and as a distance-transform watershed of the same map (``inst_*``, ``distance``), with the
    ``cellpose`` baseline, which trains on the very images the ``random`` run labelled with
    the same number of optimiser steps per round (``evaluation/cellpose_baseline.py``);
``OUT/<dataset>_objects``
    ``--objects``: the U-Net in the product's instance mode, trained on the instance labels
    with its boundary output (``inst_*``, ``boundary``);
``OUT/<dataset>_distance_head`` (``--runs distance_head``)
    the same with a distance output as well (``ModelConfig.distance_head``: each object's
    normalised distance to its edge, seeds and watershed from it; ``distance_head``).

This script reads object F1 at IoU 0.5, mean AP and the count error back at 4 / 12 / 28
labelled images and writes ``OUT/objects.json`` and a markdown table ``OUT/objects.md`` (mean ±
std over seeds). A finished run resumes instantly.

The measurement the issue asks for (3 seeds, the product's defaults)::

    OMP_NUM_THREADS=4 python benchmarks/objects.py --out bench_out/objects

The U-Net runs first and Cellpose later (on a CPU a Cellpose step costs ~20 U-Net steps)::

    OMP_NUM_THREADS=1 python benchmarks/objects.py --out bench_out/objects --baselines ''
    OMP_NUM_THREADS=2 python benchmarks/objects.py --out bench_out/objects --runs semantic

One Cellpose round (125 steps) costs ~17 min of one CPU thread here: ``--rounds 0`` stops there
and ``--seeds 1,`` picks a seed, so several processes (each on its own copy of the U-Net's
folder) can share the cores.

A reduced run on a busy CPU (one seed, 35 images, a fifth held out, few steps)::

    OMP_NUM_THREADS=1 python benchmarks/objects.py --out bench_out/objects_reduced \
        --seeds 1 --max-images 35 --test-fraction 0.2 --steps 5

Needs ``pip install 'napari-activeseg[cellpose]'`` for the Cellpose rows (skipped with a note
otherwise). Reduced figures are not the issue's measurement: say so wherever they are quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from napari_activeseg.core.progress import run_to_end
from napari_activeseg.evaluation.config import BenchmarkConfig, parse_list, parse_seeds
from napari_activeseg.evaluation.progress import BenchmarkBar
from napari_activeseg.evaluation.runner import run_benchmark

DATA = Path("/work/shared/data")
#: (label, run, strategy row, column prefix) of the methods compared.
METHODS = (("U-Net + connected components", "semantic", "random", "cc"),
           ("U-Net + distance watershed", "semantic", "random", "inst"),
           ("U-Net instance mode (boundary head)", "objects", "random", "inst"),
           ("U-Net instance mode (boundary + distance head)", "distance_head", "random",
            "inst"),
           ("Cellpose from scratch", "semantic", "cellpose", "inst"))
AT = (4, 12, 28)


def _ms(values: list[float]) -> dict[str, float | int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if not v.size:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "n": int(v.size)}


def table(runs: dict[str, list[dict]], at=AT) -> list[dict]:
    """Per labelled count and method: F1@0.5, mean AP, count error and Dice over seeds."""
    out = []
    for n in at:
        for label, run, strategy, prefix in METHODS:
            mine = [r for r in runs.get(run, []) if r["strategy"] == strategy
                    and r["n_labelled"] == n
                    and r.get(f"{prefix}_f1_50") is not None]
            if not mine:
                continue
            out.append({"n_labelled": n, "method": label,
                        "inst_method": mine[0].get("inst_method") if prefix == "inst" else "cc",
                        **{k: _ms([r.get(f"{prefix}_{k}") for r in mine])
                           for k in ("f1_50", "mean_ap", "count_error", "splits", "merges")},
                        "dice": _ms([r["dice"] for r in mine]),
                        "seeds": sorted(int(r["seed"]) for r in mine)})
    return out


def _fmt(d: dict) -> str:
    if not d["n"]:
        return "-"
    return f"{d['mean']:.3f}" + (f" ± {d['std']:.3f}" if d["n"] > 1 else "")


def markdown(results: dict[str, list[dict]]) -> str:
    head = ("| dataset | labelled | method | F1@0.5 | mean AP 0.5-0.9 | count error | "
            "splits | merges | Dice | seeds |")
    lines = [head, "|" + "---|" * 10]
    for ds, entries in results.items():
        for e in entries:
            lines.append(f"| {ds} | {e['n_labelled']} | {e['method']} ({e['inst_method']}) | "
                         f"{_fmt(e['f1_50'])} | {_fmt(e['mean_ap'])} | "
                         f"{_fmt(e['count_error'])} | {_fmt(e['splits'])} | "
                         f"{_fmt(e['merges'])} | {_fmt(e['dice'])} | {len(e['seeds'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--datasets", default="bbbc039_nuclei,dsb2018_nuclei",
                   help="folders under --data-root with instances/ (default both nuclei sets)")
    p.add_argument("--data-root", type=Path, default=DATA)
    p.add_argument("--seeds", default="3", help="a count or a comma-separated list")
    p.add_argument("--steps", type=int, default=125, help="optimiser steps per round")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds after the first (3: 4 / 12 / 20 / 28 images; 0: the 4-image "
                        "point only, e.g. for Cellpose on a CPU; more later resume)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--device", default="auto")
    p.add_argument("--baselines", default="cellpose",
                   help="baselines of the semantic run ('' = none; added later, they resume "
                        "into the same folders)")
    p.add_argument("--runs", default="semantic,objects",
                   help="which runs to make: semantic, objects (boundary head), "
                        "distance_head (boundary + distance head); default the first two")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    results, meta = {}, {}
    for name in parse_list(args.datasets):
        runs = {}
        for run, objects, baselines, suffix, model in (
                ("semantic", False, parse_list(args.baselines), "", {}),
                ("objects", True, (), "_objects", {}),
                ("distance_head", True, (), "_distance_head", {"distance_head": True})):
            if run not in parse_list(args.runs):
                continue
            cfg = BenchmarkConfig(
                data=args.data_root / name, out=args.out / (name + suffix), model=model,
                strategies=("random",), baselines=baselines, objects=objects,
                seeds=parse_seeds(args.seeds), initial=AT[0], step=8, rounds=args.rounds,
                steps=args.steps, max_images=args.max_images,
                test_fraction=args.test_fraction, device=args.device)
            t0 = time.perf_counter()
            bar = None if args.quiet else BenchmarkBar(sys.stderr)
            try:
                res = run_to_end(run_benchmark(cfg), bar)
            finally:
                if bar is not None:
                    bar.close()
            runs[run] = res.rows
            meta[f"{name} {run}"] = {"seconds": round(time.perf_counter() - t0, 1),
                                     "notes": res.notes,
                                     "results_json": str(res.files["json"])}
            print(res.table())
            for note in res.notes:
                print(f"note: {note}")
        results[name] = table(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                       "load_before": os.getloadavg()},
           "runs": meta, "results": results}
    (args.out / "objects.json").write_text(json.dumps(doc, indent=1, default=float))
    (args.out / "objects.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
