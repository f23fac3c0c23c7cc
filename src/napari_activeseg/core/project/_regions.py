"""Labels of large images, box by box: each reviewed box is its own box-sized record.

An image over the project's ``large_image_pixels`` (:mod:`..largeimage`) is never held whole,
so neither are its labels: :meth:`RegionLabels.submit_region` stores one file per submitted
box, and nothing of the image's full size is built on the way::

    regions/<key>/<seq>-<y0>-<x0>-<y1>-<x1>.tif   (2, h, w): the box's class map, then its
                                                  reviewed mask (0/1); seq orders the records

A later record wins where it overlaps an earlier one (:meth:`RegionLabels.label_regions` hands each
record out with the pixels a later one reviewed taken out of its mask), so training reads each
box as a crop and never an image-sized array. Small images keep their ``labels/<key>.tif``.

Atomicity follows :mod:`._labels`: the record is written atomically (temporary file, fsync,
rename) *before* its submission row is committed; the row holds the record's hash in
``labels_sha256`` and ``box:y0,x0,y1,x1`` in ``reviewed_sha256`` (so the image is partial:
its other windows stay in the pool). The files are the truth: :func:`reconcile_regions`
adopts a record without a row (a crash between the two steps), reports a row whose record is
gone, and removes temporary files of an interrupted write.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import tifffile

from .. import _store_files as sf
from .. import atomic
from ..largeimage import is_large, large_threshold
from ..validation import check_labels, check_mask
from ._records import ProjectError

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3

    from ._labels import LabelStore

__all__ = ["REGIONS_DIR", "LabelRegion", "RegionLabels", "RegionMask", "reconcile_regions"]

REGIONS_DIR = "regions"
BOX_MARK = "box:"  # reviewed_sha256 of a box record's submission row
_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)-(\d+)-(\d+)\.tif$")

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class LabelRegion:
    """One stored box of a large image: ``labels`` and ``reviewed`` are ``(y1 - y0, x1 - x0)``;
    ``reviewed`` leaves out what a later record of the same image reviewed."""

    seq: int
    box: Box
    labels: np.ndarray
    reviewed: np.ndarray


class RegionMask:
    """The reviewed pixels of a large image, read from its box records when sliced: a 2-D
    ``mask[y0:y1, x0:x1]`` is an ndarray of that window only; ``np.asarray(mask)`` builds the
    whole image (costly: only for what really needs it)."""

    ndim = 2
    dtype = np.dtype(bool)

    def __init__(self, shape: tuple[int, int], boxes: list[tuple[Box, np.ndarray]]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self._boxes = boxes

    def __getitem__(self, key) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2
                and all(isinstance(k, slice) and k.step in (None, 1) for k in key)):
            raise TypeError("A large image's reviewed mask is read by 2-D windows "
                            "(mask[y0:y1, x0:x1]).")
        (y0, y1, _), (x0, x1, _) = (k.indices(n) for k, n in zip(key, self.shape))
        out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), bool)
        for (by0, bx0, by1, bx1), mask in self._boxes:
            iy0, ix0, iy1, ix1 = max(y0, by0), max(x0, bx0), min(y1, by1), min(x1, bx1)
            if iy0 < iy1 and ix0 < ix1:
                out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] |= \
                    mask[iy0 - by0:iy1 - by0, ix0 - bx0:ix1 - bx0]
        return out

    def any(self) -> bool:
        return any(bool(m.any()) for _, m in self._boxes)

    def all(self) -> bool:
        if sum(int(m.sum()) for _, m in self._boxes) < self.shape[0] * self.shape[1]:
            return False
        step = max(1, (1 << 24) // max(1, self.shape[1]))  # rows a strip, ~16 MB
        return all(self[y:y + step, :].all() for y in range(0, self.shape[0], step))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)


class RegionLabels:
    """The box records of large images (module docstring), beside ``labels``' whole-image
    files and under the same lock, catalog and settings."""

    def __init__(self, labels: LabelStore) -> None:
        self._labels = labels

    @property
    def _store(self):
        return self._labels._store

    def folder(self, key: str) -> Path:
        return self._store.folder / REGIONS_DIR / key

    def records(self, key: str) -> list[tuple[int, Box, Path]]:
        """``(seq, box, path)`` of every record of an image, oldest first."""
        folder = self.folder(key)
        if not folder.is_dir():
            return []
        out = []
        for path in folder.iterdir():
            m = _NAME.match(path.name)
            if m:
                seq, *box = (int(v) for v in m.groups())
                out.append((seq, tuple(box), path))
        return sorted(out)

    def by_box(self, row: sqlite3.Row) -> bool:
        """Whether an image's labels are stored box by box: it has records, or it is over
        ``large_image_pixels`` and has no whole-image label file."""
        if self.records(row["key"]):
            return True
        shape = json.loads(row["shape"])
        return is_large(shape, large_threshold(self._labels._settings)) and \
            not self._labels.labels_file(row["key"]).exists()

    def _read(self, path: Path, box: Box) -> tuple[np.ndarray, np.ndarray]:
        h, w = box[2] - box[0], box[3] - box[1]
        try:
            data = tifffile.imread(path)
            if data.shape != (2, h, w):
                raise ValueError(f"it holds an array of shape {data.shape}, not (2, {h}, {w})")
            labels = check_labels(data[0], n_classes=self._labels._settings.n_classes,
                                  name=str(path))
            mask = check_mask(data[1], shape=(h, w), name=str(path))
        except (ValueError, OSError, tifffile.TiffFileError) as err:
            raise ProjectError(f"The box record {str(path)!r} cannot be used: {err}. Delete it "
                               "(its box becomes unreviewed) or restore it from a backup.") from err
        return labels, mask

    # ------------------------------------------------------------------ reading
    def label_regions(self, image_id: int) -> list[LabelRegion]:
        """Every stored box of an image, oldest first, each with what later boxes reviewed
        taken out of its mask (boxes left with nothing reviewed are dropped)."""
        with self._store.lock:
            row = self._labels.catalog.image_row(image_id, allow_removed=True)
            recs = [(seq, box, *self._read(path, box)) for seq, box, path in
                    self.records(row["key"])]
        out = []
        for n, (seq, box, labels, mask) in enumerate(recs):
            y0, x0, y1, x1 = box
            later = RegionMask((y1 - y0, x1 - x0), [
                ((b[0] - y0, b[1] - x0, b[2] - y0, b[3] - x0), m) for _, b, _, m in recs[n + 1:]])
            keep = mask & ~later[:, :]
            if keep.any():
                out.append(LabelRegion(seq, box, labels, keep))
        return out

    def reviewed_mask(self, row: sqlite3.Row) -> RegionMask:
        shape = tuple(json.loads(row["shape"]))[:2]
        return RegionMask(shape, [(box, self._read(path, box)[1])
                                  for _, box, path in self.records(row["key"])])

    def assemble(self, row: sqlite3.Row) -> tuple[np.ndarray, np.ndarray] | None:
        """The whole ``(labels, reviewed)`` of a box-stored image (image-sized: costly)."""
        recs = self.records(row["key"])
        if not recs:
            return None
        shape = tuple(json.loads(row["shape"]))[:2]
        read = [(box, *self._read(path, box)) for _, box, path in recs]
        dtype = np.result_type(*(lab.dtype for _, lab, _ in read))
        labels, mask = np.zeros(shape, dtype), np.zeros(shape, bool)
        for (y0, x0, y1, x1), lab, rev in read:
            window = labels[y0:y1, x0:x1]
            window[rev] = lab[rev]
            mask[y0:y1, x0:x1] |= rev
        return labels, mask

    # ------------------------------------------------------------------ submit
    def submit_region(
        self, image_id: int, box: Box, labels: npt.ArrayLike,
        reviewed: npt.ArrayLike | None = None, *, seconds: float | None = None,
        pixels_changed: int | None = None, objects_added: int | None = None,
        objects_removed: int | None = None, model_version: str | None = None,
        strategy: str | None = None, suggestion_id: int | None = None,
    ) -> int:
        """Save one reviewed box of an image as its own record (module docstring).

        ``labels`` (and ``reviewed``, default the whole box) are of the box's size
        ``(y1 - y0, x1 - x0)``; the effort fields are as :meth:`.LabelStore.submit` takes them.
        Nothing of the image's size is built. Returns the submission id; bad input raises
        before anything is written.
        """
        store = self._store
        store.check_writable()
        with store.lock:
            row = self._labels.catalog.image_row(image_id)
            h, w = tuple(json.loads(row["shape"]))[:2]
            y0, x0, y1, x1 = box = check_box(box, (h, w), f"image {row['id']}")
            if self._labels.labels_file(row["key"]).exists():
                raise ProjectError(
                    f"Image {row['id']} ({row['name']!r}) has whole-image labels already "
                    "(submitted before it counted as large): submit it whole with "
                    "project.submit, or raise the project's large_image_pixels.")
            what = f"labels of box {box} of image {row['id']}"
            labels = check_labels(labels, image_shape=(y1 - y0, x1 - x0),
                                  n_classes=self._labels._settings.n_classes, name=what)
            mask = np.ones(labels.shape, bool) if reviewed is None else check_mask(
                reviewed, shape=labels.shape, name=f"reviewed mask of box {box}")
            if not mask.any():
                raise ProjectError(f"The reviewed mask of box {box} is empty, so no pixel "
                                   "would count as ground truth; review some of it, or skip.")
            record = self._labels.checked_record(
                row, seconds=seconds, pixels_changed=pixels_changed, objects_added=objects_added,
                objects_removed=objects_removed, model_version=model_version, strategy=strategy,
                suggestion_id=suggestion_id)

            labels = np.where(mask, labels, 0).astype(labels.dtype, copy=False)
            data = sf.encode_tiff(np.stack([labels, mask.astype(labels.dtype)]))
            sha = sf.sha256_bytes(data)
            recs = self.records(row["key"])
            seq = recs[-1][0] + 1 if recs else 1
            path = self.folder(row["key"]) / f"{seq:06d}-{y0}-{x0}-{y1}-{x1}.tif"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic.atomic_write_bytes(path, data)
            except OSError as err:
                raise type(err)(err.errno, (
                    f"Could not save {what}: {err.strerror or err}. Nothing was submitted; "
                    "free some disk space (or check the project folder is writable) and "
                    "submit again.")) from err
            self._labels.remove_draft(row["key"])
            return self._labels.commit_submission(row, sha, box_mark(box),
                                                  json.dumps(sf_stamp(path)),
                                                  int(labels.max()), record)

    def unlink(self, key: str) -> None:
        folder = self.folder(key)
        if folder.is_dir():
            shutil.rmtree(folder)
            atomic.fsync_dir(folder.parent)


def box_mark(box: Box) -> str:
    return BOX_MARK + ",".join(str(int(v)) for v in box)


def sf_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def check_box(box, shape: tuple[int, int], what: str) -> Box:
    """``(y0, x0, y1, x1)`` as ints, inside ``shape`` and not empty (else ValueError)."""
    try:
        y0, x0, y1, x1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"A box is (y0, x0, y1, x1), got {box!r}.") from None
    h, w = shape
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(f"Box {tuple(box)} is not inside {what} of {h} x {w} pixels.")
    return y0, x0, y1, x1


def reconcile_regions(regions: RegionLabels, key: str, image: sqlite3.Row,
                      rows: list[sqlite3.Row], *, full: bool, fix: bool
                      ) -> tuple[list[str], list[str]]:
    """The reconciliation of one box-stored image (``rows``: its box submission rows): temporary
    files removed, records without a row adopted, rows whose record is gone reported."""
    problems: list[str] = []
    repairs: list[str] = []
    folder = regions.folder(key)
    if folder.is_dir():
        for path in folder.iterdir():
            if atomic.is_temp_name(path.name) and path.is_file():
                if fix:
                    path.unlink(missing_ok=True)
                    repairs.append(f"Removed the temporary file {REGIONS_DIR}/{key}/{path.name} "
                                   "left by an interrupted write.")
                else:
                    problems.append(f"temporary file {REGIONS_DIR}/{key}/{path.name}")
    by_stamp = {r["stamp"]: r["labels_sha256"] for r in rows}
    shas = {r["labels_sha256"] for r in rows}
    seen = set()
    for _, box, path in regions.records(key):
        stamp = json.dumps(sf_stamp(path))
        if not full and stamp in by_stamp:
            seen.add(by_stamp[stamp])
            continue
        sha = sf.sha256_file(path)
        seen.add(sha)
        if sha in shas:
            continue
        try:
            labels, _ = regions._read(path, box)
        except ProjectError as err:
            problems.append(str(err))
            continue
        if not fix:
            problems.append(f"{REGIONS_DIR}/{key}/{path.name} is not in the catalog (an "
                            "interrupted submission); open the project read-write to adopt it")
            continue
        with regions._store.transaction() as conn:
            conn.execute(
                "INSERT INTO submissions(image_id, created_at, labels_sha256, reviewed_sha256, "
                "stamp, max_label, recovered) VALUES (?,?,?,?,?,?,1)",
                (image["id"], sf.utc_now(), sha, box_mark(box), stamp, int(labels.max())))
            conn.execute("UPDATE images SET status = 'submitted' WHERE id = ?", (image["id"],))
        repairs.append(f"Adopted {REGIONS_DIR}/{key}/{path.name} as a submission of image "
                       f"{image['id']} ({image['name']!r}): a submission interrupted after "
                       "writing its box.")
    for r in rows:
        if r["labels_sha256"] not in seen:
            problems.append(f"The box {r['reviewed_sha256'][len(BOX_MARK):]} of image "
                            f"{image['id']} ({image['name']!r}), submitted on "
                            f"{r['created_at']}, has no record in {REGIONS_DIR}/{key}/: restore "
                            "it from a backup or submit the box again")
    return problems, repairs
