"""Export of the model's predictions for every image of the project's pool.

:func:`export_predictions_iter` writes each image's labels, probabilities and uncertainty maps
under its key, and ``predictions.json`` (model version, settings, files and failures).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from ... import __version__
from .. import _store_files as sf
from .. import serialize
from ..progress import run_to_end
from ..project import Project
from .common import decided_config, opened, output_folder
from .predicting import check_maps, inference_config, predict_image, write_prediction
from .records import ExportProgress, ExportResult

__all__ = ["export_predictions", "export_predictions_iter"]


def export_predictions_iter(
    project: Project | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model_version: str | None = None,
    maps: Sequence[str] | str | None = ("entropy",),
    probabilities: bool = True,
    mode: str = "single",
    device: str = "auto",
    include_submitted: bool = True,
) -> Generator[ExportProgress, None, ExportResult]:
    """Predict every image of the pool and write labels, probabilities and uncertainty maps.

    Writes ``<key>_labels.tif`` (arg-max class map), ``<key>_probs.tif`` (``(K, H, W)`` float32,
    if `probabilities`) and ``<key>_<map>.tif`` per uncertainty map, plus ``predictions.json``
    (model version, settings, per-image files and failures). An image that cannot be loaded
    (moved, changed) is reported in the progress record and the result, and skipped.

    Parameters
    ----------
    project : Project or path
    out_dir : path
    model_version : str, optional
        Default: the latest good model.
    maps : sequence of str
        Uncertainty maps (``entropy``, ``margin``, ``least_confidence``, ``raw_margin`` in
        ``mode="single"``; ``bald``, ``variance``, ... with ``mode="mc"`` or ``"tta"``).
    probabilities : bool
    mode : {"single", "mc", "tta"}
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
    include_submitted : bool
        Also predict images that already have labels (default).

    Yields
    ------
    ExportProgress

    Returns
    -------
    ExportResult
    """
    if mode not in ("single", "mc", "tta"):
        raise ValueError(f"mode must be one of ['single', 'mc', 'tta'], got {mode!r}.")
    maps = check_maps(maps, mode)
    with opened(project) as proj:
        config = inference_config(proj, device)
        model, meta = proj.load_unet(model_version)
        version = meta["version"]
        decided = decided_config(model.config, proj)
        polarity, margin = decided.polarity, decided.polarity_margin
        records = [r for r in proj.images()
                   if include_submitted or r.status != "submitted"]  # fmt: skip
        out = output_folder(out_dir)
        result = ExportResult(out, version)
        t0 = time.perf_counter()
        total = len(records)
        try:
            for n, rec in enumerate(records, 1):
                try:
                    raw = proj.load_image(rec.id)  # (H, W) or channels-last (H, W, C)
                    pred = yield from predict_image(
                        model, raw, decided, mode=mode, maps=maps, config=config, name=rec.name,
                        done=n - 1, total=total, t0=t0)
                    files = write_prediction(pred, out, rec.key, probabilities=probabilities,
                                              maps=maps)
                except (ValueError, OSError) as err:
                    result.failed.append((rec.key, str(err)))
                    yield ExportProgress(n, total, rec.name, error=str(err),
                                         seconds=time.perf_counter() - t0)
                    continue
                result.written[rec.key] = files  # keys are unique, names need not be
                yield ExportProgress(n, total, rec.name, outputs=tuple(files),
                                     seconds=time.perf_counter() - t0)
            result.completed = True
        finally:
            by_key = {r.key: r for r in records}
            result.manifest = out / "predictions.json"
            serialize.write_json(result.manifest, {
                "napari_activeseg": __version__, "created_at": sf.utc_now(),
                "project": str(proj.folder), "model_version": version, "mode": mode,
                "maps": list(maps), "probabilities": probabilities, "polarity": polarity,
                "polarity_margin": margin,
                "classes": proj.classes, "completed": result.completed,
                "images": [{"image_id": by_key[key].id, "name": by_key[key].name, "key": key,
                            "files": [p.name for p in files]}
                           for key, files in result.written.items()],
                "failed": [{"image_id": by_key[k].id, "name": by_key[k].name, "key": k,
                            "reason": r} for k, r in result.failed],
            })  # fmt: skip
        return result


def export_predictions(
    project: Project | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[ExportProgress], None] | None = None,
    **kwargs: Any,
) -> ExportResult:
    """Run :func:`export_predictions_iter` to the end (`progress` gets every record)."""
    return run_to_end(export_predictions_iter(project, out_dir, **kwargs), progress)
