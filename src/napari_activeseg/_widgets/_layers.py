"""The layers of a correction: the image, the editable annotation, the uncertainty, the boxes to
review, a veil over what is not ground truth, earlier reviewed regions, and the scribbles; and
what the dock reads back from them (the user's edits)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np

from ._common import (
    ANNOTATION,
    NOT_REVIEWED,
    REGIONS,
    REVIEWED,
    SCRIBBLE_BACKGROUND,
    SCRIBBLES,
    UNCERTAINTY,
)


def class_colormap(colors: Sequence[str]):
    """Class k in its project colour, the background transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    cmap = {None: "transparent", 0: "transparent"}
    for k, c in enumerate(colors[1:], start=1):
        cmap[k] = c
    return DirectLabelColormap(color_dict=cmap)


def scribble_colormap(colors: Sequence[str]):
    """Scribble value ``class + 1``: the background class visible too; 0 = unlabelled."""
    from napari.utils.colormaps import DirectLabelColormap

    cmap = {None: "transparent", 0: "transparent", 1: SCRIBBLE_BACKGROUND}
    for k, c in enumerate(colors[1:], start=2):
        cmap[k] = c
    return DirectLabelColormap(color_dict=cmap)


def _mask_colormap(color: str):
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: color})


def _replace_image(viewer, raw: np.ndarray, name: str) -> bool:
    """Show pool image ``name``; False when it is already shown (a new model's refresh of the
    open image: its pixels, the user's contrast and zoom are left alone)."""
    rgb = raw.ndim == 3 and raw.shape[-1] in (3, 4)
    data = raw if (raw.ndim == 2 or rgb) else np.moveaxis(raw, -1, 0)
    if "image" in viewer.layers:
        layer = viewer.layers["image"]
        same_kind = getattr(layer, "rgb", False) == rgb and layer.data.ndim == data.ndim
        if same_kind and layer.metadata.get("activeseg_name") == name and \
                layer.data.shape == data.shape:
            return False
        if same_kind:  # updated, not re-added: adding a layer holds the GUI thread ~10x longer
            _write(layer, data)
        else:
            viewer.layers.remove(layer)
    if "image" not in viewer.layers:
        _owning(viewer.add_image(np.array(data, copy=True), name="image", rgb=rgb))
    viewer.layers["image"].metadata["activeseg_name"] = name
    viewer.layers["image"].reset_contrast_limits()
    return True


#: layer -> a weak reference to the array it was given by the dock (a copy of its own)
_OWNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _owning(layer):
    """Remember that ``layer`` holds an array of its own (a copy), which :func:`_write` may
    overwrite -- as long as nobody sets the layer's ``data`` to another array."""
    _OWNED[layer] = weakref.ref(layer.data)
    return layer


def _owns(layer) -> bool:
    ref = _OWNED.get(layer)
    return ref is not None and ref() is layer.data


def _write(layer, data: np.ndarray) -> None:
    """``layer`` shows ``data``: written into the layer's own array when it has the same shape
    and dtype, else set as a copy (which the layer then owns).

    Setting a labels layer's ``data`` makes napari rebuild its colour map and shader program,
    which software OpenGL recompiles at the next draw (~40 ms more than the draw itself on
    this project's 2-core VM); writing in place and refreshing costs one plain draw. The
    layer never holds an array of the session's, nor one a user or script set, so the write
    changes nothing else."""
    old = layer.data
    if _owns(layer) and isinstance(old, np.ndarray) and \
            old.shape == data.shape and old.dtype == data.dtype and old.flags.writeable:
        old[...] = data
        reset_history = getattr(layer, "_reset_history", None)  # napari's labels undo:
        if reset_history is not None:  # its diffs belong to the pixels just replaced
            reset_history()
        layer.refresh()
    else:
        layer.data = np.array(data, copy=True)
        _owning(layer)


def _put(viewer, name: str, data: np.ndarray, add, *, contour: int = 0,
         editable: bool = False) -> None:
    """Layer ``name`` shows ``data``: left alone when it shows it already, updated by
    :func:`_write` when it has the same dimensions (another shape too), else (re)added --
    adding a layer holds the GUI thread 0.3-1.5 s on a loaded 2-core CPU
    (benchmarks/gui_stall.py --profile)."""
    layer = next((ly for ly in viewer.layers if ly.name == name), None)
    if layer is not None and layer.data.ndim == data.ndim:
        if layer.data.shape != data.shape or not np.array_equal(layer.data, data):
            _write(layer, data)
        return
    if layer is not None:
        viewer.layers.remove(layer)
    layer = _owning(add(np.array(data, copy=True)))
    if contour:
        layer.contour = contour
    if name not in (ANNOTATION, UNCERTAINTY):
        layer.editable = editable


def _show_boxes(viewer, boxes) -> None:
    """The boxes to review as rectangles (the layer kept and refilled; gone without boxes)."""
    rects = [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]]) for y0, x0, y1, x1 in boxes]
    if not rects:
        if REGIONS in viewer.layers:
            viewer.layers.remove(REGIONS)
        return
    style = {"edge_color": "#00ff88", "face_color": "transparent", "edge_width": 3}
    if REGIONS in viewer.layers and viewer.layers[REGIONS].nshapes == len(rects) and all(
            np.array_equal(np.asarray(a)[:, -2:], b)
            for a, b in zip(viewer.layers[REGIONS].data, rects, strict=True)):
        return  # the same boxes (a new model's refresh): refilling a shapes layer is slow
    if REGIONS not in viewer.layers:
        viewer.add_shapes(rects, shape_type="rectangle", name=REGIONS, **style)
        return
    layer = viewer.layers[REGIONS]
    # refilled with its events blocked, then refreshed once: each removal and addition
    # re-emits through napari's layer list (50 ms -> 15 ms for three boxes, no load)
    with layer.events.blocker_all():
        layer.selected_data = set(range(layer.nshapes))
        layer.remove_selected()
        layer.add_rectangles(rects, **style)
    layer.refresh()


def show_view(viewer, view, colors: Sequence[str], *, veil: bool) -> None:
    """Put a :class:`~napari_activeseg.core.session.ImageView` on the canvas.

    ``veil``: dim everything that is neither reviewed before nor inside a box (boxes mode).
    The annotation layer ends up selected, in paint mode.
    """
    from ..core.review import box_mask

    for name in ("image", UNCERTAINTY, ANNOTATION):  # a large image's box was shown before
        layer = next((ly for ly in viewer.layers if ly.name == name), None)
        if layer is not None and (getattr(layer, "multiscale", False) or np.any(layer.translate)
                                  or np.any(np.asarray(layer.scale) != 1)):
            viewer.layers.remove(layer)
    new_image = _replace_image(viewer, view.image, view.name)
    pred = view.prediction
    unc = next(iter(pred.uncertainty.values())) if pred is not None and pred.uncertainty \
        else None
    # before the first model the uncertainty layer is there, hidden and empty: adding it when
    # the first model arrives held the viewer ~0.6 s while the pool was being re-scored
    placeholder = unc is None
    shown = np.zeros(view.image.shape[:2], np.float32) if placeholder else unc
    _put(viewer, UNCERTAINTY, shown, lambda d: viewer.add_image(
        d, name=UNCERTAINTY, colormap="inferno", blending="additive", opacity=0.6))
    layer = viewer.layers[UNCERTAINTY]
    # the placeholder is drawn, transparent, rather than hidden: a layer's first draw compiles
    # its shaders (software OpenGL: tens of ms), paid with the first view's instead of when
    # the first model arrives while the user paints
    if placeholder and not layer.metadata.get("activeseg_placeholder"):
        layer.metadata["activeseg_opacity"] = layer.opacity
        layer.opacity = 0.0
    elif not placeholder and layer.metadata.get("activeseg_placeholder"):
        layer.opacity = layer.metadata.pop("activeseg_opacity", 0.6)
    layer.metadata["activeseg_placeholder"] = placeholder
    labels = view.labels  # _put copies what a layer keeps: the view's array is never shown
    _put(viewer, ANNOTATION, labels, lambda d: viewer.add_labels(
        d, name=ANNOTATION, colormap=class_colormap(colors), opacity=0.6))
    shape = labels.shape
    before = np.ones(shape, bool) if view.reviewed is None else np.asarray(view.reviewed, bool)
    # layers are updated in place: removing one from a napari canvas takes ~0.5 s
    _put(viewer, REVIEWED, (before & ~before.all()).astype(np.uint8), lambda d: viewer.add_labels(
        d, name=REVIEWED, opacity=0.9, colormap=_mask_colormap("#00ff88")), contour=2)
    outside = ~(before | box_mask(shape, view.boxes))
    if veil:
        _put(viewer, NOT_REVIEWED, outside.astype(np.uint8), lambda d: viewer.add_labels(
            d, name=NOT_REVIEWED, opacity=0.45, colormap=_mask_colormap("black")))
    elif NOT_REVIEWED in viewer.layers:
        viewer.layers.remove(NOT_REVIEWED)
    _show_boxes(viewer, view.boxes)
    _put(viewer, SCRIBBLES, np.zeros(shape, np.uint8), lambda d: viewer.add_labels(
        d, name=SCRIBBLES, opacity=0.9, colormap=scribble_colormap(colors)), editable=True)
    ann = viewer.layers[ANNOTATION]
    if new_image:  # a refresh by a new model keeps the user's brush, selection and zoom
        ann.selected_label = 1
        viewer.reset_view()
    if viewer.layers.selection.active is not ann:  # each change rebuilds the layer controls
        viewer.layers.selection.active = ann
    if ann.mode != "paint":
        ann.mode = "paint"


def show_region_view(viewer, view, colors: Sequence[str]) -> None:
    """Put a :class:`~napari_activeseg.core.session.RegionView` (a box of a large image) on
    the canvas: the image as a multiscale layer of its lazy levels (napari loads what is on
    screen), the whole image's uncertainty overview scaled up to it, and an annotation layer of
    the box's size only, translated onto the box; the view zooms onto the box."""
    base = view.levels[0]
    rgb = base.ndim == 3 and base.shape[-1] in (3, 4)
    levels = view.levels if rgb or base.ndim == 2 else [_channels_first(lv) for lv in view.levels]
    for name in ("image", UNCERTAINTY, ANNOTATION, REVIEWED, NOT_REVIEWED, SCRIBBLES):
        if name in viewer.layers:  # a correction's full-size layers do not fit a large image
            viewer.layers.remove(name)
    layer = viewer.add_image(levels, multiscale=True, name="image", rgb=rgb)
    layer.metadata["activeseg_name"] = view.name
    if view.overview is not None:
        factor, unc, _ = view.overview
        offset = (factor - 1) / 2  # a block mean sits at the centre of its block
        viewer.add_image(unc, name=UNCERTAINTY, scale=(factor, factor), translate=(offset, offset),
                         colormap="inferno", blending="additive", opacity=0.6)
    y0, x0, y1, x1 = view.box
    ann = viewer.add_labels(view.labels.copy(), name=ANNOTATION, translate=(y0, x0),
                            colormap=class_colormap(colors), opacity=0.6)
    _show_boxes(viewer, [view.box])
    ann.selected_label = 1
    viewer.layers.selection.active = ann
    ann.mode = "paint"
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9
    camera.center = ((y0 + y1) / 2, (x0 + x1) / 2)
    # the box fills about half the canvas
    canvas = min(getattr(viewer, "_canvas_size", (800, 800)))
    camera.zoom = 0.5 * max(canvas, 100) / max(y1 - y0, x1 - x0)


def is_region(view) -> bool:
    """Whether a view is a box of a large image (a RegionView) rather than a whole image."""
    return view is not None and hasattr(view, "box")


def drawn_box(viewer, view, shape) -> tuple[int, int, int, int] | None:
    """The last rectangle the user drew on the boxes layer over a region view (beyond the
    box shown), clipped to the image ``shape``; None when there is none."""
    if not is_region(view) or REGIONS not in viewer.layers:
        return None
    layer = viewer.layers[REGIONS]
    if layer.nshapes < 2:
        return None
    corners = np.asarray(layer.data[-1])[:, -2:]
    (y0, x0), (y1, x1) = np.floor(corners.min(0)), np.ceil(corners.max(0))
    y0, x0 = max(0, int(y0)), max(0, int(x0))
    y1, x1 = min(int(shape[0]), int(y1)), min(int(shape[1]), int(x1))
    return (y0, x0, y1, x1) if y0 < y1 and x0 < x1 else None


def _channels_first(level):
    import dask.array as da

    return da.moveaxis(level, -1, 0)


def paint_scribbles(viewer, class_index: int) -> None:
    """Select the scribbles layer in paint mode with the brush of class ``class_index``."""
    if SCRIBBLES not in viewer.layers:
        return
    layer = viewer.layers[SCRIBBLES]
    viewer.layers.selection.active = layer
    layer.selected_label = int(class_index) + 1
    layer.mode = "paint"


def layer_data(viewer, name: str) -> np.ndarray | None:
    """The data of layer `name` as an array, or None when the user removed the layer."""
    return np.asarray(viewer.layers[name].data) if name in viewer.layers else None


def is_edited(viewer, view) -> bool:
    """Whether the user changed the annotation of `view` or painted a scribble."""
    labels, scribbles = layer_data(viewer, ANNOTATION), layer_data(viewer, SCRIBBLES)
    return (scribbles is not None and bool(scribbles.any())) or \
        (labels is not None and not np.array_equal(labels, view.labels))


def reset_annotation(viewer, view) -> None:
    """Put the prediction of `view` back into the annotation (empty without a model)."""
    if ANNOTATION in viewer.layers:
        layer = viewer.layers[ANNOTATION]
        pred = None if is_region(view) else view.prediction
        layer.data = view.labels.copy() if is_region(view) else (  # a box: its prediction
            pred.labels.copy() if pred is not None else np.zeros_like(layer.data))


def toggle_visible(viewer, name: str) -> None:
    if name in viewer.layers:
        viewer.layers[name].visible = not viewer.layers[name].visible


def layer_pool_items(viewer, *, channels: bool = False) -> dict[str, np.ndarray]:
    """The open image layers as pool items of a new project (a 2D+t/z stack: one per slice,
    or with `channels` one multichannel item, channels last)."""
    from napari.layers import Image

    from ..core.project import pool_items

    arrays: dict[str, np.ndarray] = {}
    for layer in viewer.layers:
        if isinstance(layer, Image):
            arrays.update(pool_items(layer.name, layer.data, rgb=layer.rgb, channels=channels))
    if not arrays:
        raise ValueError("No image layer is open: open images first, or create the project "
                         "from a folder.")
    return arrays
