"""The axes of an image file: which one holds channels, which are split into pool items.

An axes string names each axis of a stored array with one letter, as tifffile (ImageJ
``'TZCYX'``, OME ``'TCZYX'``) and OME-Zarr do: ``Y`` and ``X`` are the plane, ``C`` (or ``S``,
the samples of an RGB pixel) the channels, ``Z`` and ``T`` are split into one pool item per
plane, named ``<stem>_z0003_t0001``. The axes come from the file's metadata, or from the user
(``Project.create(axes="CYX")``), whose choice wins. Qt-free, and lazy: a plane is indexed out
of a dask or zarr array before it is read.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AXES_LETTERS", "AxesLayout", "check_axes", "layout_from_axes", "metadata_axes"]

#: Letters a user may give: time, depth, channels, RGB samples, and the plane.
AXES_LETTERS = "TZCSYX"
_CHANNEL = "CS"
_PLANES = "TZ"
#: tifffile's letters for axes that name no microscopy dimension we know (a plain stack).
_UNKNOWN = "QI"


def check_axes(axes: Any) -> str | None:
    """A valid axes string (upper case) or None for "from the file"; ValueError otherwise.

    ``None``, ``""`` and ``"auto"`` mean: use the file's metadata.
    """
    if axes is None or (isinstance(axes, str) and axes.strip().lower() in ("", "auto")):
        return None
    text = axes.strip().upper() if isinstance(axes, str) else ""
    bad = sorted(set(text) - set(AXES_LETTERS))
    problem = None
    if not isinstance(axes, str):
        problem = "not a string"
    elif bad:
        problem = f"unknown letter(s) {''.join(bad)!r}"
    elif len(set(text)) != len(text):
        problem = "a letter appears twice"
    elif "Y" not in text or "X" not in text:
        problem = "Y and X (the plane) must both be named"
    elif sum(text.count(c) for c in _CHANNEL) > 1:
        problem = "only one channel axis (C, or S for RGB samples) is allowed"
    if problem:
        raise ValueError(
            f"Bad axes {axes!r}: {problem}. Give one letter per axis of the stored array from "
            f"{AXES_LETTERS!r} (T time, Z depth, C channels, S RGB samples, Y and X the "
            "plane), e.g. 'CYX', 'ZYX', 'YXC' or 'TZCYX'; or 'auto' to read them from the file."
        )
    return text


def metadata_axes(axes: str, shape: tuple[int, ...]) -> str | None:
    """The file's own axes (tifffile's series.axes, OME-Zarr's names) as our letters, or None
    when they say nothing useful (a plain stack, 'QYX'): then the old rules apply."""
    text = axes.upper()
    if len(text) != len(shape) or "Y" not in text or "X" not in text:
        return None
    kept = [(a, n) for a, n in zip(text, shape, strict=True) if a in AXES_LETTERS or n > 1]
    if any(a not in AXES_LETTERS for a, _ in kept) or any(a in _UNKNOWN for a, _ in kept):
        return None
    if sum(a in _CHANNEL for a, n in kept if n > 1) > 1:
        return None  # channels and RGB samples at once: let the user say
    return text


@dataclass(frozen=True)
class AxesLayout:
    """Where channels and planes are in an array with `axes` (see the module docstring)."""

    axes: str
    shape: tuple[int, ...]

    @property
    def channel_axis(self) -> int | None:
        """The channel axis of the array (C, else S; a size-1 one counts as none)."""
        for i, a in enumerate(self.axes):
            if a in _CHANNEL and self.shape[i] > 1:
                return i
        return None

    @property
    def plane_axes(self) -> tuple[int, ...]:
        """Axes split into pool items: T and Z, and any other axis but Y, X and channels."""
        chan = self.channel_axis
        return tuple(i for i, a in enumerate(self.axes) if a not in "YX" and i != chan)

    @property
    def n_items(self) -> int:
        return int(np.prod([self.shape[i] for i in self.plane_axes], dtype=np.int64))

    @property
    def is_plain(self) -> bool:
        """Whether the array is one image as stored (Y, X and at most a channel axis)."""
        return not self.plane_axes

    def planes(self, array: Any) -> Iterator[tuple[str, np.ndarray]]:
        """``(suffix, plane)`` for each pool item: the plane as ``(H, W)`` or channels-last
        ``(H, W, C)``; the suffix is ``_z0003_t0001`` (empty for a plain array). Each plane is
        indexed out of `array` (numpy, dask or zarr) before it is read."""
        split = self.plane_axes
        ranges = [range(self.shape[i]) for i in split]
        for index in itertools.product(*ranges):
            key: list[Any] = [slice(None)] * len(self.axes)
            suffix = ""
            for axis, i in zip(split, index, strict=True):
                key[axis] = i
                if self.shape[axis] > 1:
                    suffix += f"_{self.axes[axis].lower()}{i:04d}"
            plane = np.asarray(array[tuple(key)])
            rest = [a for j, a in enumerate(self.axes) if j not in split]
            order = [rest.index("Y"), rest.index("X")]
            if len(rest) == 3:
                order.append(next(j for j, a in enumerate(rest) if a not in "YX"))
            plane = np.transpose(plane, order)
            if plane.ndim == 3 and plane.shape[-1] == 1:
                plane = plane[..., 0]
            yield suffix, plane


def layout_from_axes(axes: str, shape: tuple[int, ...], *, name: str) -> AxesLayout:
    """The layout of an array of `shape` with (checked) `axes`; ValueError naming `name` if
    they disagree."""
    if len(axes) != len(shape):
        dims = "x".join(str(n) for n in shape)
        raise ValueError(
            f"{name} has {len(shape)} axes (shape {dims}) but the axes {axes!r} name "
            f"{len(axes)}: give one letter per axis (e.g. "
            f"{_example(len(shape))!r}), or 'auto' to read them from the file."
        )
    return AxesLayout(axes, tuple(int(n) for n in shape))


def _example(ndim: int) -> str:
    return {2: "YX", 3: "CYX", 4: "ZCYX", 5: "TZCYX"}.get(ndim, "TZCYX")
