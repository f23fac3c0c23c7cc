"""Reading, writing and normalising images and label maps.

Images come from TIFF (any bit depth, multichannel) or PNG/JPEG files and leave as ``(H, W)`` or
channels-last ``(H, W, C)`` arrays (see :func:`~napari_activeseg.core.validation.check_image`).
Writes are atomic: a crash never leaves a half-written label file behind, and a failed write
leaves the previous file untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import numpy.typing as npt
import tifffile

from .atomic import atomic_path
from .axes import AxesLayout, layout_from_axes, metadata_axes
from .omezarr import ZARR_SUFFIX, is_zarr, open_ome_zarr
from .validation import check_choice, check_image, check_labels, check_positive

__all__ = [
    "CLIP_RANGE",
    "FOLDER_SUFFIXES",
    "PERCENTILE_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "ImageSource",
    "channel_scale",
    "image_sources",
    "list_images",
    "normalize_image",
    "percentile_step",
    "read_image",
    "read_labels",
    "scale_rows",
    "write_labels",
    "write_tiff",
]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
#: Images stored as folders (read with the optional ``ome-zarr`` package).
FOLDER_SUFFIXES: tuple[str, ...] = (ZARR_SUFFIX,)
_TIFF_SUFFIXES = (".tif", ".tiff")
_COMPRESSIONS = (None, "zlib")

#: Percentiles are estimated on a strided subsample of at most about this many pixels.
PERCENTILE_MAX_PIXELS = 4 * 1024 * 1024
#: Pixels per chunk in the normalisation arithmetic (bounds the temporary float buffer).
_CHUNK_PIXELS = 1024 * 1024
#: Normalised values are clipped to this range, see :func:`normalize_image`.
CLIP_RANGE = (-0.5, 1.5)


def _supported() -> str:
    return ", ".join(SUPPORTED_SUFFIXES + FOLDER_SUFFIXES)


def _check_readable(path: Path, what: str) -> None:
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"Cannot read {what} {str(path)!r}: unsupported file type {path.suffix or '(none)'!r}; "
            f"supported: {_supported()}."
        )
    if not path.exists():
        raise ValueError(f"Cannot read {what} {str(path)!r}: file not found.")
    if not path.is_file():
        raise ValueError(f"Cannot read {what} {str(path)!r}: not a file.")
    if path.stat().st_size == 0:
        raise ValueError(f"Cannot read {what} {str(path)!r}: the file is empty (0 bytes).")


def _drop_constant_alpha(array: np.ndarray) -> np.ndarray:
    """Drop a last-axis alpha channel that carries no information.

    A constant alpha (usually 255 everywhere) is an artefact of how the file was saved; a varying
    alpha may hold data, so it is kept as an extra channel.
    """
    alpha = array[..., -1]
    if alpha.min() != alpha.max():
        return array
    colour = array[..., :-1]
    return colour[..., 0] if colour.shape[-1] == 1 else colour


class _PlanesError(ValueError):
    """A file of several planes read as one image."""


def _metadata_channel_axis(path: Path, axes: str, shape: tuple[int, ...]) -> int | None:
    """The channel axis an ImageJ/OME file declares ('CYX'); a ValueError if its axes hold
    several planes (Z, T), which only a project splits into images."""
    known = metadata_axes(axes, shape)
    if known is None:
        return None
    layout = AxesLayout(known, shape)
    if layout.n_items > 1:
        raise _PlanesError(
            f"{str(path)!r} holds {layout.n_items} planes (axes {known!r}, shape {shape}): "
            "add it to a project, which makes one image of each plane, or pass its channel "
            "axis (channel_axis=) if the stack is channels."
        )
    return layout.channel_axis


def _read_tiff(path: Path, metadata: bool) -> tuple[np.ndarray, int | None, bool]:
    """Return the pixels (the first series, full resolution), the channel axis the file
    declares (tifffile's samples axis 'S', or with `metadata` an ImageJ/OME 'C') and whether
    it ends in alpha."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = series.asarray()
        axes = series.axes
        has_alpha = bool(series.keyframe.extrasamples)
    # tifffile names the samples-per-pixel axis 'S': it holds channels by definition.
    sample_axis = axes.index("S") if "S" in axes and len(axes) == array.ndim else None
    has_alpha = has_alpha and sample_axis is not None
    if metadata and sample_axis is None and len(axes) == array.ndim:
        return array, _metadata_channel_axis(path, axes, array.shape), False
    return array, sample_axis, has_alpha


def _read_zarr(path: Path) -> tuple[np.ndarray, int | None, bool]:
    data, axes = open_ome_zarr(path)
    layout = layout_from_axes(axes, data.shape, name=repr(str(path)))
    if not layout.is_plain:
        raise _PlanesError(
            f"{str(path)!r} holds {layout.n_items} planes (axes {axes!r}): add it to a project, "
            "which makes one image of each plane."
        )
    return np.asarray(data), layout.channel_axis, False


def _decode_error(path: Path, what: str, err: Exception) -> ValueError:
    """The ValueError for a file its decoder refused, naming the real cause."""
    kind = "TIFF" if path.suffix.lower() in _TIFF_SUFFIXES else path.suffix.lstrip(".").upper()
    if "imagecodecs" in str(err):
        # a compressed TIFF (LZW, Deflate, JPEG, ...) and no codec: the file is fine
        return ValueError(
            f"Cannot decode {what} {str(path)!r}: it is compressed with a codec that needs "
            f"the 'imagecodecs' package ({err}). Install it (pip install imagecodecs), or "
            "save the image uncompressed."
        )
    return ValueError(
        f"Cannot read {what} {str(path)!r} as {kind}: {err}. The file may be corrupt or "
        f"truncated, or not really a {kind}; supported: {_supported()}."
    )


def _read_pillow(path: Path) -> tuple[np.ndarray, int]:
    """Return the first frame and the number of frames."""
    with iio.imopen(path, "r", plugin="pillow") as file:
        n_frames = file.properties(index=...).n_images or 1
        return file.read(index=0), n_frames


def _read_raw(
    path: str | os.PathLike, what: str, metadata: bool = True
) -> tuple[Path, np.ndarray, int | None, bool]:
    """Decode a file: (path, pixels, channel axis known from the format (with `metadata`: or
    from its ImageJ/OME axes), alpha channel last)."""
    path = Path(path)
    if is_zarr(path):
        return (path, *_read_zarr(path))
    _check_readable(path, what)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            return (path, *_read_tiff(path, metadata))
        array, n_frames = _read_pillow(path)
    except (MemoryError, _PlanesError):
        raise
    except Exception as err:
        raise _decode_error(path, what, err) from err
    if n_frames > 1:
        raise ValueError(
            f"Cannot read {what} {str(path)!r}: it is an animation of {n_frames} frames; "
            "save each frame as its own file."
        )
    # PNG/JPEG decode to (H, W) or (H, W, C): gray+alpha has 2 channels, RGBA 4.
    if array.ndim == 3:
        return path, array, 2, array.shape[-1] in (2, 4)
    return path, array, None, False


def _same_axis(axis: object, other: int | None, ndim: int) -> bool:
    """Whether `axis` (possibly negative, possibly invalid) designates axis `other`."""
    if other is None or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        return False
    return axis % ndim == other


def read_image(path: str | os.PathLike, *, channel_axis: int | None = None) -> np.ndarray:
    """Read an image file as ``(H, W)`` or channels-last ``(H, W, C)``.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF (8/16/32-bit integer, 16/32/64-bit float; RGB or multichannel), PNG (8/16-bit)
        or JPEG file.
    channel_axis : int, optional
        For TIFF stacks, the axis of the stored array that holds channels (e.g. 0 for ``(C, H,
        W)``); moved last. Not needed for RGB(A) TIFFs, whose sample axis tifffile reports, for
        ImageJ/OME-TIFFs, whose axes name it ('CYX'), nor for PNG/JPEG, which are
        channels-last by definition (it is ignored for them). A folder ``*.zarr`` is read as
        OME-Zarr (full resolution; needs the optional ``ome-zarr`` package).

    Returns
    -------
    image : (H, W) or (H, W, C) ndarray
        The stored dtype (bool becomes uint8). A constant alpha channel is dropped; a varying one
        is kept as the last channel. Gray stored as R=G=B keeps its 3 channels, so that every
        image of a dataset keeps the channel count it was saved with.

    Raises
    ------
    ValueError
        Naming the file, if it is missing, empty, of an unsupported type, unreadable, or its
        pixels fail :func:`~napari_activeseg.core.validation.check_image`.
    """
    path, array, format_axis, has_alpha = _read_raw(path, "image", channel_axis is None)
    is_tiff = path.suffix.lower() in _TIFF_SUFFIXES
    if not is_tiff or channel_axis is None or _same_axis(channel_axis, format_axis, array.ndim):
        channel_axis = format_axis
    # Only an axis the file itself declares as samples can end in alpha.
    if has_alpha and channel_axis == format_axis:
        array = _drop_constant_alpha(np.moveaxis(array, format_axis, -1))
        channel_axis = -1 if array.ndim == 3 else None
    return check_image(array, name=str(path), channel_axis=channel_axis)


@dataclass(frozen=True)
class ImageSource:
    """One image of a file: an OME series (`suffix` ``'_s1'``), its full-resolution level,
    with the axes its metadata or the user give (`layout` None: unknown, read as before)."""

    path: Path
    series: int
    suffix: str
    shape: tuple[int, ...]
    layout: AxesLayout | None

    @property
    def is_plain(self) -> bool:
        """Whether it is one image (no Z/T planes to split)."""
        return self.layout is None or self.layout.is_plain

    def read(self) -> Any:
        """The pixels as stored: a numpy array, or lazily (dask) for OME-Zarr."""
        if is_zarr(self.path):
            return open_ome_zarr(self.path)[0]
        try:
            return tifffile.imread(self.path, series=self.series, level=0)
        except MemoryError:
            raise
        except Exception as err:
            raise _decode_error(self.path, "image", err) from err

    def items(self, channel_axis: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """``(suffix, image)`` per pool item: ``(H, W)`` or channels-last ``(H, W, C)``,
        checked; planes are read one at a time."""
        name = str(self.path)
        if self.layout is None:
            yield self.suffix, check_image(self.read(), name=name, channel_axis=channel_axis)
            return
        for suffix, plane in self.layout.planes(self.read()):
            axis = -1 if plane.ndim == 3 else None
            yield self.suffix + suffix, check_image(plane, name=name + suffix, channel_axis=axis)


def image_sources(
    path: str | os.PathLike, *, axes: str | None = None, channel_axis: int | None = None
) -> list[ImageSource]:
    """The images a file holds, from its metadata alone (no pixels are decoded).

    One per series of an OME-TIFF (its sub-resolutions are not images of their own), else
    one. `axes` (checked with :func:`~napari_activeseg.core.axes.check_axes`) override the
    file's; `channel_axis` without `axes` means "as :func:`read_image` reads it".

    Raises
    ------
    ValueError
        If the file cannot be read, or `axes` do not fit its shape.
    """
    path = Path(path)
    if is_zarr(path):
        data, meta = open_ome_zarr(path)
        shapes = [(tuple(data.shape), meta)]
    else:
        _check_readable(path, "image")
        if path.suffix.lower() not in _TIFF_SUFFIXES:
            return [ImageSource(path, 0, "", (), None)]
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series if tif.is_ome else tif.series[:1]
                shapes = [(tuple(s.shape), s.axes) for s in series]
        except MemoryError:
            raise
        except Exception as err:
            raise _decode_error(path, "image", err) from err
        if not shapes:
            raise _decode_error(path, "image", ValueError("no image in it"))
    out = []
    for i, (shape, meta) in enumerate(shapes):
        what = repr(str(path)) + (f" (series {i})" if len(shapes) > 1 else "")
        if axes is not None:
            layout = layout_from_axes(axes, shape, name=what)
        elif channel_axis is not None and not is_zarr(path):
            layout = None
        else:
            known = metadata_axes(meta, shape)
            layout = None if known is None else AxesLayout(known, shape)
        out.append(ImageSource(path, i, f"_s{i}" if len(shapes) > 1 else "", shape, layout))
    return out


def read_labels(path: str | os.PathLike, *, n_classes: int | None = None) -> np.ndarray:
    """Read a class map written by :func:`write_labels` (or a PNG / TIFF mask).

    Parameters
    ----------
    path : str or os.PathLike
        A 2D single-channel TIFF or PNG.
    n_classes : int, optional
        Number of classes including background; see
        :func:`~napari_activeseg.core.validation.check_labels`.

    Returns
    -------
    labels : (H, W) ndarray of uint8 or uint16

    Raises
    ------
    ValueError
        Naming the file, if it cannot be read or does not hold a valid class map.
    """
    path, array, _, _ = _read_raw(path, "labels")
    return check_labels(array, n_classes=n_classes, name=str(path))


def write_tiff(
    path: str | os.PathLike, array: npt.ArrayLike, *, compression: str | None = "zlib"
) -> Path:
    """Write an array to a TIFF file atomically.

    The data go to a hidden temporary file in the same directory, which is flushed, fsync'ed and
    then renamed over `path` (``os.replace`` is atomic on POSIX and Windows). If anything fails,
    the temporary file is removed and an existing file at `path` is left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ending in ``.tif`` or ``.tiff``; its directory must exist.
    array : (H, W) or (H, W, C) array_like
        Numeric data; ``(H, W, 3|4)`` uint8/uint16 are stored as RGB(A), as tifffile does.
    compression : {'zlib', None}, optional
        Lossless zlib (deflate) compression, readable by Fiji and tifffile, or none.

    Returns
    -------
    path : Path
        The written file.

    Raises
    ------
    ValueError
        On a bad suffix, missing directory, empty or non-numeric array, or unknown compression.
    """
    path = Path(path)
    check_choice(compression, _COMPRESSIONS, name="compression")
    if path.suffix.lower() not in _TIFF_SUFFIXES:
        raise ValueError(f"Cannot write {str(path)!r}: a TIFF path must end in .tif or .tiff.")
    if not path.parent.is_dir():
        raise ValueError(
            f"Cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist; "
            "create it first."
        )
    data = np.asarray(array)
    if data.size == 0 or data.dtype.kind not in "biuf":
        raise ValueError(
            f"Cannot write {str(path)!r}: expected a non-empty numeric array, got shape "
            f"{data.shape} and dtype {data.dtype}."
        )

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        tifffile.imwrite(fh, data, compression=compression)
    return path


def write_labels(
    path: str | os.PathLike, labels: npt.ArrayLike, *, n_classes: int | None = None
) -> Path:
    """Check a class map and write it atomically as a zlib-compressed TIFF.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.tif`` / ``.tiff`` file.
    labels : (H, W) array_like
        Class map, see :func:`~napari_activeseg.core.validation.check_labels`.
    n_classes : int, optional
        Number of classes including background, to reject out-of-range values before writing.

    Returns
    -------
    path : Path
        The written file (uint8, or uint16 above 255 classes).

    Raises
    ------
    ValueError
        If the labels are invalid; nothing is written then.
    """
    labels = check_labels(labels, n_classes=n_classes)
    return write_tiff(path, labels)


def percentile_step(height: int, width: int) -> int:
    """The stride of the percentile subsample of an ``(H, W)`` channel: at most about
    ``PERCENTILE_MAX_PIXELS`` pixels are looked at."""
    return max(1, int(np.ceil(np.sqrt(height * width / PERCENTILE_MAX_PIXELS))))


def _percentile_sample(channel: np.ndarray) -> np.ndarray:
    """A strided subsample of at most about ``PERCENTILE_MAX_PIXELS`` pixels."""
    step = percentile_step(*channel.shape)
    return channel[::step, ::step] if step > 1 else channel


def normalize_image(
    image: npt.ArrayLike,
    *,
    low: float = 1.0,
    high: float = 99.8,
    channel_axis: int | None = None,
) -> np.ndarray:
    """Rescale each channel by its percentiles and return it channels-first as float32.

    Each channel's `low` percentile maps to 0 and its `high` percentile to 1. Values beyond are
    clipped to [-0.5, 1.5] rather than [0, 1], so saturated and very dark structures remain
    distinguishable while outliers (hot pixels) cannot dominate the network's input. If the two
    percentiles coincide (e.g. sparse bright spots on a flat background) the channel's min and
    max are used instead; a constant channel becomes all zeros.

    Percentiles are estimated on a strided subsample of at most ~4 M pixels, and the arithmetic
    runs chunk-wise, so a 4096 x 4096 image needs no float64 copy of itself.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array_like
        Any image accepted by :func:`~napari_activeseg.core.validation.check_image`.
    low, high : float, optional
        Percentiles in [0, 100] with ``low < high``.
    channel_axis : int, optional
        Passed to :func:`~napari_activeseg.core.validation.check_image`.

    Returns
    -------
    normalized : (C, H, W) ndarray of float32
        ``C = 1`` for a 2D image.

    Raises
    ------
    ValueError
        If the image is invalid or the percentiles are out of range.
    """
    check_positive(low, name="low", allow_zero=True)
    check_positive(high, name="high")
    if not 0 <= low < high <= 100:
        raise ValueError(
            f"Expected 0 <= low < high <= 100, got low={low!r}, high={high!r} "
            "(the defaults are low=1.0, high=99.8)."
        )
    image = check_image(image, channel_axis=channel_axis)
    channels = image[..., np.newaxis] if image.ndim == 2 else image
    height, width, n_channels = channels.shape
    rows_per_chunk = max(1, _CHUNK_PIXELS // width)

    out = np.zeros((n_channels, height, width), dtype=np.float32)
    for c in range(n_channels):
        channel = channels[..., c]
        scale = channel_scale(_percentile_sample(channel), low, high,
                              lambda ch=channel: (ch.min(), ch.max()))
        for start in range(0, height, rows_per_chunk):
            out[c, start : start + rows_per_chunk] = scale_rows(
                channel[start : start + rows_per_chunk], scale)
    return out


def channel_scale(
    sample: np.ndarray, low: float, high: float, extremes: Any
) -> tuple[Any, Any] | None:
    """``(lo, 1 / (hi - lo))`` of one channel from its percentile `sample`
    (:func:`_percentile_sample`), in the working dtype of its arithmetic; None for a constant
    channel. `extremes()` gives the channel's (min, max), the fallback of coinciding
    percentiles (called only then, so a lazy image is scanned only then)."""
    # float64 input (or wide integers) keep float64 precision for the subtraction
    work_dtype = np.float32 if sample.dtype.itemsize <= 2 else np.float64
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        lo, hi = extremes()
        if hi <= lo:
            return None  # constant channel: zeros
    lo = work_dtype(lo)
    return lo, work_dtype(1.0) / (work_dtype(hi) - lo)


def scale_rows(rows: np.ndarray, scale: tuple[Any, Any] | None) -> np.ndarray:
    """Rows of one channel normalised with :func:`channel_scale`'s ``scale`` (float32);
    the same arithmetic whatever the rows, so an image normalised block by block equals
    :func:`normalize_image`'s."""
    if scale is None:
        return np.zeros(rows.shape, np.float32)
    lo, factor = scale
    block = np.asarray(rows).astype(type(lo))
    block -= lo
    block *= factor
    np.clip(block, *CLIP_RANGE, out=block)
    return block.astype(np.float32, copy=False)


def list_images(
    folder: str | os.PathLike, *, pattern: str = "*", recursive: bool = False
) -> list[Path]:
    """List the supported image files of a folder, sorted by path.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder to search.
    pattern : str, optional
        Glob pattern matched against file names (e.g. ``"*_dapi*"``).
    recursive : bool, optional
        Also search sub-folders.

    Returns
    -------
    paths : list of Path
        Files whose suffix (case-insensitive) is in ``SUPPORTED_SUFFIXES``, and OME-Zarr
        folders (``FOLDER_SUFFIXES``, not searched inside); hidden files and files in hidden
        folders (names starting with ".") are skipped.

    Raises
    ------
    ValueError
        If the folder does not exist or holds no matching image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(
            f"Image folder {str(folder)!r} does not exist or is not a folder; "
            f"expected a folder of {_supported()} files."
        )
    matches = folder.rglob(pattern) if recursive else folder.glob(pattern)
    paths = sorted(
        p
        for p in matches
        if not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not any(is_zarr(Path(part)) for part in p.relative_to(folder).parts[:-1])
        and (
            (p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file())
            or (p.suffix.lower() in FOLDER_SUFFIXES and p.is_dir())
        )
    )
    if not paths:
        where = " (searched recursively)" if recursive else ""
        raise ValueError(
            f"No images matching {pattern!r} in {str(folder)!r}{where}; "
            f"supported file types: {_supported()}."
        )
    return paths
