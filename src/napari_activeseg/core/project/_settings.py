"""A project's settings, its class list and the class colours: the package's one palette.

Settings are JSON values in the catalog's ``settings`` table (config objects are stored as
their ``to_dict()``). Two are guarded: ``classes`` (background first; label values index it, so
it cannot shrink below a label already submitted) and ``colors`` (one ``'#rrggbb'`` or
``'#rrggbbaa'`` per class, kept the length of the class list). :data:`DEFAULT_COLORS` is the
palette of the whole package: the colours a new class gets here and in the napari widget.

Two more are checked: ``class_modes`` (``{"nucleus": "objects"}``: which foreground classes
are annotated and predicted as separate objects, :data:`CLASS_MODES`; a class not named is
"area", today's semantic behaviour, so an older project is all "area") and
``instance_formulation`` (how a network yields objects, :data:`INSTANCE_FORMULATIONS`; see
:mod:`napari_activeseg.core.instances`). A class renamed away loses its mode.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._records import ProjectError, check_text, dumps

if TYPE_CHECKING:  # pragma: no cover
    from ._store import _Store

__all__ = ["CLASS_MODES", "DEFAULT_COLORS", "DEFAULT_INSTANCE_FORMULATION",
           "INSTANCE_FORMULATIONS", "Settings",
           "check_class_modes", "check_classes", "check_colors", "default_colors"]

#: Class colours, background (black; shown transparent) first, then one per class in turn.
DEFAULT_COLORS = (
    "#000000", "#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#5ac8fa", "#ff9500",
    "#a2845e", "#ff2d55", "#30b0c7", "#8e8e93",
)  # fmt: skip
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")
#: Per-class modes: "area" (semantic, the default) and "objects" (one id per object).
CLASS_MODES = ("area", "objects")
#: How a network yields objects (core.instances).
INSTANCE_FORMULATIONS = ("boundary", "distance", "distance_head")
#: The formulation a new project records: "distance", ahead of or level with "boundary" on
#: both nuclei sets at 3 seeds (docs/2026-12-01-objects.md).
DEFAULT_INSTANCE_FORMULATION = "distance"
#: The formulation of a project made before new projects recorded one (it was the default).
_LEGACY_INSTANCE_FORMULATION = "boundary"
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


def check_class_modes(modes: Any, classes: Sequence[str]) -> dict[str, str]:
    """``{class name: mode}`` checked against the class list (only the "objects" entries are
    kept: a class not named is "area"), or a ProjectError that says what to change."""
    if not isinstance(modes, Mapping):
        raise ProjectError(f"class_modes must map class names to a mode, e.g. "
                           f"{{'nucleus': 'objects'}}; got {modes!r}.")
    out = {}
    for name, mode in modes.items():
        if name not in classes:
            raise ProjectError(f"class_modes names {name!r}, which is not a class of the "
                               f"project {list(classes)}; use one of its foreground classes.")
        if name == classes[0]:
            raise ProjectError(f"{name!r} is the background: it has no mode (only the "
                               "foreground classes are 'area' or 'objects').")
        if mode not in CLASS_MODES:
            raise ProjectError(f"The mode of {name!r} must be one of {list(CLASS_MODES)}, "
                               f"got {mode!r}.")
        if mode == "objects":
            out[name] = mode
    return out


def _checked_formulation(value: Any) -> str:
    if value not in INSTANCE_FORMULATIONS:
        raise ProjectError(f"instance_formulation must be one of {list(INSTANCE_FORMULATIONS)}, "
                           f"got {value!r}.")
    return value


def initial_settings(
    classes: Sequence[str], colors: Sequence[str] | None, copy_images: bool,
    settings: Mapping[str, Any] | None, class_modes: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The checked settings rows (key -> JSON text) of a new project; raises before anything
    is made."""
    class_list = check_classes(classes)
    rows = {
        "classes": json.dumps(class_list),
        "colors": json.dumps(check_colors(colors, len(class_list))),
        "copy_images": json.dumps(bool(copy_images)),
    }
    settings = dict(settings or {})
    if class_modes is not None:
        settings["class_modes"] = class_modes
    for key, value in settings.items():
        if key in ("classes", "colors"):
            raise ProjectError(f"Pass {key} as Project.create({key}=...), not in settings.")
        if key == "class_modes":
            value = check_class_modes(value, class_list)
        elif key == "instance_formulation":
            value = _checked_formulation(value)
        rows[check_text(key, "setting key", optional=False)] = dumps(value, f"setting {key!r}")
    rows.setdefault("instance_formulation", json.dumps(DEFAULT_INSTANCE_FORMULATION))
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
                modes = self.get_setting("class_modes") or {}
                updates["class_modes"] = json.dumps(
                    {k: v for k, v in modes.items() if k in classes[1:]})
            elif key == "colors":
                updates[key] = json.dumps(check_colors(value, self.n_classes))
            elif key == "class_modes":
                updates[key] = json.dumps(check_class_modes(value, self.classes))
            elif key == "instance_formulation":
                updates[key] = json.dumps(_checked_formulation(value))
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

    def set_class_modes(self, modes: Mapping[str, str]) -> None:
        """Set which classes are "objects" (the others "area"): ``{"nucleus": "objects"}``.

        Raises ProjectError for a name that is not a foreground class or a mode other than
        :data:`CLASS_MODES`; nothing is changed then.
        """
        self.set_setting("class_modes", dict(modes))

    @property
    def class_modes(self) -> dict[str, str]:
        """The mode of every foreground class ("area" or "objects")."""
        modes = self.get_setting("class_modes") or {}
        return {name: modes.get(name, "area") for name in self.classes[1:]}

    @property
    def object_classes(self) -> tuple[int, ...]:
        """The indices of the classes in "objects" mode, increasing (empty: all "area")."""
        modes = self.get_setting("class_modes") or {}
        return tuple(i for i, name in enumerate(self.classes)
                     if i and modes.get(name) == "objects")

    @property
    def instance_formulation(self) -> str:
        """How the project's models yield objects (``instance_formulation`` setting; a new
        project records :data:`DEFAULT_INSTANCE_FORMULATION`, one made before that has
        "boundary", the formulation it was made under)."""
        return self.get_setting("instance_formulation") or _LEGACY_INSTANCE_FORMULATION

    @property
    def colors(self) -> list[str]:
        """One colour per class, background first."""
        return list(self.get_setting("colors") or default_colors(self.n_classes))
