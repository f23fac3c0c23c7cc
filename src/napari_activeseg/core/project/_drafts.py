"""Drafts: autosaved in-progress labels, restored when an image is opened again.

A draft is ``drafts/<key>.tif`` (the labels as being corrected) and, when the correction had
reviewed some pixels (boxes, scribbles burnt into the labels, edits),
``drafts/<key>.reviewed.tif`` beside it, so a draft restored after a crash or a close still
counts them on submit. Both are written atomically; a draft is never ground truth: a submission
deletes it (:mod:`._labels`), and so does the reconciliation when the labels it led to were
adopted. Saving a draft makes an unlabelled, suggested or skipped image ``in_progress``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..imageio import read_image, read_labels, write_tiff
from ..validation import check_labels, check_mask
from ._records import ProjectError

if TYPE_CHECKING:  # pragma: no cover
    from ._catalog import ImageCatalog
    from ._labels import LabelStore
    from ._settings import Settings
    from ._store import _Store

__all__ = ["DraftStore"]


class DraftStore:
    """Autosaved in-progress labels (and the pixels their correction reviewed), per image."""

    def __init__(self, store: _Store, settings: Settings, catalog: ImageCatalog,
                 labels: LabelStore) -> None:  # fmt: skip
        self._store = store
        self._settings = settings
        self._catalog = catalog
        self._labels = labels

    def save_draft(self, image_id: int, labels: npt.ArrayLike,
                   reviewed: npt.ArrayLike | None = None) -> None:
        """Autosave in-progress labels (atomic); the image becomes ``in_progress``.

        ``reviewed``: the pixels reviewed so far in this correction (boxes, scribbles, edits),
        kept beside the draft so that a restored draft still counts them
        (:meth:`load_draft_reviewed`). A submitted image keeps its status (a draft on it is a
        correction in progress).
        """
        self._store.check_writable()
        with self._store.lock:
            row = self._catalog.image_row(image_id)
            shape = json.loads(row["shape"])
            labels = check_labels(
                labels, image_shape=shape, n_classes=self._settings.n_classes,
                name=f"draft of image {row['id']} ({row['name']!r})",
            )  # fmt: skip
            mask = None if reviewed is None else check_mask(
                reviewed, shape=tuple(shape)[:2],
                name=f"reviewed mask of the draft of image {row['id']}")
            mask_file = self._labels.draft_mask_file(row["key"])
            if mask is not None and mask.any():
                write_tiff(mask_file, mask.astype(np.uint8))
            else:
                mask_file.unlink(missing_ok=True)
            write_tiff(self._labels.draft_file(row["key"]), labels)
            # a class map draft replaces a draft of objects (._instances writes it after)
            self._labels.draft_instances_file(row["key"]).unlink(missing_ok=True)
            if row["status"] in ("unlabelled", "suggested", "skipped"):
                with self._store.transaction() as conn:
                    conn.execute(
                        "UPDATE images SET status = 'in_progress' WHERE id = ?", (row["id"],)
                    )

    def load_draft(self, image_id: int) -> np.ndarray | None:
        """The image's draft labels, or None."""
        with self._store.lock:
            row = self._catalog.image_row(image_id, allow_removed=True)
        path = self._labels.draft_file(row["key"])
        if not path.exists():
            return None
        try:
            return read_labels(path, n_classes=self._settings.n_classes)
        except ValueError as err:
            raise ProjectError(
                f"The draft of image {row['id']} is damaged ({err}); discard it with "
                f"discard_draft({row['id']})."
            ) from err

    def load_draft_reviewed(self, image_id: int) -> np.ndarray | None:
        """The pixels the draft's correction had reviewed ((H, W) bool), or None."""
        with self._store.lock:
            row = self._catalog.image_row(image_id, allow_removed=True)
        path = self._labels.draft_mask_file(row["key"])
        if not path.exists() or not self._labels.draft_file(row["key"]).exists():
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
        self._store.check_writable()
        with self._store.lock:
            row = self._catalog.image_row(image_id, allow_removed=True)
            self._labels.remove_draft(row["key"])
            if row["status"] == "in_progress":
                status = "submitted" if self._labels.latest_submission(row["id"]) else "unlabelled"
                with self._store.transaction() as conn:
                    conn.execute("UPDATE images SET status = ? WHERE id = ?", (status, row["id"]))

    def drafts(self) -> list[int]:
        """Ids of the images that have a draft (to restore on reopen)."""
        with self._store.lock:
            rows = self._store.db.execute("SELECT id, key FROM images WHERE removed_at IS NULL "
                                          "ORDER BY id").fetchall()  # fmt: skip
        return [int(i) for i, key in rows if self._labels.draft_file(key).exists()]
