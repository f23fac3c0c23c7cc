"""Experiment (issue 16): does the U-Net gain from the random forest's filters or its calls?

The forest (``evaluation/rf.py``) beats the U-Net on chase_db1 at 1-2 % of the pool's pixels
(docs/2026-12-03-chase-forest.md). This gives the U-Net multi-scale filter responses of the
image's mean channel as extra input channels -- Gaussian smoothing and both Hessian eigenvalues at
sigma 1, 2, 4 (9 channels, each standardised per image; ``--arms filters``) -- or trains it
also on the forest's confident calls on the pool
(``--arms rfteach``: the forest fitted on the boxes, each pool pixel it calls with probability
>= 0.8 labelled so, the boxes keeping the truth), and compares each, paired, with the
plain input: the same random boxes (1 % then 2 % of the pool, drawn as
``benchmarks/box_arms.py`` draws them), the same steps, the same seed, the same test images.
Straight through ``core.training.Trainer`` (no project): calibration as the defaults.

    OMP_NUM_THREADS=1 python benchmarks/filter_channels.py --data ../shared/data/chase_db1_vessels \
        --seeds 0 1 2 --json OUT.json

Not part of the product: a positive result would still need the filters decided once per
project, in the exported model's preprocessing, and measured on all five sets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semi_supervised import _boxes, _upto, boxed_set, fit_forest  # noqa: E402

SIGMAS = (1.0, 2.0, 4.0)


def filter_channels(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (C + 9, H, W): the image and its standardised filter responses."""
    from scipy import ndimage as ndi
    from skimage.feature import hessian_matrix, hessian_matrix_eigvals

    gray = image.mean(axis=0)
    extra = []
    for s in SIGMAS:
        extra.append(ndi.gaussian_filter(gray, s))
        h = hessian_matrix(gray, sigma=s, order="rc", use_gaussian_derivatives=False)
        extra.extend(hessian_matrix_eigvals(h) * s * s)
    extra = [(e - e.mean()) / (e.std() + 1e-6) for e in extra]
    return np.concatenate([image, np.stack(extra).astype(np.float32)])


#: A forest's call counts as a label where its probability is at least this.
TEACH_CONFIDENCE = 0.8


def _taught(ds, pool, per, imgs, labs, revs, seed):
    """The ``rfteach`` arm: the suite's forest fitted on the boxes, its confident calls
    (:data:`TEACH_CONFIDENCE`) added as labels on the boxed images' other pixels and on every
    other pool image; the boxes' own pixels keep the truth."""
    forest = fit_forest(ds, imgs, labs, revs, seed)
    out_i, out_l, out_r = [], [], []
    boxed = list(per)
    for i in pool:
        proba = forest.predict_proba(ds.images[i])
        call, sure = proba.argmax(0), proba.max(0) >= TEACH_CONFIDENCE
        if i in per:
            k = boxed.index(i)
            lab = np.where(revs[k], labs[k], call)
            rev = revs[k] | sure
        else:
            lab, rev = call, sure
        out_i.append(ds.images[i])
        out_l.append(lab.astype(np.int64))
        out_r.append(rev)
    return out_i, out_l, out_r


def run(data: Path, seed: int, arm: str, steps: int) -> dict:
    from napari_activeseg.core.config import ModelConfig, TrainConfig
    from napari_activeseg.core.inference import predict
    from napari_activeseg.core.progress import run_to_end
    from napari_activeseg.core.strategies.regions import auto_region_size
    from napari_activeseg.core.training import Trainer
    from napari_activeseg.evaluation.dataset import load_dataset, mean_dice, split_dataset

    ds = load_dataset(data)
    pool, test = split_dataset(len(ds), seed=seed)
    size = auto_region_size([ds.masks[i].shape for i in pool])
    pool_px = sum(ds.masks[i].size for i in pool)
    windows = _boxes(ds, pool, size, np.random.default_rng(seed))
    prep = (lambda im: filter_channels(im)) if arm == "filters" else (lambda im: im)
    cache: dict[int, np.ndarray] = {}

    def image(i):
        if i not in cache:
            cache[i] = prep(ds.images[i])
        return cache[i]

    c = image(pool[0]).shape[0]
    mc = ModelConfig(in_channels=c, n_classes=ds.n_classes)
    out, init, t0 = {}, None, time.perf_counter()
    for k, frac in enumerate((0.01, 0.02)):
        chosen, _ = _upto(windows, frac * pool_px)
        per, imgs, labs, revs = boxed_set(ds, chosen, image)
        if arm == "rfteach":  # the forest's confident calls on the pool as extra labels
            imgs, labs, revs = _taught(ds, pool, per, imgs, labs, revs, seed)
        cfg = TrainConfig(max_steps=steps, time_budget_s=None, seed=seed + k)
        res = run_to_end(Trainer(mc, cfg).fit(imgs, labs, revs, init_state=init))
        init = res.state_dict
        model = res.build_model().eval()
        preds = [predict(model, image(i), mode="single", maps=()).labels for i in test]
        out[f"dice_{k + 1}pct"] = float(mean_dice(preds, [ds.masks[i] for i in test],
                                                  ds.n_classes))
    return {"dataset": data.name, "seed": seed, "arm": arm, "steps": steps, **out,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", required=True, type=Path)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=125)
    ap.add_argument("--arms", nargs="+", default=["plain", "filters"])
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    rows = json.loads(args.json.read_text()) if args.json.is_file() else []
    for data in args.data:
        for seed in args.seeds:
            for arm in args.arms:
                if any(r["dataset"] == data.name and r["seed"] == seed and r["arm"] == arm
                       and r["steps"] == args.steps for r in rows):
                    continue
                row = run(data.resolve(), seed, arm, args.steps)
                rows.append(row)
                args.json.write_text(json.dumps(rows, indent=1))
                print(f"{data.name} seed {seed} {arm}: Dice {row['dice_1pct']:.3f} / "
                      f"{row['dice_2pct']:.3f}, {row['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
