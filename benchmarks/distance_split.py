"""More seed rules: h-maxima depth and a convexity gate (scratch, reads split_study's cache)."""
import json, sys
from pathlib import Path
import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima
from skimage.measure import regionprops
from skimage.segmentation import watershed
import distance_split_cache as S
from napari_activeseg.core import instances as I
from napari_activeseg.evaluation.dataset import load_dataset, split_dataset
from napari_activeseg.evaluation.objects import score_objects


def split2(mask, min_area, h=0.0, sol=None):
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
    field = np.where(mask, smooth, 0)
    peaks = peak_local_max(field, min_distance=max(2, round(radius / 2)), threshold_abs=0.5,
                           exclude_border=False)
    seeds = np.zeros(mask.shape, bool)
    seeds[tuple(peaks.T)] = True
    if h:
        seeds &= ndi.binary_dilation(h_maxima(field, max(0.5, h * radius)).astype(bool),
                                     iterations=1)
    markers = ndi.label(seeds)[0]
    multi = np.bincount(comps[seeds], minlength=n + 1) >= 2
    multi[0] = False
    if sol is not None:
        for r in regionprops(comps):
            if multi[r.label] and r.solidity >= sol:
                multi[r.label] = False
    if not multi.any():
        return comps
    region = multi[comps]
    parts = watershed(-smooth, ndi.label(seeds & region)[0], mask=region)
    return np.where(region, parts + n, comps)


V = {"current": lambda m, fl: I.instances_from_distance(m.astype(np.uint8), (1,), min_area=fl)[0],
     "h0.05": lambda m, fl: S.drop(split2(m, fl, h=0.05), fl),
     "h0.1": lambda m, fl: S.drop(split2(m, fl, h=0.1), fl),
     "sol0.9": lambda m, fl: S.drop(split2(m, fl, sol=0.9), fl),
     "sol0.95": lambda m, fl: S.drop(split2(m, fl, sol=0.95), fl),
     "h0.05sol0.9": lambda m, fl: S.drop(split2(m, fl, h=0.05, sol=0.9), fl)}

if __name__ == "__main__":
    name, out = sys.argv[1], Path("split_cache")
    ds = load_dataset(f"/work/shared/data/{name}")
    if sys.argv[2:] == ["truth"]:
        pool, test = split_dataset(len(ds), seed=0, test_fraction=0.3)
        truths = [ds.instances[i] for i in test]
        fl = I.min_object_area([ds.instances[i] for i in pool[:28]])
        row = {"file": f"{name}_truth"}
        for v, fn in V.items():
            s = score_objects([fn(t > 0, fl) for t in truths], truths)
            row[v] = (round(s.f1_50, 4), round(s.count_error, 3), s.splits, s.merges)
        print(json.dumps(row), flush=True)
        sys.exit()
    floors = json.loads((out / "floors.json").read_text())
    for f in sorted(out.glob(f"{name}_s*.npz")):
        z = np.load(f)
        test = z["test"]
        fl = floors.get(f.stem) or None
        preds = [z[f"arr_{j}"] for j in range(len(test))]
        truths = [ds.instances[i] for i in test]
        row = {"file": f.stem}
        for v, fn in V.items():
            s = score_objects([fn(p == 1, fl) for p in preds], truths)
            row[v] = (round(s.f1_50, 4), round(s.count_error, 3), s.splits, s.merges)
        print(json.dumps(row), flush=True)
