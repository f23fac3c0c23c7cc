"""The SQLite schema of a project and its migrations.

The schema version is ``PRAGMA user_version``. A new project is made by running the frozen
version-1 DDL and then every migration, so that a fresh project and an upgraded one are the same
database by construction (and the migrations run on every test that creates a project).

Rules for future versions: never edit :data:`SCHEMA_V1` or an existing migration; add
``_migrate_N_to_N1`` to :data:`MIGRATIONS` and bump :data:`SCHEMA_VERSION`. A migration runs inside
the caller's transaction (SQLite DDL is transactional), so a failed upgrade leaves version N.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

__all__ = ["MIGRATIONS", "SCHEMA_V1", "SCHEMA_VERSION", "migrate", "run_script"]

SCHEMA_VERSION = 2

#: Version 1, as first shipped. Paths are absolute, or relative to the project folder for
#: images copied into it. Frozen: projects on users' disks were made with exactly this.
SCHEMA_V1 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    shape TEXT NOT NULL,
    dtype TEXT NOT NULL,
    channel_axis INTEGER,
    status TEXT NOT NULL DEFAULT 'unlabelled'
        CHECK (status IN ('unlabelled', 'suggested', 'in_progress', 'submitted', 'skipped')),
    added_at TEXT NOT NULL
);
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    created_at TEXT NOT NULL,
    labels_sha256 TEXT NOT NULL,
    reviewed_sha256 TEXT,
    seconds REAL,
    pixels_changed INTEGER,
    objects_added INTEGER,
    objects_removed INTEGER,
    model_version TEXT,
    strategy TEXT
);
CREATE TABLE scores (
    image_id INTEGER NOT NULL REFERENCES images(id),
    strategy TEXT NOT NULL,
    model_version TEXT NOT NULL DEFAULT '',
    score REAL,
    reason TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (image_id, strategy, model_version)
);
CREATE TABLE suggestions (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    created_at TEXT NOT NULL,
    strategy TEXT NOT NULL,
    model_version TEXT,
    score REAL,
    reason TEXT,
    action TEXT CHECK (action IN ('submitted', 'skipped')),
    acted_at TEXT
);
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    model_version TEXT,
    strategy TEXT,
    seed INTEGER,
    labelled_ids TEXT NOT NULL,
    metrics TEXT NOT NULL,
    wall_times TEXT NOT NULL
);
"""


def _migrate_1_to_2(conn: sqlite3.Connection, folder: Path) -> None:
    """Version 2: image origin and removal, file stamps, suggestion boxes and links.

    - ``images.origin`` ('external', 'copied', 'array'): v1 stored copies with a relative path.
    - ``images.rel_path``: the path relative to the project folder, so a project moved together
      with its images still finds them (the content hash decides).
    - ``images.removed_at`` / ``labels_purged``: removing an image is a soft delete, so its key
      (the label file name) is never reused and its query history survives.
    - ``submissions.stamp`` (size/mtime of the label files, a fast path for the reconciliation on
      open), ``max_label`` (to refuse shrinking the class list below used labels),
      ``recovered`` (a label file adopted from disk, see ``Project.integrity_check``).
    - ``suggestions.box`` (region suggestions) and ``submission_id`` (what the user did).
    """
    run_script(
        conn,
        """
        ALTER TABLE images ADD COLUMN origin TEXT NOT NULL DEFAULT 'external'
            CHECK (origin IN ('external', 'copied', 'array'));
        ALTER TABLE images ADD COLUMN rel_path TEXT;
        ALTER TABLE images ADD COLUMN removed_at TEXT;
        ALTER TABLE images ADD COLUMN labels_purged INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE submissions ADD COLUMN stamp TEXT;
        ALTER TABLE submissions ADD COLUMN max_label INTEGER;
        ALTER TABLE submissions ADD COLUMN recovered INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE suggestions ADD COLUMN box TEXT;
        ALTER TABLE suggestions ADD COLUMN submission_id INTEGER REFERENCES submissions(id);
        CREATE INDEX submissions_image ON submissions(image_id);
        CREATE INDEX suggestions_image ON suggestions(image_id);
        CREATE INDEX scores_strategy ON scores(strategy, model_version);
        """
    )
    rows = conn.execute("SELECT id, path FROM images").fetchall()
    for image_id, path in rows:
        if os.path.isabs(path):
            try:
                rel = os.path.relpath(path, folder)
            except ValueError:  # another drive on Windows
                rel = None
            conn.execute("UPDATE images SET rel_path = ? WHERE id = ?", (rel, image_id))
        else:
            conn.execute(
                "UPDATE images SET origin = 'copied', rel_path = path WHERE id = ?", (image_id,)
            )


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated statements in the current transaction.

    ``Connection.executescript`` would COMMIT a pending transaction first, which would make a
    failed migration half-applied. The DDL here holds no ``;`` inside literals.
    """
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection, Path], None]] = {1: _migrate_1_to_2}


def migrate(conn: sqlite3.Connection, folder: Path, from_version: int) -> int:
    """Run the migrations from `from_version` to :data:`SCHEMA_VERSION` in the open transaction.

    Returns the new version (also written to ``PRAGMA user_version``).
    """
    version = from_version
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](conn, folder)
        version += 1
    conn.execute(f"PRAGMA user_version = {int(version)}")
    return version
