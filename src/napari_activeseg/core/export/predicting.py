"""What the two prediction exports share: their checks, and one image predicted and written.

:func:`~.predictions.export_predictions_iter` (the project's pool) and
:func:`~.folder.predict_folder_iter` (a folder of new images) both check the uncertainty maps
asked for (:func:`check_maps`), take the project's inference settings on the chosen device
(:func:`inference_config`), prepare each image as the training images were and predict it tile by
tile, relaying the tile progress as :class:`~.records.ExportProgress` (:func:`predict_image`),
and write its labels, probabilities and maps as TIFFs (:func:`write_prediction`).

Output TIFFs: class maps are 2D uint8 (uint16 above 255 classes), 0 = background, zlib
compressed -- what Fiji and napari's Labels layer open as they are. Probabilities are
``(K, H, W)`` float32 stacks (one page per class), uncertainty maps ``(H, W)`` float32.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from .. import _store_files as sf
from ..atomic import atomic_write_bytes
from ..config import InferenceConfig, ModelConfig
from ..device import choose_device
from ..imageio import write_tiff
from ..inference import Prediction, predict_iter
from ..preprocess import prepare_image
from ..progress import relay
from ..project import Project
from .records import ExportProgress

__all__ = ["check_maps", "inference_config", "predict_image", "predict_prepared", "prepared",
           "write_prediction", "write_stack"]

_ONE_PASS_MAPS = ("entropy", "margin", "least_confidence", "raw_margin")


def check_maps(maps: Sequence[str] | str | None, mode: str) -> tuple[str, ...]:
    """The uncertainty map names as a tuple; ``ValueError`` for a map `mode` cannot make."""
    if maps is None:
        return ()
    maps = (maps,) if isinstance(maps, str) else tuple(maps)
    if mode == "single":
        bad = [m for m in maps if m not in _ONE_PASS_MAPS]
        if bad:
            raise ValueError(
                f"Uncertainty map(s) {bad} need several samples; with mode='single' choose from "
                f"{list(_ONE_PASS_MAPS)}, or pass mode='mc' (MC dropout) or 'tta'."
            )
    return maps


def inference_config(project: Project, device: str) -> InferenceConfig:
    """The project's saved inference settings (or the defaults) on `device`."""
    choose_device(device)  # a clear ValueError for an unknown / unavailable device, up front
    saved = project.get_setting("inference_config")
    cfg = InferenceConfig.from_dict(saved) if saved else InferenceConfig()
    return cfg.replace(device=device)


def prepared(raw: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """`raw` (``(H, W)`` or channels-last) as ``(C, H, W)``, prepared as the training images
    were: `cfg`'s decided polarity and channel count."""
    return prepare_image(raw, polarity=cfg.polarity, polarity_margin=cfg.polarity_margin,
                         channel_axis=-1 if raw.ndim == 3 else None, channels=cfg.in_channels)


def predict_image(model, raw: np.ndarray, cfg: ModelConfig, *, mode, maps, config, name, done,
                  total, t0) -> Generator[ExportProgress, None, Prediction]:
    """Predict `raw` (:func:`prepared`). Re-yields the tile progress as ExportProgress; returns
    the Prediction."""
    image = prepared(raw, cfg)
    return (yield from predict_prepared(model, image, mode=mode, maps=maps, config=config,
                                        name=name, done=done, total=total, t0=t0))


def predict_prepared(model, image: np.ndarray, *, mode, maps, config, name, done, total,
                     t0) -> Generator[ExportProgress, None, Prediction]:
    """Predict a prepared (C, H, W) image tile by tile, the tile progress as ExportProgress."""

    def tiles_record(tiles) -> ExportProgress:
        return ExportProgress(done, total, name, "tiles", seconds=time.perf_counter() - t0,
                              tiles_done=tiles.done, tiles_total=tiles.total)

    gen = predict_iter(model, image, mode=mode, maps=maps, config=config)
    return (yield from relay(gen, tiles_record))


def write_stack(path: Path, array: np.ndarray) -> Path:
    """A (K, H, W) float stack as K grey pages (never read back as RGB when K is 3 or 4)."""
    data = sf.encode_tiff(np.ascontiguousarray(array, dtype=np.float32), photometric="minisblack")
    atomic_write_bytes(path, data)
    return path


def write_prediction(pred: Prediction, out: Path, stem: str, *, probabilities: bool,
                     maps: Sequence[str]) -> list[Path]:
    """``<stem>_labels.tif``, ``<stem>_probs.tif`` (if `probabilities`) and ``<stem>_<map>.tif``
    per map in `out`; returns the files written."""
    files = [write_tiff(out / f"{stem}_labels.tif", pred.labels)]
    if probabilities:
        files.append(write_stack(out / f"{stem}_probs.tif", pred.probs))
    for name in maps:
        files.append(write_tiff(out / f"{stem}_{name}.tif",
                                pred.uncertainty[name].astype(np.float32, copy=False)))
    return files
