"""Progress generators: how long work reports itself, and the two ways to drive it.

Long work in the core (training, prediction, pool scoring, exports, the benchmark) is a generator
that yields progress records and *returns* its result. The napari widget runs such a generator in
a thread worker (each record becomes a signal, so the GUI thread never waits); a script or the CLI
runs it with :func:`run_to_end`; a generator built on another one re-yields its records through
:func:`relay`. Closing the generator (``gen.close()``) cancels the work between two records.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

__all__ = ["relay", "run_to_end"]

R = TypeVar("R")
T = TypeVar("T")


def run_to_end(gen: Generator[Any, Any, R], callback: Callable[[Any], Any] | None = None) -> R:
    """Exhaust a progress generator (calling ``callback`` on each record); return its result."""
    while True:
        try:
            rec = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(rec)


def relay(gen: Generator[Any, Any, R],
          transform: Callable[[Any], T | None]) -> Generator[T, None, R]:
    """Yield ``transform(record)`` for each record of `gen` (``None`` drops it); return its result.

    Closing the relay closes `gen`.
    """
    try:
        while True:
            try:
                rec = next(gen)
            except StopIteration as stop:
                return stop.value
            out = transform(rec)
            if out is not None:
                yield out
    finally:
        gen.close()
