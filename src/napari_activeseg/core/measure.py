"""Objects and their measurements: one table row per object, one summary row per image.

An *object* is one id of an instance image (one id per object, as painted or predicted), or,
for a class map, one connected component of one class (``skimage.measure.label``, 8-connected):
two separate blobs of "nucleus" are two objects. :func:`objects_of` turns either into an object
id image and the class of each object; :func:`measure_image` measures them with
``skimage.measure.regionprops_table`` on the image's intensities (every channel), and
:func:`summarize` counts them per class.

Units: positions (centroid, bounding box) are in pixels of the image, always, since that is
what a viewer and a script index with. Sizes are in pixels (``area_px``, ``perimeter_px``, ...)
or, given a pixel size, in its unit (``area_um2``, ``perimeter_um``, ...): the unit is in the
column name. The bounding box is ``[y0, y1) x [x0, x1)`` (end exclusive, as numpy slices);
``orientation_rad`` is the angle between the rows axis and the major axis (-pi/2 to pi/2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["image_columns", "measure_image", "object_columns", "objects_of", "summarize"]

_SIZE_PROPS = (  # regionprops name -> column stem, power of the pixel size
    ("perimeter", "perimeter", 1),
    ("equivalent_diameter_area", "equivalent_diameter", 1),
    ("axis_major_length", "major_axis", 1),
    ("axis_minor_length", "minor_axis", 1),
)
_SHAPE_PROPS = ("eccentricity", "solidity")
_INTENSITY = (("intensity_mean", "mean"), ("intensity_max", "max"), ("intensity_min", "min"))


def _suffix(unit: str | None) -> tuple[str, str]:
    """Column suffixes of lengths and areas: ``("px", "px")`` or e.g. ``("um", "um2")``."""
    return ("px", "px") if unit is None else (unit, f"{unit}2")


def object_columns(n_channels: int, unit: str | None = None) -> list[str]:
    """The header of the objects table (:func:`measure_image`'s rows), in order.

    `n_channels` is the intensity image's channel count; `unit` the pixel size's unit, or None
    for pixels.
    """
    length, area = _suffix(unit)
    cols = ["image", "object_id", "class", f"area_{area}", "centroid_y_px", "centroid_x_px",
            "bbox_y0_px", "bbox_x0_px", "bbox_y1_px", "bbox_x1_px"]
    cols += [f"{stat}_intensity_c{c}" for _, stat in _INTENSITY for c in range(n_channels)]
    cols += list(_SHAPE_PROPS) + [f"{stem}_{length}" for _, stem, _ in _SIZE_PROPS]
    cols.append("orientation_rad")
    return cols


def image_columns(classes: Sequence[str], unit: str | None = None) -> list[str]:
    """The header of the per-image summary (:func:`summarize`); `classes` background first."""
    _, area = _suffix(unit)
    return (["image", "objects"] + [f"count_{name}" for name in classes[1:]]
            + [f"mean_area_{area}", f"median_area_{area}"])


def _check_labels(labels: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"The {what} must be a 2D (H, W) image, got shape {labels.shape}.")
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"The {what} must hold integer ids, got dtype {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise ValueError(f"The {what} has negative ids ({labels.min()}); ids are 0 (background) "
                         "or positive.")
    return labels


def _components(class_map: np.ndarray, where: np.ndarray, start: int, out: np.ndarray,
                class_of: dict[int, int]) -> None:
    """Number the connected components of each class > 0 of `class_map` inside `where` from
    ``start + 1`` into `out`, recording each one's class in `class_of`."""
    from skimage.measure import label

    for k in np.unique(class_map[where]):
        if k == 0:
            continue
        comp, n = label(where & (class_map == k), connectivity=2, return_num=True)
        out[comp > 0] = comp[comp > 0] + start
        class_of.update({start + i: int(k) for i in range(1, n + 1)})
        start += n


def objects_of(class_map: np.ndarray | None = None, instances: np.ndarray | None = None
               ) -> tuple[np.ndarray, dict[int, int]]:  # fmt: skip
    """The objects of a label image: an object id image and ``{object id: class index}``.

    With `instances` (one id per object, 0 = background) the ids are kept and each object's
    class is the class most of its pixels have in `class_map` (1 without a class map); the
    class-map pixels outside every instance (a class measured as area) become objects by
    connected components, numbered after the largest id. With a class map alone, each
    connected component of each class > 0 is an object, numbered from 1 class by class (then
    in raster order).
    """
    if instances is None and class_map is None:
        raise ValueError("Give a class map, an instance image, or both.")
    classes = None if class_map is None else _check_labels(class_map, "class map")
    if instances is None:
        out = np.zeros(classes.shape, np.int32)
        class_of: dict[int, int] = {}
        _components(classes, np.ones(classes.shape, bool), 0, out, class_of)
        return out, class_of
    ids = _check_labels(instances, "instance image")
    present = np.unique(ids)
    present = present[present > 0]
    if classes is None:
        return ids, {int(i): 1 for i in present}
    if classes.shape != ids.shape:
        raise ValueError(f"The class map {classes.shape} and the instance image {ids.shape} "
                         "must have the same shape.")
    k = int(classes.max(initial=0)) + 1
    votes = np.bincount(ids.ravel().astype(np.int64) * k + classes.ravel(),
                        minlength=(int(ids.max(initial=0)) + 1) * k).reshape(-1, k)
    votes[:, 0] = 0  # background only when no pixel of the object has a class
    class_of = {int(i): int(votes[i].argmax()) for i in present}
    rest = (ids == 0) & (classes > 0)
    if rest.any():
        ids = ids.astype(np.int32 if ids.max(initial=0) < 2**30 else np.int64)
        _components(classes, rest, int(ids.max(initial=0)), ids, class_of)
    return ids, class_of


def _intensity(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[:2] != shape:
        raise ValueError(f"The image {image.shape} does not match the labels {shape}: give an "
                         "(H, W) or channels-last (H, W, C) image of the labels' size.")
    return image


def measure_image(image: np.ndarray, *, class_map: np.ndarray | None = None,
                  instances: np.ndarray | None = None, classes: Sequence[str] | None = None,
                  name: str = "", pixel_size: float | None = None, unit: str = "um",
                  ) -> tuple[list[dict[str, Any]], np.ndarray]:  # fmt: skip
    """Measure every object of one image: rows of :func:`object_columns`, and the id image.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
        The intensities, as stored (every channel is measured).
    class_map, instances : (H, W) int ndarray, optional
        What the objects are (see :func:`objects_of`); at least one.
    classes : sequence of str, optional
        Class names, background first (the ``class`` column); default ``class_<k>``.
    name : str
        The ``image`` column.
    pixel_size : float, optional
        The side of one pixel in `unit`: sizes are scaled (areas by its square) and named in
        `unit`. None: pixels.

    Returns
    -------
    rows : list of dict
        One per object, by object id.
    ids : (H, W) int ndarray
        The object id image the rows' ``object_id`` refer to.
    """
    from skimage.measure import regionprops_table

    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"The pixel size must be a positive number, got {pixel_size!r}.")
    ids, class_of = objects_of(class_map, instances)
    intensity = _intensity(image, ids.shape)
    unit_name = None if pixel_size is None else unit
    length, area = _suffix(unit_name)
    scale = 1.0 if pixel_size is None else float(pixel_size)
    props = ("label", "area", "centroid", "bbox", *(p for p, _ in _INTENSITY), *_SHAPE_PROPS,
             *(p for p, _, _ in _SIZE_PROPS), "orientation")
    table = regionprops_table(ids, intensity, properties=props)
    rows = []
    for j, oid in enumerate(table["label"]):
        k = class_of.get(int(oid), 0)
        row: dict[str, Any] = {
            "image": name, "object_id": int(oid),
            "class": classes[k] if classes is not None and k < len(classes) else f"class_{k}",
            f"area_{area}": float(table["area"][j]) * scale**2,
            "centroid_y_px": float(table["centroid-0"][j]),
            "centroid_x_px": float(table["centroid-1"][j]),
        }  # fmt: skip
        for i, side in enumerate(("y0", "x0", "y1", "x1")):
            row[f"bbox_{side}_px"] = int(table[f"bbox-{i}"][j])
        for prop, stat in _INTENSITY:
            for c in range(intensity.shape[-1]):
                row[f"{stat}_intensity_c{c}"] = float(table[f"{prop}-{c}"][j])
        for prop in _SHAPE_PROPS:
            row[prop] = float(table[prop][j])
        for prop, stem, power in _SIZE_PROPS:
            row[f"{stem}_{length}"] = float(table[prop][j]) * scale**power
        row["orientation_rad"] = float(table["orientation"][j])
        rows.append(row)
    return rows, ids


def summarize(rows: Sequence[dict[str, Any]], classes: Sequence[str], *, name: str = "",
              unit: str | None = None) -> dict[str, Any]:
    """One image's summary row (:func:`image_columns`): object count, count per class, mean
    and median area (empty without objects). `unit`: the pixel size's unit, None for pixels."""
    _, area = _suffix(unit)
    areas = np.array([r[f"area_{area}"] for r in rows], float)
    out: dict[str, Any] = {"image": name, "objects": len(rows)}
    for cname in classes[1:]:
        out[f"count_{cname}"] = sum(1 for r in rows if r["class"] == cname)
    out[f"mean_area_{area}"] = float(areas.mean()) if len(areas) else None
    out[f"median_area_{area}"] = float(np.median(areas)) if len(areas) else None
    return out
