"""How the distance head's objects are seeded (``core.instances.instances_from_distance_head``),
scored offline on the test predictions of the models a ``benchmarks/objects.py --runs
distance_head`` run saved (``random``), against the other post-processings of the same
model's outputs.

    # once per dataset: predict the test images of every saved model (class map with the
    # boundary output apart, and the predicted distance, both as uint8) and keep the floor
    OMP_NUM_THREADS=1 python benchmarks/distance_head_seeds.py cache \\
        OUT/dsb2018_nuclei_distance_head/runs ../shared/data/dsb2018_nuclei CACHE
    # the same for the boundary head's or the semantic run's models (folders
    # OUT/<set>_objects, OUT/<set>; a last argument "0,1" keeps those seeds)
    # object F1@0.5 / count error / splits / merges per saved model and rule (a last
    # argument "dist,rel" keeps those rules)
    OMP_NUM_THREADS=1 python benchmarks/distance_head_seeds.py eval - \\
        ../shared/data/dsb2018_nuclei CACHE

Rules (:data:`RULES`): ``rel`` the product's (cores where the distance is above half the
highest of their foreground region), ``abs`` above 0.5 everywhere, ``hX`` the h-maxima of the
distance with dynamic X, ``dist`` the distance-transform watershed of the same model's class
map (the "distance" formulation's post-processing, the distance output unused).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.morphology import h_maxima

from napari_activeseg.core import instances as ins
from napari_activeseg.core.inference import predict
from napari_activeseg.core.model import build_model
from napari_activeseg.core.preprocess import apply_polarity
from napari_activeseg.core.project import Project
from napari_activeseg.evaluation.dataset import load_dataset, split_dataset
from napari_activeseg.evaluation.objects import score_objects


def cache(run_root: Path, data: Path, out: Path, seeds: str = "") -> None:
    ds = load_dataset(data)
    tag = "_" + run_root.parent.name.split("_", 2)[-1] if run_root.parent.name.count("_") > 1 \
        else ""
    floors_file = out / "floors.json"
    floors = json.loads(floors_file.read_text()) if floors_file.exists() else {}
    for run in sorted(run_root.glob("random_s*")):
        seed = int(run.name.split("_s")[1])
        if seeds and str(seed) not in seeds.split(","):
            continue
        _, test = split_dataset(len(ds), seed=seed, test_fraction=0.3)
        project = Project.open(run, read_only=True)
        for info in project.models():
            key = f"{data.name}{tag}_s{seed}_{info.version}"
            state, mc, _ = project.load_model(info.version)
            floors[key] = mc.min_object_area
            f = out / f"{key}.npz"
            if f.exists():
                continue
            model = build_model(mc)
            model.load_state_dict(state)
            model.eval()
            arrays = []
            for i in test:
                image = apply_polarity(ds.images[i], mc.polarity, margin=mc.polarity_margin)
                full = predict(ins._AllOutputs(model), image, mode="single", maps=()).probs
                if mc.distance_outputs:
                    probs, dist = ins._split_outputs(full, mc)
                else:  # a boundary or semantic model: only the "dist" rule means anything
                    probs, dist = full, np.zeros((1, *full.shape[1:]), np.float32)
                arrays += [probs.argmax(0).astype(np.uint8),
                           np.round(dist[0] * 255).astype(np.uint8)]
            np.savez_compressed(f, *arrays, test=np.asarray(test))
            print("cached", f.name, flush=True)
        project.close()
    floors_file.write_text(json.dumps(floors, indent=1))


def _probs(cls3: np.ndarray) -> np.ndarray:
    """One-hot (3, H, W) probabilities from the cached argmax (background, class, boundary)."""
    return np.stack([(cls3 == k).astype(np.float32) for k in range(3)])


def _hmax(cls3: np.ndarray, dist: np.ndarray, floor, h: float) -> np.ndarray:
    fg = cls3 > 0
    seeds, _ = ndi.label(h_maxima(np.where(fg, dist, 0.0), h).astype(bool) & fg)
    return ins._drop_small(ins._grow(seeds, fg, 1.0 - dist), None, floor)


def _abs(cls3: np.ndarray, dist: np.ndarray, floor) -> np.ndarray:
    fg = cls3 > 0
    seeds, _ = ndi.label(fg & (dist > 0.5))
    return ins._drop_small(ins._grow(seeds, fg, 1.0 - dist), None, floor)


RULES = {
    "rel": lambda c, d, f: ins.instances_from_distance_head(_probs(c), d[None], 2, (1,),
                                                             min_area=f)[0],
    "abs": _abs,
    "h0.1": lambda c, d, f: _hmax(c, d, f, 0.1),
    "h0.2": lambda c, d, f: _hmax(c, d, f, 0.2),
    "dist": lambda c, d, f: ins.instances_from_distance((c > 0).astype(np.uint8), (1,),
                                                        min_area=f)[0],
}


def evaluate(data: Path, out: Path, rules: str = "") -> None:
    ds = load_dataset(data)
    floors = json.loads((out / "floors.json").read_text())
    for f in sorted(out.glob(f"{data.name}*_s*.npz")):
        z = np.load(f)
        test = z["test"]
        cls3 = [z[f"arr_{2 * j}"] for j in range(len(test))]
        dist = [z[f"arr_{2 * j + 1}"].astype(np.float32) / 255 for j in range(len(test))]
        truths = [ds.instances[i] for i in test]
        row = {}
        for name, rule in RULES.items():
            if rules and name not in rules.split(","):
                continue
            s = score_objects([rule(c, d, floors.get(f.stem)) for c, d in zip(cls3, dist)],
                              truths)
            row[name] = [round(s.f1_50, 4), round(s.count_error, 3), s.splits, s.merges]
        print(json.dumps({"file": f.stem, **row}), flush=True)


if __name__ == "__main__":
    cmd, runs, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    out.mkdir(exist_ok=True, parents=True)
    torch.set_num_threads(1)
    seeds = sys.argv[5] if len(sys.argv) > 5 else ""
    {"cache": lambda: cache(runs, data, out, seeds), "eval": lambda: evaluate(data, out, seeds)}[cmd]()
