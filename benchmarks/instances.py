"""Which instance formulation separates nuclei best: measured on the two nuclei sets.

On each dataset (``/work/shared/data/<name>``, with ``instances/``) one split (seed 0, 30 %
test) of at most ``--max-images`` images; the first ``--labelled`` pool images are labelled.
Two U-Nets of the same size train on them for the same ``--steps`` (same seed, patches,
schedule), and each test image becomes objects in three ways:

``boundary``      the 3-class formulation (``core.instances``, the project default): a boundary
                  output for the nucleus class, trained on ``boundary_target``, seeded
                  watershed (``instances_from_boundary``);
``distance``      the 2-class (semantic) model, split by a distance-transform watershed
                  (``instances_from_distance``);
``components``    connected components of the 2-class model's class map (today's output).

Reported per dataset: object F1 at IoU 0.5, mean F1 over IoU 0.5-0.9, count error
(``evaluation.objects.score_objects``), pixel Dice of the class map, and the post-processing
time per megapixel. The ``--out`` JSON holds every figure.

Measured 2026-12-01 (2-core CPU shared with other jobs, load 7-11, OMP_NUM_THREADS=1; at most
40 images per set, 12 labelled, 12 test images, 200 steps of 8 x 96² patches, seed 0)::

                      F1@0.5  mean F1  count err  Dice   post-processing
    dsb2018  boundary  0.775   0.495    0.156    0.883   1.07 s/Mpx
             distance  0.727   0.455    0.226    0.866   0.79 s/Mpx
             components 0.531  0.341    0.364
    bbbc039  boundary  0.908   0.781    0.092    0.929   0.94 s/Mpx
             distance  0.929   0.876    0.076    0.964   0.66 s/Mpx
             components 0.814  0.753    0.159

Both beat connected components clearly on both sets. The default is "boundary": it has the
higher object F1 at IoU 0.5 over the two sets (0.842 vs 0.828), ahead by 0.05 on DSB 2018
(touching nuclei of many kinds) and behind by 0.02 on BBBC039, where the semantic model's
class map was better (Dice 0.964 vs 0.929) and so its objects' IoU (mean F1 0.876 vs 0.781).
One seed and 12 test images: the margin is small; ``instance_formulation = "distance"``
switches a project to the other. The first version of the boundary post-processing (seeds =
connected components of the interior) scored 0.586 on DSB 2018 (it merged nuclei whose
boundary was faint): splitting the interior by its distance transform before growing the
cores back is what the table measures. Time a training step with and without the boundary
output with ``--head-cost``.

    OMP_NUM_THREADS=1 python benchmarks/instances.py --out bench_out/instances.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_activeseg.core import instances as ins
from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.inference import predict
from napari_activeseg.core.losses import dice_score
from napari_activeseg.core.preprocess import apply_polarity, decide_polarity
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.training import Trainer
from napari_activeseg.evaluation.dataset import load_dataset, split_dataset
from napari_activeseg.evaluation.objects import score_objects

DATA = Path("/work/shared/data")


def predictions(name: str, args: argparse.Namespace) -> dict:
    """Train both models on the labelled images and predict the test set: the probabilities
    of every output (cached in ``--cache`` so the post-processing can be re-measured)."""
    cache = None if args.cache is None else args.cache / f"{name}_{args.steps}.npz"
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=True) as z:
            return z["data"].item()
    ds = load_dataset(DATA / name, max_images=args.max_images)
    assert ds.instances is not None, f"{name} has no instances/"
    pool, test = split_dataset(len(ds), seed=0, test_fraction=0.3)
    train = pool[: args.labelled]
    polarity = decide_polarity(ds.images)
    images = [apply_polarity(im, polarity) for im in ds.images]
    masks = [(m > 0).astype(np.uint8) for m in ds.masks]
    tcfg = TrainConfig(max_steps=args.steps, time_budget_s=None, seed=0, num_threads=1,
                       val_fraction=0.0, batch_size=args.batch, patch_size=args.patch)
    base = ModelConfig(in_channels=ds.in_channels, n_classes=2, polarity=polarity)
    infer = InferenceConfig(device="cpu")
    data: dict = {"info": {"dataset": name, "n_images": len(ds), "labelled": len(train),
                           "test": len(test), "steps": args.steps, "batch": args.batch,
                           "patch": args.patch},
                  "truth": [ds.instances[i] for i in test], "masks": [masks[i] for i in test]}
    for form, cfg in (("boundary", base.replace(boundary_classes=(1,))), ("semantic", base)):
        targets = [ins.boundary_target(masks[i], ds.instances[i], 2, cfg.boundary_classes)
                   if cfg.boundary_classes else masks[i] for i in train]
        t0 = time.perf_counter()
        result = run_to_end(Trainer(cfg, tcfg).fit([images[i] for i in train], targets))
        data["info"][f"{form}_train_s"] = round(time.perf_counter() - t0, 1)
        data["info"][f"{form}_steps"] = result.steps
        model = result.build_model()
        net = ins._AllOutputs(model) if cfg.boundary_classes else model
        data[form] = [predict(net, images[i], config=infer, maps=()).probs.astype(np.float16)
                      for i in test]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, data=np.array(data, dtype=object))
    return data


def run_dataset(name: str, args: argparse.Namespace) -> dict:
    data = predictions(name, args)
    out = dict(data["info"])
    preds: dict[str, list[np.ndarray]] = {"boundary": [], "distance": [], "components": []}
    post_s = {"boundary": 0.0, "distance": 0.0}
    dice = {"boundary": [], "semantic": []}
    pixels = 0
    for full, sem, mask in zip(data["boundary"], data["semantic"], data["masks"], strict=True):
        full, sem = full.astype(np.float32), sem.astype(np.float32)
        pixels += mask.size
        t0 = time.perf_counter()
        ids, _ = ins.instances_from_boundary(full, 2, (1,))
        post_s["boundary"] += time.perf_counter() - t0
        preds["boundary"].append(ids)
        dice["boundary"].append(dice_score(ins.fold_probabilities(full, 2, (1,)).argmax(0),
                                           mask))
        labels = sem.argmax(0)
        t0 = time.perf_counter()
        ids, _ = ins.instances_from_distance(labels, (1,))
        post_s["distance"] += time.perf_counter() - t0
        preds["distance"].append(ids)
        preds["components"].append(ndi.label(labels == 1)[0])
        dice["semantic"].append(dice_score(labels, mask))
    for method, p in preds.items():
        s = score_objects(p, data["truth"])
        out[method] = {"f1_50": round(s.f1_50, 4), "mean_f1": round(s.mean_f1, 4),
                       "count_error": round(s.count_error, 4), "n_pred": s.n_pred,
                       "n_true": s.n_true, "merges": s.merges, "splits": s.splits}
    for method, total in post_s.items():
        out[method]["post_s_per_mpx"] = round(total / (pixels / 1e6), 3)
    out["dice"] = {k: round(float(np.mean(v)), 4) for k, v in dice.items()}
    return out


def head_cost(reps: int = 15, batch: int = 8, patch: int = 96) -> dict:
    """Median seconds of one optimiser step without and with the boundary output, measured
    alternately on the same batch (so load changes hit both alike)."""
    import torch

    from napari_activeseg.core.model import UNet

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, patch, patch), dtype=np.float32)
    y = rng.integers(0, 3, (batch, patch, patch))
    ign = np.zeros(y.shape, bool)
    runs = {}
    for name, bc in (("semantic", ()), ("boundary", (1,))):
        model = UNet(ModelConfig(in_channels=1, n_classes=2, boundary_classes=bc)).train()
        model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        runs[name] = (model, opt, scaler, y if bc else np.minimum(y, 1))
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for name, (model, opt, scaler, target) in runs.items():
            t0 = time.perf_counter()
            Trainer._step(model, opt, scaler, torch.device("cpu"), x, target, ign, None)
            times[name].append(time.perf_counter() - t0)
    return {f"{k}_step_s": round(float(np.median(v[2:])), 4) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["dsb2018_nuclei", "bbbc039_nuclei"])
    parser.add_argument("--max-images", type=int, default=60)
    parser.add_argument("--labelled", type=int, default=12)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--head-cost", action="store_true",
                        help="only time a training step with and without the boundary output")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for the test probabilities (re-scoring skips training)")
    args = parser.parse_args()
    if args.head_cost:
        print(json.dumps(head_cost(batch=args.batch, patch=args.patch)))
        return
    results = []
    for name in args.datasets:
        res = run_dataset(name, args)
        results.append(res)
        print(json.dumps(res), flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
