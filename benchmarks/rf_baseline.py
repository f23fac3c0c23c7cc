"""Quality and speed of the random-forest baseline on N labelled images.

For every seed: split the dataset into pool and test (``split_dataset``, 70/30 by default), shuffle
the pool with ``default_rng(seed).permutation(pool)``, train ``RandomForestSegmenter`` on the first
N images of that order, predict every test image and report the mean per-image foreground Dice,
the fit time (features + forest) and the prediction time.

Run by hand, e.g.::

    PYTHONPATH=src python benchmarks/rf_baseline.py --data /work/shared/data/dsb2018_nuclei \
        --n 2,4,8 --seeds 0 --json logs/rf_baseline.json

Times are wall-clock on whatever else the machine is doing: compare them with care.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from napari_activeseg.evaluation.dataset import load_dataset, mean_dice, split_dataset
from napari_activeseg.evaluation.rf import RandomForestSegmenter


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 2,4,8, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/dsb2018_nuclei"),
                        help="folder with images/ and masks/ of the same file names")
    parser.add_argument("--n", type=_int_list, default=[2, 4, 8],
                        help="numbers of labelled pool images, comma-separated (default 2,4,8)")
    parser.add_argument("--seeds", type=_int_list, default=[0],
                        help="split/shuffle/forest seeds, comma-separated (default 0)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--trees", type=int, default=50, help="trees in the forest (default 50)")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--n-jobs", type=int, default=2, help="threads (default 2)")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    ds = load_dataset(args.data)
    load_s = time.perf_counter() - t0
    print(f"loaded {len(ds)} images ({ds.in_channels} channels, {ds.n_classes} classes) "
          f"from {args.data} in {load_s:.1f} s", flush=True)

    runs = []
    header = f"{'seed':>4} {'N':>3} {'dice':>6} {'fit s':>7} {'predict s':>9} {'ms/512²':>8}"
    print(header, flush=True)
    for seed in args.seeds:
        pool, test = split_dataset(len(ds), seed=seed, test_fraction=args.test_fraction)
        order = [int(i) for i in np.random.default_rng(seed).permutation(pool)]
        test_pixels = sum(ds.masks[i].size for i in test)
        for n in args.n:
            if n > len(order):
                print(f"skip N={n}: the pool has only {len(order)} images", flush=True)
                continue
            train = order[:n]
            seg = RandomForestSegmenter(n_estimators=args.trees, seed=seed, n_jobs=args.n_jobs)
            t = time.perf_counter()
            seg.fit([ds.images[i] for i in train], [ds.masks[i] for i in train],
                    n_classes=ds.n_classes)
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            preds = [seg.predict(ds.images[i]) for i in test]
            predict_s = time.perf_counter() - t
            dice = mean_dice(preds, [ds.masks[i] for i in test], ds.n_classes)
            ms_512 = 1000 * predict_s / test_pixels * 512 * 512
            runs.append(dict(
                seed=seed, n_labelled=n, dice=dice, fit_seconds=fit_s,
                predict_seconds=predict_s, predict_ms_per_512x512=ms_512,
                train_files=[ds.names[i] for i in train],
            ))
            print(f"{seed:>4} {n:>3} {dice:6.3f} {fit_s:7.1f} {predict_s:9.1f} {ms_512:8.0f}",
                  flush=True)

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        result = dict(
            config=config,
            model=repr(RandomForestSegmenter(n_estimators=args.trees, n_jobs=args.n_jobs)),
            dataset=dict(n_images=len(ds), in_channels=ds.in_channels, n_classes=ds.n_classes,
                         load_seconds=load_s),
            splits={str(seed): dict(zip(("pool", "test"), (
                [ds.names[i] for i in part]
                for part in split_dataset(len(ds), seed=seed, test_fraction=args.test_fraction)
            ))) for seed in args.seeds},
            runs=runs,
            machine=dict(python=sys.version.split()[0], platform=platform.platform()),
        )
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
