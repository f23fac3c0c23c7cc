"""Quality of the core's default U-Net next to the random forest, on N labelled images.

For every seed: split the dataset 70/30 into pool and test (``split_dataset(seed)``), take the
first N images of ``default_rng(seed).permutation(pool)`` as the labelled set, train a U-Net from
scratch for a fixed wall-clock budget (default 90 s) and the random forest on the same images,
and report the mean per-image foreground Dice on the test images. ``--full`` also trains on the
whole pool for ``--full-budget`` seconds (the ceiling). Throughput is reported as 256x256-patch
equivalents per second.

Run by hand (a few tens of minutes on 2 CPU cores), e.g.::

    python benchmarks/core_quality.py --data ../shared/data/dsb2018_nuclei --n 4,8 \
        --seeds 0,1,2 --rf --full --json bench_out/core_quality.json

Wall-clock budgets make the result depend on the machine's load: keep it otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from napari_activeseg.evaluation.dataset import load_dataset, mean_dice, split_dataset
from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.inference import predict
from napari_activeseg.core.model import count_parameters
from napari_activeseg.core.preprocess import apply_polarity, resolve_polarity
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.training import Trainer


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def evaluate(model, images, masks, n_classes) -> float:
    cfg = InferenceConfig(tile_size=512, overlap=32, batch_size=2)
    preds = [predict(model, img, config=cfg).labels for img in images]
    return mean_dice(preds, masks, n_classes)


def train_unet(mcfg, tcfg, images, masks):
    trainer = Trainer(mcfg, tcfg)
    t0 = time.perf_counter()
    result = run_to_end(trainer.fit(images, masks))
    secs = time.perf_counter() - t0
    patch_eq = result.steps * tcfg.batch_size * (tcfg.patch_size / 256) ** 2
    return result, {"steps": result.steps, "train_s": round(secs, 1),
                    "steps_per_s": round(result.steps / secs, 3),
                    "patches256_per_s": round(patch_eq / secs, 3),
                    "stop_reason": result.stop_reason,
                    "best_val_dice": result.best_val_dice}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018_nuclei"))
    p.add_argument("--n", type=_ints, default=[4, 8])
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--budget", type=float, default=90.0, help="seconds per round (N images)")
    p.add_argument("--steps", type=int, default=None,
                   help="fixed optimiser steps per round instead of the time budget (results "
                        "then do not depend on the machine's load; wall time is still reported)")
    p.add_argument("--full-steps", type=int, default=None,
                   help="fixed steps for the whole-pool run instead of --full-budget")
    p.add_argument("--rf", action="store_true", help="also run the random-forest baseline")
    p.add_argument("--full", action="store_true", help="also train on the whole pool (seed 0)")
    p.add_argument("--full-budget", type=float, default=600.0)
    p.add_argument("--width", type=int, default=ModelConfig.width)
    p.add_argument("--depth", type=int, default=ModelConfig.depth)
    p.add_argument("--patch", type=int, default=TrainConfig.patch_size)
    p.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--invert-p", type=float, default=TrainConfig.invert_p)
    p.add_argument("--polarity", default=ModelConfig.polarity,
                   choices=["pool", "auto", "none", "invert"],
                   help="'pool' (the default): one rule decided from the dataset's images")
    p.add_argument("--label", default="default", help="name of this configuration in the output")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    torch.set_num_threads(max(1, torch.get_num_threads()))
    ds = load_dataset(args.data)
    polarity = resolve_polarity(args.polarity, ds.images)  # once for the dataset
    margin = ModelConfig.polarity_margin
    images = [apply_polarity(im, polarity, margin=margin) for im in ds.images]
    mcfg = ModelConfig(in_channels=ds.in_channels, n_classes=ds.n_classes, width=args.width,
                       depth=args.depth, polarity=polarity)
    base = TrainConfig(patch_size=args.patch, batch_size=args.batch, lr=args.lr,
                       invert_p=args.invert_p, max_steps=args.steps,
                       time_budget_s=None if args.steps else args.budget)
    out = {"label": args.label, "machine": f"{platform.node()} {platform.processor()} "
           f"{torch.get_num_threads()} threads, torch {torch.__version__}",
           "model": mcfg.to_dict(), "params": count_parameters(__import__(
               "napari_activeseg.core.model", fromlist=["UNet"]).UNet(mcfg)),
           "train": base.to_dict(), "runs": []}
    print(f"{args.label}: {out['params']} params; {out['machine']}", flush=True)
    for seed in args.seeds:
        pool, test = split_dataset(len(ds), seed=seed)
        order = np.random.default_rng(seed).permutation(pool)
        test_imgs, test_masks = [images[i] for i in test], [ds.masks[i] for i in test]
        for n in args.n:
            chosen = [int(i) for i in order[:n]]
            imgs, masks = [images[i] for i in chosen], [ds.masks[i] for i in chosen]
            result, info = train_unet(mcfg, base.replace(seed=seed), imgs, masks)
            dice = evaluate(result.build_model(), test_imgs, test_masks, ds.n_classes)
            row = {"seed": seed, "n": n, "model": "unet", "dice": round(dice, 4), **info}
            if args.rf:
                from napari_activeseg.evaluation.rf import RandomForestSegmenter
                t0 = time.perf_counter()
                rf = RandomForestSegmenter(seed=seed)
                rf.fit([ds.images[i] for i in chosen], masks)
                fit_s = time.perf_counter() - t0
                rf_dice = mean_dice([rf.predict(ds.images[i]) for i in test], test_masks,
                                    ds.n_classes)
                row.update(rf_dice=round(rf_dice, 4), rf_fit_s=round(fit_s, 1))
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
    if args.full:
        pool, test = split_dataset(len(ds), seed=0)
        tcfg = base.replace(time_budget_s=None if args.full_steps else args.full_budget,
                            max_steps=args.full_steps, seed=0, val_every=200, patience=1000)
        result, info = train_unet(mcfg, tcfg, [images[i] for i in pool],
                                  [ds.masks[i] for i in pool])
        dice = evaluate(result.build_model(), [images[i] for i in test],
                        [ds.masks[i] for i in test], ds.n_classes)
        curve = [(h["elapsed_s"], h["val_dice"]) for h in result.history
                 if h["val_dice"] is not None]
        row = {"seed": 0, "n": len(pool), "model": "unet_full", "dice": round(dice, 4),
               "val_curve": [(round(t), round(d, 4)) for t, d in curve], **info}
        out["runs"].append(row)
        print(json.dumps(row), flush=True)
    summary = {}
    for n in args.n:
        rows = [r for r in out["runs"] if r["n"] == n and r["model"] == "unet"]
        if rows:
            s = {"unet_median": float(np.median([r["dice"] for r in rows])),
                 "unet_mean": float(np.mean([r["dice"] for r in rows]))}
            if args.rf:
                s["rf_median"] = float(np.median([r["rf_dice"] for r in rows]))
                s["rf_mean"] = float(np.mean([r["rf_dice"] for r in rows]))
                s["unet_wins"] = sum(r["dice"] > r["rf_dice"] for r in rows)
            summary[str(n)] = s
    out["summary"] = summary
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
