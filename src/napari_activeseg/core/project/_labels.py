"""Submitted labels, their files and the reconciliation: the atomicity protocol of a project.

Files of one image (``<key>`` is the image's key, see :mod:`._intake`)::

    labels/<key>.tif            class map, 0 = background (uint8, uint16 above 255 classes);
                                0 outside the reviewed pixels
    reviewed/<key>.tif          which pixels are ground truth (0/1 uint8); absent = whole image
    instances/<key>.tif         object ids of the "objects" classes (uint16; ._instances),
                                absent when the labels were submitted as a class map
    drafts/<key>.tif            autosaved in-progress edits, restored on reopen
    drafts/<key>.reviewed.tif   the pixels that correction had reviewed (boxes, scribbles, edits)
    drafts/<key>.instances.tif  the draft's object ids (object classes; uint16)

Atomicity
---------
Every file is written to a temporary file in its destination folder, fsync'ed and renamed
(``os.replace``); every multi-row catalog change is one SQLite transaction (WAL,
``synchronous=FULL``). A submission (:meth:`LabelStore.submit`) writes its files *before*
committing its row:

1. the reviewed mask (or a "no mask" marker) is *staged* as ``reviewed/.<key>.tif.<tag>.staged``,
   tagged with the hash of the new label file, and so is the instance image (or a "none"
   marker when an old one exists) in ``instances/``;
2. ``labels/<key>.tif`` is replaced (the commit point of the files);
3. the staged files are renamed into place (or the old ones deleted), the draft deleted;
4. the submission row, the image status and the suggestion link are committed together.

A partial submission (a reviewed mask) is first merged into the image's stored one (``merge=True``,
the default): the earlier labels inside the earlier reviewed pixels, overwritten inside the new
mask, under the union of both masks; what is written in steps 1-2 is that merged result.

The rule that makes a crash at any moment safe: **the label files on disk are the truth, the
catalog follows**. On every read-write open (and in the integrity check) the reconciliation
(:func:`reconcile`) finishes step 3 for a staged mask whose tag matches the current
label file, deletes any other staged file as an abandoned attempt, and adopts a label file (with
its mask) that differs from the last submission row of its image as a new submission
(``recovered=True``; its effort fields are unknown). A submission that returned before a crash
was committed after its files, so it is there byte for byte; one interrupted before step 2
leaves the old state, one interrupted after it leaves the new state, never a mix of the two.
The same rule adopts label files edited by hand in Fiji. (Consequence: if step 4 itself fails,
e.g. on a full disk, submit raises but its labels are adopted at the next open; they are not
lost either way.) A draft saved before the labels it led to is deleted with the adoption.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .. import _store_files as sf
from .. import atomic
from ..imageio import read_image, read_labels
from ..validation import check_labels, check_mask, check_positive
from ._records import (
    ProjectError,
    SubmissionRecord,
    _optional_count,
    check_text,
    stat_key,
)
from ._regions import BOX_MARK, RegionLabels, reconcile_regions
from ._store import BACKUPS_DIR, DRAFTS_DIR, INSTANCES_DIR, LABELS_DIR, REVIEWED_DIR, SUBDIRS

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3

    from ._catalog import ImageCatalog
    from ._history import HistoryStore
    from ._settings import Settings
    from ._store import _Store

__all__ = ["LabelStore", "reconcile"]


class LabelStore:
    """Submissions of ground truth and the files of each image (see the module docstring;
    :func:`reconcile` checks them against the catalog).

    ``catalog`` and ``history`` are attached by the project after construction (the three
    stores refer to each other).
    """

    catalog: ImageCatalog
    history: HistoryStore

    def __init__(self, store: _Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self.regions = RegionLabels(self)  # large images' labels, box by box (._regions)

    # ------------------------------------------------------------------ the files of an image

    def labels_file(self, key: str) -> Path:
        return self._store.folder / LABELS_DIR / f"{key}.tif"

    def reviewed_file(self, key: str) -> Path:
        return self._store.folder / REVIEWED_DIR / f"{key}.tif"

    def instances_file(self, key: str) -> Path:
        return self._store.folder / INSTANCES_DIR / f"{key}.tif"

    def draft_file(self, key: str) -> Path:
        return self._store.folder / DRAFTS_DIR / f"{key}.tif"

    def draft_mask_file(self, key: str) -> Path:
        # keys hold no dot, so "<key>.reviewed" never collides with another image's key
        return self._store.folder / DRAFTS_DIR / f"{key}.reviewed.tif"

    def draft_instances_file(self, key: str) -> Path:
        """The objects of a draft (object classes; :mod:`._instances`)."""
        return self._store.folder / DRAFTS_DIR / f"{key}.instances.tif"

    def remove_draft(self, key: str) -> bool:
        """Delete an image's draft (labels and mask); True when something was deleted."""
        found = False
        for path in (self.draft_file(key), self.draft_mask_file(key),
                     self.draft_instances_file(key)):
            if path.exists():
                path.unlink()
                found = True
        if found:
            atomic.fsync_dir(self._store.folder / DRAFTS_DIR)
        return found

    def unlink_image_files(self, key: str) -> None:
        """Delete every label, mask and draft file of an image (``delete_labels=True``)."""
        for path in (self.labels_file(key), self.reviewed_file(key), self.draft_file(key),
                     self.draft_mask_file(key), self.instances_file(key),
                     self.draft_instances_file(key)):  # fmt: skip
            path.unlink(missing_ok=True)
        for sub in (LABELS_DIR, REVIEWED_DIR, DRAFTS_DIR, INSTANCES_DIR):
            atomic.fsync_dir(self._store.folder / sub)
        self.regions.unlink(key)

    def label_path(self, image_id: int) -> Path:
        """Where the image's label file is (it may not exist)."""
        with self._store.lock:
            return self.labels_file(self.catalog.image_row(image_id, allow_removed=True)["key"])

    def reviewed_path(self, image_id: int) -> Path:
        """Where the image's reviewed mask is (absent = the whole image is reviewed)."""
        with self._store.lock:
            return self.reviewed_file(self.catalog.image_row(image_id, allow_removed=True)["key"])

    # ------------------------------------------------------------------ submit

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
        _instance_bytes: bytes | None = None,
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
        image's draft is deleted. Bad input raises before anything is written. A class map
        replaces the image's instance image, if any (submit objects with
        ``submit_instances``).
        """
        store = self._store
        store.check_writable()
        with store.lock:
            row = self.catalog.image_row(image_id)
            shape = tuple(json.loads(row["shape"]))
            what = f"labels for image {row['id']} ({row['name']!r})"
            if self.regions.records(row["key"]):
                raise ProjectError(f"The {what} are stored box by box (a large image): "
                                   "submit each box with project.submit_region.")
            labels = check_labels(labels, image_shape=shape, n_classes=self._settings.n_classes,
                                  name=what)  # fmt: skip
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
            if mask is not None and merge and self.latest_submission(row["id"]) is not None:
                labels, mask = self._merged(row, labels, mask)
            if mask is not None:
                # outside the reviewed pixels nothing is known: the file holds 0 there, not an
                # unreviewed prediction that Fiji or an export would show as if it were labels
                labels = np.where(mask, labels, 0).astype(labels.dtype, copy=False)
            record = self.checked_record(row, seconds=seconds, pixels_changed=pixels_changed,
                                         objects_added=objects_added,
                                         objects_removed=objects_removed,
                                         model_version=model_version, strategy=strategy,
                                         suggestion_id=suggestion_id)

            label_bytes = sf.encode_tiff(labels)
            label_sha = sf.sha256_bytes(label_bytes)
            mask_bytes = None if mask is None else sf.encode_tiff(mask.astype(np.uint8))
            mask_sha = None if mask_bytes is None else sf.sha256_bytes(mask_bytes)
            key = row["key"]
            self._write_label_files(key, label_bytes, label_sha, mask_bytes,
                                    what=f"image {row['id']} ({row['name']!r})",
                                    instance_bytes=_instance_bytes)
            # The draft goes before the commit: from here on a crash adopts the new labels.
            self.remove_draft(key)
            return self.commit_submission(row, label_sha, mask_sha, self._stamp(key),
                                          int(labels.max()), record)

    def checked_record(self, row: sqlite3.Row, *, seconds, pixels_changed, objects_added,
                       objects_removed, model_version, strategy, suggestion_id) -> dict:
        """The fields of a submission row, checked (:meth:`submit` says what they are), with
        the suggestion it answers; raises before anything is written."""
        if seconds is not None:
            seconds = float(check_positive(seconds, name="seconds", allow_zero=True))
        effort = [_optional_count(v, n) for v, n in (
            (pixels_changed, "pixels_changed"), (objects_added, "objects_added"),
            (objects_removed, "objects_removed"))]  # fmt: skip
        return {"seconds": seconds, "effort": effort,
                "model_version": check_text(model_version, "model_version"),
                "strategy": check_text(strategy, "strategy"),
                "sid": self.history.open_suggestion(row["id"], suggestion_id)}

    def commit_submission(self, row: sqlite3.Row, label_sha: str, reviewed_sha: str | None,
                          stamp: str, max_label: int, record: dict) -> int:
        """Step 4 of a submission (module docstring): its row, the image's status and the
        suggestion it answers, in one transaction; returns the submission id."""
        now = sf.utc_now()
        with self._store.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO submissions(image_id, created_at, labels_sha256, reviewed_sha256, "
                "seconds, pixels_changed, objects_added, objects_removed, model_version, "
                "strategy, stamp, max_label, recovered) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,0)",
                (row["id"], now, label_sha, reviewed_sha, record["seconds"], *record["effort"],
                 record["model_version"], record["strategy"], stamp, max_label),
            )  # fmt: skip
            submission_id = int(cur.lastrowid)
            conn.execute("UPDATE images SET status = 'submitted' WHERE id = ?", (row["id"],))
            if record["sid"] is not None:
                conn.execute(
                    "UPDATE suggestions SET action = 'submitted', acted_at = ?, "
                    "submission_id = ? WHERE id = ?",
                    (now, submission_id, record["sid"]),
                )
        return submission_id

    def _merged(self, row: sqlite3.Row, labels: np.ndarray, mask: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """A partial submission on top of the image's stored one (see ``submit(merge=)``)."""
        old_labels, old_mask = self._read_label_files(row, required=True)  # type: ignore[misc]
        keep = np.ones(mask.shape, bool) if old_mask is None else old_mask
        keep &= ~mask
        merged = np.where(keep, old_labels, labels).astype(
            np.promote_types(labels.dtype, old_labels.dtype), copy=False)
        union = None if old_mask is None else (old_mask | mask)
        if union is not None and union.all():
            union = None
        return merged, union

    def _write_label_files(
        self, key: str, label_bytes: bytes, label_sha: str, mask_bytes: bytes | None,
        what: str = "", instance_bytes: bytes | None = None,
    ) -> None:
        """Steps 1-3 of a submission (module docstring): stage mask and instances, replace
        labels, finish.

        An OSError in steps 1-2 (e.g. a full disk) leaves the files as they were and says so.
        """
        staged: list[Path] = []
        try:
            for target, data in ((self.reviewed_file(key), mask_bytes),
                                 (self.instances_file(key), instance_bytes)):  # fmt: skip
                target.parent.mkdir(exist_ok=True)
                if data is not None:
                    staged.append(target.parent / f".{key}.tif.{label_sha[:16]}.staged")
                    atomic.atomic_write_bytes(staged[-1], data)
                elif target.exists():
                    staged.append(target.parent / f".{key}.tif.{label_sha[:16]}.staged-none")
                    atomic.atomic_write_bytes(staged[-1], b"")
            atomic.atomic_write_bytes(self.labels_file(key), label_bytes)
        except OSError as err:
            # the labels were not replaced (atomic write): the staged files are an abandoned
            # attempt, removed now rather than at the next open
            for path in staged:
                path.unlink(missing_ok=True)
            raise type(err)(err.errno, (
                f"Could not save the labels of {what or key}: {err.strerror or err}. Nothing "
                "was submitted and the previous labels are unchanged; free some disk space (or "
                "check that the project folder is writable) and submit again."
            )) from err
        for path in staged:
            self._finish_staged(path, key)

    def _finish_staged(self, staged: Path, key: str) -> None:
        target = staged.parent / f"{key}.tif"  # reviewed/ or instances/
        if staged.name.endswith(".staged-none"):
            target.unlink(missing_ok=True)
            staged.unlink()
        else:
            os.replace(staged, target)
        atomic.fsync_dir(target.parent)

    def _stamp(self, key: str) -> str:
        """Size, mtime and inode of the label files: unchanged files need no re-hashing on open.

        Every atomic write makes a new inode, so a replaced file is noticed even where
        modification times are coarse.
        """
        stamps = []
        for path in (self.labels_file(key), self.reviewed_file(key)):
            try:
                st = path.stat()
            except OSError:
                stamps.append(None)
            else:
                stamps.append([st.st_size, st.st_mtime_ns, st.st_ino])
        return json.dumps(stamps)

    # ------------------------------------------------------------------ reading

    def latest_submission(self, image_id: int) -> sqlite3.Row | None:
        return self._store.db.execute(
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
        with self._store.lock:  # not while a worker thread is halfway through a submit
            row = self.catalog.image_row(image_id, allow_removed=True)
            if self.regions.records(row["key"]):  # a large image: built whole from its boxes
                return self.regions.assemble(row)
            has_row = self.latest_submission(row["id"]) is not None
            return self._read_label_files(row, required=has_row)

    def reviewed_mask(self, image_id: int) -> np.ndarray | None:
        """Which pixels of an image are ground truth: (H, W) bool, all False for an image
        never submitted; None when the whole image is reviewed. A large image's is a
        :class:`~._regions.RegionMask` read from its boxes window by window."""
        with self._store.lock:
            row = self.catalog.image_row(image_id, allow_removed=True)
            if self.regions.by_box(row):
                return self.regions.reviewed_mask(row)
            if self.latest_submission(row["id"]) is None:
                shape = tuple(json.loads(row["shape"]))[:2]
                return np.zeros(shape, bool)
            return self._read_label_files(row, required=True)[1]  # type: ignore[index]

    def _read_label_files(
        self, row: sqlite3.Row, *, required: bool
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        path, mask_path = self.labels_file(row["key"]), self.reviewed_file(row["key"])
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
            labels = read_labels(path, n_classes=self._settings.n_classes)
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
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT DISTINCT s.image_id FROM submissions s JOIN images i ON i.id = s.image_id "
                "WHERE i.removed_at IS NULL ORDER BY s.image_id"
            ).fetchall()
        return [int(r[0]) for r in rows]

    def submissions(self, image_id: int | None = None) -> list[SubmissionRecord]:
        """Every submission (or one image's), oldest first."""
        with self._store.lock:
            rows = self._store.db.execute(
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


# --------------------------------------------------------------------------- reconciliation


def reconcile(labels: LabelStore, *, full: bool) -> list[str]:
    """Bring the catalog and the label files into agreement (module docstring).

    Read-write, what was fixed goes to ``repairs``; read-only, nothing is changed and what
    would need fixing is returned with the other problems. ``full`` re-reads every label
    file (the integrity check) instead of trusting unchanged stamps (an open).
    """
    store = labels._store
    folder = store.folder
    problems = []
    fix = not store.read_only
    repairs = []
    # 1. temporary files of interrupted atomic writes
    for sub in ("", *SUBDIRS, BACKUPS_DIR):
        directory = folder / sub
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if atomic.is_temp_name(path.name) and path.is_file():
                if fix:
                    path.unlink(missing_ok=True)
                    repairs.append(f"Removed the temporary file {sub or '.'}/{path.name} left "
                                   "by an interrupted write.")  # fmt: skip
                else:
                    problems.append(f"temporary file {sub or '.'}/{path.name} (an interrupted "
                                    "write, or a write in progress elsewhere)")  # fmt: skip
    rows = {r["key"]: r for r in store.db.execute("SELECT * FROM images").fetchall()}
    # 2. masks and instance images staged by an interrupted submission
    staged = [*(folder / REVIEWED_DIR).glob(".*.staged*"),
              *(folder / INSTANCES_DIR).glob(".*.staged*")]
    for path in sorted(staged):
        if atomic.is_temp_name(path.name):
            continue
        head, _, kind = path.name[1:].rpartition(".")
        name, _, tag = head.rpartition(".")
        key = name.removesuffix(".tif")
        label_file = labels.labels_file(key)
        current = label_file.exists() and sf.sha256_file(label_file)[:16] == tag
        where = f"{path.parent.name}/{path.name}"
        if not fix:
            problems.append(f"{where}: an interrupted submission")
        elif current and kind in ("staged", "staged-none") and key in rows:
            labels._finish_staged(path, key)
            repairs.append(f"Finished the interrupted submission of {key!r} "
                           f"({path.parent.name}).")  # fmt: skip
        else:
            path.unlink(missing_ok=True)
            repairs.append(f"Removed {where}, left by a submission interrupted "
                           "before its labels were written.")  # fmt: skip
    # 3. label files vs the last submission row of each image
    latest = {
        r["image_id"]: r
        for r in store.db.execute(
            "SELECT s.* FROM submissions s JOIN (SELECT image_id, MAX(id) AS id FROM "
            "submissions GROUP BY image_id) m ON m.id = s.id"
        ).fetchall()
    }
    for key, image in rows.items():
        problem, repair = _reconcile_image(labels, key, image, latest.get(image["id"]),
                                           full=full, fix=fix)  # fmt: skip
        problems += problem
        repairs += repair
    store.repairs += repairs
    return problems


def _reconcile_image(
    labels: LabelStore, key: str, image: sqlite3.Row, row: sqlite3.Row | None, *, full: bool,
    fix: bool,
) -> tuple[list[str], list[str]]:
    """Step 3 of :func:`reconcile` for one image (`row`: its last submission, if any)."""
    path, mask = labels.labels_file(key), labels.reviewed_file(key)
    if image["labels_purged"]:
        if fix and any(p.exists() for p in (path, mask, labels.draft_file(key))):
            labels.unlink_image_files(key)
            return [], [f"Deleted the labels of removed image {key!r} (as asked)."]
        return [], []
    if not path.exists() and (labels.regions.records(key) or (
            row is not None and (row["reviewed_sha256"] or "").startswith(BOX_MARK))):
        boxes = labels._store.db.execute(
            "SELECT * FROM submissions WHERE image_id = ? AND reviewed_sha256 LIKE ?",
            (image["id"], BOX_MARK + "%")).fetchall()
        return reconcile_regions(labels.regions, key, image, boxes, full=full, fix=fix)
    if not path.exists():
        if row is not None:
            return [(
                f"labels/{key}.tif is missing, but image {image['id']} "
                f"({image['name']!r}) was submitted on {row['created_at']}: restore it "
                "from a backup or submit the image again"
            )], []
        return [], []
    stamp = labels._stamp(key)
    if row is not None and row["stamp"] == stamp and not full:
        return [], []
    label_sha = sf.sha256_file(path)
    mask_sha = sf.sha256_file(mask) if mask.exists() else None
    agrees = row is not None and (row["labels_sha256"], row["reviewed_sha256"]) == (
        label_sha, mask_sha
    )
    if full or not agrees:
        try:
            read = labels._read_label_files(image, required=True)
        except ProjectError as err:
            return [str(err)], []
        max_label = int(read[0].max())  # type: ignore[index]
    if agrees:
        if fix and row["stamp"] != stamp:  # type: ignore[index]
            with labels._store.transaction() as conn:
                conn.execute("UPDATE submissions SET stamp = ? WHERE id = ?",
                             (stamp, row["id"]))  # type: ignore[index]  # fmt: skip
        return [], []
    if not fix:
        return [(
            f"labels/{key}.tif differs from the catalog (an interrupted submission, or "
            "edited by hand); open the project read-write to adopt it"
        )], []
    with labels._store.transaction() as conn:
        conn.execute(
            "INSERT INTO submissions(image_id, created_at, labels_sha256, "
            "reviewed_sha256, stamp, max_label, recovered) VALUES (?,?,?,?,?,?,1)",
            (image["id"], sf.utc_now(), label_sha, mask_sha, stamp, max_label),
        )
        conn.execute("UPDATE images SET status = 'submitted' WHERE id = ?", (image["id"],))
    draft = labels.draft_file(key)
    draft_stat, labels_stat = stat_key(draft), stat_key(path)
    if draft_stat and labels_stat and draft_stat[1] <= labels_stat[1]:
        labels.remove_draft(key)  # saved before the labels it led to
    return [], [(
        f"Adopted labels/{key}.tif as a submission of image {image['id']} "
        f"({image['name']!r}): it is newer than the catalog (a submission interrupted "
        "after writing its files, or an edit made outside napari-activeseg)."
    )]
