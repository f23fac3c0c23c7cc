"""Instance labels of the object classes: one id per object, stored beside the class map.

A class in "objects" mode (``Project.set_class_modes``) is annotated as an *instance image*:
(H, W) integers, 0 = no object, one id per object. :meth:`InstanceStore.submit_instances`
derives the class map from it (object pixels get their object class) and submits both
through the label store's protocol (:mod:`._labels`): ``instances/<key>.tif`` (uint16) is
staged with the reviewed mask, tagged with the hash of the new class map, and renamed into
place after ``labels/<key>.tif``, so a crash leaves the old or the new pair, never a mix.

Conventions (:mod:`napari_activeseg.core.instances`):

- Ids are stored sequential, ``1..N``: an image with gaps in its ids (objects deleted in
  napari) is relabelled in order (:func:`skimage.segmentation.relabel_sequential`), not
  refused; ids above 65535 (not a uint16 label image) are refused.
- The class map is the truth: reading back (:meth:`InstanceStore.load_instances`) keeps only
  ids on object-class pixels, and object-class pixels with no id (labels submitted as a class
  map, or edited by hand) become objects by connected components, so every labelled image of
  an object class has objects to train on.
- Submitting a class map (``Project.submit``) replaces the image's instance image.

A draft of objects (:meth:`InstanceStore.save_objects_draft`) is the class-map draft of
:mod:`._drafts` plus ``drafts/<key>.instances.tif`` (its ids), written after it, so a crash
between the two leaves the class map, whose objects are then derived as above; a submission
or ``discard_draft`` deletes both. :meth:`InstanceStore.check_instances` is the integrity
check of ``instances/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from skimage.measure import label as connected
from skimage.segmentation import relabel_sequential

from .. import _store_files as sf
from .. import atomic
from ..imageio import read_labels, write_tiff
from ..object_floor import min_object_area
from ..validation import check_labels, check_mask
from ._records import ProjectError
from ._store import INSTANCES_DIR

if TYPE_CHECKING:  # pragma: no cover
    from ._catalog import ImageCatalog
    from ._drafts import DraftStore
    from ._labels import LabelStore
    from ._settings import Settings
    from ._store import _Store

__all__ = ["InstanceStore"]

_MAX_ID = 65535


class InstanceStore:
    """Submitting and reading instance images (see the module docstring)."""

    def __init__(self, store: _Store, settings: Settings, catalog: ImageCatalog,
                 labels: LabelStore, drafts: DraftStore) -> None:
        self._store, self._settings = store, settings
        self._catalog, self._labels, self._drafts = catalog, labels, drafts

    def instances_path(self, image_id: int) -> Path:
        """Where the image's instance image is (absent: none submitted as objects)."""
        with self._store.lock:
            return self._labels.instances_file(
                self._catalog.image_row(image_id, allow_removed=True)["key"])

    def submit_instances(
        self,
        image_id: int,
        instances: npt.ArrayLike,
        reviewed: npt.ArrayLike | None = None,
        *,
        labels: npt.ArrayLike | None = None,
        object_class: str | int | None = None,
        seconds: float | None = None,
        pixels_changed: int | None = None,
        objects_added: int | None = None,
        objects_removed: int | None = None,
        model_version: str | None = None,
        strategy: str | None = None,
        suggestion_id: int | None = None,
        merge: bool = True,
    ) -> int:
        """Save an image's objects as ground truth (the class map is derived from them).

        Parameters
        ----------
        image_id : int
        instances : (H, W) array_like of int
            One id per object, 0 = no object (napari's Labels layer). Gaps are relabelled.
        reviewed : (H, W) array_like of bool, optional
            As in ``submit``: which pixels count; None = the whole image.
        labels : (H, W) array_like, optional
            A class map for the "area" classes of the same image; object pixels are
            overwritten by their object class. Without it, pixels outside objects are
            background.
        object_class : str or int, optional
            The class of the objects (name or index, a class in "objects" mode). Default:
            the project's only object class; with several, give it, or give ``labels`` that
            already carry each object's class.
        seconds, pixels_changed, objects_added, objects_removed, model_version, strategy,
        suggestion_id, merge
            As in ``submit``. With ``merge`` a partial submission keeps the earlier objects
            outside ``reviewed`` (ids renumbered).

        Returns
        -------
        submission_id : int

        Raises
        ------
        ProjectError
            No class in "objects" mode, an "area" class given, ids above 65535, negative or
            non-integer ids, a wrong shape, an object over several classes. Nothing is written.
        """
        with self._store.lock:
            row, shape, what, ids, class_map = self._checked(image_id, instances, labels,
                                                             object_class, "")
            mask = None
            if reviewed is not None:
                mask = check_mask(reviewed, shape=shape, name=f"reviewed mask of {what}")
                if mask.all():
                    mask = None
            if mask is not None and mask.any():
                if merge and self._labels.latest_submission(row["id"]) is not None:
                    class_map, ids, mask = self._merged(row["id"], class_map, ids, mask)
                if mask is not None:
                    ids = np.where(mask, ids, 0)
                ids = relabel_sequential(ids)[0]
            return self._labels.submit(
                row["id"], class_map, mask, seconds=seconds, pixels_changed=pixels_changed,
                objects_added=objects_added, objects_removed=objects_removed,
                model_version=model_version, strategy=strategy, suggestion_id=suggestion_id,
                merge=False, _instance_bytes=sf.encode_tiff(ids.astype(np.uint16)),
            )  # fmt: skip

    def _checked(self, image_id: int, instances: npt.ArrayLike, labels: npt.ArrayLike | None,
                 object_class: str | int | None, prefix: str):
        """``(row, shape, what, ids, class map)`` of a submission or a draft, checked (the
        project writable, the ids, the class map)."""
        self._store.check_writable()
        row = self._catalog.image_row(image_id)
        shape = tuple(json.loads(row["shape"]))[:2]
        what = f"{prefix}image {row['id']} ({row['name']!r})"
        ids = self._checked_ids(instances, shape, what)
        return row, shape, what, ids, self._class_map(ids, labels, object_class, shape, what)

    def _checked_ids(self, instances: npt.ArrayLike, shape: tuple[int, ...], what: str
                     ) -> np.ndarray:
        if not self._settings.object_classes:
            raise ProjectError(
                f"The project has no class in 'objects' mode, so the instance image of {what} "
                "has no class to go to; set one first (set_class_modes({'nucleus': "
                "'objects'})) or submit a class map with submit()."
            )
        array = np.asarray(instances)
        if array.dtype != bool and np.issubdtype(array.dtype, np.number) and array.size \
                and np.nanmax(array) > _MAX_ID:
            raise ProjectError(
                f"The instance image of {what} has id {int(np.nanmax(array))}, above "
                f"{_MAX_ID} (uint16): relabel it 1..N (skimage.segmentation.relabel_sequential) "
                "and submit again."
            )
        try:
            ids = check_labels(array, image_shape=shape, name=f"instance image of {what}")
        except ValueError as err:
            raise ProjectError(str(err)) from err
        return relabel_sequential(ids.astype(np.int64, copy=False))[0]

    def _object_class(self, value: str | int, what: str) -> int:
        classes, objects = self._settings.classes, self._settings.object_classes
        index = classes.index(value) if isinstance(value, str) and value in classes else value
        if not isinstance(index, int | np.integer) or not 0 <= int(index) < len(classes):
            raise ProjectError(f"object_class {value!r} of {what} is not a class of the "
                               f"project {classes}.")
        if int(index) not in objects:
            raise ProjectError(
                f"{classes[int(index)]!r} is an 'area' class: submit its pixels as a class map "
                f"(labels=...), or set its mode to 'objects'; the object classes are "
                f"{[classes[i] for i in objects]}."
            )
        return int(index)

    def _class_map(self, ids: np.ndarray, labels: npt.ArrayLike | None,
                   object_class: str | int | None, shape: tuple[int, ...], what: str
                   ) -> np.ndarray:
        """The class map of a submission (module docstring), checked."""
        settings = self._settings
        objects, n = settings.object_classes, settings.n_classes
        dtype = np.uint8 if n <= 256 else np.uint16
        if object_class is None and len(objects) == 1:
            object_class = objects[0]
        elif object_class is None and labels is None:
            raise ProjectError(
                f"The project has several object classes "
                f"{[settings.classes[i] for i in objects]}: say which the objects of {what} "
                "are (object_class=...), or give labels=... carrying their classes."
            )
        c = None if object_class is None else self._object_class(object_class, what)
        if labels is None:
            return np.where(ids > 0, c, 0).astype(dtype)
        try:
            base = check_labels(labels, image_shape=shape, n_classes=n,
                                name=f"labels of {what}").astype(dtype)  # fmt: skip
        except ValueError as err:
            raise ProjectError(str(err)) from err
        if c is not None:
            stray = int(np.count_nonzero((base == c) & (ids == 0)))
            base = np.where(ids > 0, c, base).astype(dtype)
        else:
            stray = int(np.count_nonzero(np.isin(base, objects) & (ids == 0)))
            wrong = int(np.count_nonzero((ids > 0) & ~np.isin(base, objects)))
            if wrong:
                raise ProjectError(f"{wrong} object pixel(s) of {what} are not of an object "
                                   "class in labels; give object_class=..., or fix labels.")
            per_object = np.unique(np.stack([ids[ids > 0], base[ids > 0]]), axis=1)
            if per_object.shape[1] != len(np.unique(ids[ids > 0])):
                raise ProjectError(f"An object of {what} spans several classes in labels; "
                                   "every pixel of an object must have one class.")
        if stray:
            raise ProjectError(f"labels of {what} mark {stray} pixel(s) as an object class "
                               "outside every object; give them an id or another class.")
        return base

    def _merged(self, image_id: int, class_map: np.ndarray, ids: np.ndarray,
                mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A partial submission on top of the stored one: the earlier objects and classes
        outside ``mask``, the new ones inside (as ``submit(merge=True)``)."""
        old_map, old_mask = self._labels.load_labels(image_id)  # type: ignore[misc]
        old_ids = self.load_instances(image_id)[0]  # type: ignore[index]
        keep = np.ones(mask.shape, bool) if old_mask is None else old_mask.copy()
        keep &= ~mask
        merged_map = np.where(keep, old_map, class_map).astype(
            np.promote_types(class_map.dtype, old_map.dtype), copy=False)
        new = np.where(ids > 0, ids + int(old_ids.max()), 0)
        merged_ids = np.where(keep, old_ids, np.where(mask, new, 0))
        union = None if old_mask is None else (old_mask | mask)
        return merged_map, merged_ids, None if union is None or union.all() else union

    def load_instances(self, image_id: int, *, derive: bool = True
                       ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The objects of a submitted image: ``(instances, reviewed)`` or None.

        Parameters
        ----------
        derive : bool
            Object-class pixels without an id (a class map submission, a hand edit) become
            objects by connected components (default); False returns None for an image with
            no instance image.

        Returns
        -------
        instances : (H, W) uint16 ndarray
            Ids ``1..N``, 0 outside objects (and outside the reviewed pixels).
        reviewed : (H, W) bool ndarray or None
            As ``load_labels``.
        """
        with self._store.lock:
            loaded = self._labels.load_labels(image_id)
            if loaded is None:
                return None
            class_map, mask = loaded
            path = self.instances_path(image_id)
            if not path.exists() and not derive:
                return None
            ids = _read_ids(path, class_map.shape, f"The instance image of image {image_id} "
                            "cannot be used ({}); submit its objects again.")
        return self._on_class_map(ids, class_map, derive=derive), mask

    def object_floor(self, image_ids: Iterable[int] | None = None) -> float | None:
        """The smallest object worth keeping (:func:`~napari_activeseg.core.instances.
        min_object_area`, which training decides and saves with the model) from the labelled
        images ``image_ids`` (default: all; images labelled box by box are left out): their
        objects when the project has object classes, else each class map's connected pieces.
        """
        wanted = None if image_ids is None else {int(i) for i in image_ids}
        pieces, reviewed = [], []
        for image_id in self._labels.labelled_ids():
            if (wanted is not None and image_id not in wanted) \
                    or self._labels.regions.label_regions(image_id):
                continue
            if self._settings.object_classes:
                loaded = self.load_instances(image_id)
            else:
                loaded = self._labels.load_labels(image_id)
                if loaded is not None:
                    loaded = (connected(np.asarray(loaded[0]), background=0, connectivity=1),
                              loaded[1])
            if loaded is not None:
                pieces.append(loaded[0])
                reviewed.append(loaded[1])
        return min_object_area(pieces, reviewed)

    def _on_class_map(self, ids: np.ndarray, class_map: np.ndarray, *, derive: bool = True
                      ) -> np.ndarray:
        """Ids kept on object-class pixels only; with ``derive`` the object-class pixels
        without one become objects by connected components (module docstring)."""
        ids = np.where(np.isin(class_map, self._settings.object_classes), ids, 0)
        if derive:
            for c in self._settings.object_classes:
                rest, n = ndi.label((class_map == c) & (ids == 0))
                if n:
                    ids = np.where(rest > 0, rest + int(ids.max()), ids)
        return relabel_sequential(ids)[0].astype(np.uint16)

    # ------------------------------------------------------------------ drafts of objects
    def save_objects_draft(self, image_id: int, instances: npt.ArrayLike,
                           reviewed: npt.ArrayLike | None = None, *,
                           labels: npt.ArrayLike | None = None) -> None:
        """Autosave objects being corrected (atomic; ``save_draft`` for object classes):
        the class map they make (``labels`` as in :meth:`submit_instances`, carrying each
        object's class when there are several object classes) is saved as the image's
        draft, the ids beside it; :meth:`load_objects_draft` reads both back. Bad input
        raises ProjectError before anything is written."""
        with self._store.lock:
            row, _, _, ids, class_map = self._checked(image_id, instances, labels, None,
                                                      "the draft of ")
            self._drafts.save_draft(row["id"], class_map, reviewed)  # drops the old ids
            write_tiff(self._labels.draft_instances_file(row["key"]), ids.astype(np.uint16))

    def load_objects_draft(self, image_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(instances, class map)`` of the image's draft, or None without a draft: the
        ids saved by :meth:`save_objects_draft`, or, for a class-map draft, its objects by
        connected components."""
        draft = self._drafts.load_draft(image_id)
        if draft is None or not self._settings.object_classes:
            return None
        with self._store.lock:
            path = self._labels.draft_instances_file(
                self._catalog.image_row(image_id, allow_removed=True)["key"])
        ids = _read_ids(path, draft.shape, f"The draft of image {image_id} is damaged ({{}}); "
                        f"discard it with discard_draft({image_id}).")
        return self._on_class_map(ids, draft), draft

    # ------------------------------------------------------------------ integrity
    def check_instances(self) -> list[str]:
        """Problems of ``instances/`` (the integrity check; nothing is changed): an instance
        image that cannot be read, is not of unsigned integers up to uint16, has another
        shape than its image, belongs to no image, has no labels file, or is in a project
        with no class in "objects" mode."""
        import tifffile

        folder = self._store.folder / INSTANCES_DIR
        if not folder.is_dir():
            return []
        rows = {r["key"]: r for r in self._store.db.execute(
            "SELECT id, key, name, shape, labels_purged FROM images").fetchall()}
        problems = []
        for path in sorted(folder.glob("*.tif")):
            if path.name.startswith(".") or atomic.is_temp_name(path.name):
                continue  # staged or temporary: the reconciliation's
            key, where = path.stem, f"{folder.name}/{path.name}"
            fix = "delete it, or submit the image's objects again"
            row = rows.get(key)
            if row is None:
                problems.append(f"{where} belongs to no image of the project: delete it")
                continue
            if not self._settings.object_classes:
                problems.append(f"{where}: the project has no class in 'objects' mode, so "
                                "these objects are never used; delete it, or set a class "
                                "mode to 'objects' (set_class_modes)")
                continue
            if not self._labels.labels_file(key).exists():
                problems.append(f"{where} has no labels/{key}.tif (image {row['id']}, "
                                f"{row['name']!r}): {fix}")
                continue
            try:
                array = tifffile.imread(path)
            except Exception as err:  # noqa: BLE001 - any unreadable file is a problem
                problems.append(f"{where} cannot be read ({type(err).__name__}: {err}): {fix}")
                continue
            if array.dtype.kind != "u" or array.dtype.itemsize > 2:
                problems.append(f"{where} holds {array.dtype} values, not object ids (uint16): "
                                f"{fix}")
            expected = tuple(json.loads(row["shape"]))[:2]
            if array.shape != expected:
                problems.append(f"{where} has shape {array.shape} but image {row['id']} "
                                f"({row['name']!r}) is {expected}: {fix}")
        return problems


def _read_ids(path: Path, shape: tuple[int, ...], message: str) -> np.ndarray:
    """The ids of an instance file (zeros when it is absent) as int64; ProjectError with
    ``message`` (its ``{}``: what is wrong) when it cannot be read or has another shape."""
    if not path.exists():
        return np.zeros(shape, np.int64)
    try:
        ids = read_labels(path).astype(np.int64)
    except ValueError as err:
        raise ProjectError(message.format(err)) from err
    if ids.shape != tuple(shape):
        raise ProjectError(message.format(f"{str(path)!r} has shape {ids.shape}, its labels "
                                          f"{tuple(shape)}"))
    return ids
