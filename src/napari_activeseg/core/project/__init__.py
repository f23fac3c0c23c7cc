"""The durable project: a SQLite catalog, TIFF label maps and safetensors checkpoints.

A biologist's annotations are hours of expert work; the project folder is their data. It
survives crashes (atomic writes, a reconciliation on open), restarts (drafts), upgrades (schema
migrations), and being handed to a colleague (relative paths, content hashes, no pickles).

Layout::

    project.sqlite            catalog: images, status, submissions (time, effort), scores,
                              query history, rounds, settings (stdlib sqlite3, WAL)
    project.lock              who holds the project read-write (an OS lock)
    images/                   images copied in (``copy_images=True``) and arrays (napari layers)
    labels/<key>.tif          class maps, 0 = background (uint8, uint16 above 255 classes)
    instances/<key>.tif       object ids of the "objects" classes (uint16, 0 = none), when
                              submitted as objects (core.instances)
    reviewed/<key>.tif        which pixels are ground truth (0/1 uint8); absent = whole image
    regions/<key>/*.tif       a large image's reviewed boxes, one (2, h, w) record each
    drafts/<key>.tif          autosaved in-progress edits (and their reviewed pixels)
    models/<version>.safetensors + <version>.json
    backups/                  the catalog as it was before each schema upgrade

``<key>`` is a file-name-safe, unique, never-reused name derived from the image's name, so
``labels/`` can be opened next to the images in Fiji or napari.

Who owns what (one room per module; :class:`Project` is the only door most code needs)::

    _project.py    Project: the facade; create / open / close, the integrity check, and one
                   line per public method saying which store does it
    _store.py      _Store: the handle every store shares (folder, OS lock, connection,
                   thread lock, transactions, schema check and migrations, read-only rules)
    _schema.py     the SQL schema (version 1, frozen) and the migrations
    _settings.py   Settings: settings, the class list and its colours; DEFAULT_COLORS, the
                   one palette of the package (core/classes.py and so the dock use it too)
    _intake.py     ImageIntake: adding image files, folders and arrays (keys, channels)
    _catalog.py    ImageCatalog: image records, file checks, relinking, status, removal
    _labels.py     LabelStore and reconcile(): submissions, their files and the
                   reconciliation, i.e. the whole atomicity protocol (read its docstring
                   before touching a write)
    _regions.py    RegionLabels: a large image's labels as one box-sized record per box
    _drafts.py     DraftStore: autosaved in-progress labels and their reviewed pixels
    _instances.py  InstanceStore: instance label images of the object classes, submitted
                   through the label store's protocol (the class map derived from them)
    _import.py     MaskImport: masks made elsewhere matched by name, converted, submitted
    _history.py    HistoryStore: scores, suggestions and the user's answers, rounds
    _models.py     ModelStore: model versions (safetensors + JSON), never a pickle
    _records.py    the exceptions and record types the stores hand out, shared value checks

The stores are Qt-free and never import the session (an import-linter contract). Names are
loaded on first use, so importing this package for the palette (:data:`DEFAULT_COLORS`,
:func:`default_colors`) costs nothing until a project is opened.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._settings import CLASS_MODES, DEFAULT_COLORS, INSTANCE_FORMULATIONS, default_colors

if TYPE_CHECKING:  # pragma: no cover
    from ._catalog import STATUSES
    from ._history import ACTIONS
    from ._intake import pool_items
    from ._models import ModelStore, check_state_dict, load_state_dict
    from ._project import Project
    from ._records import (
        ImageRecord,
        ModelInfo,
        ProjectError,
        ProjectInUseError,
        ProjectVersionError,
        ProjectWarning,
        RoundRecord,
        ScoreRecord,
        SubmissionRecord,
        UnsafeCheckpointError,
    )
    from ._schema import SCHEMA_V1, SCHEMA_VERSION
    from ._store import (
        BACKUPS_DIR,
        DB_NAME,
        DRAFTS_DIR,
        IMAGES_DIR,
        INSTANCES_DIR,
        LABELS_DIR,
        LOCK_NAME,
        MODELS_DIR,
        REVIEWED_DIR,
    )

__all__ = [
    "ACTIONS",
    "BACKUPS_DIR",
    "CLASS_MODES",
    "DB_NAME",
    "DEFAULT_COLORS",
    "DRAFTS_DIR",
    "IMAGES_DIR",
    "INSTANCES_DIR",
    "INSTANCE_FORMULATIONS",
    "LABELS_DIR",
    "LOCK_NAME",
    "MODELS_DIR",
    "REVIEWED_DIR",
    "SCHEMA_V1",
    "SCHEMA_VERSION",
    "STATUSES",
    "ImageRecord",
    "ImportItem",
    "ImportReport",
    "ModelInfo",
    "ModelStore",
    "Project",
    "ProjectError",
    "ProjectInUseError",
    "ProjectVersionError",
    "ProjectWarning",
    "RoundRecord",
    "ScoreRecord",
    "SubmissionRecord",
    "UnsafeCheckpointError",
    "check_state_dict",
    "default_colors",
    "load_state_dict",
    "pool_items",
]

# name -> the module that defines it, imported when the name is first used
_LAZY = {
    "Project": "_project",
    "STATUSES": "_catalog",
    "ACTIONS": "_history",
    "pool_items": "_intake",
    "ImportItem": "_import", "ImportReport": "_import",
    "ModelStore": "_models", "check_state_dict": "_models", "load_state_dict": "_models",
    "SCHEMA_V1": "_schema", "SCHEMA_VERSION": "_schema",
    **dict.fromkeys(("ImageRecord", "ModelInfo", "ProjectError", "ProjectInUseError",
                     "ProjectVersionError", "ProjectWarning", "RoundRecord", "ScoreRecord",
                     "SubmissionRecord", "UnsafeCheckpointError"), "_records"),
    **dict.fromkeys(("BACKUPS_DIR", "DB_NAME", "DRAFTS_DIR", "IMAGES_DIR", "INSTANCES_DIR",
                     "LABELS_DIR",
                     "LOCK_NAME", "MODELS_DIR", "REVIEWED_DIR"), "_store"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once loaded, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
