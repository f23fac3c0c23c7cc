"""Paired arms on the same random boxes at 1 % and 2 % of the pool: does a training choice help?

Built for class weights and the calibrated class threshold, then used for the self-supervised
warm-up and the random forest on the same boxes (it was ``benchmarks/class_weights.py``, a
name the dated docs still use; that file now runs this one).

For every dataset and seed: the seed's pool/test split, random boxes of the project's
automatic size drawn once in one order (as ``benchmarks/semi_supervised.py`` draws them), until
1 % and then 2 % of the pool's pixels are reviewed. Each arm trains the same way on the same
boxes and differs only in how the classes are balanced (``--arms``):

- a number ``p``: ``TrainConfig.class_weight_power`` (0 = unweighted loss; ``p`` > 0 weighs
  class ``c`` by ``(max f / f_c) ** p``, ``f`` the classes' shares of the reviewed pixels in
  the round's patches, ``core.training.auto_class_weights``);
- ``cal``: ``TrainConfig.calibrate_bias`` (after the round, the classes' logits are shifted so
  the class map agrees best with the reviewed pixels, ``core.training.calibrate_logit_bias``);
- ``p+cal``: both;
- ``ssl`` (``ssl400``: 400 steps), e.g. ``cal+ssl``: a self-supervised warm-up of 200 steps on
  the pool before round 1 (``ActiveLearningSession.pretrain``, ``core.pretrain``); ``sslenc``:
  the same, keeping only the encoder's warm-up weights;
- ``rf``: no U-Net; the suite's random forest fitted on the same boxes.

    round 1   1 % boxes, from scratch     <- Dice at 1 %
    round 2   2 % boxes, warm start       <- Dice at 2 %

Everything goes through the product (Project + ActiveLearningSession, default model and
preprocessing) with a fixed number of steps per round (``--steps``, the suite's 125 by
default) so the result does not depend on the machine's load. Test Dice: mean per-image
foreground Dice of ``session.predict_array`` on the raw test images.

    OMP_NUM_THREADS=1 python benchmarks/box_arms.py --out bench_out/box_arms \\
        --data ../shared/data/* --seeds 0 1 2 --arms 0 cal 0.25 0.25+cal

Writes ``OUT/results.json`` (one row per dataset, seed and arm; finished rows are skipped
when the command is run again) and prints the paired table of every arm against the first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from semi_supervised import (  # noqa: E402
    _boxes, _dice, _submit, _upto, boxed_set, fit_forest, paired_table)


def parse_arm(arm: str) -> dict:
    """``"0.5"`` -> class_weight_power 0.5; ``"cal"`` -> calibrate_bias; ``"0.5+cal"`` both."""
    kw = {"class_weight_power": 0.0, "calibrate_bias": False}
    for part in arm.split("+"):
        if part == "cal":
            kw["calibrate_bias"] = True
        elif part.startswith("ssl"):  # the self-supervised warm-up: run by run_one
            continue
        else:
            kw["class_weight_power"] = float(part)
    return kw


def pretrain_steps(arm: str) -> int:
    """``"ssl"``/``"sslenc"`` -> 200 warm-up steps (``session.pretrain``), ``"ssl400"`` -> 400;
    else 0."""
    for part in arm.split("+"):
        if part.startswith("ssl"):
            return int(part.removeprefix("sslenc").removeprefix("ssl") or 200)
    return 0


def _forest(ds, data, seed, test, size, pool_px, *budgets) -> dict:
    """The ``rf`` arm: the suite's random forest fitted on the same boxes at each budget,
    scored on the same test images."""
    from napari_activeseg.evaluation.dataset import mean_dice

    t0, dice = time.perf_counter(), []
    for chosen, _ in budgets:
        _, imgs, labs, revs = boxed_set(ds, chosen)
        forest = fit_forest(ds, imgs, labs, revs, seed)
        preds = [forest.predict(ds.images[i]) for i in test]
        dice.append(float(mean_dice(preds, [ds.masks[i] for i in test], ds.n_classes)))
    (b1, px1), (b2, px2) = budgets
    return {"dataset": data.name, "seed": seed, "arm": "rf", "region_size": size,
            "pool_px": int(pool_px), "px_1": int(px1), "px_2": int(px2), "boxes_1": len(b1),
            "boxes_2": len(b2), "dice_1pct": dice[0], "dice_2pct": dice[1], "steps": None,
            "weights": [None, None], "logit_bias": [None, None],
            "seconds": round(time.perf_counter() - t0, 1)}


def run_one(data: Path, seed: int, arm: str, out: Path, steps: int) -> dict:
    from napari_activeseg.core.config import TrainConfig
    from napari_activeseg.core.progress import run_to_end
    from napari_activeseg.core.project import Project
    from napari_activeseg.core.session import ActiveLearningSession
    from napari_activeseg.core.strategies.regions import auto_region_size
    from napari_activeseg.evaluation.dataset import load_dataset, split_dataset

    ds = load_dataset(data)
    pool, test = split_dataset(len(ds), seed=seed)
    size = auto_region_size([ds.masks[i].shape for i in pool])
    pool_px = sum(ds.masks[i].size for i in pool)
    windows = _boxes(ds, pool, size, np.random.default_rng(seed))
    b1, px1 = _upto(windows, 0.01 * pool_px)
    b2, px2 = _upto(windows, 0.02 * pool_px)
    if arm == "rf":
        return _forest(ds, data, seed, test, size, pool_px, (b1, px1), (b2, px2))
    classes = ("background", *(f"class {k}" for k in range(1, ds.n_classes)))
    train = TrainConfig(max_steps=steps, time_budget_s=None, seed=seed, **parse_arm(arm))
    folder = out / "runs" / f"{data.name}_s{seed}_{arm}"
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    with Project.create(folder, images=[ds.root / "images" / ds.names[i] for i in pool],
                        classes=classes) as project:
        by_name = {r.name: r.id for r in project.images()}
        session = ActiveLearningSession(project, train_config=train, strategy="random",
                                        seed=seed)
        warm = pretrain_steps(arm)
        warm_s = None
        if warm:
            keep = "encoder" if "sslenc" in arm else "all"
            warm_s = round(session.pretrain(steps=warm, keep=keep).seconds, 1)
        _submit(session, ds, by_name, b1)
        s1 = run_to_end(session.train())
        d1 = _dice(session, ds, test)
        _submit(session, ds, by_name, b2[len(b1):])
        s2 = run_to_end(session.train())
        d2 = _dice(session, ds, test)
    shutil.rmtree(folder, ignore_errors=True)
    return {"dataset": data.name, "seed": seed, "arm": arm, "region_size": size,
            "pool_px": int(pool_px), "px_1": int(px1), "px_2": int(px2), "boxes_1": len(b1),
            "boxes_2": len(b2), "dice_1pct": d1, "dice_2pct": d2, "steps": steps,
            "weights": [s1.result.class_weights, s2.result.class_weights],
            "logit_bias": [s1.result.logit_bias, s2.result.logit_bias],
            "calibration": [s1.result.calibration, s2.result.calibration],
            "pretrain_steps": warm, "pretrain_s": warm_s,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["0", "0.5"],
                    help="class-weight power, 'cal' (logit calibration) or both: '0.5+cal'; "
                         "the first is the base of the paired table")
    ap.add_argument("--steps", type=int, default=125)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    res = args.out / "results.json"
    rows = json.loads(res.read_text()) if res.exists() else []
    for seed in args.seeds:
        for data in args.data:
            for arm in args.arms:
                if any(r["dataset"] == data.name and r["seed"] == seed and r["arm"] == arm
                       for r in rows):
                    continue
                row = run_one(data.resolve(), seed, arm, args.out, args.steps)
                rows.append(row)
                tmp = res.with_suffix(".tmp")
                tmp.write_text(json.dumps(rows, indent=1))
                tmp.replace(res)
                print(f"{data.name} seed {seed} {arm}: Dice {row['dice_1pct']:.3f} / "
                      f"{row['dice_2pct']:.3f}, weights {row['weights']}, "
                      f"shifts {row['logit_bias']}, {row['seconds']:.0f} s", flush=True)
    for arm in args.arms[1:]:
        print(paired_table(rows, "arm", args.arms[0], arm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
