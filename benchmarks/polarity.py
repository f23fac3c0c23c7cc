"""Polarity per image, per project, or learnt: which preprocessing gives the better U-Net.

For every dataset and seed: split 70/30 into pool and test (``split_dataset(seed)``), take the
first ``--n`` images of ``default_rng(seed).permutation(pool)`` as the labelled images (the same
for every variant: the comparison is paired), train the core U-Net from scratch with the
product defaults for a fixed ``--steps`` optimiser steps, and score the mean per-image
foreground Dice on the test images. The variants differ only in what the network sees:

- ``auto``: the old per-image rule (an image whose normalised median is above 0.5 is inverted);
- ``pool``: one rule for the whole dataset, decided from the seed's pool images
  (:func:`~napari_activeseg.core.preprocess.decide_polarity`) and applied to the test images
  too -- what a project does with a new image;
- ``pool_aug``: ``pool`` plus random inversion as a training augmentation (``invert_p``);
- ``none_aug``: never invert, random inversion in training (the network made indifferent);
- ``pool_margin``: ``pool``, except that an image whose background level is unmistakably of
  the other kind (beyond 0.5 +- ``--margin``: above 0.75 in a pool that is not inverted, below
  0.25 in one that is) gets the other rule -- one rule per project with confident exceptions,
  for pools that really mix modalities (fluorescence and brightfield).

When two variants feed the network exactly the same images with the same augmentation (e.g.
a fluorescence set where no image is inverted by either rule), the run is not repeated: the
training is deterministic for the seed, so the result is shared (``shared_with`` in the JSON).

Run by hand, with one thread (about 40 runs of 100 steps: an hour on one loaded CPU core)::

    OMP_NUM_THREADS=1 python benchmarks/polarity.py --steps 100 --n 4 --seeds 0,1,2 \
        --json bench_out/polarity.json

``--summary`` prints the table of an existing JSON.

The JSON is written after every run and a run already in it is skipped, so an interrupted
benchmark continues where it stopped; ``--variants`` adds variants to an existing file.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from napari_activeseg.evaluation.dataset import load_dataset, split_dataset
from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.inference import predict
from napari_activeseg.core.losses import dice_score
from napari_activeseg.core.preprocess import background_level, decide_polarity
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.training import Trainer

DATASETS = ("axondeepseg_sem", "chase_db1_vessels", "dsb2018_nuclei", "wbc_multiclass",
            "bbbc039_nuclei")
VARIANTS = ("auto", "pool", "pool_aug", "none_aug", "pool_margin")


def _list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def variant_flags(variant: str, levels: np.ndarray, pool_rule: str,
                  margin: float = 0.25) -> np.ndarray:
    """Per image of the dataset, whether the variant inverts it."""
    bright = levels > 0.5
    if variant == "auto":
        return bright.copy()
    if variant == "pool_margin":
        if pool_rule == "invert":
            return ~(levels < 0.5 - margin)
        return levels > 0.5 + margin
    if variant == "pool" or variant == "pool_aug":
        return np.full(bright.shape, pool_rule == "invert")
    return np.zeros(bright.shape, bool)


def per_image_dice(model, images, masks) -> list[float]:
    cfg = InferenceConfig(tile_size=512, overlap=32, batch_size=2, device="cpu")
    return [float(dice_score(predict(model, img, config=cfg).labels, m))
            for img, m in zip(images, masks, strict=True)]


def run_dataset(root: Path, args, doc: dict, save) -> None:
    name = root.name
    ds = load_dataset(root)
    levels = np.array([background_level(im) for im in ds.images])
    bright = levels > 0.5
    entry = doc["datasets"].setdefault(name, {"runs": {}})
    entry.update({
        "n_images": len(ds), "n_classes": ds.n_classes, "in_channels": ds.in_channels,
        "background_levels": [round(float(v), 4) for v in levels],
        "auto_inverts": int(bright.sum()),
        "pool_rule_all_images": decide_polarity(ds.images),
        "names": ds.names,
    })
    for seed in args.seeds:
        pool, test = split_dataset(len(ds), seed=seed)
        labelled = [int(i) for i in np.random.default_rng(seed).permutation(pool)[: args.n]]
        pool_rule = decide_polarity([ds.images[i] for i in pool])
        seed_info = entry.setdefault("seeds", {}).setdefault(str(seed), {})
        seed_info.update({
            "labelled": labelled, "test": test, "pool_rule": pool_rule,
            "auto_inverts_labelled": int(bright[labelled].sum()),
            "auto_inverts_test": int(bright[test].sum()), "n_test": len(test),
        })
        # runs of this seed already done, by what the network saw: identical ones are shared
        done: dict[str, str] = {r["ident"]: k for k, r in entry["runs"].items()
                                if r["seed"] == seed and "shared_with" not in r}
        for variant in args.variants:
            key = f"{variant}/{seed}"
            flags = variant_flags(variant, levels, pool_rule, args.margin)
            invert_p = args.invert_p if variant.endswith("_aug") else 0.0
            ident = repr((flags[labelled].tolist(), flags[test].tolist(), invert_p))
            if key in entry["runs"]:
                continue
            if ident in done:
                src = entry["runs"][done[ident]]
                entry["runs"][key] = {**src, "variant": variant, "shared_with": done[ident]}
                print(f"{name} {key}: same inputs as {done[ident]} -> dice {src['dice']:.4f}",
                      flush=True)
                save()
                continue
            images = [(1.0 - im).astype(np.float32) if f else im
                      for im, f in zip(ds.images, flags, strict=True)]
            rule = pool_rule if variant.startswith("pool") else (
                "auto" if variant == "auto" else "none")
            mcfg = ModelConfig(in_channels=ds.in_channels, n_classes=ds.n_classes, polarity=rule)
            tcfg = TrainConfig(max_steps=args.steps, time_budget_s=None, seed=seed,
                               invert_p=invert_p, device="cpu", num_threads=1)
            t0 = time.perf_counter()
            result = run_to_end(Trainer(mcfg, tcfg).fit([images[i] for i in labelled],
                                                        [ds.masks[i] for i in labelled]))
            train_s = time.perf_counter() - t0
            dices = per_image_dice(result.build_model(), [images[i] for i in test],
                                   [ds.masks[i] for i in test])
            entry["runs"][key] = {
                "variant": variant, "seed": seed, "dice": float(np.mean(dices)),
                "per_image": dices, "inverted_test": int(flags[test].sum()),
                "inverted_labelled": int(flags[labelled].sum()), "invert_p": invert_p,
                "rule": rule, "steps": result.steps, "train_s": round(train_s, 1),
                "eval_s": round(time.perf_counter() - t0 - train_s, 1), "ident": ident,
            }
            done[ident] = key
            print(f"{name} {key}: dice {np.mean(dices):.4f} (train {train_s:.0f} s, "
                  f"inverted test {int(flags[test].sum())}/{len(test)})", flush=True)
            save()


def _paired(by: dict, variant: str, ref: str) -> str:
    """Mean paired difference of ``variant`` minus ``ref`` over their common seeds."""
    if ref not in by or ref == variant:
        return "-"
    common = sorted(set(by[variant]) & set(by[ref]))
    diff = np.array([by[variant][s]["dice"] - by[ref][s]["dice"] for s in common])
    return f"{np.mean(diff):+.4f} ({int((diff > 0).sum())}/{len(diff)} ahead)"


def summarise(doc: dict) -> str:
    """The markdown table: per dataset and variant, test Dice over seeds."""
    lines = [("| dataset | variant | median Dice | min-max | mean | paired vs auto | "
              "paired vs pool | inverted (labelled/test) per seed |"),
             "|---|---|---|---|---|---|---|---|"]
    for name, entry in doc["datasets"].items():
        by: dict[str, dict[int, dict]] = {}
        for r in entry.get("runs", {}).values():
            by.setdefault(r["variant"], {})[r["seed"]] = r
        for variant in VARIANTS:
            if variant not in by:
                continue
            d = by[variant]
            seeds = sorted(d)
            vals = np.array([d[s]["dice"] for s in seeds])
            inv = ", ".join(f"{d[s]['inverted_labelled']}/{d[s]['inverted_test']}"
                            for s in seeds)
            lines.append(f"| {name} | {variant} | {np.median(vals):.4f} | {vals.min():.4f}-"
                         f"{vals.max():.4f} | {vals.mean():.4f} | {_paired(by, variant, 'auto')}"
                         f" | {_paired(by, variant, 'pool')} | {inv} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--datasets", type=_list, default=list(DATASETS))
    p.add_argument("--variants", type=_list, default=list(VARIANTS))
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--n", type=int, default=4, help="labelled pool images per seed")
    p.add_argument("--seeds", type=lambda t: [int(v) for v in _list(t)], default=[0, 1, 2])
    p.add_argument("--invert-p", type=float, default=0.5)
    p.add_argument("--margin", type=float, default=0.25,
                   help="pool_margin: distance from 0.5 beyond which an image is an exception")
    p.add_argument("--json", type=Path, default=Path("bench_out/polarity.json"))
    p.add_argument("--summary", action="store_true", help="print the table of --json and exit")
    args = p.parse_args(argv)
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    torch.set_num_threads(1)
    doc = json.loads(args.json.read_text()) if args.json.exists() else {"datasets": {}}
    if args.summary:
        print(summarise(doc))
        return 0
    doc["config"] = {"steps": args.steps, "n": args.n, "seeds": args.seeds,
                     "invert_p": args.invert_p, "margin": args.margin, "threads": 1,
                     "machine": platform.processor() or platform.machine(),
                     "train_defaults": TrainConfig().to_dict()}
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def save():
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(args.json)

    t0 = time.perf_counter()
    for name in args.datasets:
        run_dataset(args.data_root / name, args, doc, save)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    print(summarise(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
