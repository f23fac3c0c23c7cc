"""A project's settings, its class list and the class colours: the package's one palette.

Settings are JSON values in the catalog's ``settings`` table (config objects are stored as
their ``to_dict()``). Two are guarded: ``classes`` (background first; label values index it, so
it cannot shrink below a label already submitted) and ``colors`` (one ``'#rrggbb'`` or
``'#rrggbbaa'`` per class, kept the length of the class list). :data:`DEFAULT_COLORS` is the
palette of the whole package: the colours a new class gets here and in the napari widget.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._records import ProjectError, check_text, dumps

if TYPE_CHECKING:  # pragma: no cover
    from ._store import _Store

__all__ = ["DEFAULT_COLORS", "Settings", "check_classes", "check_colors", "default_colors"]

#: Class colours, background (black; shown transparent) first, then one per class in turn.
DEFAULT_COLORS = (
    "#000000", "#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#5ac8fa", "#ff9500",
    "#a2845e", "#ff2d55", "#30b0c7", "#8e8e93",
)  # fmt: skip
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")
#: Settings that always exist: they can be changed, never deleted.
_REQUIRED = ("classes", "colors", "copy_images")


def default_colors(n: int) -> list[str]:
    """The colours of `n` classes from :data:`DEFAULT_COLORS` (cycled; background black)."""
    return [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] if i else "#000000" for i in range(n)]


def check_classes(classes: Any) -> list[str]:
    """A valid class list (background first, unique non-empty names) or a ProjectError."""
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ProjectError(
            f"classes must be a list of class names (background first), got {classes!r}."
        )
    names = list(classes)
    if len(names) < 2:
        raise ProjectError(
            f"classes needs at least 2 names (background and one class), got {names!r}."
        )
    bad = [c for c in names if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ProjectError(f"class names must be non-empty strings, got {bad!r} in {names!r}.")
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise ProjectError(f"class names must be unique; {dupes!r} appear more than once.")
    if len(names) > 65535:
        raise ProjectError(f"at most 65535 classes are supported, got {len(names)}.")
    return names


def check_colors(colors: Any, n_classes: int) -> list[str]:
    """One valid colour per class (the palette when `colors` is None) or a ProjectError."""
    if colors is None:
        return default_colors(n_classes)
    if isinstance(colors, Mapping):
        raise ProjectError("colors must be a list with one '#rrggbb' colour per class.")
    colors = list(colors)
    if len(colors) != n_classes:
        raise ProjectError(
            f"colors has {len(colors)} entries but there are {n_classes} classes; give one "
            "'#rrggbb' (or '#rrggbbaa') colour per class, background first."
        )
    bad = [c for c in colors if not isinstance(c, str) or not _COLOR_RE.match(c)]
    if bad:
        raise ProjectError(f"colours must look like '#rrggbb' or '#rrggbbaa', got {bad!r}.")
    return colors


def initial_settings(
    classes: Sequence[str], colors: Sequence[str] | None, copy_images: bool,
    settings: Mapping[str, Any] | None,
) -> dict[str, str]:
    """The checked settings rows (key -> JSON text) of a new project; raises before anything
    is made."""
    class_list = check_classes(classes)
    rows = {
        "classes": json.dumps(class_list),
        "colors": json.dumps(check_colors(colors, len(class_list))),
        "copy_images": json.dumps(bool(copy_images)),
    }
    for key, value in dict(settings or {}).items():
        if key in ("classes", "colors"):
            raise ProjectError(f"Pass {key} as Project.create({key}=...), not in settings.")
        rows[check_text(key, "setting key", optional=False)] = dumps(value, f"setting {key!r}")
    return rows


class Settings:
    """Settings, classes and colours of one project (see the module docstring)."""

    def __init__(self, store: _Store) -> None:
        self._store = store
        self._classes: list[str] | None = None  # cached: read on every label check

    def get_setting(self, key: str, default: Any = None) -> Any:
        """A setting's JSON value, or `default` if it was never set."""
        with self._store.lock:
            row = self._store.db.execute(
                "SELECT value FROM settings WHERE key = ?", (key,)).fetchone()  # fmt: skip
        return default if row is None else json.loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON value (config objects are stored as their ``to_dict()``).

        ``"classes"`` and ``"colors"`` are checked: the class list cannot shrink below a label
        value already submitted, and colours are extended/truncated to match a new class list.
        ``None`` deletes the setting.
        """
        store = self._store
        store.check_writable()
        check_text(key, "setting key", optional=False)
        with store.lock:
            if value is None:
                if key in _REQUIRED:
                    raise ProjectError(f"The {key!r} setting cannot be deleted, only changed.")
                with store.transaction() as conn:
                    conn.execute("DELETE FROM settings WHERE key = ?", (key,))
                return
            updates = {key: dumps(value, f"setting {key!r}")}
            if key == "classes":
                classes = check_classes(value)
                used = store.db.execute(
                    "SELECT MAX(max_label) FROM submissions s JOIN images i ON i.id = s.image_id "
                    "WHERE i.labels_purged = 0"
                ).fetchone()[0]
                if used is not None and used >= len(classes):
                    raise ProjectError(
                        f"Submitted labels use class {used}, so the class list needs at least "
                        f"{used + 1} names; got {len(classes)}. Add names instead of removing."
                    )
                colors = list(self.colors)[: len(classes)]
                colors += default_colors(len(classes))[len(colors):]
                updates["colors"] = json.dumps(colors)
            elif key == "colors":
                updates[key] = json.dumps(check_colors(value, self.n_classes))
            with store.transaction() as conn:
                conn.executemany(
                    "INSERT INTO settings(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    updates.items(),
                )
            self._classes = None

    def settings(self) -> dict[str, Any]:
        """All settings as a dict of JSON values."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT key, value FROM settings ORDER BY key").fetchall()  # fmt: skip
        return {k: json.loads(v) for k, v in rows}

    @property
    def classes(self) -> list[str]:
        """Class names, background first."""
        with self._store.lock:
            if self._classes is None:
                self._classes = list(self.get_setting("classes"))
            return list(self._classes)

    @property
    def n_classes(self) -> int:
        """Number of classes including background (label values are ``0..n_classes-1``)."""
        return len(self.classes)

    @property
    def colors(self) -> list[str]:
        """One colour per class, background first."""
        return list(self.get_setting("colors") or default_colors(self.n_classes))
