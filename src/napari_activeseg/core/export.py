"""Getting results out of a project: labels, predictions, the model, provenance.

Everything here reads the project and never changes it, so it works on a project opened
read-only -- e.g. from the command line while napari has the project open read-write. Functions
take an open :class:`~.project.Project` or a project folder (opened read-only and closed again).

- :func:`export_labels` -- submitted class maps (and partial reviewed masks) as TIFF;
- :func:`export_predictions_iter` / :func:`export_predictions` -- the model's labels,
  probabilities and uncertainty maps of every image of the pool;
- :func:`export_model` -- TorchScript (+ ONNX when the ``onnx`` package is installed), the
  safetensors weights and a ``preprocessing.json`` that says how to feed the model;
- :func:`predict_folder_iter` / :func:`predict_folder` -- apply a project's model to a new
  folder of images;
- :func:`export_provenance` -- query history, rounds and submissions as CSV/JSON.

Long jobs are generators of :class:`ExportProgress` records (the GUI runs them in a thread
worker, the CLI prints a progress line); the plain functions run them to the end. Every file is
written atomically (temporary file, fsync, rename), so an interrupted export leaves whole files.

Output TIFFs: class maps are 2D uint8 (uint16 above 255 classes), 0 = background, zlib
compressed -- what Fiji and napari's Labels layer open as they are. Probabilities are
``(K, H, W)`` float32 stacks (one page per class), uncertainty maps ``(H, W)`` float32.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _store_files as sf
from . import atomic, serialize
from .config import InferenceConfig, ModelConfig
from .device import choose_device
from .imageio import _CLIP_RANGE, _PERCENTILE_MAX_PIXELS, list_images, read_image, write_tiff
from .inference import predict_iter
from .preprocess import (
    BRIGHT_THRESHOLD,
    DECIDE_MAX_IMAGES,
    LEVEL_SAMPLE_PIXELS,
    decide_project_polarity,
    prepare_image,
)
from .progress import run_to_end
from .project import Project, ProjectError

__all__ = [
    "ExportProgress",
    "ExportResult",
    "export_labels",
    "export_model",
    "export_predictions",
    "export_predictions_iter",
    "export_provenance",
    "predict_folder",
    "predict_folder_iter",
    "preprocessing_spec",
]

PREPROCESSING_FORMAT = "napari-activeseg-preprocessing"
TORCHSCRIPT_NAME = "model.torchscript.pt"
ONNX_NAME = "model.onnx"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "model.json"  # next to the weights: Project.import_model finds it there
PREPROCESSING_NAME = "preprocessing.json"
_ONE_PASS_MAPS = ("entropy", "margin", "least_confidence", "raw_margin")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ExportProgress:
    """Yielded by the long exports, after each batch of tiles and after each image.

    Attributes
    ----------
    done, total : int
        Images finished (written or failed) and images in the job.
    name : str
        The image being worked on (its project name, or its path relative to the input folder).
    kind : {"tiles", "image"}
        ``"tiles"``: progress inside one image (``tiles_done`` of ``tiles_total``);
        ``"image"``: the image is finished (``outputs`` written, or ``error``).
    outputs : tuple of Path
        Files written for this image.
    error : str or None
        Why the image was skipped (unreadable, wrong channel count, ...).
    seconds : float
        Wall time since the job started.
    """

    done: int
    total: int
    name: str
    kind: str = "image"
    outputs: tuple[Path, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    tiles_done: int = 0
    tiles_total: int = 0


@dataclass
class ExportResult:
    """What a long export returns.

    ``written`` maps each image to its files and ``failed`` lists ``(image, reason)``, an image
    being its key in the project (:func:`export_predictions_iter`) or its path relative to the
    input folder (:func:`predict_folder_iter`); ``manifest`` is the JSON record of the job.
    """

    out_dir: Path
    model_version: str | None
    written: dict[str, list[Path]] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    manifest: Path | None = None
    completed: bool = False

    @property
    def files(self) -> list[Path]:
        return [p for paths in self.written.values() for p in paths]


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _opened(project: Project | str | os.PathLike) -> Iterator[Project]:
    """Use an open Project as it is, or open a folder read-only for the duration."""
    if isinstance(project, Project):
        if project.closed:
            raise ProjectError(f"Project {str(project.folder)!r} is closed; open it again.")
        yield project
        return
    opened = Project.open(project, read_only=True)
    try:
        yield opened
    finally:
        opened.close()


def _out_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output {str(out)!r} exists and is not a folder; pick a folder path.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"Cannot create output folder {str(out)!r}: {err}.") from err
    return out


def _write_json(path: Path, doc: Any) -> Path:
    serialize.write_json(path, doc)
    return path


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> Path:
    serialize.write_csv(path, columns, rows)
    return path


def _write_stack(path: Path, array: np.ndarray) -> Path:
    """A (K, H, W) float stack as K grey pages (never read back as RGB when K is 3 or 4)."""
    data = sf.encode_tiff(np.ascontiguousarray(array, dtype=np.float32), photometric="minisblack")
    atomic.atomic_write_bytes(path, data)
    return path


def _version_str() -> str:
    from .. import __version__

    return __version__


def _check_maps(maps: Sequence[str] | str | None, mode: str) -> tuple[str, ...]:
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


def _inference_config(project: Project, device: str) -> InferenceConfig:
    choose_device(device)  # a clear ValueError for an unknown / unavailable device, up front
    saved = project.get_setting("inference_config")
    cfg = InferenceConfig.from_dict(saved) if saved else InferenceConfig()
    return cfg.replace(device=device)


def _decided(cfg: ModelConfig, project: Project) -> ModelConfig:
    """``cfg`` with a concrete polarity: a model saved with "pool" still to decide (by a script;
    a session decides it before training) gets the project's rule, as a session would."""
    if cfg.polarity != "pool":
        return cfg
    return cfg.replace(polarity=decide_project_polarity(project))


def _run_prediction(model, image, *, mode, maps, config, name, done, total, t0):
    """predict_iter, re-yielding its tile progress as ExportProgress; returns the Prediction."""
    gen = predict_iter(model, image, mode=mode, maps=maps, config=config)
    while True:
        try:
            tiles = next(gen)
        except StopIteration as stop:
            return stop.value
        yield ExportProgress(done, total, name, "tiles", seconds=time.perf_counter() - t0,
                             tiles_done=tiles.done, tiles_total=tiles.total)


def _write_prediction(pred, out: Path, stem: str, *, probabilities: bool,
                      maps: Sequence[str]) -> list[Path]:
    files = [write_tiff(out / f"{stem}_labels.tif", pred.labels)]
    if probabilities:
        files.append(_write_stack(out / f"{stem}_probs.tif", pred.probs))
    for name in maps:
        files.append(write_tiff(out / f"{stem}_{name}.tif",
                                pred.uncertainty[name].astype(np.float32, copy=False)))
    return files


# --------------------------------------------------------------------------- labels


def export_labels(
    project: Project | str | os.PathLike, out_dir: str | os.PathLike
) -> list[Path]:
    """Write every submitted image's labels as TIFF class maps.

    Parameters
    ----------
    project : Project or path
        An open project, or a project folder (opened read-only).
    out_dir : path
        Created if missing. Receives ``<key>.tif`` per submitted image (``key`` is the
        file-name-safe name of the image, as in the project's ``labels/`` folder),
        ``reviewed/<key>.tif`` (0/1 uint8) for images where only part of the image was
        reviewed (absent = the whole image is ground truth), and ``labels.csv``: image id,
        name, key, source path, files, reviewed fraction.

    Returns
    -------
    paths : list of Path
        The files written (label maps, masks, then ``labels.csv``); empty (no CSV) when nothing
        was submitted yet.
    """
    with _opened(project) as proj:
        out = _out_dir(out_dir)
        written: list[Path] = []
        rows = []
        for image_id in proj.labelled_ids():
            rec = proj.get_image(image_id)
            loaded = proj.load_labels(image_id)
            if loaded is None:  # submitted row but files gone is raised by load_labels
                continue
            labels, reviewed = loaded
            path = write_tiff(out / f"{rec.key}.tif", labels)
            written.append(path)
            mask_path = None
            if reviewed is not None:
                (out / "reviewed").mkdir(exist_ok=True)
                mask_path = write_tiff(out / "reviewed" / f"{rec.key}.tif",
                                       reviewed.astype(np.uint8))
                written.append(mask_path)
            rows.append({
                "image_id": rec.id, "name": rec.name, "key": rec.key, "source": str(rec.path),
                "labels": path.name,
                "reviewed": "" if mask_path is None else f"reviewed/{mask_path.name}",
                "reviewed_fraction": 1.0 if reviewed is None else round(float(reviewed.mean()), 6),
                "height": labels.shape[0], "width": labels.shape[1], "dtype": str(labels.dtype),
            })  # fmt: skip
        if rows:
            written.append(_write_csv(out / "labels.csv", list(rows[0]), rows))
        return written


# --------------------------------------------------------------------------- predictions


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
    maps = _check_maps(maps, mode)
    with _opened(project) as proj:
        config = _inference_config(proj, device)
        model, meta = proj.load_unet(model_version)
        version = meta["version"]
        decided = _decided(model.config, proj)
        polarity, margin = decided.polarity, decided.polarity_margin
        records = [r for r in proj.images()
                   if include_submitted or r.status != "submitted"]  # fmt: skip
        out = _out_dir(out_dir)
        result = ExportResult(out, version)
        t0 = time.perf_counter()
        total = len(records)
        try:
            for n, rec in enumerate(records, 1):
                try:
                    raw = proj.load_image(rec.id)  # (H, W) or channels-last (H, W, C)
                    image = prepare_image(raw, polarity=polarity, polarity_margin=margin,
                                          channel_axis=-1 if raw.ndim == 3 else None,
                                          channels=model.config.in_channels)
                    pred = yield from _run_prediction(
                        model, image, mode=mode, maps=maps, config=config, name=rec.name,
                        done=n - 1, total=total, t0=t0)
                    files = _write_prediction(pred, out, rec.key, probabilities=probabilities,
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
            result.manifest = _write_json(out / "predictions.json", serialize.to_jsonable({
                "napari_activeseg": _version_str(), "created_at": sf.utc_now(),
                "project": str(proj.folder), "model_version": version, "mode": mode,
                "maps": list(maps), "probabilities": probabilities, "polarity": polarity,
                "polarity_margin": margin,
                "classes": proj.classes, "completed": result.completed,
                "images": [{"image_id": by_key[key].id, "name": by_key[key].name, "key": key,
                            "files": [p.name for p in files]}
                           for key, files in result.written.items()],
                "failed": [{"image_id": by_key[k].id, "name": by_key[k].name, "key": k,
                            "reason": r} for k, r in result.failed],
            }))  # fmt: skip
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


# --------------------------------------------------------------------------- model


class PaddedSoftmax(nn.Module):
    """Deployment wrapper: pad any (H, W) to the U-Net's size multiple, softmax, crop back.

    Padding is the U-Net's own rule (reflect at the bottom/right, replicate when the image is
    too small to reflect), written so that :func:`torch.jit.script` keeps it dynamic.
    ``core`` is the U-Net traced on a size multiple (size-generic for such inputs).
    """

    def __init__(self, core: nn.Module, multiple: int) -> None:
        super().__init__()
        self.core = core
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        w = x.shape[3]
        m = self.multiple
        ph = (m - h % m) % m
        pw = (m - w % m) % m
        if ph > 0 or pw > 0:
            if ph < h and pw < w:
                x = F.pad(x, [0, pw, 0, ph], mode="reflect")
            else:
                x = F.pad(x, [0, pw, 0, ph], mode="replicate")
        logits = self.core(x)
        return torch.softmax(logits[:, :, :h, :w], dim=1)


class _EagerPaddedSoftmax(nn.Module):
    """The same computation for the ONNX tracer (reflect padding, amounts traced from the shape).

    The tracer records the pad amounts from the input shape, so the ONNX graph handles any
    H, W >= the size multiple (reflect needs pad < size).
    """

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        m = self.multiple
        x = F.pad(x, [0, (m - w % m) % m, 0, (m - h % m) % m], mode="reflect")
        logits = self.net(x)
        return torch.softmax(logits[:, :, :h, :w], dim=1)


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Tracing warns about Python-side shape logic (handled here by the padding wrapper) and
    about its own deprecation; neither concerns the user of an export."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        yield


def preprocessing_spec(model_config: ModelConfig, *, classes: Sequence[str],
                       colors: Sequence[str], version: str | None = None,
                       channel_names: Sequence[str] | None = None,
                       inference: InferenceConfig | None = None) -> dict[str, Any]:
    """The ``preprocessing.json`` document: everything needed to feed the exported model.

    Numbers come from the code that prepares images (:func:`.preprocess.prepare_image`,
    :func:`.imageio.normalize_image`), so the document cannot drift from what training saw.

    Raises
    ------
    ValueError
        If the configuration's polarity is "pool" (still to decide): the document records the
        concrete rule the project decided ("invert" or "none"), which another tool applies to
        every image as it is.
    """
    if model_config.polarity == "pool":
        raise ValueError("The model's polarity is 'pool', still to decide: resolve it first "
                         "(model_config.replace(polarity=decide_project_polarity(project)) in "
                         "core.preprocess); preprocessing.json records 'invert' or 'none'.")
    params = inspect.signature(prepare_image).parameters
    low, high = float(params["low"].default), float(params["high"].default)
    multiple = model_config.multiple
    channels = list(channel_names) if channel_names else (
        ["gray"] if model_config.in_channels == 1 else
        ["red", "green", "blue"] if model_config.in_channels == 3 else
        [f"channel {i}" for i in range(model_config.in_channels)])
    inference = inference or InferenceConfig()
    return {
        "format": PREPROCESSING_FORMAT,
        "format_version": 1,
        "napari_activeseg": _version_str(),
        "model_version": version,
        "created_at": sf.utc_now(),
        "input": {
            "layout": "NCHW", "dtype": "float32",
            "in_channels": model_config.in_channels,
            "channel_order": channels,
            "channel_order_note": "channels in the order the image stores them, read channels-"
                                  "last ((H, W, C); RGB as R, G, B; a (C, H, W) TIFF stack with "
                                  "its channel axis moved last); a 2D image is one channel",
            "channel_matching": "after normalization, an image with another channel count is "
                                "matched to in_channels: a 1-channel image is repeated on every "
                                "channel; for in_channels = 1 a 3-channel image becomes the "
                                "mean of its channels; other counts are refused",
            "any_size": True,
            "size_multiple": multiple,
            "padding": "done inside the TorchScript model: reflect-pad bottom/right to a multiple"
                       f" of {multiple} (replicate if the image is smaller than the pad), crop "
                       "the output back",
        },
        "normalization": {
            "method": "percentile", "per_channel": True,
            "low_percentile": low, "high_percentile": high,
            "formula": "x = (raw - p_low) / (p_high - p_low), per channel, in float32 "
                       "(float64 for 32/64-bit inputs)",
            "clip": list(_CLIP_RANGE),
            "percentile_method": "numpy.percentile, method='linear'",
            "percentile_subsample": "if H*W > max_pixels, percentiles are taken on "
                                    "channel[::s, ::s] with s = ceil(sqrt(H*W / max_pixels))",
            "max_pixels": _PERCENTILE_MAX_PIXELS,
            "degenerate": "if p_high <= p_low use the channel's min and max; a constant channel "
                          "becomes all zeros",
        },
        "polarity": {
            "rule": model_config.polarity,
            "margin": model_config.polarity_margin,
            "rules": {"none": "no change (x stays); with a margin, an image whose "
                              "background_level is greater than threshold + margin is "
                              "inverted (x -> 1 - x, all channels)",
                      "invert": "x -> 1 - x (all channels); with a margin, an image whose "
                                "background_level is less than threshold - margin stays as "
                                "it is",
                      "auto": "per image (models saved before one rule per project; margin "
                              "ignored): invert (x -> 1 - x, all channels) when this image's "
                              "background_level is greater than threshold"},
            "decided": "'invert' and 'none' are decided once per project, from its images, and "
                       "applied as they are to every image, new ones included: never re-decide "
                       "them per image (the margin alone makes exceptions, for images whose "
                       "background is unmistakably of the other kind; margin null = none). "
                       "The decision, for a new project of your own: take up to "
                       f"{DECIDE_MAX_IMAGES} images (all, or those at indices "
                       f"round(linspace(0, n - 1, {DECIDE_MAX_IMAGES})) of the n in order), "
                       "measure each one's background_level, and choose 'invert' when the "
                       "median of these levels is greater than threshold, else 'none'",
            "background_level": "median of the channel-mean of the normalised image, sampled "
                                "as [::s, ::s] with s = max(1, int(sqrt(H*W / sample_pixels)))",
            "bright_background": "background_level greater than threshold",
            "threshold": BRIGHT_THRESHOLD, "sample_pixels": LEVEL_SAMPLE_PIXELS,
            "decision_max_images": DECIDE_MAX_IMAGES,
            "applied_after": "normalization",
        },
        "output": {
            "kind": "probabilities", "layout": "NKHW", "dtype": "float32",
            "labels": "argmax over K (axis 1); 0 = background, k = classes[k]",
            "classes": list(classes), "colors": list(colors),
            "n_classes": model_config.n_classes,
        },
        "model_config": model_config.to_dict(),
        "inference": {
            "tiling": "for large images predict overlapping tiles and blend them; the plugin "
                      "uses these settings",
            **inference.to_dict(),
        },
        "how_to_apply": [
            "1. Read the image as (H, W) or channels-last (H, W, C) in its stored dtype.",
            ("2. Per channel: p_low, p_high = percentiles (low_percentile, high_percentile); "
             "x = clip((raw - p_low) / (p_high - p_low), clip[0], clip[1]) as float32."),
            ("3. Polarity: level = background_level of x (the median of the channel-mean of "
             "x, sampled as described). rule 'invert': x = 1 - x, unless margin is set and "
             "level < threshold - margin; rule 'none': x stays, unless margin is set and "
             "level > threshold + margin (then x = 1 - x); rule 'auto' (older models): "
             "x = 1 - x when level > threshold."),
            ("4. Arrange as (1, C, H, W) float32 and run the model: "
             f"torch.jit.load('{TORCHSCRIPT_NAME}')(x) -> (1, K, H, W) probabilities (any H, W); "
             f"or the ONNX model '{ONNX_NAME}' (input 'image', output 'probabilities'; "
             f"H, W >= {multiple})."),
            "5. labels = probabilities.argmax(1): a class map, 0 = background.",
        ],
        "python_example": (
            "import numpy as np, torch, tifffile\n"
            "polarity, margin = POLARITY, MARGIN  # polarity.rule and .margin\n"
            "raw = tifffile.imread('image.tif').astype(np.float32)\n"
            "img = raw[..., None] if raw.ndim == 2 else raw\n"
            "lo, hi = np.percentile(img, [LOW, HIGH], axis=(0, 1))\n"
            "x = np.clip((img - lo) / (hi - lo), -0.5, 1.5).transpose(2, 0, 1)\n"
            "s = max(1, int(np.sqrt(x.shape[1] * x.shape[2] / SAMPLE)))\n"
            "level = np.median(x[:, ::s, ::s].mean(0))\n"
            "if polarity == 'auto':\n"
            "    invert = level > THRESHOLD\n"
            "elif margin is None:\n"
            "    invert = polarity == 'invert'\n"
            "elif polarity == 'invert':\n"
            "    invert = not level < THRESHOLD - margin\n"
            "else:\n"
            "    invert = level > THRESHOLD + margin\n"
            "if invert:\n"
            "    x = 1 - x\n"
            f"model = torch.jit.load('{TORCHSCRIPT_NAME}')\n"
            "probs = model(torch.from_numpy(x[None].astype(np.float32)))[0].numpy()\n"
            "labels = probs.argmax(0).astype(np.uint8)"
        ).replace("LOW", repr(low)).replace("HIGH", repr(high)).replace(
            "POLARITY", repr(model_config.polarity)).replace(
            "MARGIN", repr(model_config.polarity_margin)).replace(
            "THRESHOLD", repr(BRIGHT_THRESHOLD)).replace("SAMPLE", repr(LEVEL_SAMPLE_PIXELS)),
    }


def _channel_names(proj: Project, in_channels: int) -> list[str] | None:
    saved = proj.get_setting("channel_names")
    if isinstance(saved, list) and len(saved) == in_channels:
        return [str(c) for c in saved]
    return None


def _verify_sizes(multiple: int, trace_size: int) -> list[tuple[int, int]]:
    """Sizes unlike the trace example: odd, not multiples, and one too small to reflect."""
    return [(trace_size + multiple + 3, trace_size + 2 * multiple - 1), (1, multiple + 1)]


def export_model(
    project: Project | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    version: str | None = None,
    onnx: bool = True,
) -> dict[str, Any]:
    """Export a model version for use outside napari-activeseg.

    Writes into `out_dir`:

    - ``model.torchscript.pt``: ``torch.jit.load(path)(x)`` maps ``(N, C, H, W)`` float32 of any
      H, W to ``(N, K, H, W)`` probabilities (padding inside). It is checked after saving: the
      loaded file must agree with the project model on sizes unlike the trace example.
    - ``model.onnx`` (if `onnx` and the ``onnx`` package is installed; verified with
      ``onnxruntime`` when that is installed): input ``image``, output ``probabilities``,
      dynamic N, H, W (H, W at least the size multiple).
    - ``model.safetensors`` + ``model.json``: the project's weights and description, byte for
      byte (:meth:`Project.import_model` takes them back).
    - ``preprocessing.json``: see :func:`preprocessing_spec`.

    Returns
    -------
    info : dict
        ``version``, ``files`` (name -> path), ``torchscript`` (path, verified sizes and max
        difference), ``onnx`` (path or None, ``status`` ``"written"``/``"verified"``/
        ``"skipped"``/``"failed"``, ``note``), ``preprocessing``, ``weights``, ``config``.

    Raises
    ------
    ProjectError
        If the project has no usable model (or not `version`).
    RuntimeError
        If the saved TorchScript model does not reproduce the project model.
    """
    with _opened(project) as proj:
        net, meta = proj.load_unet(version, device="cpu")
        version = meta["version"]
        cfg: ModelConfig = _decided(net.config, proj)
        info = next(m for m in proj.models() if m.version == version)
        out = _out_dir(out_dir)
        files: dict[str, Path] = {}

        # weights + description, verified against the checksum the store recorded
        weights = info.weights_path.read_bytes()
        doc = json.loads(info.json_path.read_text())
        if sf.sha256_bytes(weights) != doc.get("weights_sha256"):
            raise ProjectError(f"{info.weights_path.name} changed while it was being exported; "
                               "try again.")
        doc["weights"] = WEIGHTS_NAME
        # the rule the model is used with, also where it was saved with "pool" still to decide
        doc["model_config"] = cfg.to_dict()
        doc.setdefault("meta", {})["exported_from"] = {"project": str(proj.folder),
                                                       "version": version}
        atomic.atomic_write_bytes(out / WEIGHTS_NAME, weights)
        files["weights"] = out / WEIGHTS_NAME
        files["config"] = _write_json(out / CONFIG_NAME, doc)

        saved_inf = proj.get_setting("inference_config")
        spec = preprocessing_spec(
            cfg, classes=meta.get("classes") or proj.classes,
            colors=meta.get("colors") or proj.colors, version=version,
            channel_names=_channel_names(proj, cfg.in_channels),
            inference=InferenceConfig.from_dict(saved_inf) if saved_inf else None)

        # TorchScript: the U-Net traced on a size multiple, inside a scripted padding wrapper
        m = cfg.multiple
        trace_size = max(2 * m, 32)
        example = torch.randn(1, cfg.in_channels, trace_size, trace_size,
                              generator=torch.Generator().manual_seed(0))
        ts_path = out / TORCHSCRIPT_NAME
        with _quiet_tracing(), torch.no_grad():
            core = torch.jit.trace(net, example)
            scripted = torch.jit.script(PaddedSoftmax(core, m))
            buffer = io.BytesIO()
            torch.jit.save(scripted, buffer)
            atomic.atomic_write_bytes(ts_path, buffer.getvalue())
            loaded = torch.jit.load(str(ts_path), map_location="cpu")
        checks = []
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for h, w in _verify_sizes(m, trace_size):
                x = torch.rand(1, cfg.in_channels, h, w, generator=gen)
                ref = torch.softmax(net(x), dim=1)
                got = loaded(x)
                diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
                checks.append({"size": [h, w], "max_abs_diff": diff})
        worst = max(c["max_abs_diff"] for c in checks)
        if not worst <= 1e-4:
            ts_path.unlink(missing_ok=True)
            raise RuntimeError(
                f"The exported TorchScript model differs from the project model by {worst:.3g} "
                f"on sizes {[c['size'] for c in checks]}; it was not kept. Please report this."
            )
        files["torchscript"] = ts_path
        ts_info = {"path": ts_path, "trace_size": [trace_size, trace_size], "checks": checks}

        onnx_info = _export_onnx(net, cfg, out / ONNX_NAME) if onnx else {
            "path": None, "status": "skipped", "note": "not requested"}
        if onnx_info["path"] is not None:
            files["onnx"] = onnx_info["path"]
        spec["files"] = {"torchscript": TORCHSCRIPT_NAME,
                         "onnx": ONNX_NAME if onnx_info["path"] is not None else None,
                         "weights": WEIGHTS_NAME, "config": CONFIG_NAME}
        spec["onnx"] = {k: v for k, v in onnx_info.items() if k != "path"}
        files["preprocessing"] = _write_json(out / PREPROCESSING_NAME, serialize.to_jsonable(spec))
        return {
            "version": version, "out_dir": out, "files": files,
            "torchscript": ts_info, "onnx": onnx_info,
            "preprocessing": files["preprocessing"], "weights": files["weights"],
            "config": files["config"],
        }  # fmt: skip


def _export_onnx(net: nn.Module, cfg: ModelConfig, path: Path) -> dict[str, Any]:
    """ONNX via torch's TorchScript-based exporter; skipped (with a note) without ``onnx``."""
    if importlib.util.find_spec("onnx") is None:
        return {"path": None, "status": "skipped",
                "note": "ONNX export needs the 'onnx' package, which is not installed "
                        "(pip install onnx, optionally onnxruntime to verify); the TorchScript "
                        "model was written."}
    m = cfg.multiple
    size = 2 * m + 1  # not a multiple: the pad amounts are traced from the shape
    example = torch.rand(1, cfg.in_channels, size, size + 2,
                         generator=torch.Generator().manual_seed(0))
    wrapper = _EagerPaddedSoftmax(net, m).eval()
    kwargs: dict[str, Any] = {
        "input_names": ["image"], "output_names": ["probabilities"], "opset_version": 17,
        "dynamic_axes": {"image": {0: "batch", 2: "height", 3: "width"},
                         "probabilities": {0: "batch", 2: "height", 3: "width"}},
    }
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    buffer = io.BytesIO()
    try:
        with _quiet_tracing(), torch.no_grad():
            torch.onnx.export(wrapper, (example,), buffer, **kwargs)
    except Exception as err:  # noqa: BLE001 - ONNX is optional; TorchScript stays the format
        return {"path": None, "status": "failed",
                "note": f"torch could not export this model to ONNX ({type(err).__name__}: "
                        f"{str(err)[:300]}); use the TorchScript model."}
    atomic.atomic_write_bytes(path, buffer.getvalue())
    result: dict[str, Any] = {"path": path, "status": "written",
                              "note": f"inputs need H, W >= {m} (reflect padding)."}
    if importlib.util.find_spec("onnxruntime") is None:
        result["note"] += " Not verified: onnxruntime is not installed."
        return result
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = torch.rand(1, cfg.in_channels, 3 * m + 5, 2 * m + 3,
                       generator=torch.Generator().manual_seed(2))
        got = session.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            ref = torch.softmax(net(x), dim=1).numpy()
        diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
    except Exception as err:  # noqa: BLE001
        result["note"] += f" Verification with onnxruntime failed: {err}"
        return result
    result["max_abs_diff"] = diff
    if diff <= 1e-4:
        result["status"] = "verified"
    else:
        path.unlink(missing_ok=True)
        result.update(path=None, status="failed",
                      note=f"the ONNX model differs from the project model by {diff:.3g}; it "
                           "was not kept. Use the TorchScript model.")
    return result


# --------------------------------------------------------------------------- predict a folder


def _output_stems(paths: Sequence[Path], folder: Path) -> list[str]:
    """``sub/name`` per input (relative to the input folder, no suffix); ``a.tif`` and ``a.png``
    side by side keep their suffix so that neither overwrites the other."""
    rel = [p.relative_to(folder) for p in paths]
    plain = [r.with_suffix("").as_posix() for r in rel]
    counts: dict[str, int] = {}
    for s in plain:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    return [s if counts[s.lower()] == 1 else f"{s}_{r.suffix.lstrip('.').lower()}"
            for s, r in zip(plain, rel, strict=True)]


def predict_folder_iter(
    project_or_path: Project | str | os.PathLike,
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    version: str | None = None,
    pattern: str = "*",
    recursive: bool = False,
    device: str = "auto",
    uncertainty: Sequence[str] | str | None = None,
    probabilities: bool = False,
    channel_axis: int | None = None,
) -> Generator[ExportProgress, None, ExportResult]:
    """Apply a project's model to a folder of new images.

    The project is opened read-only (a folder path), so this works while napari has it open.
    Each image is read (:func:`.imageio.read_image`), prepared like the training images
    (:func:`.preprocess.prepare_image` with the model's polarity) and predicted tile by tile.
    Writes ``<name>_labels.tif`` (sub-folders kept with `recursive`), ``<name>_<map>.tif`` per
    `uncertainty` map, ``<name>_probs.tif`` if `probabilities`, and ``predict.json`` (project,
    model version, settings, per-file outputs and failures).

    Parameters
    ----------
    project_or_path : Project or path
    input_dir, out_dir : path
        `out_dir` is created; it must differ from `input_dir`.
    version : str, optional
        Model version (default: the latest good one).
    pattern, recursive :
        Which files, see :func:`.imageio.list_images`.
    device : str
    uncertainty : str or sequence of str, optional
        One-pass maps: ``entropy``, ``margin``, ``least_confidence``, ``raw_margin``.
    probabilities : bool
    channel_axis : int, optional
        Channel axis of multichannel TIFF stacks.

    Yields
    ------
    ExportProgress
        Unreadable files (or ones with the wrong channel count) come as records with
        ``error`` set; they are skipped, not fatal.

    Returns
    -------
    ExportResult

    Raises
    ------
    ValueError
        If the input folder is missing or holds no image, `out_dir` is the input folder, the
        device or a map name is unknown, or the project has no model.
    """
    maps = _check_maps(uncertainty, "single")
    folder = Path(input_dir).expanduser().resolve()
    paths = list_images(folder, pattern=pattern, recursive=recursive)
    out_path = Path(out_dir).expanduser().resolve()
    if out_path == folder:
        raise ValueError(f"The output folder must differ from the input folder {str(folder)!r};"
                         " pick another OUT_DIR.")
    # outputs of an earlier run inside the input tree are not inputs
    paths = [p for p in paths if out_path not in p.parents]
    if not paths:
        raise ValueError(f"No images to predict in {str(folder)!r} (only the output folder "
                         "matched).")
    with _opened(project_or_path) as proj:
        config = _inference_config(proj, device)
        model, meta = proj.load_unet(version)
        version = meta["version"]
        cfg: ModelConfig = _decided(model.config, proj)
        out = _out_dir(out_path)
        result = ExportResult(out, version)
        stems = _output_stems(paths, folder)
        t0 = time.perf_counter()
        total = len(paths)
        rows: list[dict[str, Any]] = []
        try:
            for n, (path, stem) in enumerate(zip(paths, stems, strict=True), 1):
                name = path.relative_to(folder).as_posix()
                t_image = time.perf_counter()
                try:
                    raw = read_image(path, channel_axis=channel_axis)  # channels last
                    image = prepare_image(raw, polarity=cfg.polarity,
                                          polarity_margin=cfg.polarity_margin,
                                          channel_axis=-1 if raw.ndim == 3 else None,
                                          channels=cfg.in_channels)
                    pred = yield from _run_prediction(
                        model, image, mode="single", maps=maps, config=config, name=name,
                        done=n - 1, total=total, t0=t0)
                    target = out / stem
                    target.parent.mkdir(parents=True, exist_ok=True)
                    files = _write_prediction(pred, target.parent, target.name,
                                              probabilities=probabilities, maps=maps)
                except (ValueError, OSError) as err:
                    reason = str(err)
                    result.failed.append((name, reason))
                    rows.append({"input": name, "status": "failed", "reason": reason})
                    yield ExportProgress(n, total, name, error=reason,
                                         seconds=time.perf_counter() - t0)
                    continue
                result.written[name] = files
                rows.append({"input": name, "status": "written",
                             "outputs": [p.relative_to(out).as_posix() for p in files],
                             "shape": list(pred.labels.shape),
                             "seconds": round(time.perf_counter() - t_image, 3)})
                yield ExportProgress(n, total, name, outputs=tuple(files),
                                     seconds=time.perf_counter() - t0)
            result.completed = True
        finally:
            result.manifest = _write_json(out / "predict.json", serialize.to_jsonable({
                "napari_activeseg": _version_str(), "created_at": sf.utc_now(),
                "project": str(proj.folder), "model_version": version,
                "input_dir": str(folder), "pattern": pattern, "recursive": recursive,
                "device": str(choose_device(device)), "uncertainty": list(maps),
                "probabilities": probabilities, "polarity": cfg.polarity,
                "polarity_margin": cfg.polarity_margin,
                "classes": meta.get("classes") or proj.classes, "completed": result.completed,
                "n_written": len(result.written), "n_failed": len(result.failed),
                "files": rows,
            }))  # fmt: skip
        return result


def predict_folder(
    project_or_path: Project | str | os.PathLike,
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    progress: Callable[[ExportProgress], None] | None = None,
    **kwargs: Any,
) -> ExportResult:
    """Run :func:`predict_folder_iter` to the end (`progress` gets every record)."""
    return run_to_end(predict_folder_iter(project_or_path, input_dir, out_dir, **kwargs), progress)


# --------------------------------------------------------------------------- provenance

_SUBMISSION_COLUMNS = (
    "submission_id", "image_id", "image_name", "image_key", "created_at", "seconds",
    "pixels_changed", "objects_added", "objects_removed", "model_version", "strategy",
    "recovered", "labels_sha256", "reviewed_sha256",
)  # fmt: skip


def export_provenance(
    project: Project | str | os.PathLike, out_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write how every label and model came to be.

    Files in `out_dir`:

    - ``history.csv`` / ``history.json``: the query history (:meth:`Project.export_history`):
      what was suggested, by which model version and strategy, with which score, and what the
      user did at what effort;
    - ``rounds.json``: one entry per active-learning round (model version, strategy, seed,
      labelled image ids and names, metrics, wall times) with the model's training record
      (config, steps, stop reason, ...);
    - ``submissions.csv``: every submission with its time spent and correction effort
      (pixels changed, objects added/removed), model version and strategy;
    - ``project.json``: classes, colours, settings, images with status, model versions.

    Returns
    -------
    files : dict of str to Path
    """
    with _opened(project) as proj:
        out = _out_dir(out_dir)
        files = {"history_csv": proj.export_history(out / "history.csv"),
                 "history_json": proj.export_history(out / "history.json")}
        records = {r.id: r for r in proj.images(include_removed=True)}
        models = {m.version: m for m in proj.models()}

        def name_of(image_id: int) -> str | None:
            rec = records.get(image_id)
            return None if rec is None else rec.name

        rounds = []
        for r in proj.rounds():
            model = models.get(r.model_version or "")
            model_meta = None
            if model is not None:
                model_meta = {k: v for k, v in model.meta.items() if k != "history"}
                model_meta["model_config"] = model.model_config.to_dict()
                model_meta["created_at"] = model.created_at
            rounds.append({**asdict(r), "labelled_names": [name_of(i) for i in r.labelled_ids],
                           "n_labelled": len(r.labelled_ids), "model": model_meta})
        files["rounds"] = _write_json(out / "rounds.json", serialize.to_jsonable(rounds))

        rows = []
        for s in proj.submissions():
            rec = records.get(s.image_id)
            rows.append({
                "submission_id": s.id, "image_id": s.image_id, "image_name": name_of(s.image_id),
                "image_key": None if rec is None else rec.key, "created_at": s.created_at,
                "seconds": s.seconds, "pixels_changed": s.pixels_changed,
                "objects_added": s.objects_added, "objects_removed": s.objects_removed,
                "model_version": s.model_version, "strategy": s.strategy,
                "recovered": int(s.recovered), "labels_sha256": s.labels_sha256,
                "reviewed_sha256": s.reviewed_sha256,
            })  # fmt: skip
        files["submissions"] = _write_csv(out / "submissions.csv", _SUBMISSION_COLUMNS, rows)

        files["project"] = _write_json(out / "project.json", serialize.to_jsonable({
            "napari_activeseg": _version_str(), "exported_at": sf.utc_now(),
            "project": str(proj.folder), "schema_version": proj.schema_version,
            "classes": proj.classes, "colors": proj.colors, "settings": proj.settings(),
            "images": [{"image_id": r.id, "name": r.name, "key": r.key, "path": str(r.path),
                        "sha256": r.sha256, "shape": list(r.shape), "dtype": r.dtype,
                        "status": r.status, "removed": r.removed, "origin": r.origin}
                       for r in records.values()],
            "models": [{"version": m.version, "created_at": m.created_at,
                        "model_config": m.model_config.to_dict()} for m in models.values()],
        }))  # fmt: skip
        return files
