"""Offline: how the distance watershed's seed rule scores on saved models' test predictions."""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from napari_activeseg.core import instances as I
from napari_activeseg.core.inference import predict
from napari_activeseg.core.model import build_model
from napari_activeseg.core.preprocess import apply_polarity
from napari_activeseg.core.project import Project
from napari_activeseg.evaluation.dataset import load_dataset, split_dataset
from napari_activeseg.evaluation.objects import score_objects


def cache(run_root: Path, data: Path, out: Path):
    ds = load_dataset(data)
    for run in sorted(run_root.glob("random_s*")):
        seed = int(run.name.split("_s")[1])
        _, test = split_dataset(len(ds), seed=seed, test_fraction=0.3)
        p = Project.open(run)
        for info in p.models():
            f = out / f"{data.name}_s{seed}_{info.version}.npz"
            if f.exists():
                continue
            sd, mc, meta = p.load_model(info.version)
            # the floor the session used (not saved before af6747a): from the round's labels
            from skimage.measure import label as connected
            pieces, revs = [], []
            for iid in meta["labelled_ids"]:
                lab, rev = p.load_labels(iid)
                pieces.append(connected(np.asarray(lab), background=0, connectivity=1))
                revs.append(rev)
            floor = I.min_object_area(pieces, revs) or 0.0
            m = build_model(mc)
            m.load_state_dict(sd)
            m.eval()
            preds = []
            for i in test:
                img = apply_polarity(ds.images[i], mc.polarity, margin=mc.polarity_margin)
                preds.append(predict(m, img, mode="single", maps=()).labels.astype(np.uint8))
            np.savez_compressed(f, *preds, floor=np.float32(floor),
                                test=np.asarray(test))
            print("cached", f.name, flush=True)
        p.close()


def floors(run_root: Path, data: Path, out: Path):
    """The floor each saved model's session used (not saved before af6747a), from its
    round's labels; written to out/floors.json."""
    from skimage.measure import label as connected
    got = {}
    for run in sorted(run_root.glob("random_s*")):
        seed = int(run.name.split("_s")[1])
        p = Project.open(run)
        for info in p.models():
            _, _, meta = p.load_model(info.version)
            pieces, revs = [], []
            for iid in meta["labelled_ids"]:
                lab, rev = p.load_labels(iid)
                pieces.append(connected(np.asarray(lab), background=0, connectivity=1))
                revs.append(rev)
            got[f"{data.name}_s{seed}_{info.version}"] = I.min_object_area(pieces, revs)
        p.close()
    f = out / "floors.json"
    old = json.loads(f.read_text()) if f.exists() else {}
    f.write_text(json.dumps({**old, **got}, indent=1))
    print(got)


def split_variant(mask, min_area, rule, k):
    comps, n = ndi.label(mask)
    if not n:
        return comps
    dist = ndi.distance_transform_edt(mask).astype(np.float32)
    inscribed = np.zeros(n + 1, np.float32)
    np.maximum.at(inscribed, comps.ravel(), dist.ravel())
    sized = inscribed[1:]
    if min_area:
        whole = np.bincount(comps.ravel(), minlength=n + 1)[1:] >= min_area
        if whole.any():
            sized = sized[whole]
    radius = float(np.median(sized))
    smooth = ndi.gaussian_filter(dist, sigma=max(1.0, radius / 4))
    if rule == "md":
        peaks = peak_local_max(np.where(mask, smooth, 0), min_distance=max(2, round(radius * k)),
                               threshold_abs=0.5, exclude_border=False)
        seeds = np.zeros(mask.shape, bool)
        seeds[tuple(peaks.T)] = True
    else:  # h-maxima: a seed must rise k * radius above the saddle to its neighbour
        seeds = h_maxima(np.where(mask, smooth, 0), max(0.5, k * radius)).astype(bool) & mask
    markers = ndi.label(seeds)[0]
    parts = watershed(-smooth, markers, mask=mask)
    return parts


def drop(ids, floor):
    ids = ndi.label(ids > 0)[0] if False else ids
    return I._drop_small(ids, None, floor or None)


def evaluate(out: Path, data: Path, variants):
    ds = load_dataset(data)
    rows = []
    for f in sorted(out.glob(f"{data.name}_s*.npz")):
        z = np.load(f)
        test = z["test"]
        floor = json.loads((out / "floors.json").read_text()).get(f.stem) or None
        preds = [z[f"arr_{j}"] for j in range(len(test))]
        truths = [ds.instances[i] for i in test]
        row = {"file": f.stem}
        for name, fn in variants.items():
            inst = [fn(p == 1, floor) for p in preds]
            s = score_objects(inst, truths)
            row[name] = (round(s.f1_50, 4), round(s.count_error, 3), s.splits, s.merges)
        # the truth's own foreground through the same rule
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    cmd = sys.argv[1]
    run_root, data, out = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    out.mkdir(exist_ok=True, parents=True)
    torch.set_num_threads(1)
    if cmd == "floors":
        floors(run_root, data, out)
    elif cmd == "cache":
        cache(run_root, data, out)
    else:
        V = {"current": lambda m, fl: I.instances_from_distance(m.astype(np.uint8), (1,),
                                                                   min_area=fl)[0]}
        for k in (0.5, 0.75, 1.0):
            V[f"md{k}"] = lambda m, fl, k=k: drop(split_variant(m, fl, "md", k), fl)
        for k in (0.1, 0.2, 0.3):
            V[f"h{k}"] = lambda m, fl, k=k: drop(split_variant(m, fl, "h", k), fl)
        evaluate(out, data, V)
