"""What the stores of a project hand out and take in: exceptions, records, value checks.

The exceptions (every one a :class:`ProjectError`, itself a ValueError, whose message names the
fix), the frozen records returned by the stores (:class:`ImageRecord`, :class:`SubmissionRecord`,
:class:`ScoreRecord`, :class:`RoundRecord`, :class:`ModelInfo`), and the checks every store
applies to ids, names and JSON values before anything is written.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig
from ..serialize import to_jsonable
from ..validation import check_positive

__all__ = [
    "ImageRecord",
    "ModelInfo",
    "ProjectError",
    "ProjectInUseError",
    "ProjectVersionError",
    "ProjectWarning",
    "RoundRecord",
    "ScoreRecord",
    "SubmissionRecord",
    "UnsafeCheckpointError",
]


class ProjectError(ValueError):
    """A project cannot do what was asked; the message says why and how to fix it."""


class ProjectInUseError(ProjectError):
    """Another process (or another open in this process) holds the project read-write."""


class ProjectVersionError(ProjectError):
    """The catalog's schema version cannot be handled by this napari-activeseg."""


class UnsafeCheckpointError(ProjectError):
    """A checkpoint would have to be unpickled (which can run code), so it is refused."""


class ProjectWarning(UserWarning):
    """Something was repaired, skipped or fell back; the project stays usable."""

# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ImageRecord:
    """One image of the pool.

    ``path`` is where the image is expected now (absolute); ``shape`` is as loaded by
    :meth:`Project.load_image`, ``(H, W)`` or ``(H, W, C)``. ``key`` names its files under
    ``labels/``, ``reviewed/`` and ``drafts/``.
    """

    id: int
    key: str
    name: str
    path: Path
    sha256: str
    size: int
    shape: tuple[int, ...]
    dtype: str
    channel_axis: int | None
    status: str
    added_at: str
    origin: str
    removed: bool = False
    #: Submitted with a reviewed mask that leaves pixels unreviewed (boxes, scribbles): the
    #: image stays in the pool and its unreviewed windows can still be suggested.
    partial: bool = False


@dataclass(frozen=True)
class SubmissionRecord:
    """One submitted label map. ``reviewed_sha256`` is None when the whole image is reviewed."""

    id: int
    image_id: int
    created_at: str
    labels_sha256: str
    reviewed_sha256: str | None
    seconds: float | None
    pixels_changed: int | None
    objects_added: int | None
    objects_removed: int | None
    model_version: str | None
    strategy: str | None
    recovered: bool


@dataclass(frozen=True)
class ScoreRecord:
    image_id: int
    strategy: str
    model_version: str | None
    score: float | None
    reason: str | None
    updated_at: str


@dataclass(frozen=True)
class RoundRecord:
    id: int
    created_at: str
    model_version: str | None
    strategy: str | None
    seed: int | None
    labelled_ids: list[int]
    metrics: dict[str, Any]
    wall_times: dict[str, Any]


@dataclass(frozen=True)
class ModelInfo:
    """A complete model version: both files exist and parse."""

    version: str
    created_at: str
    model_config: ModelConfig
    classes: list[str]
    meta: dict[str, Any] = field(repr=False)
    weights_path: Path = field(repr=False)
    json_path: Path = field(repr=False)

# --------------------------------------------------------------------------- checks


def jsonable(value: Any, what: str) -> Any:
    """A strict-JSON-safe copy of `value` (:func:`~napari_activeseg.core.serialize.to_jsonable`);
    a value that is not JSON data raises :class:`ProjectError` naming where it sits."""
    try:
        return to_jsonable(value, what)
    except TypeError as exc:
        raise ProjectError(str(exc)) from None


def dumps(value: Any, what: str) -> str:
    return json.dumps(jsonable(value, what), sort_keys=True, allow_nan=False)


def check_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ProjectError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    return int(value)


def check_text(value: Any, name: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ProjectError(f"{name} must be a non-empty string, got {value!r}.")
    return value


def _optional_count(value: Any, name: str) -> int | None:
    if value is None:
        return None
    return int(check_positive(value, name=name, allow_zero=True, integer=True))


def stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
