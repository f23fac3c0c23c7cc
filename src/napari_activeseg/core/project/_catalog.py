"""The image catalog: the pool's images, where their files are, and their status.

Images are referenced by absolute path plus the path relative to the project, with their size,
modification time and SHA-256 (or copied into ``images/``). A missing or changed image raises
an error naming the fix (:meth:`ImageCatalog.relink`); an unchanged size and mtime skips
re-hashing. Removing an image is a soft delete (its key, the name of its label files, is never
reused). Adding images is :mod:`._intake`'s job; their labels are :mod:`._labels`'.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _store_files as sf
from ..imageio import list_images, read_image
from ..largeimage import LARGE_IMAGE_PIXELS, open_if_large, open_lazy
from ..validation import check_choice
from ._records import ImageRecord, ProjectError, check_int, stat_key

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3

    from ._labels import LabelStore
    from ._store import _Store

__all__ = ["STATUSES", "ImageCatalog", "probe_file", "relpath"]

STATUSES = ("unlabelled", "suggested", "in_progress", "submitted", "skipped")

# Whether an image's latest submission reviewed only part of it (a stored reviewed mask; a
# whole-image submission stores none): such an image stays in the pool.
_PARTIAL_SQL = ("COALESCE((SELECT s.reviewed_sha256 IS NOT NULL FROM submissions s "
                "WHERE s.image_id = images.id ORDER BY s.id DESC LIMIT 1), 0)")


def probe_file(path: Path, channel_axis: int | None,
               large: int | None = LARGE_IMAGE_PIXELS) -> tuple:
    """(path, sha256, size, mtime_ns, shape, dtype) of an image file, reading it once; a TIFF
    or OME-Zarr of more than `large` pixels is opened lazily (its pixels are not decoded;
    :func:`~..largeimage.open_if_large`)."""
    path = path.resolve()
    before = stat_key(path)
    sha = sf.sha256_file(path) if before is not None and path.is_file() else None
    image = None if large is None else open_if_large(path, channel_axis, large)
    if image is None:
        image = read_image(path, channel_axis=channel_axis)  # clear ValueError if unreadable
    after = stat_key(path)
    if sha is None or before != after:
        raise ValueError(f"{str(path)!r} changed while it was being read; try again.")
    return path, sha, after[0], after[1], list(image.shape), str(image.dtype)


def relpath(path: Path, folder: Path) -> str | None:
    """`path` relative to `folder` (how a project moved with its images finds them)."""
    try:
        return os.path.relpath(path, folder)
    except ValueError:  # another drive (Windows)
        return None


class ImageCatalog:
    """The ``images`` table: records, lookups, file checks, relinking, status, removal."""

    def __init__(self, store: _Store, labels: LabelStore) -> None:
        self._store = store
        self._labels = labels

    # ------------------------------------------------------------------ rows and records

    def image_row(self, image_id: Any, *, allow_removed: bool = False) -> sqlite3.Row:
        """The catalog row of an image, or a ProjectError naming the valid ids."""
        image_id = check_int(image_id, "image_id")
        row = self._store.db.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise ProjectError(
                f"No image with id {image_id} in project {str(self._store.folder)!r}; "
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
            partial=bool(row["partial"]) if "partial" in row.keys() else False,  # noqa: SIM118
        )

    def _expected_path(self, row: sqlite3.Row) -> Path:
        path = Path(row["path"])
        return path if path.is_absolute() else self._store.folder / path

    def images(self, status: str | None = None, *, include_removed: bool = False
               ) -> list[ImageRecord]:  # fmt: skip
        """The images of the pool (by id), optionally only those with one status."""
        if status is not None:
            check_choice(status, STATUSES, name="status")
        sql = f"SELECT *, {_PARTIAL_SQL} AS partial FROM images WHERE (? IS NULL OR status = ?)"
        if not include_removed:
            sql += " AND removed_at IS NULL"
        with self._store.lock:
            rows = self._store.db.execute(sql + " ORDER BY id", (status, status)).fetchall()
        return [self._record(r) for r in rows]

    def get_image(self, image_id: int) -> ImageRecord:
        """The record of one image (removed ones included)."""
        with self._store.lock:
            row = self.image_row(image_id, allow_removed=True)
            partial = self._store.db.execute(
                f"SELECT {_PARTIAL_SQL} FROM images WHERE id = ?", (row["id"],)).fetchone()[0]
            return replace(self._record(row), partial=bool(partial))

    # ------------------------------------------------------------------ the image files

    def _locate(self, row: sqlite3.Row) -> tuple[Path, bool]:
        """Where the image is now, and whether it is only found at its project-relative path.

        A project moved together with its images (e.g. handed over as one folder tree) finds
        them relative to itself; the content hash still decides whether it is the same image.
        """
        path = self._expected_path(row)
        if path.exists() or row["origin"] != "external" or not row["rel_path"]:
            return path, False
        alt = (self._store.folder / row["rel_path"]).resolve()
        return (alt, True) if alt.exists() else (path, False)

    def _verify(self, row: sqlite3.Row) -> Path:
        """The image's current path, after checking it is the file that was added."""
        store = self._store
        path, moved = self._locate(row)
        fix = f"project.relink({row['id']}, new_path)"
        if not path.is_file():
            raise ProjectError(
                f"Image {row['id']} ({row['name']!r}) is missing: {str(path)!r} does not exist "
                "(moved, renamed, deleted, or on a drive that is not mounted). Put it back, or "
                f"point the project at its new location with {fix} (or relink_folder(folder))."
            )
        stat = stat_key(path)
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
            if not store.read_only:  # same content: remember the new stat / location
                external = row["origin"] == "external"
                with store.transaction() as conn:
                    conn.execute(
                        "UPDATE images SET path = ?, rel_path = ?, size = ?, mtime_ns = ? "
                        "WHERE id = ?",
                        (str(path) if external else row["path"],
                         relpath(path, store.folder) if external else row["rel_path"],
                         stat[0], stat[1], row["id"]),  # type: ignore[index]
                    )  # fmt: skip
                if moved:
                    store.repairs.append(
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
        with self._store.lock:
            row = self.image_row(image_id, allow_removed=True)
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

    def open_lazy(self, image_id: int) -> Any:
        """An image as :meth:`load_image` reads it, but lazily (a dask array, decoded when
        indexed; :func:`~..largeimage.open_lazy`): for images too large to hold."""
        with self._store.lock:
            row = self.image_row(image_id, allow_removed=True)
            path = self._verify(row)
        try:
            image = open_lazy(path, row["channel_axis"])
        except ValueError as err:
            raise ProjectError(f"Image {row['id']} ({row['name']!r}): {err}") from err
        if tuple(image.shape) != tuple(json.loads(row["shape"])):
            raise ProjectError(
                f"Image {row['id']} ({row['name']!r}) at {str(path)!r} now reads as shape "
                f"{tuple(image.shape)}, not {tuple(json.loads(row['shape']))} as when it was "
                "added.")
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
        with self._store.lock:
            rows = self._store.db.execute(
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
        store = self._store
        store.check_writable()
        with store.lock:
            row = self.image_row(image_id, allow_removed=True)
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
                _, sha, _, _, shape, dtype = probe_file(path, row["channel_axis"])
                has_labels = self._labels.latest_submission(row["id"]) is not None
                old_shape = json.loads(row["shape"])
                if has_labels and shape[:2] != old_shape[:2]:
                    raise ProjectError(
                        f"{str(path)!r} has shape {tuple(shape)}, but image {row['id']} was "
                        f"labelled at {tuple(old_shape)}; its labels would not fit. Add it as a "
                        "new image instead."
                    )
            size, mtime = stat_key(path)  # type: ignore[misc]
            with store.transaction() as conn:
                conn.execute(
                    "UPDATE images SET path = ?, rel_path = ?, origin = 'external', sha256 = ?, "
                    "size = ?, mtime_ns = ?, shape = ?, dtype = ? WHERE id = ?",
                    (str(path), relpath(path, store.folder), sha, size, mtime, json.dumps(shape),
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
        self._store.check_writable()
        folder = Path(folder).expanduser().resolve()
        candidates: dict[str, list[Path]] = {}
        for path in list_images(folder, recursive=recursive):
            candidates.setdefault(path.name, []).append(path)
        fixed = []
        with self._store.lock:
            for problem in self.check_images():
                row = self.image_row(problem["image_id"])
                for path in candidates.get(Path(row["path"]).name, []):
                    if sf.sha256_file(path) == row["sha256"]:
                        fixed.append(self.relink(row["id"], path))
                        break
        return fixed

    # ------------------------------------------------------------------ status and removal

    def set_status(self, image_id: int, status: str) -> None:
        """Set an image's status (one of :data:`STATUSES`).

        ``"submitted"`` needs a submission (use :meth:`~.LabelStore.submit`).
        """
        self._store.check_writable()
        check_choice(status, STATUSES, name="status")
        with self._store.lock:
            row = self.image_row(image_id)
            if status == "submitted" and not self._labels.latest_submission(row["id"]):
                raise ProjectError(
                    f"Image {row['id']} has no submitted labels; use submit() to submit them."
                )
            with self._store.transaction() as conn:
                conn.execute("UPDATE images SET status = ? WHERE id = ?", (status, row["id"]))

    def remove_image(self, image_id: int, *, delete_labels: bool = False) -> None:
        """Take an image out of the pool.

        Its submissions, labels and query history are kept (and come back if the same image
        is added again) unless ``delete_labels=True``, which deletes its label, reviewed and
        draft files and its submission and score rows; the query history always stays.
        Images copied into the project stay under ``images/`` either way.
        """
        self._store.check_writable()
        with self._store.lock:
            row = self.image_row(image_id, allow_removed=True)
            with self._store.transaction() as conn:
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
                self._labels.unlink_image_files(row["key"])
