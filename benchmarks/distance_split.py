"""The distance watershed's seed rule (``core.instances.SEED_DYNAMIC``) scored offline on the
test predictions of the models a ``benchmarks/objects.py`` run saved (semantic, ``random``).

    # once per dataset: predict the test images of every saved model, and the object floor
    # each round's session used (from that round's labels)
    OMP_NUM_THREADS=1 python benchmarks/distance_split.py cache OUT/dsb2018_nuclei/runs \\
        ../shared/data/dsb2018_nuclei CACHE
    # object F1@0.5 / count error / splits / merges per saved model, per SEED_DYNAMIC value
    OMP_NUM_THREADS=1 python benchmarks/distance_split.py eval - ../shared/data/dsb2018_nuclei CACHE
    # the same rule on the true foreground of seed 0's test images
    OMP_NUM_THREADS=1 python benchmarks/distance_split.py truth - ../shared/data/dsb2018_nuclei CACHE

Figures: docs/2026-12-03-distance-split.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from skimage.measure import label as connected

from napari_activeseg.core import instances as ins
from napari_activeseg.core.inference import predict
from napari_activeseg.core.model import build_model
from napari_activeseg.core.preprocess import apply_polarity
from napari_activeseg.core.project import Project
from napari_activeseg.evaluation.dataset import load_dataset, split_dataset
from napari_activeseg.evaluation.objects import score_objects

DYNAMICS = (0.0, 0.05, 0.1, 0.2)  # 0: seeds by their spacing alone (the rule before)


def cache(run_root: Path, data: Path, out: Path) -> None:
    ds = load_dataset(data)
    floors_file = out / "floors.json"
    floors = json.loads(floors_file.read_text()) if floors_file.exists() else {}
    for run in sorted(run_root.glob("random_s*")):
        seed = int(run.name.split("_s")[1])
        _, test = split_dataset(len(ds), seed=seed, test_fraction=0.3)
        project = Project.open(run)
        for info in project.models():
            key = f"{data.name}_s{seed}_{info.version}"
            state, mc, meta = project.load_model(info.version)
            # models saved before af6747a lack the floor their session used: from the labels
            pieces, reviewed = [], []
            for image_id in meta["labelled_ids"]:
                lab, rev = project.load_labels(image_id)
                pieces.append(connected(np.asarray(lab), background=0, connectivity=1))
                reviewed.append(rev)
            floors[key] = mc.min_object_area or ins.min_object_area(pieces, reviewed)
            f = out / f"{key}.npz"
            if f.exists():
                continue
            model = build_model(mc)
            model.load_state_dict(state)
            model.eval()
            preds = [predict(model, apply_polarity(ds.images[i], mc.polarity,
                                                   margin=mc.polarity_margin),
                             mode="single", maps=()).labels.astype(np.uint8) for i in test]
            np.savez_compressed(f, *preds, test=np.asarray(test))
            print("cached", f.name, flush=True)
        project.close()
    floors_file.write_text(json.dumps(floors, indent=1))


def scores(preds, truths, floor) -> dict[str, list]:
    row = {}
    for h in DYNAMICS:
        ins.SEED_DYNAMIC = h
        found = [ins.instances_from_distance(p, (1,), min_area=floor)[0] for p in preds]
        s = score_objects(found, truths)
        row[f"h{h}"] = [round(s.f1_50, 4), round(s.count_error, 3), s.splits, s.merges]
    return row


def evaluate(data: Path, out: Path) -> None:
    ds = load_dataset(data)
    floors = json.loads((out / "floors.json").read_text())
    for f in sorted(out.glob(f"{data.name}_s*.npz")):
        z = np.load(f)
        test = z["test"]
        preds = [(z[f"arr_{j}"] == 1).astype(np.uint8) for j in range(len(test))]
        row = scores(preds, [ds.instances[i] for i in test], floors.get(f.stem))
        print(json.dumps({"file": f.stem, **row}), flush=True)


def truth(data: Path) -> None:
    ds = load_dataset(data)
    pool, test = split_dataset(len(ds), seed=0, test_fraction=0.3)
    truths = [ds.instances[i] for i in test]
    floor = ins.min_object_area([ds.instances[i] for i in pool[:28]])
    row = scores([(t > 0).astype(np.uint8) for t in truths], truths, floor)
    print(json.dumps({"file": f"{data.name}_truth", **row}), flush=True)


if __name__ == "__main__":
    cmd, runs, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    out.mkdir(exist_ok=True, parents=True)
    torch.set_num_threads(1)
    {"cache": lambda: cache(runs, data, out), "eval": lambda: evaluate(data, out),
     "truth": lambda: truth(data)}[cmd]()
