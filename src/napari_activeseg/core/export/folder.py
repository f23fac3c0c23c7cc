"""Predicting a folder of new images with a project's model (``activeseg predict``).

:func:`predict_folder_iter` reads each image, prepares it as the training images were, predicts
it and writes its labels (and maps, probabilities) under its path relative to the input folder,
and ``predict.json`` (project, model version, settings, per-file outputs and failures).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass
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
from ..progress import run_to_end
from ..project import Project
from .bioimageio_run import is_bioimageio_source
from .common import decided_config, opened, output_folder
from .predicting import (
    check_maps,
    inference_config,
    predict_image,
    predict_prepared,
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
    scheduler : str or distributed.Client, optional
        A Dask scheduler (``tcp://host:8786``): each image is predicted by one task on its
        workers (the same labels as here), read and written here, as the results arrive;
        no tile progress. A project's model only.

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

        def predict_package(raw, **progress):
            return predict_prepared(package.model, package.prepare(raw), mode="single",
                                    maps=maps, config=package.inference, **progress)

        return (yield from run.go(
            package.version, predict_package,
            {"package": str(package.source), "package_name": package.name,
             "preprocessing": [{"id": i, "kwargs": k} for i, k in package.preprocessing],
             "classes": package.classes}))
    with opened(project_or_path) as proj:
        config = inference_config(proj, device)
        model, meta = proj.load_unet(version)
        cfg: ModelConfig = decided_config(model.config, proj)

        def predict_one(raw, **progress):
            return predict_image(model, raw, cfg, mode="single", maps=maps, config=config,
                                 **progress)

        about = {"project": str(proj.folder), "polarity": cfg.polarity,
                 "polarity_margin": cfg.polarity_margin,
                 "classes": meta.get("classes") or proj.classes}
        if scheduler is not None:
            run.remote = (scheduler, FolderTask(PortableModel(model), cfg, maps, config))
        return (yield from run.go(meta["version"], predict_one, about))


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


class _Run:
    """One folder predicted: each file read, predicted by a callable, written; the manifest."""

    def __init__(self, paths: list[Path], folder: Path, out_path: Path, maps: tuple[str, ...],
                 probabilities: bool, channel_axis: int | None, settings: dict[str, Any]):
        self.paths, self.folder, self.out_path = paths, folder, out_path
        self.maps, self.probabilities, self.channel_axis = maps, probabilities, channel_axis
        self.settings = settings
        self.remote: tuple[Any, FolderTask] | None = None  # (scheduler, task) or here

    def _read(self, n: int) -> np.ndarray | str:
        """File ``n``'s pixels (channels last), or why it cannot be read."""
        try:
            return read_image(self.paths[n], channel_axis=self.channel_axis)
        except (ValueError, OSError) as err:
            return str(err)

    def _here(self, predict_one: Callable[..., Any], t0: float) -> Generator[Any, None, None]:
        """Tile progress records, and ``(index, Prediction or reason)`` per file, in order."""
        for n, path in enumerate(self.paths):
            pred = self._read(n)
            if not isinstance(pred, str):
                name = path.relative_to(self.folder).as_posix()
                try:
                    pred = yield from predict_one(pred, name=name, done=n,
                                                  total=len(self.paths), t0=t0)
                except (ValueError, OSError) as err:
                    pred = str(err)
            yield n, pred

    def _on_cluster(self) -> Generator[Any, None, None]:
        """``(index, Prediction or reason)`` per file as the cluster's tasks finish."""
        assert self.remote is not None
        scheduler, task = self.remote
        items = ((n, self._read(n)) for n in range(len(self.paths)))
        with closing(map_images(predict_raw, items, scheduler=scheduler,
                                key=lambda item: item[0], shared={"task": task})) as runs:
            for (n, _), pred in runs:
                yield n, pred

    def go(self, version: str | None, predict_one: Callable[..., Any],
           about: dict[str, Any]) -> Generator[ExportProgress, None, ExportResult]:
        """`predict_one(raw, name=, done=, total=, t0=)`: a generator of ExportProgress records
        that returns the Prediction."""
        out = output_folder(self.out_path)
        result = ExportResult(out, version)
        stems = _output_stems(self.paths, self.folder)
        t0 = time.perf_counter()
        total = len(self.paths)
        rows: dict[int, dict[str, Any]] = {}
        t_image = t0
        source = self._on_cluster() if self.remote else self._here(predict_one, t0)
        try:
            for record in source:
                if isinstance(record, ExportProgress):  # tile progress
                    yield record
                    continue
                i, pred = record
                n = len(rows) + 1
                name = self.paths[i].relative_to(self.folder).as_posix()
                reason = pred if isinstance(pred, str) else None
                if reason is None:
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
                           "shape": list(pred.labels.shape),
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
