"""Export of measurements: one row per object of a project's images, one summary row per image.

:func:`measure_project_iter` measures the reviewed labels of the labelled images, the model's
predictions of every image of the pool, or both (``source``), with
:func:`~napari_activeseg.core.measure.measure_image` (objects: the connected components of each
class, or the objects of a class in "objects" mode: the submitted instance ids, the model's
post-processed objects; see :mod:`~napari_activeseg.core.measure`), and writes ``objects.csv`` and
``images.csv`` at the end, atomically: a cancelled or failed job writes no CSV. Of an image
whose labels cover only part of it (boxes, scribbles), only the reviewed pixels are measured;
``images.csv`` says the reviewed fraction. Sizes are in pixels, or in micrometres when the
project has the ``pixel_size_um`` setting (or a pixel size is given).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import serialize
from ..instances import predict_instances
from ..measure import image_columns, measure_image, object_columns, summarize
from ..progress import run_to_end
from ..project import Project
from ..validation import check_choice
from .common import decided_config, opened, output_folder
from .predicting import inference_config, predict_image, prepared
from .records import ExportProgress

__all__ = ["PIXEL_SIZE_SETTING", "SOURCES", "MeasureResult", "measure_project",
           "measure_project_iter", "project_pixel_size"]

SOURCES = ("labels", "predictions", "both")
#: The project setting with the side of a pixel in micrometres (a number), if known.
PIXEL_SIZE_SETTING = "pixel_size_um"
_KEYS = ["image", "image_id", "source"]


@dataclass
class MeasureResult:
    """What :func:`measure_project_iter` returns: the rows it wrote, the files, the failures
    (``(image key, reason)``) and the model version measured (None for labels only)."""

    out_dir: Path
    source: str
    model_version: str | None
    objects: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    completed: bool = False


def project_pixel_size(project: Project) -> float | None:
    """The project's pixel size in micrometres (``pixel_size_um`` setting), or None."""
    value = project.get_setting(PIXEL_SIZE_SETTING)
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _plan(proj: Project, source: str) -> list[tuple[Any, str]]:
    """``(image record, "labels" | "predictions")`` to measure; ValueError when there is none."""
    want = ("labels", "predictions") if source == "both" else (source,)
    plan: list[tuple[Any, str]] = []
    if "labels" in want:
        labelled = proj.labelled_ids()
        if not labelled:
            raise ValueError("Nothing to measure: the project has no submitted labels yet. "
                             "Submit some, or measure the model's predictions "
                             "(source 'predictions').")
        plan += [(proj.get_image(i), "labels") for i in labelled]
    if "predictions" in want:
        if not proj.models():
            raise ValueError("Nothing to measure: the project has no trained model yet, so "
                             "there are no predictions. Train one, or measure the submitted "
                             "labels (source 'labels').")
        plan += [(rec, "predictions") for rec in proj.images()]
    return plan


def measure_project_iter(
    project: Project | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    source: str = "labels",
    pixel_size: float | None = None,
    model_version: str | None = None,
    device: str = "auto",
) -> Generator[ExportProgress, None, MeasureResult]:
    """Measure every object of the project's labels and/or predictions; write the two CSVs.

    Parameters
    ----------
    project : Project or path
        An open project, or a project folder (opened read-only).
    out_dir : path
        Receives ``objects.csv`` (image, image id, source, then
        :func:`~napari_activeseg.core.measure.object_columns`) and ``images.csv`` (the same
        keys, :func:`~napari_activeseg.core.measure.image_columns` and the reviewed fraction).
    source : {"labels", "predictions", "both"}
        The submitted labels, the model's predictions of every image of the pool, or both
        (an image then has rows of each source).
    pixel_size : float, optional
        Micrometres per pixel; default: the project's ``pixel_size_um`` setting, else pixels.
    model_version, device
        The model and device of the predictions (default: the latest good model, "auto").

    Yields
    ------
    ExportProgress
        After each image (and each batch of tiles of a prediction).

    Raises
    ------
    ValueError
        Nothing to measure (no labels / no model for the chosen source), a bad source or pixel
        size; nothing is written then.
    """
    check_choice(source, SOURCES, name="source")
    with opened(project) as proj:
        plan = _plan(proj, source)
        pixel_size = project_pixel_size(proj) if pixel_size is None else float(pixel_size)
        if not (pixel_size is None or (np.isfinite(pixel_size) and pixel_size > 0)):
            raise ValueError(f"The pixel size must be a positive number, got {pixel_size!r}.")
        unit = None if pixel_size is None else "um"
        model = decided = config = version = None
        if any(kind == "predictions" for _, kind in plan):
            config = inference_config(proj, device)
            model, meta = proj.load_unet(model_version)
            version = meta["version"]
            decided = decided_config(model.config, proj)
        out = output_folder(out_dir)
        result = MeasureResult(out, source, version)
        classes = proj.classes
        t0, total, channels = time.perf_counter(), len(plan), 1
        for n, (rec, kind) in enumerate(plan, 1):
            try:
                raw = proj.load_image(rec.id)
                reviewed_fraction, instances = 1.0, None
                if kind == "labels":
                    labels, reviewed = proj.load_labels(rec.id)
                    if proj.object_classes:  # the objects as submitted (the rest derived)
                        instances = proj.load_instances(rec.id)[0]
                    if reviewed is not None:
                        labels = np.where(reviewed, labels, 0)
                        reviewed_fraction = round(float(reviewed.mean()), 6)
                elif proj.object_classes:  # the model's objects: its post-processing
                    pred = predict_instances(model, prepared(raw, decided), config=config,
                                             object_classes=proj.object_classes)
                    labels, instances = pred.labels, pred.instances
                else:
                    pred = yield from predict_image(
                        model, raw, decided, mode="single", maps=(), config=config,
                        name=rec.name, done=n - 1, total=total, t0=t0)
                    labels = pred.labels
                rows, _ = measure_image(raw, class_map=labels, instances=instances,
                                        classes=classes, name=rec.name, pixel_size=pixel_size)
            except (ValueError, OSError) as err:
                result.failed.append((rec.key, str(err)))
                yield ExportProgress(n, total, rec.name, error=str(err),
                                     seconds=time.perf_counter() - t0)
                continue
            keys = {"image": rec.name, "image_id": rec.id, "source": kind}
            channels = max(channels, 1 if raw.ndim == 2 else raw.shape[-1])
            result.objects += [{**row, **keys} for row in rows]
            result.images.append({**summarize(rows, classes, name=rec.name, unit=unit), **keys,
                                  "reviewed_fraction": reviewed_fraction})
            yield ExportProgress(n, total, rec.name, seconds=time.perf_counter() - t0)
        if result.failed and not result.images:
            reasons = "; ".join(f"{key}: {why}" for key, why in result.failed[:3])
            raise ValueError(f"None of the {total} image(s) could be measured ({reasons}).")
        obj_cols = _KEYS + object_columns(channels, unit)[1:]
        img_cols = _KEYS + image_columns(classes, unit)[1:] + ["reviewed_fraction"]
        serialize.write_csv(out / "objects.csv", obj_cols, result.objects)
        serialize.write_csv(out / "images.csv", img_cols, result.images)
        result.files = [out / "objects.csv", out / "images.csv"]
        result.completed = True
        return result


def measure_project(
    project: Project | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[ExportProgress], None] | None = None,
    **kwargs: Any,
) -> MeasureResult:
    """Run :func:`measure_project_iter` to the end (`progress` gets every record)."""
    return run_to_end(measure_project_iter(project, out_dir, **kwargs), progress)
