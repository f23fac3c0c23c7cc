"""The handle every store of a project shares: folder, lock, catalog connection, transactions.

:class:`_Store` owns what is opened and closed with a project and nothing else: the exclusive
OS lock of a read-write open (``project.lock``), the one SQLite connection (WAL,
``synchronous=FULL``), the re-entrant thread lock that every public method holds, write
transactions, the schema check and migrations on open (:mod:`._schema`), and the read-only rules
(no lock, writes refused, an old catalog upgraded in memory only). The stores (:mod:`._catalog`,
:mod:`._intake`, :mod:`._labels`, :mod:`._history`, :mod:`._models`, :mod:`._settings`) each hold
one handle and never open anything themselves.

Locking and threads
-------------------
A read-write open takes an exclusive OS lock (``flock`` / ``msvcrt.locking``) on
``project.lock`` and keeps it until :meth:`_Store.close`. The OS drops it when the process dies,
however it dies, so a stale lock never blocks; the file only holds a note of the holder (PID,
host, user) for the error message. Read-only opens take no lock and refuse writes.

One connection is shared by all threads (``check_same_thread=False``) and every public method
holds :attr:`_Store.lock`, so the GUI thread and a training worker can use the same project;
methods are short except the ones that hash or read images.

A read-only reader sees consistent catalog snapshots (WAL). Label files are replaced atomically,
but while the writer is inside a submission a reader may briefly see its new labels with the old
mask, and a read-only integrity check reports (never repairs) what may be the writer's work in
progress. WAL needs shared memory, so a project on a network share must be used from one machine
at a time.

Schema
------
``PRAGMA user_version`` holds the schema version (:data:`SCHEMA_VERSION`); older catalogs are
migrated on a read-write open after a backup copy is written to ``backups/``, and in memory on
a read-only open. A catalog from a newer napari-activeseg raises :class:`ProjectVersionError`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

from .. import _store_files as sf
from .. import atomic
from ._records import ProjectError, ProjectInUseError, ProjectVersionError, ProjectWarning
from ._schema import SCHEMA_V1, SCHEMA_VERSION, migrate, run_script

__all__ = ["DB_NAME", "LOCK_NAME", "SUBDIRS", "_Store"]

DB_NAME = "project.sqlite"
LOCK_NAME = "project.lock"
IMAGES_DIR, LABELS_DIR, REVIEWED_DIR = "images", "labels", "reviewed"
DRAFTS_DIR, MODELS_DIR, BACKUPS_DIR = "drafts", "models", "backups"
INSTANCES_DIR = "instances"
#: The folders of a project (made on create, and again on open if a copy lost an empty one).
SUBDIRS = (IMAGES_DIR, LABELS_DIR, REVIEWED_DIR, DRAFTS_DIR, MODELS_DIR, INSTANCES_DIR)
_CREATING = ".project.sqlite.creating"
_APP = "napari-activeseg"


class _Store:
    """An open project folder: its lock, its catalog connection and its messages.

    Made by :meth:`creating` or :meth:`open` only. ``folder``, ``read_only``, ``warnings``
    and ``repairs`` are what :class:`~._project.Project` shows under the same names;
    ``lock`` (a re-entrant lock) is held by every public method of every store.
    """

    def __init__(self, folder: Path, *, read_only: bool) -> None:
        self.folder = folder
        self.read_only = read_only
        self.warnings: list[str] = []
        self.repairs: list[str] = []
        self.lock = threading.RLock()
        self._file_lock: sf.ProcessLock | None = None
        self._conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ create / open / close

    @classmethod
    def check_new(cls, folder: Path) -> None:
        """Refuse a folder that already holds a project or is a file (before anything runs)."""
        if (folder / DB_NAME).exists():
            raise ProjectError(
                f"{str(folder)!r} already holds a napari-activeseg project; open it with "
                f"Project.open({str(folder)!r}), or create the new project in another folder."
            )
        if folder.exists() and not folder.is_dir():
            raise ProjectError(f"{str(folder)!r} exists and is not a folder; pick a folder path.")

    @classmethod
    @contextlib.contextmanager
    def creating(
        cls, folder: Path, settings: Mapping[str, str], *, version: str
    ) -> Iterator[tuple[_Store, list[Path]]]:
        """Make a project folder; yields ``(store, made)`` for the first images to be added.

        The catalog is built under a temporary name (schema, migrations, ``meta``, the
        `settings` as JSON text) and renamed to ``project.sqlite`` after the body (the moment
        the folder becomes a project); then it is opened as by :meth:`open`. If anything fails,
        everything in ``made`` (folders and files created here, and by the body) is removed
        and the lock released, so nothing is left behind.
        """
        made: list[Path] = []  # created here, removed on failure (deepest last)
        probe = folder
        while not probe.exists():
            made.insert(0, probe)
            probe = probe.parent
        store = cls(folder, read_only=False)
        lock = sf.ProcessLock(folder / LOCK_NAME)
        creating = folder / _CREATING
        try:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ProjectError(f"Cannot create project folder {str(folder)!r}: {err}.") from err
            _check_writable(folder)
            if not lock.path.exists():
                made.append(lock.path)
            store._acquire(lock)
            if (folder / DB_NAME).exists():  # created by someone else meanwhile
                raise ProjectError(f"{str(folder)!r} already holds a napari-activeseg project.")
            for sub in SUBDIRS:
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
            store._conn = conn
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = DELETE")  # no -wal next to the temporary name
            conn.execute("PRAGMA synchronous = FULL")
            with store.transaction():
                run_script(conn, SCHEMA_V1)
                migrate(conn, folder, 1)
                meta = {"app": _APP, "created_with": version, "created_at": sf.utc_now()}
                conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
                conn.executemany("INSERT INTO settings(key, value) VALUES (?, ?)",
                                 settings.items())  # fmt: skip
            yield store, made
            conn.close()
            store._conn = None
            os.replace(creating, folder / DB_NAME)
            atomic.fsync_dir(folder)
        except BaseException:
            if store._conn is not None:
                store._conn.close()
                store._conn = None
            for path in _sidecars(creating):
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
            store._connect()
        except BaseException:
            store.close()
            raise

    @classmethod
    def open(cls, folder: Path, *, read_only: bool) -> _Store:
        """Open an existing project folder (see :meth:`Project.open` for the errors)."""
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
        store = cls(folder, read_only=read_only)
        try:
            if not read_only:
                _check_writable(folder)
                store._acquire(sf.ProcessLock(folder / LOCK_NAME))
            store._connect()
        except BaseException:
            store.close()
            raise
        return store

    def _acquire(self, lock: sf.ProcessLock) -> None:
        try:
            lock.acquire()
        except sf.LockHeld as held:
            info = held.info
            if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
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
        """Open the catalog and check (or migrate) its schema."""
        db = self.folder / DB_NAME
        try:
            if self.read_only:
                conn = _connect_read_only(db)
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
            created = self.meta("created_with") or "a newer version"
            raise ProjectVersionError(
                f"Project {str(self.folder)!r} was created by a newer napari-activeseg "
                f"({created}, catalog schema {version}; this version reads up to schema "
                f"{SCHEMA_VERSION}). Upgrade napari-activeseg (pip install -U napari-activeseg) "
                "to open it."
            )
        if version < 1 or self.meta("app") != _APP:
            raise ProjectError(
                f"{str(db)!r} is a SQLite file but not a napari-activeseg catalog."
            )
        conn.execute("PRAGMA foreign_keys = ON")
        if not self.read_only:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            for sub in SUBDIRS:  # a hand-copied project may have lost its empty folders
                (self.folder / sub).mkdir(exist_ok=True)
        if version < SCHEMA_VERSION:
            self._upgrade(version)

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
            with atomic.atomic_path(target) as tmp:
                dest = sqlite3.connect(str(tmp))
                try:
                    conn.backup(dest)
                finally:
                    dest.close()
            note = f"a copy of the old catalog is in {target.relative_to(self.folder)}"
        with self.transaction():
            migrate(conn, self.folder, version)
        self.warnings.append(
            f"Upgraded the catalog from schema {version} to {SCHEMA_VERSION} ({note})."
        )

    def close(self) -> None:
        """Close the catalog and release the lock (idempotent)."""
        with self.lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    if not self.read_only:
                        conn.execute("PRAGMA optimize")
                    conn.close()
            if self._file_lock is not None:
                self._file_lock.release()
                self._file_lock = None

    # ------------------------------------------------------------------ what the stores use

    @property
    def closed(self) -> bool:
        return self._conn is None

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection (for reads; writes go through :meth:`transaction`)."""
        if self._conn is None:
            raise ProjectError(f"Project {str(self.folder)!r} is closed; open it again.")
        return self._conn

    def check_writable(self) -> None:
        """Raise before a write if the project is closed or read-only."""
        if self._conn is None:
            raise ProjectError(f"Project {str(self.folder)!r} is closed; open it again.")
        if self.read_only:
            raise ProjectError(
                f"Project {str(self.folder)!r} is open read-only; nothing was changed. Open it "
                "with Project.open(folder) (read-write) to make changes."
            )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` takes the write lock up front)."""
        with self.lock:
            conn = self.db
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

    def meta(self, key: str) -> str | None:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError:
            return None
        return None if row is None else row[0]

    def schema_version(self) -> int:
        with self.lock:
            return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def check_catalog(self) -> list[str]:
        """SQLite's own ``integrity_check`` and foreign keys; empty when both are fine."""
        problems = []
        with self.lock:
            result = [r[0] for r in self.db.execute("PRAGMA integrity_check").fetchall()]
            if result != ["ok"]:
                problems += [f"catalog: {r}" for r in result]
            for r in self.db.execute("PRAGMA foreign_key_check").fetchall():
                problems.append(f"catalog: row {r[1]} of table {r[0]} points to a missing "
                                f"{r[2]} row")  # fmt: skip
        return problems

    def note(self, messages: list[str], *, stacklevel: int = 5) -> None:
        """Keep `messages` in :attr:`warnings` and warn with each (a :class:`ProjectWarning`)."""
        for message in messages:
            self.warnings.append(message)
            warnings.warn(message, ProjectWarning, stacklevel=stacklevel)


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


def _connect_read_only(db: Path) -> sqlite3.Connection:
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
