"""Does learning from the unreviewed pixels help at low annotation budgets? Paired measurement.

For every dataset and seed: the seed's pool/test split (``evaluation.dataset.split_dataset``),
random boxes of the project's automatic size (``auto_region_size``) drawn once, in one order,
until 1 % and then 2 % of the pool's pixels are reviewed. One shared first round trains on the
1 % boxes (no model exists before it, so nothing can be pseudo-labelled); then two arms continue
from that same model with the same boxes and the same steps, one with CEAL pseudo-labels
(``PseudoLabelConfig`` schedule defaults, confident pixels of the unreviewed parts of partly
reviewed images, and of at most as many unlabelled images as there are boxed images), one
without:

    round 1   1 % boxes                       shared
    round 2   1 % boxes (no new labels)       sup | semi     <- compared at 1 %
    round 3   2 % boxes                       sup | semi     <- compared at 2 %

``--arms sup consist`` runs the consistency arm instead (or beside): the same rounds with
``TrainConfig.consistency_weight = --consistency-weight`` (FixMatch-style consistency between
weak and strong views of crops of the unreviewed pixels and of unlabelled pool images,
``core.consistency``), every other setting the same.

Everything goes through the product (Project + ActiveLearningSession, default model and
preprocessing), with a fixed number of steps per round (``--steps``) so the result does not
depend on the machine's load. Test Dice: mean per-image foreground Dice
(``evaluation.dataset.mean_dice``) of ``session.predict_array`` on the raw test images.

    OMP_NUM_THREADS=1 python benchmarks/semi_supervised.py --out bench_out/semi \\
        --data ../shared/data/dsb2018_nuclei ../shared/data/chase_db1_vessels ... --seeds 0 1

Writes ``OUT/results.json`` (one row per dataset, seed, arm and budget; finished rows are kept
and skipped when the command is run again) and prints the paired table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def _boxes(ds, pool, size, rng):
    """Every window of every pool image, in one random order: [(index, box), ...]."""
    from napari_activeseg.core.strategies.regions import region_boxes

    out = [(i, b) for i in pool for b in region_boxes(ds.masks[i].shape, size=size)]
    order = rng.permutation(len(out))
    return [out[j] for j in order]


def _upto(windows, budget_px):
    """The shortest prefix of ``windows`` covering at least ``budget_px`` pixels."""
    chosen, px = [], 0
    for i, (y0, x0, y1, x1) in windows:
        if px >= budget_px:
            break
        chosen.append((i, (y0, x0, y1, x1)))
        px += (y1 - y0) * (x1 - x0)
    return chosen, px


def _by_image(chosen) -> dict[int, list]:
    """``[(index, box), ...]`` -> ``{index: [box, ...]}`` in first-seen order."""
    per_image: dict[int, list] = {}
    for i, box in chosen:
        per_image.setdefault(i, []).append(box)
    return per_image


def boxed_set(ds, chosen, image=None):
    """The training set of the boxes ``chosen``: ``(per_image, images, labels, reviewed)``,
    the truth inside each image's boxes and 0 (unreviewed) elsewhere; ``image(i)`` the
    network input of dataset image ``i`` (default: ``ds.images[i]``)."""
    from napari_activeseg.core.review import box_mask

    per_image = _by_image(chosen)
    imgs, labs, revs = [], [], []
    for i, boxes in per_image.items():
        rev = box_mask(ds.masks[i].shape, boxes)
        imgs.append(ds.images[i] if image is None else image(i))
        labs.append(np.where(rev, ds.masks[i], 0).astype(np.int64))
        revs.append(rev)
    return per_image, imgs, labs, revs


def fit_forest(ds, imgs, labs, revs, seed):
    """The suite's random forest (``evaluation.rf``, the benchmark's cap on sampled pixels)
    fitted on a boxed training set."""
    from napari_activeseg.evaluation.config import BenchmarkConfig
    from napari_activeseg.evaluation.rf import RandomForestSegmenter

    cap = BenchmarkConfig.__dataclass_fields__["rf_samples"].default
    return RandomForestSegmenter(
        seed=seed, max_samples_per_image=max(1, min(20000, cap // len(imgs)))).fit(
        imgs, labs, revs, n_classes=ds.n_classes)


def _submit(session, ds, by_name, chosen):
    from napari_activeseg.core.review import box_mask

    for i, boxes in _by_image(chosen).items():
        mask = ds.masks[i]
        session.submit(by_name[ds.names[i]], mask, box_mask(mask.shape, boxes))


def _dice(session, ds, test):
    from napari_activeseg.core.imageio import read_image
    from napari_activeseg.evaluation.dataset import mean_dice

    preds = []
    for i in test:
        raw = read_image(ds.root / "images" / ds.names[i])
        preds.append(session.predict_array(raw, channel_axis=-1 if raw.ndim == 3 else None,
                                           maps=()).labels)
    return float(mean_dice(preds, [ds.masks[i] for i in test], ds.n_classes))


def run_one(data: Path, seed: int, out: Path, steps: int, rows: list[dict], save,
            arms=("sup", "semi"), consistency_weight: float = 1.0) -> None:
    from napari_activeseg.core.config import TrainConfig
    from napari_activeseg.core.progress import run_to_end
    from napari_activeseg.core.project import Project
    from napari_activeseg.core.session import ActiveLearningSession
    from napari_activeseg.core.strategies import PseudoLabelConfig
    from napari_activeseg.core.strategies.regions import auto_region_size
    from napari_activeseg.evaluation.dataset import load_dataset, split_dataset

    name = data.name
    if any(r["dataset"] == name and r["seed"] == seed for r in rows):
        return
    ds = load_dataset(data)
    pool, test = split_dataset(len(ds), seed=seed)
    size = auto_region_size([ds.masks[i].shape for i in pool])
    pool_px = sum(ds.masks[i].size for i in pool)
    windows = _boxes(ds, pool, size, np.random.default_rng(seed))
    b1, px1 = _upto(windows, 0.01 * pool_px)
    b2, px2 = _upto(windows, 0.02 * pool_px)
    classes = ("background", *(f"class {k}" for k in range(1, ds.n_classes)))
    train = TrainConfig(max_steps=steps, time_budget_s=None, seed=seed)
    base = out / "runs" / f"{name}_s{seed}"
    shutil.rmtree(base, ignore_errors=True)
    t0 = time.perf_counter()
    with Project.create(base / "shared", images=[ds.root / "images" / ds.names[i] for i in pool],
                        classes=classes) as project:
        by_name = {r.name: r.id for r in project.images()}
        session = ActiveLearningSession(project, train_config=train, strategy="random",
                                        seed=seed)
        _submit(session, ds, by_name, b1)
        run_to_end(session.train())
        shared_dice = _dice(session, ds, test)
    found = []
    for arm in arms:
        folder = base / arm
        shutil.copytree(base / "shared", folder)
        with Project.open(folder) as project:
            # as many pseudo-labelled images as images with reviewed boxes at most, so that a
            # weak first model's guesses on a 200-image pool do not drown three boxes of truth
            n_boxed = len({i for i, _ in b1})
            pseudo = PseudoLabelConfig(max_images=n_boxed) if arm == "semi" else None
            consist = train.replace(consistency_weight=consistency_weight) \
                if arm == "consist" else None
            session = ActiveLearningSession(project, strategy="random", seed=seed,
                                            pseudo_labels=pseudo, train_config=consist)
            summary = run_to_end(session.train())
            d1 = _dice(session, ds, test)
            _submit(session, ds, by_name, b2[len(b1):])
            summary2 = run_to_end(session.train())
            d2 = _dice(session, ds, test)
        found.append({"dataset": name, "seed": seed, "arm": arm, "region_size": size,
                      "pool_px": int(pool_px), "px_1": int(px1), "px_2": int(px2),
                      "boxes_1": len(b1), "boxes_2": len(b2), "dice_round1": shared_dice,
                      "dice_1pct": d1, "dice_2pct": d2, "steps": steps,
                      "n_pseudo": [summary.n_pseudo, summary2.n_pseudo],
                      "notes": summary.notes + summary2.notes})
    for r in found:
        r["seconds"] = round(time.perf_counter() - t0, 1)
    rows.extend(found)
    save()
    shutil.rmtree(base, ignore_errors=True)


def paired_table(rows: list[dict], key: str, base, arm) -> str:
    """Per dataset and seed, Dice at 1 % and 2 % of the rows with ``row[key] == base`` and
    ``== arm`` and their difference; then the median difference per dataset over seeds and
    how many seeds went up."""
    def name(v):
        return v if isinstance(v, str) else f"p{v:g}"

    b_name, a_name = name(base), name(arm)
    lines = [(f"{'dataset':20s} {'seed':>4s} {'1% ' + b_name:>9s} {'1% ' + a_name:>10s} "
              f"{'diff':>7s} {'2% ' + b_name:>9s} {'2% ' + a_name:>10s} {'diff':>7s}")]
    by: dict = {}
    for r in rows:
        by.setdefault((r["dataset"], r["seed"]), {})[r[key]] = r
    diffs: dict[str, dict[str, list[float]]] = {}
    for (ds, seed), arms in sorted(by.items()):
        if base not in arms or arm not in arms:
            continue
        a, b = arms[base], arms[arm]
        d1, d2 = b["dice_1pct"] - a["dice_1pct"], b["dice_2pct"] - a["dice_2pct"]
        diffs.setdefault(ds, {"1": [], "2": []})
        diffs[ds]["1"].append(d1)
        diffs[ds]["2"].append(d2)
        lines.append(f"{ds:20s} {seed:4d} {a['dice_1pct']:9.3f} {b['dice_1pct']:10.3f} "
                     f"{d1:+7.3f} {a['dice_2pct']:9.3f} {b['dice_2pct']:10.3f} {d2:+7.3f}")
    lines.append("")
    lines.append(f"median paired difference ({a_name} - {b_name}) over seeds; seeds up")
    for ds, d in sorted(diffs.items()):
        lines.append(f"{ds:20s} 1%: {np.median(d['1']):+.3f} ({sum(x > 0 for x in d['1'])}/"
                     f"{len(d['1'])})   2%: {np.median(d['2']):+.3f} "
                     f"({sum(x > 0 for x in d['2'])}/{len(d['2'])})")
    return "\n".join(lines)


def table(rows: list[dict], arm: str = "semi") -> str:
    """The paired table of ``sup`` against ``arm``."""
    return paired_table(rows, "arm", "sup", arm)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--arms", nargs="+", default=["sup", "semi"],
                    choices=["sup", "semi", "consist"])
    ap.add_argument("--consistency-weight", type=float, default=1.0)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    res = args.out / "results.json"
    rows = json.loads(res.read_text()) if res.exists() else []

    def save():
        tmp = res.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(res)

    for seed in args.seeds:
        for data in args.data:
            t = time.perf_counter()
            run_one(data.resolve(), seed, args.out, args.steps, rows, save, tuple(args.arms),
                    args.consistency_weight)
            print(f"{data.name} seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
    for arm in [a for a in args.arms if a != "sup"]:
        print(table(rows, arm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
