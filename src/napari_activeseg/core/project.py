"""The durable project: a SQLite catalog, TIFF label maps and safetensors checkpoints.

A biologist's annotations are hours of expert work; the project folder is their data. It
survives crashes (atomic writes, a reconciliation on open), restarts (drafts), upgrades (schema
migrations), and being handed to a colleague (relative paths, content hashes, no pickles).

Layout::

    project.sqlite            catalog: images, status, submissions (time, effort), scores,
                              query history, rounds, settings (stdlib sqlite3, WAL)
    project.lock              who holds the project read-write (an OS lock, see below)
    images/                   images copied in (``copy_images=True``) and arrays (napari layers)
    labels/<key>.tif          class maps, 0 = background (uint8, uint16 above 255 classes)
    reviewed/<key>.tif        which pixels are ground truth (0/1 uint8); absent = whole image
    drafts/<key>.tif          autosaved in-progress edits, restored on reopen
    models/<version>.safetensors + <version>.json
    backups/                  the catalog as it was before each schema upgrade

``<key>`` is a file-name-safe, unique, never-reused name derived from the image's name, so
``labels/`` can be opened next to the images in Fiji or napari.

Atomicity
---------
Every file is written to a temporary file in its destination folder, fsync'ed and renamed
(``os.replace``); every multi-row catalog change is one SQLite transaction (WAL,
``synchronous=FULL``). A submission writes its files *before* committing its row:

1. the reviewed mask (or a "no mask" marker) is *staged* as ``reviewed/.<key>.tif.<tag>.staged``,
   tagged with the hash of the new label file;
2. ``labels/<key>.tif`` is replaced (the commit point of the files);
3. the staged mask is renamed into place (or the old mask deleted), the draft deleted;
4. the submission row, the image status and the suggestion link are committed together.

The rule that makes a crash at any moment safe: **the label files on disk are the truth, the
catalog follows**. On every read-write open (and in :meth:`Project.integrity_check`) a staged
mask whose tag matches the current label file finishes step 3, any other staged file is an
abandoned attempt and is deleted, and a label file (with its mask) that differs from the last
submission row of its image is adopted as a new submission (``recovered=True``; its effort
fields are unknown). A submission that returned before a crash was committed after its files,
so it is there byte for byte; one interrupted before step 2 leaves the old state, one
interrupted after it leaves the new state, never a mix of the two. The same rule adopts label
files edited by hand in Fiji. (Consequence: if step 4 itself fails, e.g. on a full disk, submit
raises but its labels are adopted at the next open; they are not lost either way.)

Locking and threads
-------------------
A read-write open takes an exclusive OS lock (``flock`` / ``msvcrt.locking``) on
``project.lock`` and keeps it until :meth:`Project.close`. The OS drops it when the process dies,
however it dies, so a stale lock never blocks; the file only holds a note of the holder (PID,
host, user) for the error message. Read-only opens take no lock and refuse writes.

One connection is shared by all threads (``check_same_thread=False``) and every public method
holds the project's re-entrant lock, so the GUI thread and a training worker can use the same
:class:`Project`; methods are short except the ones that hash or read images.

A read-only reader sees consistent catalog snapshots (WAL). Label files are replaced atomically,
but while the writer is inside a submission a reader may briefly see its new labels with the old
mask, and a read-only :meth:`Project.integrity_check` reports (never repairs) what may be the
writer's work in progress. WAL needs shared memory, so a project on a network share must be
used from one machine at a time.

Images
------
Images are referenced by absolute path plus the path relative to the project, with their size,
modification time and SHA-256 (or copied into ``images/``). A missing or changed image raises
an error naming the fix (:meth:`Project.relink`); an unchanged size and mtime skips re-hashing.
Files that cannot be read as images are skipped with a warning (:attr:`Project.warnings`) by
default, so one bad file does not stop a folder import; ``skip_unreadable=False`` raises.

Schema
------
``PRAGMA user_version`` holds the schema version (:data:`SCHEMA_VERSION`); older catalogs are
migrated on a read-write open after a backup copy is written to ``backups/``, and in memory on
a read-only open. A catalog from a newer napari-activeseg raises :class:`ProjectVersionError`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import numbers
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _store_files as sf
from ._store_common import (
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
    _check_int,
    _check_text,
    _dumps,
    _optional_count,
    _stat_key,
)
from ._store_models import MODELS_DIR, ModelStore, check_state_dict, load_state_dict
from ._store_schema import SCHEMA_V1, SCHEMA_VERSION, migrate, run_script
from .imageio import SUPPORTED_SUFFIXES, list_images, read_image, read_labels, write_tiff
from .preprocess import channels_convertible, common_channel_count
from .validation import check_choice, check_image, check_labels, check_mask, check_positive

__all__ = [
    "ACTIONS",
    "SCHEMA_VERSION",
    "STATUSES",
    "ImageRecord",
    "ModelInfo",
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
    "load_state_dict",
]

STATUSES = ("unlabelled", "suggested", "in_progress", "submitted", "skipped")

# Whether an image's latest submission reviewed only part of it (a stored reviewed mask; a
# whole-image submission stores none): such an image stays in the pool.
_PARTIAL_SQL = ("COALESCE((SELECT s.reviewed_sha256 IS NOT NULL FROM submissions s "
                "WHERE s.image_id = images.id ORDER BY s.id DESC LIMIT 1), 0)")
ACTIONS = ("submitted", "skipped")

DB_NAME = "project.sqlite"
LOCK_NAME = "project.lock"
IMAGES_DIR, LABELS_DIR, REVIEWED_DIR = "images", "labels", "reviewed"
DRAFTS_DIR, BACKUPS_DIR = "drafts", "backups"
_SUBDIRS = (IMAGES_DIR, LABELS_DIR, REVIEWED_DIR, DRAFTS_DIR, MODELS_DIR)
_CREATING = ".project.sqlite.creating"
_APP = "napari-activeseg"
_DEFAULT_COLORS = (
    "#000000", "#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#5ac8fa", "#ff9500",
    "#a2845e", "#ff2d55", "#30b0c7", "#8e8e93",
)  # fmt: skip
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?$")


# --------------------------------------------------------------------------- helpers


def _check_classes(classes: Any) -> list[str]:
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


def _default_colors(n: int) -> list[str]:
    return [_DEFAULT_COLORS[i % len(_DEFAULT_COLORS)] if i else "#000000" for i in range(n)]


# settings key of the channel count the project's model takes
_CHANNELS_SETTING = "channels"


def _n_channels(shape: Sequence[int]) -> int:
    """Channels of a stored image shape: (H, W) is 1, (H, W, C) is C."""
    return 1 if len(shape) == 2 else int(shape[-1])


def _channel_message(what: str, n: int, expected: int) -> str:
    return (f"{what} has {n} channel(s) but the project's images have {expected}: one model "
            f"takes one channel count, and only gray <-> RGB is converted automatically. "
            f"Convert it to {expected} channel(s) (or make a separate project for it).")


def _conversion_note(what: str, n: int, expected: int) -> str:
    how = f"it is repeated on the {expected} channels the model takes" if n == 1 else \
        f"the model takes the mean of its {n} channels, as gray"
    return f"{what} has {n} channel(s), the project's images {expected}: {how}."


def _check_colors(colors: Any, n_classes: int) -> list[str]:
    if colors is None:
        return _default_colors(n_classes)
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


def _make_key(name: str, taken: set[str]) -> str:
    """A file-name-safe key from an image name, unique among `taken` (case-insensitively)."""
    stem = Path(name).name
    for suffix in SUPPORTED_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    # no dots: a key is the part of a file name before its first dot
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:80] or "image"
    key, n = stem, 1
    while key.lower() in taken:
        n += 1
        key = f"{stem}-{n}"
    taken.add(key.lower())
    return key


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- the project

_PRIVATE = object()


class Project(ModelStore):
    """An annotation project on disk. Make one with :meth:`create`, open one with :meth:`open`.

    Use it as a context manager (or call :meth:`close`) so the lock is released promptly. See
    the module docstring for the layout, the atomicity rule, locking and threading.

    Attributes
    ----------
    folder : Path
    read_only : bool
    warnings : list of str
        Files skipped when adding images, models that fell back, schema upgrades.
    repairs : list of str
        What the reconciliation on open / :meth:`integrity_check` fixed (temporary files
        removed, interrupted submissions finished or adopted).
    """

    def __init__(self, folder: Path, *, read_only: bool = False, _key: object = None) -> None:
        if _key is not _PRIVATE:
            raise TypeError("Use Project.create(folder, ...) or Project.open(folder).")
        self.folder = folder
        self.read_only = read_only
        self.warnings: list[str] = []
        self.repairs: list[str] = []
        self._lock = threading.RLock()
        self._file_lock: sf.ProcessLock | None = None
        self._conn: sqlite3.Connection | None = None
        self._classes: list[str] | None = None

    # ------------------------------------------------------------------ create / open / close

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        *,
        images: Iterable[str | os.PathLike] | None = None,
        source_folder: str | os.PathLike | None = None,
        pattern: str = "*",
        recursive: bool = False,
        arrays: Mapping[str, npt.ArrayLike] | None = None,
        copy_images: bool = False,
        classes: Sequence[str] = ("background", "foreground"),
        colors: Sequence[str] | None = None,
        settings: Mapping[str, Any] | None = None,
        channel_axis: int | None = None,
        skip_unreadable: bool = True,
    ) -> Project:
        """Create a project folder and open it read-write.

        Parameters
        ----------
        folder : path
            Where the project lives; created if missing. It may already hold other files, but
            not a project.
        images : iterable of paths, optional
            Image files to add.
        source_folder : path, optional
            A folder whose images (``pattern``, ``recursive``) are added; names are kept
            relative to it. An empty folder raises ValueError naming the supported suffixes.
        arrays : mapping of str to (H, W) or (H, W, C) array, optional
            In-memory images (e.g. napari layers), saved as TIFF under ``images/``.
        copy_images : bool, optional
            Copy image files into ``images/`` (a self-contained project) instead of referencing
            them by path. Stored as the default for :meth:`add_images`.
        classes : sequence of str, optional
            Class names, background first; label values are indices into it.
        colors : sequence of str, optional
            One ``'#rrggbb'`` colour per class (defaults to a palette, background black).
        settings : mapping, optional
            Initial settings (JSON values), see :meth:`set_setting`.
        channel_axis : int, optional
            Channel axis of multichannel TIFF stacks, see
            :func:`~napari_activeseg.core.imageio.read_image`.
        skip_unreadable : bool, optional
            Skip files that cannot be read as images, recording why in :attr:`warnings`
            (default), or raise. Either way, if files were given and none is readable, a
            ValueError lists the reasons.

        Raises
        ------
        ProjectError
            If the folder already holds a project, cannot be written, or an argument is bad.
        ValueError
            If the source folder holds no image, or no given image is readable.

        Notes
        -----
        Nothing is left behind on error: the catalog is built under a temporary name and
        renamed to ``project.sqlite`` last (the moment the folder becomes a project), and
        everything made before is removed if a step fails.
        """
        folder = Path(folder).expanduser().resolve()
        if (folder / DB_NAME).exists():
            raise ProjectError(
                f"{str(folder)!r} already holds a napari-activeseg project; open it with "
                f"Project.open({str(folder)!r}), or create the new project in another folder."
            )
        if folder.exists() and not folder.is_dir():
            raise ProjectError(f"{str(folder)!r} exists and is not a folder; pick a folder path.")
        class_list = _check_classes(classes)
        color_list = _check_colors(colors, len(class_list))
        init_settings = {}
        for key, value in dict(settings or {}).items():
            if key in ("classes", "colors"):
                raise ProjectError(f"Pass {key} as Project.create({key}=...), not in settings.")
            init_settings[_check_text(key, "setting key", optional=False)] = _dumps(
                value, f"setting {key!r}"
            )

        entries: list[tuple[Path, str]] = []
        if source_folder is not None:
            src = Path(source_folder).expanduser().resolve()
            for path in list_images(src, pattern=pattern, recursive=recursive):
                if _is_project_file(path, folder):
                    continue  # our own label / model files when the project is inside the source
                entries.append((path, path.relative_to(src).as_posix()))
        for item in images or ():
            path = Path(item).expanduser()
            entries.append((path, path.name))
        checked_arrays = cls._check_arrays(arrays or {}, channel_axis=None)

        made: list[Path] = []  # created here, removed on failure (deepest last)
        probe = folder
        while not probe.exists():
            made.insert(0, probe)
            probe = probe.parent
        project = cls(folder, read_only=False, _key=_PRIVATE)
        lock = sf.ProcessLock(folder / LOCK_NAME)
        creating = folder / _CREATING
        try:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ProjectError(f"Cannot create project folder {str(folder)!r}: {err}.") from err
            _check_writable(folder)
            lock_existed = lock.path.exists()
            if not lock_existed:
                made.append(lock.path)
            project._acquire(lock)
            if (folder / DB_NAME).exists():  # created by someone else meanwhile
                raise ProjectError(f"{str(folder)!r} already holds a napari-activeseg project.")
            for sub in _SUBDIRS:
                path = folder / sub
                if not path.exists():
                    path.mkdir()
                    made.append(path)
            for path in (creating, *_sidecars(creating)):
                path.unlink(missing_ok=True)  # a previous create that crashed
            made.append(creating)
            conn = sqlite3.connect(
                str(creating), isolation_level=None, check_same_thread=False, timeout=30
            )
            project._conn = conn
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = DELETE")  # no -wal next to the temporary name
            conn.execute("PRAGMA synchronous = FULL")
            with project._transaction():
                run_script(conn, SCHEMA_V1)
                migrate(conn, folder, 1)
                from .. import __version__

                meta = {"app": _APP, "created_with": __version__, "created_at": sf.utc_now()}
                conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
                conn.executemany(
                    "INSERT INTO settings(key, value) VALUES (?, ?)",
                    [
                        ("classes", json.dumps(class_list)),
                        ("colors", json.dumps(color_list)),
                        ("copy_images", json.dumps(bool(copy_images))),
                        *init_settings.items(),
                    ],
                )
            if entries:
                project._add_files(
                    entries, copy=bool(copy_images), channel_axis=channel_axis,
                    skip_unreadable=skip_unreadable, created=made,
                )  # fmt: skip
            if checked_arrays:
                project._add_checked_arrays(checked_arrays, created=made)
            conn.close()
            project._conn = None
            os.replace(creating, folder / DB_NAME)
            sf.fsync_dir(folder)
        except BaseException:
            if project._conn is not None:
                project._conn.close()
                project._conn = None
            for path in (*_sidecars(creating),):
                path.unlink(missing_ok=True)
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
            lock.release()
            raise
        try:
            project._connect()
        except BaseException:
            project.close()
            raise
        return project

    @classmethod
    def open(cls, folder: str | os.PathLike, *, read_only: bool = False) -> Project:
        """Open an existing project.

        Parameters
        ----------
        folder : path
            The project folder (holding ``project.sqlite``).
        read_only : bool, optional
            Open without the lock, e.g. to look at a project another process has open, or one
            on a read-only share. Every write then raises ProjectError.

        Raises
        ------
        ProjectInUseError
            If another process (or another open in this process) has it open read-write; the
            message names the holder and suggests ``read_only=True``.
        ProjectVersionError
            If the catalog was written by a newer napari-activeseg.
        ProjectError
            If the folder is not a project, or cannot be written (suggesting ``read_only``).
        """
        folder = Path(folder).expanduser().resolve()
        if not folder.is_dir():
            raise ProjectError(
                f"No project folder at {str(folder)!r}; make one with Project.create(folder, "
                "source_folder=...) or check the path."
            )
        if not (folder / DB_NAME).is_file():
            raise ProjectError(
                f"{str(folder)!r} is not a napari-activeseg project (it has no {DB_NAME}); pick "
                "the project folder, or make one there with Project.create()."
            )
        project = cls(folder, read_only=read_only, _key=_PRIVATE)
        try:
            if not read_only:
                _check_writable(folder)
                project._acquire(sf.ProcessLock(folder / LOCK_NAME))
            project._connect()
        except BaseException:
            project.close()
            raise
        return project

    def _acquire(self, lock: sf.ProcessLock) -> None:
        try:
            lock.acquire()
        except sf.LockHeld as held:
            info = held.info
            if info.get("pid") == os.getpid() and info.get("host") == _hostname():
                who = f"this very process (PID {info['pid']}): close the other Project first"
            elif info:
                who = (
                    f"process {info.get('pid', '?')} on host {info.get('host', '?')} "
                    f"(user {info.get('user', '?')}, since {info.get('since', '?')})"
                )
            else:
                who = "another process"
            raise ProjectInUseError(
                f"Project {str(self.folder)!r} is open read-write in {who}. Close it there, or "
                f"open it read-only here: Project.open({str(self.folder)!r}, read_only=True)."
            ) from None
        except OSError as err:
            raise ProjectError(
                f"Cannot lock project {str(self.folder)!r} ({err}); if the folder is read-only, "
                f"open it with Project.open(..., read_only=True)."
            ) from err
        self._file_lock = lock

    def _connect(self) -> None:
        """Open the catalog, check/migrate its schema, reconcile files (read-write only)."""
        db = self.folder / DB_NAME
        try:
            if self.read_only:
                conn = _connect_read_only(db, self.folder)
            else:
                conn = sqlite3.connect(
                    str(db), isolation_level=None, check_same_thread=False, timeout=30
                )
            conn.row_factory = sqlite3.Row
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as err:
            raise ProjectError(
                f"{str(db)!r} cannot be read as a SQLite catalog ({err}); the file is corrupt or "
                "not a napari-activeseg project. Restore it from a backup (see backups/)."
            ) from err
        self._conn = conn
        if version > SCHEMA_VERSION:
            created = self._meta("created_with") or "a newer version"
            raise ProjectVersionError(
                f"Project {str(self.folder)!r} was created by a newer napari-activeseg "
                f"({created}, catalog schema {version}; this version reads up to schema "
                f"{SCHEMA_VERSION}). Upgrade napari-activeseg (pip install -U napari-activeseg) "
                "to open it."
            )
        if version < 1 or self._meta("app") != _APP:
            raise ProjectError(
                f"{str(db)!r} is a SQLite file but not a napari-activeseg catalog."
            )
        conn.execute("PRAGMA foreign_keys = ON")
        if not self.read_only:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            for sub in _SUBDIRS:  # a hand-copied project may have lost its empty folders
                (self.folder / sub).mkdir(exist_ok=True)
        if version < SCHEMA_VERSION:
            self._upgrade(version)
        if not self.read_only:
            with self._lock:
                self._reconcile(full=False)
            for message in self.repairs:
                warnings.warn(message, ProjectWarning, stacklevel=3)

    def _upgrade(self, version: int) -> None:
        conn = self._conn
        assert conn is not None
        if self.read_only:
            # Upgrade a private in-memory copy: the file on disk stays as it is.
            memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            conn.backup(memory)
            conn.close()
            memory.row_factory = sqlite3.Row
            self._conn = conn = memory
            note = "read-only: upgraded in memory only"
        else:
            backups = self.folder / BACKUPS_DIR
            backups.mkdir(exist_ok=True)
            stamp = sf.utc_now().replace(":", "").replace("-", "")[:15]
            target = backups / f"project-schema{version}-{stamp}.sqlite"
            tmp = backups / f".{target.name}.tmp"
            dest = sqlite3.connect(str(tmp))
            try:
                conn.backup(dest)
            finally:
                dest.close()
            os.replace(tmp, target)
            sf.fsync_dir(backups)
            note = f"a copy of the old catalog is in {target.relative_to(self.folder)}"
        with self._transaction():
            migrate(conn, self.folder, version)
        self.warnings.append(
            f"Upgraded the catalog from schema {version} to {SCHEMA_VERSION} ({note})."
        )

    def close(self) -> None:
        """Close the catalog and release the lock (idempotent)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    if not self.read_only:
                        conn.execute("PRAGMA optimize")
                    conn.close()
            if self._file_lock is not None:
                self._file_lock.release()
                self._file_lock = None

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("read-only" if self.read_only else "open")
        return f"<Project {str(self.folder)!r} ({state})>"

    @property
    def closed(self) -> bool:
        return self._conn is None

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # ------------------------------------------------------------------ plumbing

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ProjectError(f"Project {str(self.folder)!r} is closed; open it again.")
        return self._conn

    def _check_writable(self) -> None:
        if self._conn is None:
            raise ProjectError(f"Project {str(self.folder)!r} is closed; open it again.")
        if self.read_only:
            raise ProjectError(
                f"Project {str(self.folder)!r} is open read-only; nothing was changed. Open it "
                "with Project.open(folder) (read-write) to make changes."
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` takes the write lock up front)."""
        with self._lock:
            conn = self._db
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def _meta(self, key: str) -> str | None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError:
            return None
        return None if row is None else row[0]

    def _labels_file(self, key: str) -> Path:
        return self.folder / LABELS_DIR / f"{key}.tif"

    def _reviewed_file(self, key: str) -> Path:
        return self.folder / REVIEWED_DIR / f"{key}.tif"

    def _draft_file(self, key: str) -> Path:
        return self.folder / DRAFTS_DIR / f"{key}.tif"

    def _draft_mask_file(self, key: str) -> Path:
        # keys hold no dot, so "<key>.reviewed" never collides with another image's key
        return self.folder / DRAFTS_DIR / f"{key}.reviewed.tif"

    def _remove_draft(self, key: str) -> bool:
        """Delete an image's draft (labels and mask); True when something was deleted."""
        found = False
        for path in (self._draft_file(key), self._draft_mask_file(key)):
            if path.exists():
                path.unlink()
                found = True
        if found:
            sf.fsync_dir(self.folder / DRAFTS_DIR)
        return found

    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str, default: Any = None) -> Any:
        """A setting's JSON value, or `default` if it was never set."""
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON value (config objects are stored as their ``to_dict()``).

        ``"classes"`` and ``"colors"`` are checked: the class list cannot shrink below a label
        value already submitted, and colours are extended/truncated to match a new class list.
        ``None`` deletes the setting.
        """
        self._check_writable()
        _check_text(key, "setting key", optional=False)
        with self._lock:
            if value is None:
                if key in ("classes", "colors", "copy_images"):
                    raise ProjectError(f"The {key!r} setting cannot be deleted, only changed.")
                with self._transaction() as conn:
                    conn.execute("DELETE FROM settings WHERE key = ?", (key,))
                return
            updates = {key: _dumps(value, f"setting {key!r}")}
            if key == "classes":
                classes = _check_classes(value)
                used = self._db.execute(
                    "SELECT MAX(max_label) FROM submissions s JOIN images i ON i.id = s.image_id "
                    "WHERE i.labels_purged = 0"
                ).fetchone()[0]
                if used is not None and used >= len(classes):
                    raise ProjectError(
                        f"Submitted labels use class {used}, so the class list needs at least "
                        f"{used + 1} names; got {len(classes)}. Add names instead of removing."
                    )
                colors = list(self.colors)[: len(classes)]
                colors += _default_colors(len(classes))[len(colors):]
                updates["colors"] = json.dumps(colors)
            elif key == "colors":
                updates[key] = json.dumps(_check_colors(value, self.n_classes))
            with self._transaction() as conn:
                conn.executemany(
                    "INSERT INTO settings(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    updates.items(),
                )
            self._classes = None

    def settings(self) -> dict[str, Any]:
        """All settings as a dict of JSON values."""
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM settings ORDER BY key").fetchall()
        return {k: json.loads(v) for k, v in rows}

    @property
    def classes(self) -> list[str]:
        """Class names, background first."""
        with self._lock:
            if self._classes is None:
                self._classes = list(self.get_setting("classes"))
            return list(self._classes)

    @property
    def n_classes(self) -> int:
        """Number of classes including background (label values are ``0..n_classes-1``)."""
        return len(self.classes)

    @property
    def colors(self) -> list[str]:
        return list(self.get_setting("colors") or _default_colors(self.n_classes))

    # ------------------------------------------------------------------ images

    @staticmethod
    def _check_arrays(
        arrays: Mapping[str, npt.ArrayLike], *, channel_axis: int | None
    ) -> dict[str, np.ndarray]:
        if not isinstance(arrays, Mapping):
            raise ProjectError(
                "arrays must be a mapping of name -> image array (e.g. {layer.name: layer.data})."
            )
        out = {}
        for name, array in arrays.items():
            _check_text(name, "array name", optional=False)
            out[name] = check_image(array, name=name, channel_axis=channel_axis)
        return out

    def add_images(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        copy: bool | None = None,
        channel_axis: int | None = None,
        skip_unreadable: bool = True,
    ) -> list[ImageRecord]:
        """Add image files to the pool.

        Each file is read once (to learn its shape and check it is an image) and hashed.
        A file whose content is already in the project is skipped with a warning; one whose
        content matches a *removed* image brings that image back, with its labels.

        Parameters
        ----------
        paths : iterable of paths
        copy : bool, optional
            Copy into ``images/``; defaults to the project's ``copy_images`` setting.
        channel_axis : int, optional
            See :func:`~napari_activeseg.core.imageio.read_image`.
        skip_unreadable : bool, optional
            Skip unreadable files with a warning in :attr:`warnings` (default) or raise.

        Returns
        -------
        records : list of ImageRecord
            The images added (or brought back), in order.
        """
        self._check_writable()
        entries = [(Path(p).expanduser(), Path(p).name) for p in paths]
        if copy is None:
            copy = bool(self.get_setting("copy_images", False))
        with self._lock:
            return self._add_files(
                entries, copy=copy, channel_axis=channel_axis, skip_unreadable=skip_unreadable
            )

    def add_folder(
        self,
        source_folder: str | os.PathLike,
        *,
        pattern: str = "*",
        recursive: bool = False,
        copy: bool | None = None,
        channel_axis: int | None = None,
    ) -> list[ImageRecord]:
        """Add the images of a folder that are not in the project yet (a re-scan)."""
        self._check_writable()
        src = Path(source_folder).expanduser().resolve()
        with self._lock:
            known = {r.path for r in self.images(include_removed=False)}
            entries = [
                (p, p.relative_to(src).as_posix())
                for p in list_images(src, pattern=pattern, recursive=recursive)
                if p not in known and not _is_project_file(p, self.folder)
            ]
            if copy is None:
                copy = bool(self.get_setting("copy_images", False))
            return self._add_files(entries, copy=copy, channel_axis=channel_axis,
                                   skip_unreadable=True, quiet_duplicates=True)  # fmt: skip

    def add_arrays(
        self, arrays: Mapping[str, npt.ArrayLike], *, channel_axis: int | None = None
    ) -> list[ImageRecord]:
        """Add in-memory images (e.g. napari layers: ``{layer.name: layer.data}``).

        They are saved as TIFF under ``images/`` (channels as separate pages), so the project
        does not depend on the session that made them.
        """
        self._check_writable()
        checked = self._check_arrays(arrays, channel_axis=channel_axis)
        with self._lock:
            return self._add_checked_arrays(checked)

    def _taken_keys(self) -> set[str]:
        """Keys in use, plus the stems of any file in our folders: a stray label file must
        never become the labels of a new image that happens to get its name."""
        taken = {r[0].lower() for r in self._db.execute("SELECT key FROM images")}
        for sub in (IMAGES_DIR, LABELS_DIR, REVIEWED_DIR, DRAFTS_DIR):
            directory = self.folder / sub
            if directory.is_dir():
                taken.update(p.name.split(".")[0].lower() for p in directory.iterdir())
        return taken

    def _by_sha(self) -> dict[str, sqlite3.Row]:
        rows = self._db.execute("SELECT * FROM images ORDER BY removed_at IS NULL, id").fetchall()
        return {r["sha256"]: r for r in rows}  # live rows win over removed ones

    def _add_files(
        self,
        entries: Sequence[tuple[Path, str]],
        *,
        copy: bool,
        channel_axis: int | None,
        skip_unreadable: bool,
        created: list[Path] | None = None,
        quiet_duplicates: bool = False,
    ) -> list[ImageRecord]:
        """Probe, (copy), and insert image files in one transaction."""
        problems: list[str] = []
        probed = []
        seen: set[str] = set()
        for path, name in entries:
            try:
                probed.append((name, *self._probe_file(path, channel_axis)))
            except (ValueError, OSError) as err:
                if not skip_unreadable:
                    raise
                problems.append(f"Skipped {str(path)!r}: {err}")
        expected = self._channel_count()
        if expected is None:
            expected = common_channel_count([_n_channels(item[5]) for item in probed])
        kept = []
        for item in probed:
            n = _n_channels(item[5])
            if not channels_convertible(n, expected):
                err = _channel_message(repr(str(item[1])), n, expected)
                if not skip_unreadable:
                    raise ValueError(err)
                problems.append(f"Skipped {err}")
                continue
            if n != expected:
                problems.append(_conversion_note(repr(str(item[1])), n, expected))
            kept.append(item)
        probed = kept
        if entries and not probed:
            raise ValueError(
                "None of the given files could be added as an image:\n  "
                + "\n  ".join(problems)
                + f"\nSupported file types: {', '.join(SUPPORTED_SUFFIXES)}."
            )
        by_sha = self._by_sha()
        taken = self._taken_keys()
        now = sf.utc_now()
        rows, revive, copies = [], [], []
        try:
            for name, path, sha, size, mtime, shape, dtype in probed:
                old = by_sha.get(sha)
                if sha in seen or (old is not None and old["removed_at"] is None):
                    if not quiet_duplicates:
                        other = old["name"] if old is not None else "another file of this batch"
                        problems.append(
                            f"Skipped {str(path)!r}: same content as {other!r}, already in "
                            "the project."
                        )
                    continue
                seen.add(sha)
                if old is not None:  # a removed image comes back
                    revive.append((old, path))
                    continue
                key = _make_key(name, taken)
                origin, stored, rel = "external", str(path), _relpath(path, self.folder)
                if copy:
                    target = self.folder / IMAGES_DIR / f"{key}{path.suffix.lower()}"
                    if target.exists():
                        raise ProjectError(f"{str(target)!r} already exists; not overwriting it.")
                    copied_sha = sf.atomic_copy(path, target)
                    copies.append(target)
                    if copied_sha != sha:
                        raise ProjectError(
                            f"{str(path)!r} changed while it was being copied; try again."
                        )
                    origin, stored = "copied", target.relative_to(self.folder).as_posix()
                    rel = stored
                    size, mtime = _stat_key(target)  # type: ignore[misc]
                rows.append((key, name, stored, rel, sha, size, mtime, json.dumps(shape), dtype,
                             channel_axis, now, origin))  # fmt: skip
            ids = self._insert_images(rows, revive)
        except BaseException:
            for target in copies:
                target.unlink(missing_ok=True)
            raise
        if created is not None:
            created.extend(copies)
        if ids:
            self._remember_channels(expected)
        self._note(problems)
        return [self.get_image(i) for i in ids]

    def _insert_images(
        self, rows: list[tuple], revive: list[tuple[sqlite3.Row, Path]]
    ) -> list[int]:
        ids = []
        purged = []
        with self._transaction() as conn:
            for row in rows:
                cur = conn.execute(
                    "INSERT INTO images(key, name, path, rel_path, sha256, size, mtime_ns, shape, "
                    "dtype, channel_axis, added_at, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
                ids.append(int(cur.lastrowid))
            for old, path in revive:
                if old["origin"] == "external":
                    size, mtime = _stat_key(path)  # type: ignore[misc]
                    conn.execute(
                        "UPDATE images SET path = ?, rel_path = ?, size = ?, mtime_ns = ? "
                        "WHERE id = ?",
                        (str(path), _relpath(path, self.folder), size, mtime, old["id"]),
                    )
                conn.execute(
                    "UPDATE images SET removed_at = NULL, labels_purged = 0 WHERE id = ?",
                    (old["id"],),
                )
                if old["labels_purged"]:
                    purged.append(old["key"])
                ids.append(int(old["id"]))
        for key in purged:  # leftovers of a purge interrupted by a crash
            self._unlink_image_files(key)
        return ids

    @property
    def channels(self) -> int | None:
        """The channel count the project's model takes (None before the first image).

        Set when the first images are added: the most common count among them (see
        :func:`~.preprocess.match_channels` for the others); projects made before this was
        recorded take their first image's count.
        """
        return self._channel_count()

    def _channel_count(self) -> int | None:
        saved = self.get_setting(_CHANNELS_SETTING)
        if saved is not None:
            return int(saved)
        row = self._db.execute("SELECT shape FROM images ORDER BY id LIMIT 1").fetchone()
        return None if row is None else _n_channels(json.loads(row["shape"]))

    def _remember_channels(self, count: int | None) -> None:
        if count is not None and self.get_setting(_CHANNELS_SETTING) is None:
            self.set_setting(_CHANNELS_SETTING, int(count))

    def _add_checked_arrays(
        self, arrays: Mapping[str, np.ndarray], created: list[Path] | None = None
    ) -> list[ImageRecord]:
        expected = self._channel_count()
        if expected is None:
            expected = common_channel_count([_n_channels(a.shape) for a in arrays.values()])
        notes = []
        for name, image in arrays.items():
            n = _n_channels(image.shape)
            if not channels_convertible(n, expected):  # refused before anything is written
                raise ValueError(_channel_message(f"array {name!r}", n, expected))
            if n != expected:
                notes.append(_conversion_note(f"array {name!r}", n, expected))
        by_sha = self._by_sha()
        taken = self._taken_keys()
        now = sf.utc_now()
        rows, revive, written, problems = [], [], [], []
        seen: set[str] = set()
        try:
            for name, image in arrays.items():
                stored_axis = 0 if image.ndim == 3 else None
                # channels as pages (minisblack): no RGB/alpha interpretation on the way back
                pages = np.moveaxis(image, -1, 0) if image.ndim == 3 else image
                data = sf.encode_tiff(np.ascontiguousarray(pages), photometric="minisblack")
                sha = sf.sha256_bytes(data)
                old = by_sha.get(sha)
                if sha in seen or (old is not None and old["removed_at"] is None):
                    problems.append(f"Skipped array {name!r}: same content as an image already "
                                    "in the project.")  # fmt: skip
                    continue
                seen.add(sha)
                if old is not None:
                    revive.append((old, self.folder / old["path"]))
                    continue
                key = _make_key(name, taken)
                target = self.folder / IMAGES_DIR / f"{key}.tif"
                if target.exists():
                    raise ProjectError(f"{str(target)!r} already exists; not overwriting it.")
                sf.atomic_write_bytes(target, data)
                written.append(target)
                size, mtime = _stat_key(target)  # type: ignore[misc]
                stored = target.relative_to(self.folder).as_posix()
                rows.append((key, name, stored, stored, sha, size, mtime,
                             json.dumps(list(image.shape)), str(image.dtype), stored_axis, now,
                             "array"))  # fmt: skip
            ids = self._insert_images(rows, revive)
        except BaseException:
            for target in written:
                target.unlink(missing_ok=True)
            raise
        if created is not None:
            created.extend(written)
        if ids:
            self._remember_channels(expected)
        self._note(notes + problems)
        return [self.get_image(i) for i in ids]

    def _note(self, messages: list[str]) -> None:
        for message in messages:
            self.warnings.append(message)
            warnings.warn(message, ProjectWarning, stacklevel=4)

    @staticmethod
    def _probe_file(path: Path, channel_axis: int | None) -> tuple:
        """(path, sha256, size, mtime_ns, shape, dtype) of an image file, reading it once."""
        path = path.resolve()
        before = _stat_key(path)
        sha = sf.sha256_file(path) if before is not None and path.is_file() else None
        image = read_image(path, channel_axis=channel_axis)  # clear ValueError if unreadable
        after = _stat_key(path)
        if sha is None or before != after:
            raise ValueError(f"{str(path)!r} changed while it was being read; try again.")
        return path, sha, after[0], after[1], list(image.shape), str(image.dtype)

    def remove_image(self, image_id: int, *, delete_labels: bool = False) -> None:
        """Take an image out of the pool.

        Its submissions, labels and query history are kept (and come back if the same image
        is added again) unless ``delete_labels=True``, which deletes its label, reviewed and
        draft files and its submission and score rows; the query history always stays.
        Images copied into the project stay under ``images/`` either way.
        """
        self._check_writable()
        with self._lock:
            row = self._image_row(image_id, allow_removed=True)
            with self._transaction() as conn:
                conn.execute(
                    "UPDATE images SET removed_at = COALESCE(removed_at, ?), "
                    "labels_purged = labels_purged OR ? WHERE id = ?",
                    (sf.utc_now(), int(delete_labels), row["id"]),
                )
                if delete_labels:
                    conn.execute(
                        "UPDATE suggestions SET submission_id = NULL WHERE image_id = ?",
                        (row["id"],),
                    )
                    conn.execute("DELETE FROM submissions WHERE image_id = ?", (row["id"],))
                    conn.execute("DELETE FROM scores WHERE image_id = ?", (row["id"],))
            if delete_labels:
                self._unlink_image_files(row["key"])

    def _unlink_image_files(self, key: str) -> None:
        for path in (self._labels_file(key), self._reviewed_file(key), self._draft_file(key),
                     self._draft_mask_file(key)):
            path.unlink(missing_ok=True)
        for sub in (LABELS_DIR, REVIEWED_DIR, DRAFTS_DIR):
            sf.fsync_dir(self.folder / sub)

    def _image_row(self, image_id: Any, *, allow_removed: bool = False) -> sqlite3.Row:
        image_id = _check_int(image_id, "image_id")
        row = self._db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise ProjectError(
                f"No image with id {image_id} in project {str(self.folder)!r}; "
                "project.images() lists the valid ids."
            )
        if row["removed_at"] is not None and not allow_removed:
            raise ProjectError(
                f"Image {image_id} ({row['name']!r}) was removed from the project; add it again "
                "with add_images() to use it."
            )
        return row

    def _record(self, row: sqlite3.Row) -> ImageRecord:
        return ImageRecord(
            id=int(row["id"]),
            key=row["key"],
            name=row["name"],
            path=self._expected_path(row),
            sha256=row["sha256"],
            size=int(row["size"]),
            shape=tuple(json.loads(row["shape"])),
            dtype=row["dtype"],
            channel_axis=row["channel_axis"],
            status=row["status"],
            added_at=row["added_at"],
            origin=row["origin"],
            removed=row["removed_at"] is not None,
            partial=bool(row["partial"]) if "partial" in row.keys() else False,
        )

    def _expected_path(self, row: sqlite3.Row) -> Path:
        path = Path(row["path"])
        return path if path.is_absolute() else self.folder / path

    def images(self, status: str | None = None, *, include_removed: bool = False
               ) -> list[ImageRecord]:  # fmt: skip
        """The images of the pool (by id), optionally only those with one status."""
        if status is not None:
            check_choice(status, STATUSES, name="status")
        sql = f"SELECT *, {_PARTIAL_SQL} AS partial FROM images WHERE (? IS NULL OR status = ?)"
        if not include_removed:
            sql += " AND removed_at IS NULL"
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", (status, status)).fetchall()
        return [self._record(r) for r in rows]

    def get_image(self, image_id: int) -> ImageRecord:
        """The record of one image (removed ones included)."""
        with self._lock:
            row = self._image_row(image_id, allow_removed=True)
            partial = self._db.execute(
                f"SELECT {_PARTIAL_SQL} FROM images WHERE id = ?", (row["id"],)).fetchone()[0]
            return replace(self._record(row), partial=bool(partial))

    def _locate(self, row: sqlite3.Row) -> tuple[Path, bool]:
        """Where the image is now, and whether it is only found at its project-relative path.

        A project moved together with its images (e.g. handed over as one folder tree) finds
        them relative to itself; the content hash still decides whether it is the same image.
        """
        path = self._expected_path(row)
        if path.exists() or row["origin"] != "external" or not row["rel_path"]:
            return path, False
        alt = (self.folder / row["rel_path"]).resolve()
        return (alt, True) if alt.exists() else (path, False)

    def _verify(self, row: sqlite3.Row) -> Path:
        """The image's current path, after checking it is the file that was added."""
        path, moved = self._locate(row)
        fix = f"project.relink({row['id']}, new_path)"
        if not path.is_file():
            raise ProjectError(
                f"Image {row['id']} ({row['name']!r}) is missing: {str(path)!r} does not exist "
                "(moved, renamed, deleted, or on a drive that is not mounted). Put it back, or "
                f"point the project at its new location with {fix} (or relink_folder(folder))."
            )
        stat = _stat_key(path)
        if moved or stat != (row["size"], row["mtime_ns"]):
            sha = sf.sha256_file(path)
            if sha != row["sha256"]:
                raise ProjectError(
                    f"Image {row['id']} ({row['name']!r}) at {str(path)!r} has changed since it "
                    "was added (its content hash differs), so its labels and scores may not "
                    "match it any more. Restore the original file, or if this is the same image "
                    f"re-saved, accept it with project.relink({row['id']}, {str(path)!r}, "
                    "accept_changed=True)."
                )
            if not self.read_only:  # same content: remember the new stat / location
                with self._transaction() as conn:
                    conn.execute(
                        "UPDATE images SET path = ?, rel_path = ?, size = ?, mtime_ns = ? "
                        "WHERE id = ?",
                        (str(path) if row["origin"] == "external" else row["path"],
                         _relpath(path, self.folder) if row["origin"] == "external"
                         else row["rel_path"], stat[0], stat[1], row["id"]),  # type: ignore[index]
                    )  # fmt: skip
                if moved:
                    self.repairs.append(
                        f"Image {row['id']} ({row['name']!r}) was found at {str(path)!r} "
                        "(same content); its path was updated."
                    )
        return path

    def load_image(self, image_id: int) -> np.ndarray:
        """Read an image as stored: ``(H, W)`` or ``(H, W, C)``, its own dtype.

        The file's size and modification time are compared with those recorded when it was
        added; if they differ, its content hash decides. A missing or changed file raises
        ProjectError naming the path and the fix (:meth:`relink`); a different image is never
        silently used in place of the one that was labelled.
        """
        with self._lock:
            row = self._image_row(image_id, allow_removed=True)
            path = self._verify(row)
        try:
            image = read_image(path, channel_axis=row["channel_axis"])
        except ValueError as err:
            raise ProjectError(f"Image {row['id']} ({row['name']!r}): {err}") from err
        shape = tuple(json.loads(row["shape"]))
        if image.shape != shape:
            raise ProjectError(
                f"Image {row['id']} ({row['name']!r}) at {str(path)!r} now reads as shape "
                f"{image.shape}, not {shape} as when it was added (channel_axis="
                f"{row['channel_axis']})."
            )
        return image

    def check_images(self) -> list[dict[str, Any]]:
        """Check every image of the pool is where it was and unchanged (cheap when it is).

        Returns
        -------
        problems : list of dict
            ``{"image_id", "name", "path", "problem": "missing" | "changed", "message"}``;
            empty when every image is fine.
        """
        problems = []
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM images WHERE removed_at IS NULL ORDER BY id"
            ).fetchall()
            for row in rows:
                try:
                    self._verify(row)
                except ProjectError as err:
                    path, _ = self._locate(row)
                    kind = "missing" if not path.is_file() else "changed"
                    problems.append({
                        "image_id": int(row["id"]), "name": row["name"], "path": str(path),
                        "problem": kind, "message": str(err),
                    })  # fmt: skip
        return problems

    def relink(
        self, image_id: int, path: str | os.PathLike, *, accept_changed: bool = False
    ) -> ImageRecord:
        """Point an image at a new file (after it was moved, renamed or re-saved).

        The new file must have the same content hash, unless ``accept_changed=True`` (e.g. the
        same image re-saved by another program); it must then still read with the same shape if
        the image has labels, because the labels were drawn on it.
        """
        self._check_writable()
        with self._lock:
            row = self._image_row(image_id, allow_removed=True)
            path = Path(path).expanduser().resolve()
            if not path.is_file():
                raise ProjectError(f"Cannot relink image {row['id']}: {str(path)!r} is not a file.")
            sha = sf.sha256_file(path)
            shape, dtype = json.loads(row["shape"]), row["dtype"]
            if sha != row["sha256"]:
                if not accept_changed:
                    raise ProjectError(
                        f"{str(path)!r} has different content from image {row['id']} "
                        f"({row['name']!r}) as it was added. If it is the same image re-saved, "
                        f"call relink({row['id']}, {str(path)!r}, accept_changed=True); "
                        "otherwise add it as a new image."
                    )
                _, sha, _, _, shape, dtype = self._probe_file(path, row["channel_axis"])
                has_labels = self._db.execute(
                    "SELECT 1 FROM submissions WHERE image_id = ?", (row["id"],)
                ).fetchone()
                old_shape = json.loads(row["shape"])
                if has_labels and shape[:2] != old_shape[:2]:
                    raise ProjectError(
                        f"{str(path)!r} has shape {tuple(shape)}, but image {row['id']} was "
                        f"labelled at {tuple(old_shape)}; its labels would not fit. Add it as a "
                        "new image instead."
                    )
            size, mtime = _stat_key(path)  # type: ignore[misc]
            with self._transaction() as conn:
                conn.execute(
                    "UPDATE images SET path = ?, rel_path = ?, origin = 'external', sha256 = ?, "
                    "size = ?, mtime_ns = ?, shape = ?, dtype = ? WHERE id = ?",
                    (str(path), _relpath(path, self.folder), sha, size, mtime, json.dumps(shape),
                     dtype, row["id"]),
                )  # fmt: skip
            return self.get_image(row["id"])

    def relink_folder(
        self, folder: str | os.PathLike, *, recursive: bool = True
    ) -> list[ImageRecord]:
        """Find missing images in `folder` by file name and content hash, and relink them.

        Returns the images relinked; images with no same-content file there are left as they
        are (see :meth:`check_images`).
        """
        self._check_writable()
        folder = Path(folder).expanduser().resolve()
        candidates: dict[str, list[Path]] = {}
        for path in list_images(folder, recursive=recursive):
            candidates.setdefault(path.name, []).append(path)
        fixed = []
        with self._lock:
            for problem in self.check_images():
                row = self._image_row(problem["image_id"])
                for path in candidates.get(Path(row["path"]).name, []):
                    if sf.sha256_file(path) == row["sha256"]:
                        fixed.append(self.relink(row["id"], path))
                        break
        return fixed

    def set_status(self, image_id: int, status: str) -> None:
        """Set an image's status (one of :data:`STATUSES`).

        ``"submitted"`` needs a submission (use :meth:`submit`).
        """
        self._check_writable()
        check_choice(status, STATUSES, name="status")
        with self._lock:
            row = self._image_row(image_id)
            if status == "submitted" and not self._latest_submission(row["id"]):
                raise ProjectError(
                    f"Image {row['id']} has no submitted labels; use submit() to submit them."
                )
            with self._transaction() as conn:
                conn.execute("UPDATE images SET status = ? WHERE id = ?", (status, row["id"]))

    def skip(self, image_id: int, *, suggestion_id: int | None = None) -> None:
        """Mark an image skipped, and record that as the action on its open suggestion."""
        self._check_writable()
        with self._lock:
            row = self._image_row(image_id)
            sid = self._open_suggestion(row["id"], suggestion_id)
            with self._transaction() as conn:
                conn.execute("UPDATE images SET status = 'skipped' WHERE id = ?", (row["id"],))
                if sid is not None:
                    conn.execute(
                        "UPDATE suggestions SET action = 'skipped', acted_at = ? WHERE id = ?",
                        (sf.utc_now(), sid),
                    )

    # ------------------------------------------------------------------ labels

    def label_path(self, image_id: int) -> Path:
        """Where the image's label file is (it may not exist)."""
        with self._lock:
            return self._labels_file(self._image_row(image_id, allow_removed=True)["key"])

    def reviewed_path(self, image_id: int) -> Path:
        """Where the image's reviewed mask is (absent = the whole image is reviewed)."""
        with self._lock:
            return self._reviewed_file(self._image_row(image_id, allow_removed=True)["key"])

    def submit(
        self,
        image_id: int,
        labels: npt.ArrayLike,
        reviewed: npt.ArrayLike | None = None,
        *,
        seconds: float | None = None,
        pixels_changed: int | None = None,
        objects_added: int | None = None,
        objects_removed: int | None = None,
        model_version: str | None = None,
        strategy: str | None = None,
        suggestion_id: int | None = None,
        merge: bool = True,
    ) -> int:
        """Save an image's labels as ground truth and record the submission.

        Parameters
        ----------
        image_id : int
        labels : (H, W) array_like
            Class map with values ``0..n_classes-1``, the image's height and width.
        reviewed : (H, W) array_like of bool, optional
            Which pixels count as ground truth; None (or all True) = the whole image. An empty
            mask is refused (nothing would count). The stored labels are 0 outside it.
        seconds : float, optional
            Time spent (suggestion shown -> submit).
        pixels_changed, objects_added, objects_removed : int, optional
            Correction effort relative to the pre-annotation.
        model_version, strategy : str, optional
            Which model pre-annotated it and which strategy suggested it.
        suggestion_id : int, optional
            The suggestion acted on; by default the image's latest suggestion not acted on yet.
        merge : bool
            With a partial ``reviewed`` mask, keep what earlier submissions of the image
            reviewed: the stored ground truth becomes the earlier labels inside the earlier
            reviewed pixels, overwritten by ``labels`` inside ``reviewed``, and the reviewed
            mask the union of both (region after region of one image adds up). False replaces
            the earlier submission. A whole-image submission always replaces.

        Returns
        -------
        submission_id : int

        Notes
        -----
        Files first, then the catalog row, see the module docstring: once this returns the
        submission is durable; a crash inside leaves either the old or the new labels. The
        image's draft is deleted. Bad input raises before anything is written.
        """
        self._check_writable()
        with self._lock:
            row = self._image_row(image_id)
            shape = tuple(json.loads(row["shape"]))
            what = f"labels for image {row['id']} ({row['name']!r})"
            labels = check_labels(labels, image_shape=shape, n_classes=self.n_classes, name=what)
            mask = None
            if reviewed is not None:
                mask = check_mask(reviewed, shape=shape, name=f"reviewed mask of image {row['id']}")
                if not mask.any():
                    raise ProjectError(
                        f"The reviewed mask of image {row['id']} is empty, so no pixel would "
                        "count as ground truth; pass reviewed=None for the whole image, or "
                        "skip the image."
                    )
                if mask.all():
                    mask = None
            if mask is not None and merge and self._latest_submission(row["id"]) is not None:
                labels, mask = self._merged(row, labels, mask)
            if mask is not None:
                # outside the reviewed pixels nothing is known: the file holds 0 there, not an
                # unreviewed prediction that Fiji or an export would show as if it were labels
                labels = np.where(mask, labels, 0).astype(labels.dtype, copy=False)
            if seconds is not None:
                seconds = float(check_positive(seconds, name="seconds", allow_zero=True))
            effort = [_optional_count(v, n) for v, n in (
                (pixels_changed, "pixels_changed"), (objects_added, "objects_added"),
                (objects_removed, "objects_removed"))]  # fmt: skip
            model_version = _check_text(model_version, "model_version")
            strategy = _check_text(strategy, "strategy")
            sid = self._open_suggestion(row["id"], suggestion_id)

            label_bytes = sf.encode_tiff(labels)
            label_sha = sf.sha256_bytes(label_bytes)
            mask_bytes = None if mask is None else sf.encode_tiff(mask.astype(np.uint8))
            mask_sha = None if mask_bytes is None else sf.sha256_bytes(mask_bytes)
            key = row["key"]
            self._write_label_files(key, label_bytes, label_sha, mask_bytes,
                                    what=f"image {row['id']} ({row['name']!r})")
            # The draft goes before the commit: from here on a crash adopts the new labels.
            self._remove_draft(key)
            stamp = self._stamp(key)
            now = sf.utc_now()
            with self._transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO submissions(image_id, created_at, labels_sha256, reviewed_sha256, "
                    "seconds, pixels_changed, objects_added, objects_removed, model_version, "
                    "strategy, stamp, max_label, recovered) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0)",
                    (row["id"], now, label_sha, mask_sha, seconds, *effort, model_version,
                     strategy, stamp, int(labels.max())),
                )  # fmt: skip
                submission_id = int(cur.lastrowid)
                conn.execute("UPDATE images SET status = 'submitted' WHERE id = ?", (row["id"],))
                if sid is not None:
                    conn.execute(
                        "UPDATE suggestions SET action = 'submitted', acted_at = ?, "
                        "submission_id = ? WHERE id = ?",
                        (now, submission_id, sid),
                    )
            return submission_id

    def _merged(self, row: sqlite3.Row, labels: np.ndarray, mask: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """A partial submission on top of the image's stored one (see ``submit(merge=)``)."""
        old = self._read_label_files(row, required=True)
        old_labels, old_mask = old
        keep = np.ones(mask.shape, bool) if old_mask is None else old_mask
        keep &= ~mask
        merged = np.where(keep, old_labels, labels).astype(
            np.promote_types(labels.dtype, old_labels.dtype), copy=False)
        union = None if old_mask is None else (old_mask | mask)
        if union is not None and union.all():
            union = None
        return merged, union

    def reviewed_mask(self, image_id: int) -> np.ndarray | None:
        """Which pixels of an image are ground truth: (H, W) bool, all False for an image
        never submitted; None when the whole image is reviewed."""
        with self._lock:
            row = self._image_row(image_id, allow_removed=True)
            if self._latest_submission(row["id"]) is None:
                shape = tuple(json.loads(row["shape"]))[:2]
                return np.zeros(shape, bool)
            return self._read_label_files(row, required=True)[1]

    def _write_label_files(
        self, key: str, label_bytes: bytes, label_sha: str, mask_bytes: bytes | None,
        what: str = "",
    ) -> None:
        """Steps 1-3 of a submission (module docstring): stage mask, replace labels, finish.

        An OSError in steps 1-2 (e.g. a full disk) leaves the files as they were and says so.
        """
        reviewed = self._reviewed_file(key)
        staged = None
        try:
            if mask_bytes is not None:
                staged = reviewed.parent / f".{key}.tif.{label_sha[:16]}.staged"
                sf.atomic_write_bytes(staged, mask_bytes)
            elif reviewed.exists():
                staged = reviewed.parent / f".{key}.tif.{label_sha[:16]}.staged-none"
                sf.atomic_write_bytes(staged, b"")
            sf.atomic_write_bytes(self._labels_file(key), label_bytes)
        except OSError as err:
            # the labels were not replaced (atomic write): the staged mask is an abandoned
            # attempt, removed now rather than at the next open
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise type(err)(err.errno, (
                f"Could not save the labels of {what or key}: {err.strerror or err}. Nothing "
                "was submitted and the previous labels are unchanged; free some disk space (or "
                "check that the project folder is writable) and submit again."
            )) from err
        if staged is not None:
            self._finish_staged(staged, key)

    def _finish_staged(self, staged: Path, key: str) -> None:
        reviewed = self._reviewed_file(key)
        if staged.name.endswith(".staged-none"):
            reviewed.unlink(missing_ok=True)
            staged.unlink()
        else:
            os.replace(staged, reviewed)
        sf.fsync_dir(reviewed.parent)

    def _stamp(self, key: str) -> str:
        """Size, mtime and inode of the label files: unchanged files need no re-hashing on open.

        Every atomic write makes a new inode, so a replaced file is noticed even where
        modification times are coarse.
        """
        stamps = []
        for path in (self._labels_file(key), self._reviewed_file(key)):
            try:
                st = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append([st.st_size, st.st_mtime_ns, st.st_ino])
        return json.dumps(stamps)

    def _latest_submission(self, image_id: int) -> sqlite3.Row | None:
        return self._db.execute(
            "SELECT * FROM submissions WHERE image_id = ? ORDER BY id DESC LIMIT 1", (image_id,)
        ).fetchone()

    def load_labels(self, image_id: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The submitted labels of an image: ``(labels, reviewed)`` or None if never submitted.

        Returns
        -------
        labels : (H, W) ndarray of uint8 or uint16
        reviewed : (H, W) ndarray of bool, or None
            None means the whole image is ground truth.

        Raises
        ------
        ProjectError
            If the image was submitted but its label file is missing or damaged.
        """
        with self._lock:  # not while a worker thread is halfway through a submit
            row = self._image_row(image_id, allow_removed=True)
            has_row = self._latest_submission(row["id"]) is not None
            return self._read_label_files(row, required=has_row)

    def _read_label_files(
        self, row: sqlite3.Row, *, required: bool
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        path, mask_path = self._labels_file(row["key"]), self._reviewed_file(row["key"])
        if not path.exists():
            if required:
                raise ProjectError(
                    f"The labels of image {row['id']} ({row['name']!r}) were submitted but "
                    f"{str(path)!r} is missing; restore it from a backup, or submit the image "
                    "again."
                )
            return None
        shape = tuple(json.loads(row["shape"]))[:2]
        try:
            labels = read_labels(path, n_classes=self.n_classes)
            mask = None
            if mask_path.exists():
                mask = check_mask(read_image(mask_path), shape=shape, name=str(mask_path))
        except ValueError as err:
            raise ProjectError(
                f"The labels of image {row['id']} ({row['name']!r}) cannot be used: {err} "
                "Restore the file from a backup, or submit the image again."
            ) from err
        if labels.shape != shape:
            raise ProjectError(
                f"{str(path)!r} has shape {labels.shape} but image {row['id']} is {shape}; "
                "restore the right file, or submit the image again."
            )
        return labels, mask

    def labelled_ids(self) -> list[int]:
        """Ids of the images in the pool that have submitted labels (the training set)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT s.image_id FROM submissions s JOIN images i ON i.id = s.image_id "
                "WHERE i.removed_at IS NULL ORDER BY s.image_id"
            ).fetchall()
        return [int(r[0]) for r in rows]

    def submissions(self, image_id: int | None = None) -> list[SubmissionRecord]:
        """Every submission (or one image's), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM submissions WHERE ? IS NULL OR image_id = ? ORDER BY id",
                (image_id, image_id),
            ).fetchall()
        return [
            SubmissionRecord(
                id=int(r["id"]), image_id=int(r["image_id"]), created_at=r["created_at"],
                labels_sha256=r["labels_sha256"], reviewed_sha256=r["reviewed_sha256"],
                seconds=r["seconds"], pixels_changed=r["pixels_changed"],
                objects_added=r["objects_added"], objects_removed=r["objects_removed"],
                model_version=r["model_version"], strategy=r["strategy"],
                recovered=bool(r["recovered"]),
            )
            for r in rows
        ]  # fmt: skip

    # ------------------------------------------------------------------ drafts

    def save_draft(self, image_id: int, labels: npt.ArrayLike,
                   reviewed: npt.ArrayLike | None = None) -> None:
        """Autosave in-progress labels (atomic); the image becomes ``in_progress``.

        ``reviewed``: the pixels reviewed so far in this correction (boxes, scribbles, edits),
        kept beside the draft so that a restored draft still counts them
        (:meth:`load_draft_reviewed`). A submitted image keeps its status (a draft on it is a
        correction in progress).
        """
        self._check_writable()
        with self._lock:
            row = self._image_row(image_id)
            shape = json.loads(row["shape"])
            labels = check_labels(
                labels, image_shape=shape, n_classes=self.n_classes,
                name=f"draft of image {row['id']} ({row['name']!r})",
            )  # fmt: skip
            mask = None if reviewed is None else check_mask(
                reviewed, shape=tuple(shape)[:2],
                name=f"reviewed mask of the draft of image {row['id']}")
            mask_file = self._draft_mask_file(row["key"])
            if mask is not None and mask.any():
                write_tiff(mask_file, mask.astype(np.uint8))
            else:
                mask_file.unlink(missing_ok=True)
            write_tiff(self._draft_file(row["key"]), labels)
            if row["status"] in ("unlabelled", "suggested", "skipped"):
                with self._transaction() as conn:
                    conn.execute(
                        "UPDATE images SET status = 'in_progress' WHERE id = ?", (row["id"],)
                    )

    def load_draft(self, image_id: int) -> np.ndarray | None:
        """The image's draft labels, or None."""
        with self._lock:
            row = self._image_row(image_id, allow_removed=True)
        path = self._draft_file(row["key"])
        if not path.exists():
            return None
        try:
            return read_labels(path, n_classes=self.n_classes)
        except ValueError as err:
            raise ProjectError(
                f"The draft of image {row['id']} is damaged ({err}); discard it with "
                f"discard_draft({row['id']})."
            ) from err

    def load_draft_reviewed(self, image_id: int) -> np.ndarray | None:
        """The pixels the draft's correction had reviewed ((H, W) bool), or None."""
        with self._lock:
            row = self._image_row(image_id, allow_removed=True)
        path = self._draft_mask_file(row["key"])
        if not path.exists() or not self._draft_file(row["key"]).exists():
            return None
        shape = tuple(json.loads(row["shape"]))[:2]
        try:
            return check_mask(read_image(path), shape=shape, name=str(path))
        except ValueError as err:
            raise ProjectError(
                f"The draft of image {row['id']} is damaged ({err}); discard it with "
                f"discard_draft({row['id']}).") from err

    def discard_draft(self, image_id: int) -> None:
        """Delete the image's draft; an ``in_progress`` image goes back to ``unlabelled``
        (or ``submitted`` if it has labels)."""
        self._check_writable()
        with self._lock:
            row = self._image_row(image_id, allow_removed=True)
            self._remove_draft(row["key"])
            if row["status"] == "in_progress":
                status = "submitted" if self._latest_submission(row["id"]) else "unlabelled"
                with self._transaction() as conn:
                    conn.execute("UPDATE images SET status = ? WHERE id = ?", (status, row["id"]))

    def drafts(self) -> list[int]:
        """Ids of the images that have a draft (to restore on reopen)."""
        with self._lock:
            rows = self._db.execute("SELECT id, key FROM images WHERE removed_at IS NULL "
                                    "ORDER BY id").fetchall()  # fmt: skip
        return [int(i) for i, key in rows if self._draft_file(key).exists()]

    # ------------------------------------------------------------------ scores

    def save_scores(self, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        """Store scores, keeping the last one per (image, strategy, model version).

        Parameters
        ----------
        rows : iterable of ``(image_id, strategy, model_version, score, reason)``
            Or mappings with those keys; ``model_version`` and ``reason`` may be None, ``score``
            a finite number or None. All rows are written in one transaction, or none.

        Returns
        -------
        n : int
            Rows written.
        """
        self._check_writable()
        fields = ("image_id", "strategy", "model_version", "score", "reason")
        clean = []
        for i, item in enumerate(rows):
            if isinstance(item, Mapping):
                missing = [f for f in fields[:2] if f not in item]
                if missing:
                    raise ProjectError(f"Score row {i} lacks {missing}; expected keys {fields}.")
                values = [item.get(f) for f in fields]
            else:
                values = list(item)
                if len(values) != 5:
                    raise ProjectError(
                        f"Score row {i} has {len(values)} values; expected {fields}."
                    )
            image_id, strategy, version, score, reason = values
            image_id = _check_int(image_id, f"score row {i}: image_id")
            _check_text(strategy, f"score row {i}: strategy", optional=False)
            _check_text(version, f"score row {i}: model_version")
            if score is not None:
                if not isinstance(score, numbers.Real) or not math.isfinite(float(score)):
                    raise ProjectError(
                        f"score row {i}: score must be a finite number or None, got {score!r}."
                    )
                score = float(score)
            if reason is not None and not isinstance(reason, str):
                reason = _dumps(reason, f"score row {i}: reason")
            clean.append((image_id, strategy, version or "", score, reason))
        now = sf.utc_now()
        with self._lock:
            known = {int(r[0]) for r in self._db.execute("SELECT id FROM images")}
            unknown = sorted({r[0] for r in clean} - known)
            if unknown:
                raise ProjectError(
                    f"Scores for unknown image id(s) {unknown[:10]}; nothing was saved."
                )
            with self._transaction() as conn:
                conn.executemany(
                    "INSERT INTO scores(image_id, strategy, model_version, score, reason, "
                    "updated_at) VALUES (?,?,?,?,?,?) ON CONFLICT(image_id, strategy, "
                    "model_version) DO UPDATE SET score = excluded.score, "
                    "reason = excluded.reason, updated_at = excluded.updated_at",
                    [(*r, now) for r in clean],
                )
        return len(clean)

    def scores(
        self,
        strategy: str | None = None,
        model_version: str | None = None,
        *,
        image_id: int | None = None,
    ) -> list[ScoreRecord]:
        """Stored scores, filtered by strategy / model version / image (highest score first)."""
        version = None if model_version is None else model_version
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM scores WHERE (? IS NULL OR strategy = ?) AND "
                "(? IS NULL OR model_version = ?) AND (? IS NULL OR image_id = ?) "
                "ORDER BY score IS NULL, score DESC, image_id",
                (strategy, strategy, version, version, image_id, image_id),
            ).fetchall()
        return [
            ScoreRecord(int(r["image_id"]), r["strategy"], r["model_version"] or None,
                        r["score"], r["reason"], r["updated_at"])
            for r in rows
        ]  # fmt: skip

    # ------------------------------------------------------------------ query history

    def record_suggestion(
        self,
        image_id: int,
        strategy: str,
        model_version: str | None = None,
        score: float | None = None,
        reason: str | None = None,
        box: Sequence[int] | None = None,
    ) -> int:
        """Record that an image (or a region of it) was suggested for labelling.

        An ``unlabelled`` image becomes ``suggested``. The action taken is linked later by
        :meth:`submit` / :meth:`skip` (or :meth:`record_action`).

        Parameters
        ----------
        box : (y0, x0, y1, x1), optional
            The suggested region, in pixels (end exclusive), inside the image.

        Returns
        -------
        suggestion_id : int
        """
        self._check_writable()
        _check_text(strategy, "strategy", optional=False)
        _check_text(model_version, "model_version")
        if score is not None:
            if not isinstance(score, numbers.Real) or not math.isfinite(float(score)):
                raise ProjectError(f"score must be a finite number or None, got {score!r}.")
            score = float(score)
        if reason is not None and not isinstance(reason, str):
            reason = _dumps(reason, "reason")
        with self._lock:
            row = self._image_row(image_id)
            box_json = None
            if box is not None:
                h, w = json.loads(row["shape"])[:2]
                try:
                    y0, x0, y1, x1 = (_check_int(v, "box") for v in box)
                except (TypeError, ValueError):
                    raise ProjectError(
                        f"box must be (y0, x0, y1, x1) integers, got {box!r}."
                    ) from None
                if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
                    raise ProjectError(
                        f"box {(y0, x0, y1, x1)} is not a region inside image {row['id']} of "
                        f"height {h} and width {w} (need 0 <= y0 < y1 <= {h}, "
                        f"0 <= x0 < x1 <= {w})."
                    )
                box_json = json.dumps([y0, x0, y1, x1])
            with self._transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO suggestions(image_id, created_at, strategy, model_version, "
                    "score, reason, box) VALUES (?,?,?,?,?,?,?)",
                    (row["id"], sf.utc_now(), strategy, model_version, score, reason, box_json),
                )
                if row["status"] == "unlabelled":
                    conn.execute(
                        "UPDATE images SET status = 'suggested' WHERE id = ?", (row["id"],)
                    )
                return int(cur.lastrowid)

    def _open_suggestion(self, image_id: int, suggestion_id: int | None) -> int | None:
        """The suggestion an action on `image_id` answers (checked if given, else latest open)."""
        if suggestion_id is None:
            row = self._db.execute(
                "SELECT id FROM suggestions WHERE image_id = ? AND action IS NULL "
                "ORDER BY id DESC LIMIT 1", (image_id,)
            ).fetchone()  # fmt: skip
            return None if row is None else int(row[0])
        sid = _check_int(suggestion_id, "suggestion_id")
        row = self._db.execute("SELECT * FROM suggestions WHERE id = ?", (sid,)).fetchone()
        if row is None:
            raise ProjectError(f"No suggestion with id {sid}.")
        if row["image_id"] != image_id:
            raise ProjectError(
                f"Suggestion {sid} is for image {row['image_id']}, not image {image_id}."
            )
        if row["action"] is not None:
            raise ProjectError(f"Suggestion {sid} was already answered ({row['action']}).")
        return sid

    def record_action(
        self, suggestion_id: int, action: str, *, submission_id: int | None = None
    ) -> None:
        """Record what the user did with a suggestion (``"submitted"`` or ``"skipped"``)."""
        self._check_writable()
        check_choice(action, ACTIONS, name="action")
        with self._lock:
            sid = _check_int(suggestion_id, "suggestion_id")
            row = self._db.execute("SELECT * FROM suggestions WHERE id = ?", (sid,)).fetchone()
            if row is None:
                raise ProjectError(f"No suggestion with id {sid}.")
            self._open_suggestion(row["image_id"], sid)
            if submission_id is not None:
                sub = self._db.execute(
                    "SELECT image_id FROM submissions WHERE id = ?",
                    (_check_int(submission_id, "submission_id"),),
                ).fetchone()
                if sub is None or sub[0] != row["image_id"]:
                    raise ProjectError(
                        f"Submission {submission_id} is not a submission of image "
                        f"{row['image_id']}."
                    )
            with self._transaction() as conn:
                conn.execute(
                    "UPDATE suggestions SET action = ?, acted_at = ?, submission_id = ? "
                    "WHERE id = ?", (action, sf.utc_now(), submission_id, sid),
                )  # fmt: skip

    _HISTORY_COLUMNS = (
        "suggestion_id", "created_at", "image_id", "image_name", "strategy", "model_version",
        "score", "reason", "box", "action", "acted_at", "submission_id", "seconds",
        "pixels_changed", "objects_added", "objects_removed",
    )  # fmt: skip

    def query_history(
        self, *, image_id: int | None = None, strategy: str | None = None
    ) -> list[dict[str, Any]]:
        """What was suggested, by which model and strategy, with which score, and what the user
        did (and at what effort), oldest first. ``box`` is a list ``[y0, x0, y1, x1]`` or None;
        ``action`` is None while the suggestion is open."""
        with self._lock:
            rows = self._db.execute(
                "SELECT g.id AS suggestion_id, g.created_at, g.image_id, i.name AS image_name, "
                "g.strategy, g.model_version, g.score, g.reason, g.box, g.action, g.acted_at, "
                "g.submission_id, s.seconds, s.pixels_changed, s.objects_added, "
                "s.objects_removed FROM suggestions g JOIN images i ON i.id = g.image_id "
                "LEFT JOIN submissions s ON s.id = g.submission_id "
                "WHERE (? IS NULL OR g.image_id = ?) AND (? IS NULL OR g.strategy = ?) "
                "ORDER BY g.id",
                (image_id, image_id, strategy, strategy),
            ).fetchall()
        out = []
        for r in rows:
            item = {c: r[c] for c in self._HISTORY_COLUMNS}
            item["box"] = None if r["box"] is None else json.loads(r["box"])
            out.append(item)
        return out

    def export_history(self, path: str | os.PathLike) -> Path:
        """Write :meth:`query_history` to ``.csv`` or ``.json`` (by suffix), atomically.

        CSV has one row per suggestion with the columns of :meth:`query_history` (``box`` as
        ``y0 x0 y1 x1``); JSON is a list of objects.
        """
        path = Path(path).expanduser()
        suffix = check_choice(path.suffix.lower(), (".csv", ".json"), name="history file suffix")
        if not path.parent.is_dir():
            raise ProjectError(
                f"Cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist."
            )
        history = self.query_history()
        if suffix == ".json":
            data = json.dumps(history, indent=1, allow_nan=False).encode()
        else:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=self._HISTORY_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for item in history:
                box = item["box"]
                writer.writerow({**item, "box": "" if box is None else " ".join(map(str, box))})
            data = buffer.getvalue().encode()
        sf.atomic_write_bytes(path, data)
        return path

    # ------------------------------------------------------------------ rounds

    def record_round(
        self,
        model_version: str | None,
        strategy: str | None,
        seed: int | None,
        labelled_ids: Iterable[int],
        metrics: Mapping[str, Any],
        wall_times: Mapping[str, Any],
    ) -> int:
        """Record one active-learning round: the model it produced, how, on which images.

        ``metrics`` and ``wall_times`` are JSON dicts (NaN/inf are stored as null).
        """
        self._check_writable()
        _check_text(model_version, "model_version")
        _check_text(strategy, "strategy")
        seed = None if seed is None else _check_int(seed, "seed")
        ids = [_check_int(i, "labelled_ids entry") for i in labelled_ids]
        for value, name in ((metrics, "metrics"), (wall_times, "wall_times")):
            if not isinstance(value, Mapping):
                raise ProjectError(f"{name} must be a dict, got {type(value).__name__}.")
        metrics_json, times_json = _dumps(metrics, "metrics"), _dumps(wall_times, "wall_times")
        with self._lock:
            known = {int(r[0]) for r in self._db.execute("SELECT id FROM images")}
            unknown = sorted(set(ids) - known)
            if unknown:
                raise ProjectError(f"labelled_ids holds unknown image id(s) {unknown[:10]}.")
            with self._transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO rounds(created_at, model_version, strategy, seed, labelled_ids, "
                    "metrics, wall_times) VALUES (?,?,?,?,?,?,?)",
                    (sf.utc_now(), model_version, strategy, seed, json.dumps(ids), metrics_json,
                     times_json),
                )  # fmt: skip
                return int(cur.lastrowid)

    def rounds(self) -> list[RoundRecord]:
        """All recorded rounds, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM rounds ORDER BY id").fetchall()
        return [
            RoundRecord(int(r["id"]), r["created_at"], r["model_version"], r["strategy"],
                        r["seed"], json.loads(r["labelled_ids"]), json.loads(r["metrics"]),
                        json.loads(r["wall_times"]))
            for r in rows
        ]  # fmt: skip

    # ------------------------------------------------------------------ integrity

    def integrity_check(self) -> list[str]:
        """Check (and, read-write, repair) the project; an empty list means all is well.

        Checks: SQLite's own ``integrity_check`` and foreign keys; every submitted image has a
        readable label file (and mask) of the right shape and class range; label files agree
        with the catalog (interrupted submissions are finished or adopted, see the module
        docstring); no leftover temporary files (removed); every model version is complete and
        parses (the weights of an interrupted save, without a JSON, are removed). What was
        repaired is listed in :attr:`repairs`. Image files outside the project are checked by
        :meth:`check_images`.
        """
        problems = []
        with self._lock:
            conn = self._db
            result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            if result != ["ok"]:
                problems += [f"catalog: {r}" for r in result]
            for r in conn.execute("PRAGMA foreign_key_check").fetchall():
                problems.append(f"catalog: row {r[1]} of table {r[0]} points to a missing "
                                f"{r[2]} row")  # fmt: skip
            problems += self._reconcile(full=True)
            problems += self._check_models()
        return problems

    def _reconcile(self, *, full: bool) -> list[str]:
        """Bring the catalog and the label files into agreement (module docstring)."""
        problems = []
        fix = not self.read_only
        repairs = []
        # 1. temporary files of interrupted atomic writes
        for sub in ("", *_SUBDIRS, BACKUPS_DIR):
            directory = self.folder / sub
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                if sf.is_temp_name(path.name) and path.is_file():
                    if fix:
                        path.unlink(missing_ok=True)
                        repairs.append(f"Removed the temporary file {sub or '.'}/{path.name} left "
                                       "by an interrupted write.")  # fmt: skip
                    else:
                        problems.append(f"temporary file {sub or '.'}/{path.name} (an interrupted "
                                        "write, or a write in progress elsewhere)")  # fmt: skip
        rows = {r["key"]: r for r in self._db.execute("SELECT * FROM images").fetchall()}
        # 2. masks staged by an interrupted submission
        for path in sorted((self.folder / REVIEWED_DIR).glob(".*.staged*")):
            if sf.is_temp_name(path.name):
                continue
            head, _, kind = path.name[1:].rpartition(".")
            name, _, tag = head.rpartition(".")
            key = name[:-4] if name.endswith(".tif") else name
            labels = self._labels_file(key)
            current = labels.exists() and sf.sha256_file(labels)[:16] == tag
            if not fix:
                problems.append(f"reviewed/{path.name}: an interrupted submission")
            elif current and kind in ("staged", "staged-none") and key in rows:
                self._finish_staged(path, key)
                repairs.append(f"Finished the interrupted submission of {key!r} (reviewed mask).")
            else:
                path.unlink(missing_ok=True)
                repairs.append(f"Removed reviewed/{path.name}, left by a submission interrupted "
                               "before its labels were written.")  # fmt: skip
        # 3. label files vs the last submission row of each image
        latest = {
            r["image_id"]: r
            for r in self._db.execute(
                "SELECT s.* FROM submissions s JOIN (SELECT image_id, MAX(id) AS id FROM "
                "submissions GROUP BY image_id) m ON m.id = s.id"
            ).fetchall()
        }
        for key, image in rows.items():
            labels, mask = self._labels_file(key), self._reviewed_file(key)
            if image["labels_purged"]:
                if fix and any(p.exists() for p in (labels, mask, self._draft_file(key))):
                    self._unlink_image_files(key)
                    repairs.append(f"Deleted the labels of removed image {key!r} (as asked).")
                continue
            row = latest.get(image["id"])
            if not labels.exists():
                if row is not None:
                    problems.append(
                        f"labels/{key}.tif is missing, but image {image['id']} "
                        f"({image['name']!r}) was submitted on {row['created_at']}: restore it "
                        "from a backup or submit the image again"
                    )
                continue
            stamp = self._stamp(key)
            if row is not None and row["stamp"] == stamp and not full:
                continue
            label_sha = sf.sha256_file(labels)
            mask_sha = sf.sha256_file(mask) if mask.exists() else None
            agrees = row is not None and (row["labels_sha256"], row["reviewed_sha256"]) == (
                label_sha, mask_sha
            )
            content_problem = None
            if full or not agrees:
                try:
                    read = self._read_label_files(image, required=True)
                except ProjectError as err:
                    content_problem = str(err)
                else:
                    max_label = int(read[0].max())  # type: ignore[index]
            if content_problem is not None:
                problems.append(content_problem)
                continue
            if agrees:
                if fix and row["stamp"] != stamp:
                    with self._transaction() as conn:
                        conn.execute("UPDATE submissions SET stamp = ? WHERE id = ?",
                                     (stamp, row["id"]))  # fmt: skip
                continue
            if not fix:
                problems.append(
                    f"labels/{key}.tif differs from the catalog (an interrupted submission, or "
                    "edited by hand); open the project read-write to adopt it"
                )
                continue
            with self._transaction() as conn:
                conn.execute(
                    "INSERT INTO submissions(image_id, created_at, labels_sha256, "
                    "reviewed_sha256, stamp, max_label, recovered) VALUES (?,?,?,?,?,?,1)",
                    (image["id"], sf.utc_now(), label_sha, mask_sha, stamp, max_label),
                )
                conn.execute("UPDATE images SET status = 'submitted' WHERE id = ?", (image["id"],))
            repairs.append(
                f"Adopted labels/{key}.tif as a submission of image {image['id']} "
                f"({image['name']!r}): it is newer than the catalog (a submission interrupted "
                "after writing its files, or an edit made outside napari-activeseg)."
            )
            draft = self._draft_file(key)
            draft_stat, labels_stat = _stat_key(draft), _stat_key(labels)
            if draft_stat and labels_stat and draft_stat[1] <= labels_stat[1]:
                self._remove_draft(key)  # saved before the labels it led to
        self.repairs += repairs
        return problems


# --------------------------------------------------------------------------- module helpers


def _hostname() -> str:
    return socket.gethostname()


def _is_project_file(path: Path, folder: Path) -> bool:
    """Whether `path` is one of the project's own files (when the project sits inside the
    image folder, its labels must not be added as images)."""
    if not _is_within(path, folder):
        return False
    parts = path.relative_to(folder).parts
    return len(parts) > 1 and parts[0] in (*_SUBDIRS, BACKUPS_DIR)


def _relpath(path: Path, folder: Path) -> str | None:
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive (Windows)
        return None


def _sidecars(db: Path) -> tuple[Path, ...]:
    return tuple(db.with_name(db.name + s) for s in ("-journal", "-wal", "-shm"))


def _check_writable(folder: Path) -> None:
    """Fail early, before anything is written, if the folder cannot be written."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
    except OSError as err:
        raise ProjectError(
            f"Cannot write to project folder {str(folder)!r} ({err.strerror or err}); nothing "
            "was changed. Open it read-only with Project.open(folder, read_only=True), or copy "
            "the project to a folder you can write to."
        ) from err
    os.close(fd)
    os.unlink(name)


def _connect_read_only(db: Path, folder: Path) -> sqlite3.Connection:
    uri = db.resolve().as_uri()
    conn = sqlite3.connect(
        f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=30
    )
    try:
        conn.execute("PRAGMA user_version").fetchone()
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        # A WAL catalog in a folder we cannot write: no -shm can be made. Nobody can be
        # writing it from here either, so read it as an immutable file.
        conn.close()
        conn = sqlite3.connect(
            f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None,
            check_same_thread=False,
        )  # fmt: skip
    return conn
