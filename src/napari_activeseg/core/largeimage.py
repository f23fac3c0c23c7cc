"""Images too large to hold: read lazily, prepared block by block, shown as a pyramid.

An image of more than :data:`LARGE_IMAGE_PIXELS` pixels (the project setting
``large_image_pixels``) is never read whole: a TIFF is opened through tifffile's Zarr store
(``aszarr``), an OME-Zarr through ``ome-zarr``, both as dask arrays whose blocks are decoded when
indexed. :class:`LazyPrepared` gives the network input of any rows of it: the percentiles come
from the same strided subsample :func:`.imageio.normalize_image` looks at and the polarity from
the same sample :func:`.preprocess.background_level` looks at, and the arithmetic is the same, so
a block equals the same rows of :func:`.preprocess.prepare_image`'s output exactly.
:func:`display_levels` gives the viewer a multiscale pyramid: the file's own levels (pyramidal
OME-TIFF or OME-Zarr), else lazily strided ones. :class:`TiledTiffWriter` writes an output of
such an image (labels, a map, a probability stack) as a tiled TIFF band of rows by band of rows.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .imageio import channel_scale, percentile_step, scale_rows
from .omezarr import is_zarr, open_ome_zarr
from .preprocess import LEVEL_SAMPLE_PIXELS, channels_convertible, inverts
from .validation import check_positive

__all__ = ["LARGE_IMAGE_PIXELS", "LARGE_SETTING", "LazyPrepared", "TiledTiffWriter",
           "display_levels", "is_large", "large_threshold", "open_if_large", "open_lazy"]

#: Images with more pixels than this are read lazily and scored tile by tile (4096 x 4096).
LARGE_IMAGE_PIXELS = 4096 * 4096
#: The project setting that overrides :data:`LARGE_IMAGE_PIXELS`.
LARGE_SETTING = "large_image_pixels"
#: The coarsest display level has a long side of about this many pixels.
_SMALLEST_LEVEL = 1024


def large_threshold(project: Any) -> int:
    """The project's threshold in pixels (its ``large_image_pixels`` setting, else the
    default)."""
    value = project.get_setting(LARGE_SETTING, LARGE_IMAGE_PIXELS)
    return int(check_positive(value, name=LARGE_SETTING, integer=True))


def is_large(shape, threshold: int = LARGE_IMAGE_PIXELS) -> bool:
    """Whether an ``(H, W, ...)`` image has more pixels than ``threshold``."""
    return int(shape[0]) * int(shape[1]) > int(threshold)


def _tiff_levels(path: Path) -> tuple[list[Any], str]:
    import dask.array as da
    import tifffile
    import zarr

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        n_levels, axes = len(series.levels), series.axes
    levels = []
    for level in range(n_levels):
        store = tifffile.imread(path, aszarr=True, series=0, level=level)
        levels.append(da.from_zarr(zarr.open(store, mode="r")))
    return levels, axes


def _levels(path: str | os.PathLike) -> tuple[list[Any], int | None]:
    """Every resolution level of the file (lazily) and the channel axis of level 0."""
    path = Path(path)
    if is_zarr(path):
        data, axes = open_ome_zarr(path)
        levels = [data]
    else:
        try:
            levels, axes = _tiff_levels(path)
        except Exception as err:  # tifffile raises many kinds on a broken file
            raise ValueError(f"Cannot read {str(path)!r} lazily: {err}. Large images are read "
                             "from TIFF or OME-Zarr; save it as a (tiled) TIFF.") from err
    axes = axes.upper()
    if levels[0].ndim == 2:
        return levels, None
    for name in ("S", "C"):
        if name in axes and len(axes) == levels[0].ndim:
            return levels, axes.index(name)
    raise ValueError(f"{str(path)!r} has axes {axes!r} (shape {levels[0].shape}): a large image "
                     "is read as (H, W) or with one channel axis (C or S).")


def open_lazy(path: str | os.PathLike, channel_axis: int | None = None) -> Any:
    """The full-resolution image of a TIFF or OME-Zarr, as a lazy ``(H, W)`` or channels-last
    ``(H, W, C)`` dask array (nothing is decoded until indexed).

    ``channel_axis`` (as stored) overrides the file's own (its samples or C axis)."""
    levels, axis = _levels(path)
    return _channels_last(levels[0], axis if channel_axis is None else channel_axis)


def open_if_large(path: str | os.PathLike, channel_axis: int | None = None,
                  threshold: int = LARGE_IMAGE_PIXELS) -> Any:
    """The lazy image (:func:`open_lazy`) of a TIFF or OME-Zarr of more than `threshold`
    pixels; None for a smaller one, another format, or a file that does not open lazily (read
    it whole: :func:`.imageio.read_image` says what is wrong with it)."""
    path = Path(path)
    if not (is_zarr(path) or path.suffix.lower() in (".tif", ".tiff")):
        return None
    try:
        lazy = open_lazy(path, channel_axis)
    except (ValueError, OSError):
        return None
    return lazy if is_large(lazy.shape, threshold) else None


def _channels_last(array: Any, axis: int | None) -> Any:
    import dask.array as da

    if array.ndim == 2:
        return array
    if axis is None:
        raise ValueError(f"A large image of shape {array.shape} needs its channel axis "
                         "(channel_axis=, or axes in the file's metadata).")
    return da.moveaxis(array, axis, -1)


def display_levels(path: str | os.PathLike, channel_axis: int | None = None) -> list[Any]:
    """A multiscale pyramid for napari (``add_image(levels, multiscale=True)``): the file's own
    levels when it has several, else level 0 strided by 2, 4, ... down to a long side of
    about 1024 px; all lazy, channels last."""
    levels, axis = _levels(path)
    axis = axis if channel_axis is None else channel_axis
    levels = [_channels_last(lv, axis) for lv in levels]
    if len(levels) > 1:
        return levels
    base, step = levels[0], 2
    while max(base.shape[:2]) // step >= _SMALLEST_LEVEL:
        levels.append(base[::step, ::step])
        step *= 2
    return levels


class LazyPrepared:
    """The network input of a lazy image, any rows at a time (see the module docstring).

    Parameters
    ----------
    raw : (H, W) or (H, W, C) array (dask, zarr or numpy)
    polarity, polarity_margin, channels, low, high
        As :func:`.preprocess.prepare_image` takes them.
    """

    def __init__(self, raw: Any, *, polarity: str = "auto", polarity_margin: float | None = None,
                 channels: int | None = None, low: float = 1.0, high: float = 99.8) -> None:
        self.raw = raw
        h, w = (int(s) for s in raw.shape[:2])
        n = 1 if raw.ndim == 2 else int(raw.shape[2])
        if channels is not None and not channels_convertible(n, channels):
            raise ValueError(f"The image has {n} channel(s) but the model takes {channels}; "
                             "only gray <-> RGB is converted automatically.")
        self._n_in, self._channels = n, (n if channels is None else int(channels))
        self.shape = (self._channels, h, w)
        step = percentile_step(h, w)
        sample = self._raw_rows(slice(None, None, step), slice(None, None, step))
        self._scales = []
        for c in range(n):
            channel = self.raw if raw.ndim == 2 else self.raw[..., c]
            self._scales.append(channel_scale(
                sample[c], low, high, lambda ch=channel: (np.asarray(ch.min()), np.asarray(ch.max()))))
        # the polarity decision, on the sample background_level takes
        lstep = max(1, int(np.sqrt(w * h / LEVEL_SAMPLE_PIXELS)))
        #: the normalised pixels :func:`.preprocess.background_level` looks at (its stride of
        #: the whole image); it strides what it is given by int(sqrt(h * w / 250000)), 1 for
        #: this sample, so the level of this sample is the whole image's
        self.level_sample = self._prepare(self._raw_rows(slice(None, None, lstep),
                                                         slice(None, None, lstep)), invert=False)
        self._invert = inverts(self.level_sample, polarity, polarity_margin)

    def _raw_rows(self, ys: slice, xs: slice) -> np.ndarray:
        """(C_in, h, w) raw pixels of a selection."""
        block = np.asarray(self.raw[ys, xs])
        return block[None] if block.ndim == 2 else np.moveaxis(block, -1, 0)

    def _prepare(self, raw: np.ndarray, invert: bool) -> np.ndarray:
        out = np.stack([scale_rows(raw[c], s) for c, s in enumerate(self._scales)])
        if self._channels != self._n_in:  # match_channels' conversions
            if self._n_in == 1:
                out = np.ascontiguousarray(np.broadcast_to(out, (self._channels, *out.shape[1:])))
            else:
                out = out.mean(axis=0, keepdims=True, dtype=np.float32)
        if invert:
            out = (1.0 - out).astype(np.float32, copy=False)
        return out

    def rows(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """The prepared ``(C, y1 - y0, x1 - x0)`` float32 block."""
        return self._prepare(self._raw_rows(slice(y0, y1), slice(x0, x1)), self._invert)

    @property
    def inverted(self) -> bool:
        """Whether the polarity rule inverts this image."""
        return self._invert


class Overview:
    """A large image's prediction at display resolution, built from its rows as they come:
    block means (``factor`` x ``factor`` pixels) of the uncertainty map and of the class
    probabilities, whose arg-max is the downsampled prediction.

    Parameters
    ----------
    shape : (H, W)
    n_classes : int
    max_side : int
        The overview's long side is at most this (``factor = ceil(max(H, W) / max_side)``).
    """

    def __init__(self, shape: tuple[int, int], n_classes: int, max_side: int = 2048) -> None:
        self.full_shape = (int(shape[0]), int(shape[1]))
        h, w = self.full_shape
        self.factor = max(1, -(-max(h, w) // int(max_side)))
        f = self.factor
        self._cols = -(-w // f)
        self._sums = np.zeros((n_classes + 1, -(-h // f), self._cols), np.float32)

    def add(self, y0: int, probs: np.ndarray, uncertainty: np.ndarray) -> None:
        """Rows ``[y0, y0 + n)``: probabilities ``(K, n, W)`` and a map ``(n, W)``."""
        f, n, w = self.factor, probs.shape[1], probs.shape[2]
        band = np.concatenate([uncertainty[None], probs]).astype(np.float64)
        pad = self._cols * f - w
        if pad:
            band = np.concatenate([band, np.zeros((band.shape[0], n, pad))], axis=2)
        band = band.reshape(band.shape[0], n, self._cols, f).sum(axis=3)
        groups = (y0 + np.arange(n)) // f
        first, starts = np.unique(groups, return_index=True)
        self._sums[:, first] += np.add.reduceat(band, starts, axis=1)

    def _means(self) -> np.ndarray:
        h, w = self.full_shape
        f = self.factor
        rows = np.minimum(f, h - f * np.arange(self._sums.shape[1]))
        cols = np.minimum(f, w - f * np.arange(self._cols))
        return self._sums / (rows[:, None] * cols[None, :])

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(uncertainty, labels)`` at display resolution: float32 and uint8/uint16."""
        means = self._means()
        k = means.shape[0] - 1
        labels = means[1:].argmax(axis=0).astype(np.uint8 if k <= 256 else np.uint16)
        return means[0].astype(np.float32), labels


_END, _ABORT = object(), object()


class _Aborted(Exception):
    """Raised inside tifffile's write to abandon the file."""


class TiledTiffWriter:
    """A tiled, zlib-compressed TIFF written band of rows by band of rows, never held whole.

    tifffile writes tiles from an iterator, so a background thread runs its ``imwrite`` on the
    tile rows :meth:`add` hands it through a short queue. A ``(K, H, W)`` stack (K grey pages,
    as the small-image path writes probabilities) is written page after page: page 0 as its rows
    come, pages 1.. spooled uncompressed to a hidden temporary file beside the output and read
    back a tile row at a time once the last row came. The file appears under its name when
    complete (:func:`.atomic.atomic_path`); :meth:`abort` -- or leaving a ``with`` block by an
    exception -- removes what was written.

    Parameters
    ----------
    path : path
    shape : (H, W) or (K, H, W)
    dtype : numpy dtype
    tile : int
        Tile side (a multiple of 16).
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype: Any, *,
                 tile: int = 256) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) not in (2, 3):
            raise ValueError(f"A tiled TIFF is (H, W) or (K, H, W), not {self.shape}.")
        self.dtype = np.dtype(dtype)
        self._pages, self._tile = (1 if len(self.shape) == 2 else self.shape[0]), int(tile)
        self._rows = 0  # rows received
        self._pending: list[np.ndarray] = []  # page-0 rows short of a full tile row
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._spools = []
        for _ in range(self._pages - 1):
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                        suffix=".spool.tmp")
            self._spools.append((os.fdopen(fd, "w+b"), Path(name)))
        self._thread = threading.Thread(target=self._write, daemon=True,
                                        name=f"tiff-writer {self.path.name}")
        self._thread.start()

    def __enter__(self) -> TiledTiffWriter:  # noqa: PYI034 - Python 3.10 has no Self
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def add(self, rows: np.ndarray) -> None:
        """The next rows, top to bottom: ``(n, W)``, or ``(K, n, W)`` for a stack."""
        rows = np.asarray(rows)
        rows = rows[None] if rows.ndim == 2 else rows
        h, w = self.shape[-2:]
        if rows.shape[0] != self._pages or rows.shape[2] != w or self._rows + rows.shape[1] > h:
            raise ValueError(f"Rows of shape {rows.shape} do not continue {self.path.name} "
                             f"{self.shape} at row {self._rows}.")
        rows = rows.astype(self.dtype, copy=False)
        for page, (fh, _) in zip(rows[1:], self._spools, strict=True):
            page.tofile(fh)
        self._pending.append(rows[0])
        self._rows += rows.shape[1]
        pending = sum(r.shape[0] for r in self._pending)
        while pending >= self._tile or (pending and self._rows == h):
            band = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._put(band[:self._tile])
            self._pending = [band[self._tile:]] if band.shape[0] > self._tile else []
            pending = max(0, band.shape[0] - self._tile)

    def close(self) -> Path:
        """Finish the file (every row must have come) and return its path."""
        if self._rows != self.shape[-2]:
            self.abort()
            raise ValueError(f"{self.path.name}: {self._rows} of {self.shape[-2]} rows came; "
                             "the file was not written.")
        for fh, _ in self._spools:
            fh.flush()
        self._put(_END)
        self._finish()
        if self._error is not None:
            raise self._error
        return self.path

    def abort(self) -> None:
        """Stop and remove what was written."""
        if self._thread.is_alive():
            self._put(_ABORT, check=False)
        self._finish()

    def _finish(self) -> None:
        self._thread.join()
        for fh, name in self._spools:
            fh.close()
            name.unlink(missing_ok=True)

    def _put(self, item: Any, check: bool = True) -> None:
        """Queue an item for the writer, noticing when the writer died (a full disk)."""
        while True:
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    if check and self._error is not None:
                        raise self._error from None
                    return

    def _write(self) -> None:
        import tifffile

        try:
            with atomic_path(self.path) as tmp:
                tifffile.imwrite(tmp, self._tiles(), shape=self.shape, dtype=self.dtype,
                                 tile=(self._tile, self._tile), compression="zlib",
                                 photometric="minisblack", maxworkers=1)
        except _Aborted:
            pass
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            self._error = err

    def _tiles(self):
        """Every tile, page by page, row-major (what tifffile reads from the iterator)."""
        while (band := self._queue.get()) is not _END:
            if band is _ABORT:
                raise _Aborted
            yield from self._cut(band)
        h, w = self.shape[-2:]
        for fh, _ in self._spools:
            fh.seek(0)
            for y0 in range(0, h, self._tile):
                n = min(self._tile, h - y0)
                yield from self._cut(np.fromfile(fh, self.dtype, n * w).reshape(n, w))

    def _cut(self, band: np.ndarray):
        for x0 in range(0, band.shape[1], self._tile):
            yield np.ascontiguousarray(band[:, x0:x0 + self._tile])
