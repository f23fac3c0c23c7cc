"""Argument checks that fail early with a ``ValueError`` saying what was wrong and how to fix it.

Every public function of the core runs its inputs through these helpers instead of ``assert``
(asserts vanish under ``python -O`` and tell the user nothing). Each helper returns the checked,
normalised value so callers can write ``image = check_image(image)``.
"""

from __future__ import annotations

import difflib
import math
import numbers
import operator
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_CHANNELS",
    "check_choice",
    "check_image",
    "check_labels",
    "check_mask",
    "check_positive",
]

#: More channels than this almost always means the channel axis was guessed wrong
#: (e.g. a 512-plane stack read as 512 channels).
MAX_CHANNELS = 64


def _shape_str(shape: Sequence[int]) -> str:
    return str(tuple(int(s) for s in shape))


def _check_numeric_dtype(array: np.ndarray, name: str) -> np.ndarray:
    """Reject non-numeric dtypes; turn bool into uint8 so arithmetic behaves."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(
            f"Expected a real-valued numeric array for {name!r}, got dtype {array.dtype}; "
            "convert it first (e.g. np.abs() for complex data, or np.asarray(x, dtype=float) "
            "for lists of numbers)."
        )
    return array


def _count_non_finite(array: np.ndarray) -> int:
    if not np.issubdtype(array.dtype, np.floating):
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def check_image(
    image: npt.ArrayLike, *, name: str = "image", channel_axis: int | None = None
) -> np.ndarray:
    """Check an image and return it as a 2D or channels-last 2D+channels array.

    Parameters
    ----------
    image : array_like
        A 2D image ``(H, W)``, an RGB/RGBA image ``(H, W, 3|4)``, or any 3D array whose
        channel axis is given by `channel_axis`. bool images are returned as uint8.
    name : str, optional
        How the image is called in error messages (an argument name or a file path).
    channel_axis : int, optional
        Axis of `image` that holds the channels; negative values count from the end. It is
        moved last. If None, only ``(H, W)`` and ``(H, W, 3|4)`` are accepted.

    Returns
    -------
    image : (H, W) or (H, W, C) ndarray
        Integer or floating-point image, channels last. May be a view of the input.

    Raises
    ------
    ValueError
        If the dtype is not real-valued numeric, the image is empty, it is not 2D or
        2D+channels, `channel_axis` is out of range, it has more than ``MAX_CHANNELS``
        channels, or it holds NaN or infinite values.
    """
    array = np.asarray(image)
    array = _check_numeric_dtype(array, name)
    shape = _shape_str(array.shape)
    if array.ndim < 2:
        raise ValueError(
            f"Expected a 2D image or 2D+channels, got shape {shape} for {name!r}; "
            "reshape it to (H, W) first."
        )
    if array.size == 0:
        raise ValueError(
            f"Got an empty image of shape {shape} for {name!r}; every axis must be > 0."
        )

    if channel_axis is not None:
        try:
            axis = operator.index(channel_axis)
        except TypeError:
            raise ValueError(
                f"channel_axis must be an integer or None, got {channel_axis!r} for {name!r}."
            ) from None
        if not -array.ndim <= axis < array.ndim:
            raise ValueError(
                f"channel_axis={axis} is out of range for {name!r} of shape {shape} "
                f"(valid: {-array.ndim} to {array.ndim - 1})."
            )
        array = np.moveaxis(array, axis, -1)
        if array.ndim != 3:
            raise ValueError(
                f"Expected a 2D image plus one channel axis, got shape {shape} with "
                f"channel_axis={axis} for {name!r}; "
                + (
                    "a 2D image has no channel axis, pass channel_axis=None."
                    if array.ndim == 2
                    else "take one plane of the stack first."
                )
            )
    elif array.ndim > 3 or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"Expected a 2D image or 2D+channels, got shape {shape} for {name!r}; "
            "pick a channel axis with channel_axis= (e.g. channel_axis=0 if the first axis "
            "holds channels), or take one plane of a stack."
        )

    if array.ndim == 3 and array.shape[-1] > MAX_CHANNELS:
        raise ValueError(
            f"Got {array.shape[-1]} channels (shape {_shape_str(array.shape)} after moving the "
            f"channel axis last) for {name!r}; at most {MAX_CHANNELS} are supported. "
            "The channel axis is probably wrong: check channel_axis=, or take one plane of a stack."
        )

    n_bad = _count_non_finite(array)
    if n_bad:
        raise ValueError(
            f"{name!r} has {n_bad} non-finite pixel value(s) (NaN or inf) out of {array.size}; "
            "replace them first, e.g. with np.nan_to_num(image) or the background value."
        )
    return array


def check_labels(
    labels: npt.ArrayLike,
    *,
    image_shape: Sequence[int] | None = None,
    n_classes: int | None = None,
    name: str = "labels",
) -> np.ndarray:
    """Check a class map and return it as uint8 (uint16 when a value exceeds 255).

    Parameters
    ----------
    labels : (H, W) array_like
        Class map: 0 = background, k = class k. Integer or bool; floating-point arrays are
        accepted when every value is integral (e.g. labels that went through a float image).
    image_shape : sequence of int, optional
        Shape of the matching image, ``(H, W)`` or ``(H, W, C)``; `labels` must be ``(H, W)``.
    n_classes : int, optional
        Number of classes *including* background; every value must be ``< n_classes``.
    name : str, optional
        How the labels are called in error messages.

    Returns
    -------
    labels : (H, W) ndarray of uint8 or uint16
        A copy unless the input already had the output dtype.

    Raises
    ------
    ValueError
        On a wrong dtype, shape or value (non-integral, negative, ``>= n_classes``, > 65535).
    """
    array = np.asarray(labels)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    shape = _shape_str(array.shape)
    if array.ndim != 2:
        raise ValueError(
            f"Expected a 2D class map (H, W) for {name!r}, got shape {shape}; labels hold one "
            "class per pixel, so take one plane (or convert an RGB mask to class indices)."
        )
    if array.size == 0:
        raise ValueError(f"Got an empty class map of shape {shape} for {name!r}.")
    if image_shape is not None:
        expected = tuple(int(s) for s in tuple(image_shape)[:2])
        if array.shape != expected:
            raise ValueError(
                f"Shape mismatch: {name!r} has shape {shape} but the image has shape "
                f"{_shape_str(image_shape)}; the class map must be {expected}."
            )

    if np.issubdtype(array.dtype, np.floating):
        n_bad = _count_non_finite(array)
        if n_bad:
            raise ValueError(f"{name!r} has {n_bad} NaN/inf value(s); class maps hold integers.")
        n_frac = int(np.count_nonzero(array != np.round(array)))
        if n_frac:
            raise ValueError(
                f"{name!r} has {n_frac} non-integer value(s) (dtype {array.dtype}); class maps "
                "hold integer class indices (np.rint(labels).astype(np.uint8) if that is meant)."
            )
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"Expected an integer class map for {name!r}, got dtype {array.dtype}."
        )

    low, high = array.min(), array.max()
    if low < 0:
        n_neg = int(np.count_nonzero(array < 0))
        raise ValueError(
            f"{name!r} has {n_neg} negative value(s) (min {low}); classes are 0 (background) "
            "to n_classes - 1. Mark unlabelled pixels with a reviewed mask, not with -1."
        )
    if n_classes is not None:
        n_classes = check_positive(n_classes, name="n_classes", integer=True)
        if high >= n_classes:
            hint = ""
            if high == 255 and not np.any((array != 0) & (array != 255)):
                # what a binary mask saved by most image tools looks like
                hint = (" It looks like a 0/255 binary mask: convert it with "
                        "(mask > 0).astype(np.uint8).")
            raise ValueError(
                f"{name!r} has a value {int(high)} but n_classes={n_classes} allows only "
                f"0..{n_classes - 1}; raise n_classes to at least {int(high) + 1} or fix the mask."
                + hint
            )
    if high > np.iinfo(np.uint16).max:
        raise ValueError(
            f"{name!r} has a value {int(high)}; at most {np.iinfo(np.uint16).max} classes are "
            "supported. Is this an instance label image rather than a class map?"
        )
    out_dtype = np.uint8 if high <= np.iinfo(np.uint8).max else np.uint16
    return array.astype(out_dtype, copy=False)


def check_mask(mask: npt.ArrayLike, *, shape: Sequence[int], name: str = "reviewed") -> np.ndarray:
    """Check a reviewed mask (True where the labels count as ground truth).

    Parameters
    ----------
    mask : (H, W) array_like
        bool, or numeric where nonzero means reviewed (e.g. a 0/1 or 0/255 uint8 TIFF).
    shape : sequence of int
        ``(H, W)``, or the image shape ``(H, W, C)``: only the first two entries are used.
    name : str, optional
        How the mask is called in error messages.

    Returns
    -------
    mask : (H, W) ndarray of bool

    Raises
    ------
    ValueError
        On a shape mismatch, a non-numeric dtype or NaN values.
    """
    array = np.asarray(mask)
    expected = tuple(int(s) for s in tuple(shape)[:2])
    if array.shape != expected:
        raise ValueError(
            f"Shape mismatch: {name!r} has shape {_shape_str(array.shape)} but must be {expected} "
            "(the image's height and width)."
        )
    if array.dtype == bool:
        return array
    array = _check_numeric_dtype(array, name)
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise ValueError(f"{name!r} has NaN values; a mask must be True/False (or 0/1).")
    return array != 0


def check_choice(value: Any, choices: Collection[Any], *, name: str) -> Any:
    """Check that `value` is one of `choices` and return it.

    Parameters
    ----------
    value : object
        The value to check.
    choices : collection
        The valid values.
    name : str
        The argument name, for the error message.

    Returns
    -------
    value : object
        `value`, unchanged.

    Raises
    ------
    ValueError
        Listing the valid choices (sorted), with a close match if there is one.
    """
    try:
        valid = value in choices
    except TypeError:  # unhashable value tested against a set / dict
        valid = False
    if valid:
        return value
    options = sorted(choices, key=str)
    message = f"Unknown {name}={value!r}; valid choices are: {', '.join(map(repr, options))}."
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [c for c in options if isinstance(c, str)], n=1)
        if close:
            message += f" Did you mean {close[0]!r}?"
    raise ValueError(message)


def check_positive(
    value: Any, *, name: str, allow_zero: bool = False, integer: bool = False
) -> int | float:
    """Check that `value` is a finite positive (or non-negative) number and return it.

    Parameters
    ----------
    value : int or float
        The number to check. bool is rejected (``True`` is rarely a meant count).
    name : str
        The argument name, for the error message.
    allow_zero : bool, optional
        Accept 0.
    integer : bool, optional
        Require an integral value; integral floats such as ``4.0`` (common after a JSON
        round-trip) are accepted and returned as int.

    Returns
    -------
    value : int or float
        A Python int if `integer`, else the Python number.

    Raises
    ------
    ValueError
        If `value` is not a real number, not finite, not integral when required, or too small.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {kind}, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    if integer:
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer, got {value!r}.")
    else:
        value = int(value) if isinstance(value, numbers.Integral) else float(value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")
    return value
