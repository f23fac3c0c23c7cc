"""The project's object floor: the smallest object worth keeping, from the labelled objects.

Decided at training and saved with the model (``ModelConfig.min_object_area``); the instance
post-processing (:mod:`~napari_activeseg.core.instances`) drops objects under it. Here on its
own, with numpy and scipy only, so the project stores can decide it for a model saved without
one (:meth:`~napari_activeseg.core.project._instances.InstanceStore.object_floor`) without
importing the learning code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["MIN_AREA_FRACTION", "MIN_AREA_OBJECTS", "min_object_area"]

#: Objects below this fraction of the labelled objects' 5th-percentile area are dropped.
MIN_AREA_FRACTION = 0.25
#: Labelled whole objects needed before :func:`min_object_area` decides a floor.
MIN_AREA_OBJECTS = 5


def min_object_area(objects: Sequence[np.ndarray],
                    reviewed: Sequence[np.ndarray | None] | None = None) -> float | None:
    """The smallest object area worth keeping, from labelled objects, in pixels.

    :data:`MIN_AREA_FRACTION` of the 5th percentile of the areas of the labelled objects that
    are whole: not touching the image's edge nor an unreviewed pixel (a box or a scribble
    cuts objects). None while fewer than :data:`MIN_AREA_OBJECTS` whole objects are known
    (post-processing then uses only its per-image rule).

    Parameters
    ----------
    objects : sequence of (H, W) int ndarray
        One id per object (instance labels), 0 elsewhere. A class map's connected components
        do as well (touching objects then count as one, which only raises the areas).
    reviewed : sequence of (H, W) bool ndarray or None, optional
        The pixels the user reviewed in each image (None: all of it).
    """
    areas: list[np.ndarray] = []
    for k, ids in enumerate(objects):
        ids = np.asarray(ids)
        if ids.ndim != 2 or not ids.any():
            continue
        ids = ids.astype(np.int64, copy=False)
        counts = np.bincount(ids.ravel())
        cut = np.zeros(counts.size, bool)
        cut[0] = True
        cut[np.concatenate([ids[0], ids[-1], ids[:, 0], ids[:, -1]])] = True
        rev = None if reviewed is None else reviewed[k]
        if rev is not None:
            rev = np.asarray(rev, bool)
            if rev.shape != ids.shape:
                raise ValueError(f"reviewed mask {rev.shape} does not match objects "
                                 f"{ids.shape}.")
            # an object reaching an unreviewed pixel (or lying in one) is not known whole
            touch = ndi.binary_dilation(~rev, structure=np.ones((3, 3), bool))
            cut[np.unique(ids[touch])] = True
        keep = ~cut & (counts > 0)
        areas.append(counts[keep])
    if not areas:
        return None
    found = np.concatenate(areas)
    if found.size < MIN_AREA_OBJECTS:
        return None
    return MIN_AREA_FRACTION * float(np.percentile(found, 5))
