"""Where a thin-structure model's Dice goes, by the width of the structure (issue 16).

For each suite run given (``RUN_DIR`` = a dataset folder of ``benchmarks/suite.py --out``,
holding ``config.json`` and ``runs/<strategy>_s<seed>/``), the last model of every run
predicts the seed's test images; each true foreground pixel gets the local width of its
structure (from the distance to the background at the nearest skeleton point) and falls in a
width bin. Prints, per run: the recall in each bin, the share of the bin in the truth, the
precision (predicted foreground on truth), the false positives that touch a true structure
(within 2 px: a border drawn too wide) and the rest; and what the run's reviewed pixels held:
the width mix of the true foreground inside them, against the same over the pool images.

Usage::

    python benchmarks/vessel_width.py bench_out/chase_random/chase_db1_vessels \
        bench_out/chase_entropy/chase_db1_vessels [--bins 3,6] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def local_width(mask: np.ndarray) -> np.ndarray:
    """Float map: at each foreground pixel, the width of its structure there -- ``2 d - 1``,
    ``d`` the distance to the background at the nearest skeleton pixel (a bar 5 px thick: 5);
    0 elsewhere."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    fg = np.asarray(mask) > 0
    if not fg.any():
        return np.zeros(fg.shape, np.float32)
    dist = distance_transform_edt(fg)
    skel = skeletonize(fg)
    _, (iy, ix) = distance_transform_edt(~skel, return_indices=True)
    width = 2.0 * dist[iy, ix] - 1.0
    return np.where(fg, width, 0.0).astype(np.float32)


def width_bin(width: np.ndarray, edges) -> np.ndarray:
    """Bin index per pixel: 0 = narrower than edges[0], ..., len(edges) = wider."""
    return np.digitize(width, np.asarray(edges, float))


def run_figures(run: Path, exp, seed: int, edges) -> dict:
    from scipy.ndimage import binary_dilation

    from napari_activeseg.core.inference import predict
    from napari_activeseg.core.project import Project
    from napari_activeseg.core.session import ActiveLearningSession

    project = Project.open(run, read_only=True)
    try:
        session = ActiveLearningSession(project)
        model = session.model
        images, masks = exp.test_inputs(seed)
        nb = len(edges) + 1
        hit = np.zeros(nb)
        tot = np.zeros(nb)
        tp = fp_near = fp_far = 0
        for img, m in zip(images, masks, strict=True):
            pred = predict(model, img, mode="single", maps=(),
                           config=exp.inference_config).labels > 0
            truth = m > 0
            b = width_bin(local_width(truth), edges)
            for k in range(nb):
                sel = truth & (b == k)
                tot[k] += sel.sum()
                hit[k] += (sel & pred).sum()
            near = binary_dilation(truth, iterations=2)
            tp += int((pred & truth).sum())
            fp_near += int((pred & ~truth & near).sum())
            fp_far += int((pred & ~near).sum())
        # the width mix of the true foreground inside what the run reviewed
        rev = np.zeros(nb)
        pool = np.zeros(nb)
        for rec in project.images():
            i = exp.index[rec.name]
            truth = exp.ds.masks[i] > 0
            b = width_bin(local_width(truth), edges)
            reviewed = project.reviewed_mask(rec.id)
            for k in range(nb):
                pool[k] += (truth & (b == k)).sum()
                if reviewed is not None:
                    rev[k] += (truth & (b == k) & np.asarray(reviewed, bool)).sum()
        n_pred = tp + fp_near + fp_far
        return {
            "recall_by_width": [round(float(h / t), 3) if t else None for h, t in zip(hit, tot)],
            "truth_share_by_width": [round(float(t / tot.sum()), 3) for t in tot],
            "precision": round(tp / n_pred, 3) if n_pred else None,
            "fp_touching_share": round(fp_near / n_pred, 3) if n_pred else None,
            "fp_far_share": round(fp_far / n_pred, 3) if n_pred else None,
            "reviewed_fg_mix_by_width": [round(float(r / rev.sum()), 3) if rev.sum() else None
                                         for r in rev],
            "pool_fg_mix_by_width": [round(float(p / pool.sum()), 3) for p in pool],
        }
    finally:
        project.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--bins", default="3,6", help="width edges in px (default: 3,6)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from napari_activeseg.evaluation.config import BenchmarkConfig
    from napari_activeseg.evaluation.experiment import Experiment

    edges = [float(v) for v in args.bins.split(",")]
    out = {}
    for d in args.dirs:
        raw = json.loads((d / "config.json").read_text())
        keys = ("data", "initial", "step", "regions", "region_size", "steps", "max_images",
                "test_fraction", "model", "train", "inference")
        runs = sorted(p for p in (d / "runs").iterdir() if p.is_dir() and "_s" in p.name)
        for run in runs:
            name, seed = run.name.rsplit("_s", 1)
            cfg = BenchmarkConfig(out=d, strategies=(name,), seeds=(int(seed),),
                                  **{k: raw[k] for k in keys if k in raw})
            exp = Experiment(cfg)
            out[f"{d.name}/{run.name}"] = fig = run_figures(run, exp, int(seed), edges)
            print(run.name, json.dumps(fig), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"bins_px": edges, "runs": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
