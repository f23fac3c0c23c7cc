"""Predicting a folder of new images with a project's model (``activeseg predict``).

:func:`predict_folder_iter` reads each image, prepares it as the training images were, predicts
it and writes its labels (and maps, probabilities) under its path relative to the input folder,
and ``predict.json`` (project, model version, settings, per-file outputs and failures). An image
over ``large_image_pixels`` is read lazily and predicted strip by strip
(:func:`.inference.predict_rows`), its outputs written as tiled TIFFs a tile row at a time
(:class:`.largeimage.TiledTiffWriter`): its probability maps never exist whole.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from .. import _store_files as sf
from .. import serialize
from ..cluster import PortableModel, check_scheduler, map_images
from ..config import InferenceConfig, ModelConfig
from ..device import choose_device
from ..imageio import list_images, read_image
from ..inference import TileProgress, predict_rows
from ..largeimage import (
    LARGE_IMAGE_PIXELS,
    LARGE_SETTING,
    LazyPrepared,
    TiledTiffWriter,
    is_large,
    large_threshold,
    open_if_large,
)
from ..progress import run_to_end
from ..project import Project
from ..validation import check_positive
from .bioimageio_run import is_bioimageio_source
from .common import decided_config, opened, output_folder
from .predicting import (
    check_maps,
    inference_config,
    predict_image,
    predict_prepared,
    prepared,
    write_prediction,
)
from .records import ExportProgress, ExportResult

__all__ = ["predict_folder", "predict_folder_iter"]


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
    scheduler: Any = None,
    large_image_pixels: int | None = None,
) -> Generator[ExportProgress, None, ExportResult]:
    """Apply a project's model to a folder of new images.

    The project is opened read-only (a folder path), so this works while napari has it open.
    Each image is read (:func:`.imageio.read_image`), prepared like the training images
    (:func:`.preprocess.prepare_image` with the model's polarity) and predicted tile by tile.
    Writes ``<name>_labels.tif`` (sub-folders kept with `recursive`), ``<name>_<map>.tif`` per
    `uncertainty` map, ``<name>_probs.tif`` if `probabilities`, and ``predict.json`` (project,
    model version, settings, per-file outputs and failures).

    An image of more than `large_image_pixels` is never held whole: a TIFF or OME-Zarr is read
    lazily, prepared a strip at a time (:class:`.largeimage.LazyPrepared`) and predicted strip
    by strip (:func:`.inference.predict_rows`: the same tiles, batches and blending, so the same
    labels), and its outputs are written as tiled (256 px), zlib-compressed TIFFs of the same
    names, dtypes and layout a tile row at a time. A bioimage.io package refuses such an image
    (its preprocessing takes statistics of every pixel). With `scheduler`, every image is still
    read and predicted whole (a task per image): large ones need the memory for it.

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
    scheduler : str or distributed.Client, optional
        A Dask scheduler (``tcp://host:8786``): each image is predicted by one task on its
        workers (the same labels as here), read and written here, as the results arrive;
        no tile progress. A project's model only.
    large_image_pixels : int, optional
        Images with more pixels are predicted strip by strip (default: the project's
        ``large_image_pixels`` setting, else 4096 x 4096).

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
    maps = check_maps(uncertainty, "single")
    scheduler = check_scheduler(scheduler)
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
    if large_image_pixels is not None:
        large_image_pixels = int(check_positive(large_image_pixels, name=LARGE_SETTING,
                                                integer=True))
    settings = {"input_dir": str(folder), "pattern": pattern, "recursive": recursive,
                "device": str(choose_device(device)), "uncertainty": list(maps),
                "probabilities": probabilities}
    run = _Run(paths, folder, out_path, maps, probabilities, channel_axis, settings)
    if is_bioimageio_source(project_or_path):
        if version is not None:
            raise ValueError("A bioimage.io package holds one model: leave out the version.")
        if scheduler is not None:
            raise ValueError("--scheduler predicts with a project's model; run a bioimage.io "
                             "package here (leave out the scheduler).")
        from .bioimageio_run import open_package

        package = open_package(project_or_path, device=device)
        run.set_large(large_image_pixels or LARGE_IMAGE_PIXELS)

        def refuse(raw):
            h, w = raw.shape[:2]
            raise ValueError(
                f"The image is {h} x {w} pixels, over {LARGE_SETTING} ({run.large}): a "
                "bioimage.io package predicts an image whole (its preprocessing takes "
                "statistics of every pixel), which would not fit in memory. Predict it with "
                "the project instead (activeseg predict PROJECT ...: strip by strip), split it, "
                "or raise --large-image-pixels if it fits.")

        return (yield from run.go(
            package.version, _Predictor(package.model, package.inference, package.prepare,
                                        refuse),
            {"package": str(package.source), "package_name": package.name,
             "preprocessing": [{"id": i, "kwargs": k} for i, k in package.preprocessing],
             "classes": package.classes}))
    with opened(project_or_path) as proj:
        config = inference_config(proj, device)
        model, meta = proj.load_unet(version)
        cfg: ModelConfig = decided_config(model.config, proj)
        run.set_large(large_image_pixels or large_threshold(proj))
        predictor = _Predictor(
            model, config, partial(prepared, cfg=cfg),
            partial(LazyPrepared, polarity=cfg.polarity, polarity_margin=cfg.polarity_margin,
                    channels=cfg.in_channels))
        about = {"project": str(proj.folder), "polarity": cfg.polarity,
                 "polarity_margin": cfg.polarity_margin,
                 "classes": meta.get("classes") or proj.classes}
        if scheduler is not None:
            run.remote = (scheduler, FolderTask(PortableModel(model), cfg, maps, config))
        return (yield from run.go(meta["version"], predictor, about))


@dataclass(frozen=True)
class FolderTask:
    """What every image's task on a cluster shares (scattered once)."""

    model: PortableModel
    config: ModelConfig
    maps: tuple[str, ...]
    inference: InferenceConfig


def predict_raw(item: tuple[int, np.ndarray | str], *, task: FolderTask) -> Any:
    """One image's Prediction on a worker (``item``: its index and raw pixels, or the reason
    it could not be read); the reason (a string) when it cannot be predicted."""
    _, raw = item
    if isinstance(raw, str):
        return raw
    try:
        return run_to_end(predict_image(task.model.get(), raw, task.config, mode="single",
                                        maps=task.maps, config=task.inference, name="",
                                        done=0, total=0, t0=0.0))
    except ValueError as err:
        return str(err)


@dataclass(frozen=True)
class _Predictor:
    """How a run predicts: the network and its settings, the raw pixels made its input whole
    (``(C, H, W)``), and a large image's as a source of prepared rows (or a ValueError)."""

    model: Any
    inference: InferenceConfig
    prepare: Callable[[np.ndarray], np.ndarray]
    rows: Callable[[Any], Any]


@dataclass(frozen=True)
class _Written:
    """A large image's outputs, written as its strips were predicted."""

    files: list[Path]
    shape: tuple[int, int]


def _tiles_record(tiles: TileProgress, *, name, done, total, t0) -> ExportProgress:
    return ExportProgress(done, total, name, "tiles", seconds=time.perf_counter() - t0,
                          tiles_done=tiles.done, tiles_total=tiles.total)


class _Run:
    """One folder predicted: each file read, predicted, written; the manifest."""

    def __init__(self, paths: list[Path], folder: Path, out_path: Path, maps: tuple[str, ...],
                 probabilities: bool, channel_axis: int | None, settings: dict[str, Any]):
        self.paths, self.folder, self.out_path = paths, folder, out_path
        self.maps, self.probabilities, self.channel_axis = maps, probabilities, channel_axis
        self.settings = settings
        self.remote: tuple[Any, FolderTask] | None = None  # (scheduler, task) or here
        self.large = LARGE_IMAGE_PIXELS
        self._targets: list[Path] = []  # per file: its output folder / stem

    def set_large(self, threshold: int) -> None:
        """Images of more pixels are read lazily and predicted strip by strip."""
        self.large = int(threshold)
        self.settings[LARGE_SETTING] = self.large

    def _read(self, n: int, lazy: bool = True) -> Any:
        """File ``n``'s pixels (channels last; lazily when large), or why it cannot be read."""
        try:
            image = open_if_large(self.paths[n], self.channel_axis, self.large) if lazy else None
            return read_image(self.paths[n], channel_axis=self.channel_axis) \
                if image is None else image
        except (ValueError, OSError) as err:
            return str(err)

    def _here(self, predictor: _Predictor, t0: float) -> Generator[Any, None, None]:
        """Tile progress records, and ``(index, Prediction, _Written or reason)`` per file, in
        order."""
        for n, path in enumerate(self.paths):
            pred = self._read(n)
            if not isinstance(pred, str):
                progress = {"name": path.relative_to(self.folder).as_posix(), "done": n,
                            "total": len(self.paths), "t0": t0}
                try:
                    if is_large(pred.shape, self.large):
                        pred = yield from self._strips(predictor, pred, self._targets[n],
                                                       progress)
                    else:
                        pred = yield from predict_prepared(
                            predictor.model, predictor.prepare(pred), mode="single",
                            maps=self.maps, config=predictor.inference, **progress)
                except (ValueError, OSError) as err:
                    pred = str(err)
            yield n, pred

    def _strips(self, predictor: _Predictor, raw: Any, target: Path,
                progress: dict[str, Any]) -> Generator[ExportProgress, None, _Written]:
        """A large image predicted strip by strip, each strip's rows written as they come."""
        source = predictor.rows(raw)
        _, h, w = (int(v) for v in source.shape)
        target.parent.mkdir(parents=True, exist_ok=True)
        files: list[Path] = []
        with ExitStack() as stack:
            writers: list[TiledTiffWriter] = []
            for item in predict_rows(predictor.model, source, mode="single", maps=self.maps,
                                     config=predictor.inference):
                if isinstance(item, TileProgress):
                    yield _tiles_record(item, **progress)
                    continue
                k = item.probs.shape[0]
                if not writers:  # the class count comes with the first band
                    labels_dtype = np.uint8 if k <= 256 else np.uint16
                    outputs = [("labels", (h, w), labels_dtype)]
                    if self.probabilities:
                        outputs.append(("probs", (k, h, w), np.float32))
                    outputs += [(m, (h, w), np.float32) for m in self.maps]
                    for suffix, shape, dtype in outputs:
                        files.append(target.parent / f"{target.name}_{suffix}.tif")
                        writers.append(stack.enter_context(
                            TiledTiffWriter(files[-1], shape, dtype)))
                bands = [item.probs.argmax(axis=0).astype(labels_dtype)]
                if self.probabilities:
                    bands.append(item.probs)
                bands += [item.maps[m] for m in self.maps]
                for writer, band in zip(writers, bands, strict=True):
                    writer.add(band)
        return _Written(files, (h, w))

    def _on_cluster(self) -> Generator[Any, None, None]:
        """``(index, Prediction or reason)`` per file as the cluster's tasks finish."""
        assert self.remote is not None
        scheduler, task = self.remote
        items = ((n, self._read(n, lazy=False)) for n in range(len(self.paths)))
        with closing(map_images(predict_raw, items, scheduler=scheduler,
                                key=lambda item: item[0], shared={"task": task})) as runs:
            for (n, _), pred in runs:
                yield n, pred

    def go(self, version: str | None, predictor: _Predictor,
           about: dict[str, Any]) -> Generator[ExportProgress, None, ExportResult]:
        """Predict every file (here with `predictor`, or on the cluster), write, record."""
        out = output_folder(self.out_path)
        result = ExportResult(out, version)
        stems = _output_stems(self.paths, self.folder)
        self._targets = [out / s for s in stems]
        t0 = time.perf_counter()
        total = len(self.paths)
        rows: dict[int, dict[str, Any]] = {}
        t_image = t0
        source = self._on_cluster() if self.remote else self._here(predictor, t0)
        try:
            for record in source:
                if isinstance(record, ExportProgress):  # tile progress
                    yield record
                    continue
                i, pred = record
                n = len(rows) + 1
                name = self.paths[i].relative_to(self.folder).as_posix()
                reason = pred if isinstance(pred, str) else None
                if isinstance(pred, _Written):
                    files, shape = pred.files, pred.shape
                elif reason is None:
                    shape = pred.labels.shape
                    try:
                        target = out / stems[i]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        files = write_prediction(pred, target.parent, target.name,
                                                 probabilities=self.probabilities,
                                                 maps=self.maps)
                    except (ValueError, OSError) as err:
                        reason = str(err)
                if reason is not None:
                    result.failed.append((name, reason))
                    rows[i] = {"input": name, "status": "failed", "reason": reason}
                    t_image = time.perf_counter()
                    yield ExportProgress(n, total, name, error=reason,
                                         seconds=time.perf_counter() - t0)
                    continue
                result.written[name] = files
                rows[i] = {"input": name, "status": "written",
                           "outputs": [p.relative_to(out).as_posix() for p in files],
                           "shape": list(shape),
                           "seconds": round(time.perf_counter() - t_image, 3)}
                t_image = time.perf_counter()
                yield ExportProgress(n, total, name, outputs=tuple(files),
                                     seconds=time.perf_counter() - t0)
            result.completed = True
        finally:
            source.close()  # on a cluster: cancels the tasks still pending
            result.manifest = out / "predict.json"
            serialize.write_json(result.manifest, {
                "napari_activeseg": __version__, "created_at": sf.utc_now(), **about,
                "model_version": version, **self.settings, "completed": result.completed,
                "n_written": len(result.written), "n_failed": len(result.failed),
                "files": [rows[i] for i in sorted(rows)],
            })  # fmt: skip
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
