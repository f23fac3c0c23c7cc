"""JSON and CSV out: the one conversion of Python/numpy values to strict JSON, and the writers.

Strict JSON has no NaN or infinity, no tuples, no numpy scalars and no paths. :func:`to_jsonable`
turns numpy scalars and arrays into Python numbers and lists, tuples into lists, paths into
strings, objects with ``to_dict()`` (the configs) into dicts, and non-finite floats into ``None``.
By default a dict key that is not a string is converted with ``str``; with ``what=`` (used for
what the project stores) such a key, or a value of any other type, is refused with a message that
names where it sits, since silently stringifying it would not round-trip.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .atomic import atomic_write_text

__all__ = ["dumps", "to_jsonable", "write_csv", "write_json"]


def to_jsonable(value: Any, what: str | None = None) -> Any:
    """A strict-JSON-safe copy of `value` (see the module doc).

    `what` names the value in error messages and makes the conversion strict: a non-string key or
    an object of an unknown type raises ``TypeError`` instead of being passed through.
    """
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), what)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                if what is not None:
                    raise TypeError(
                        f"{what}: keys must be strings, got {k!r} ({type(k).__name__}).")
                k = str(k)
            out[k] = to_jsonable(v, None if what is None else f"{what}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, None if what is None else f"{what}[{i}]")
                for i, v in enumerate(value)]
    if what is not None:
        raise TypeError(
            f"{what} must be JSON-serialisable (numbers, strings, lists, dicts), got "
            f"{type(value).__name__}: {value!r:.80}")
    return value


def dumps(value: Any, what: str | None = None, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`to_jsonable` (strict: never writes NaN)."""
    return json.dumps(to_jsonable(value, what), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, doc: Any, *, indent: int | None = 1) -> None:
    """Write `doc` as strict JSON to `path`, atomically (parent folders are created)."""
    atomic_write_text(path, dumps(doc, indent=indent) + "\n")


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Sequence[Mapping[str, Any]],
              *, cell: Callable[[str, Any], Any] | None = None) -> None:
    """Write `rows` under the header `columns`, atomically.

    A missing or ``None`` value is an empty cell, keys not in `columns` are ignored, and
    `cell(column, value)` (when given) formats each value first.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = {c: row.get(c) for c in columns}
        if cell is not None:
            values = {c: cell(c, v) for c, v in values.items()}
        writer.writerow({c: "" if v is None else v for c, v in values.items()})
    atomic_write_text(path, buf.getvalue())
