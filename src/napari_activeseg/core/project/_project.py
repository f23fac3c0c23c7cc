"""The :class:`Project` facade: one object with the whole project API, made of small stores.

:class:`Project` opens a :class:`~._store._Store` handle (folder, lock, catalog connection),
builds one store of each kind on it and forwards each public method to the store that owns it
(same name, signature and docstring): read the assignments below to find the room a method
lives in. Only what spans several stores is written here: creating and opening (the first
images go in before the new catalog is renamed into place; the labels are reconciled on a
read-write open), closing, and the integrity check.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy.typing as npt

from ... import __version__
from ..axes import check_axes
from ._catalog import ImageCatalog
from ._drafts import DraftStore
from ._history import HistoryStore
from ._import import MaskImport
from ._instances import InstanceStore
from ._intake import AXES_SETTING, ImageIntake, check_arrays, source_entries
from ._labels import LabelStore, reconcile
from ._models import ModelStore
from ._records import ProjectWarning
from ._regions import RegionLabels
from ._settings import Settings, initial_settings
from ._store import _Store

__all__ = ["Project"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_PRIVATE = object()


def _forward(
    store: str, method: Callable[Concatenate[Any, _P], _R]
) -> Callable[Concatenate[Project, _P], _R]:
    """A method of :class:`Project` that calls `method` on its store in attribute `store`."""

    @functools.wraps(method)
    def forward(self: Project, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return method(getattr(self, store), *args, **kwargs)

    forward.__qualname__ = f"Project.{method.__name__}"
    return forward


def _forward_property(store: str, prop: property) -> property:
    """A read-only property of :class:`Project` read from its store in attribute `store`."""
    getter = prop.fget
    assert getter is not None
    return property(lambda self: getter(getattr(self, store)), doc=prop.__doc__)


class Project:
    """An annotation project on disk. Make one with :meth:`create`, open one with :meth:`open`.

    Use it as a context manager (or call :meth:`close`) so the lock is released promptly.
    The layout is in :mod:`napari_activeseg.core.project`; the atomicity rule in
    :mod:`~napari_activeseg.core.project._labels`; locking, threads and the schema in
    :mod:`~napari_activeseg.core.project._store`.

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

    def __init__(self, store: _Store, *, _key: object = None) -> None:
        if _key is not _PRIVATE:
            raise TypeError("Use Project.create(folder, ...) or Project.open(folder).")
        self._store = store
        self._settings = Settings(store)
        self._labels = LabelStore(store, self._settings)
        self._regions = self._labels.regions
        self._catalog = ImageCatalog(store, self._labels)
        self._history = HistoryStore(store, self._catalog)
        self._labels.catalog, self._labels.history = self._catalog, self._history
        self._drafts = DraftStore(store, self._settings, self._catalog, self._labels)
        self._intake = ImageIntake(store, self._catalog, self._settings, self._labels)
        self._models = ModelStore(store, self._settings)
        self._import = MaskImport(store, self._settings, self._catalog, self._labels)
        self._instances = InstanceStore(store, self._settings, self._catalog, self._labels,
                                        self._drafts)
        self._models.object_floor = self._instances.object_floor

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
        class_modes: Mapping[str, str] | None = None,
        channel_axis: int | None = None,
        axes: str | None = None,
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
            One ``'#rrggbb'`` colour per class (defaults to the palette
            :data:`~napari_activeseg.core.project.DEFAULT_COLORS`, background black).
        settings : mapping, optional
            Initial settings (JSON values), see :meth:`set_setting`.
        class_modes : mapping of str to str, optional
            ``{"nucleus": "objects"}``: the classes annotated and predicted as separate
            objects (:meth:`set_class_modes`); the others are "area" (semantic).
        channel_axis : int, optional
            Channel axis of multichannel TIFF stacks, see
            :func:`~napari_activeseg.core.imageio.read_image`, and of the 3D `arrays`.
        axes : str, optional
            The axes of the image files, one letter per stored axis (``'CYX'``, ``'ZYX'``,
            ``'YXC'``, ``'TZCYX'``; see :mod:`~napari_activeseg.core.axes`), overriding their
            ImageJ/OME metadata; None or ``'auto'`` reads them from each file. Z/T planes
            and OME series become images of their own. Saved in the project (the ``axes``
            setting): :meth:`add_images` and :meth:`add_folder` follow the same rule.
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
        _Store.check_new(folder)
        axes = check_axes(axes)
        rows = initial_settings(classes, colors, copy_images,
                                {**(settings or {}), AXES_SETTING: axes},
                                class_modes)  # fmt: skip
        entries = source_entries(folder, source_folder, pattern, recursive, images)
        checked = check_arrays(arrays or {}, channel_axis=channel_axis)
        with _Store.creating(folder, rows, version=__version__) as (store, made):
            project = cls(store, _key=_PRIVATE)
            if entries:
                project._intake.add_files(
                    entries, copy=bool(copy_images), channel_axis=channel_axis, axes=axes,
                    skip_unreadable=skip_unreadable, created=made,
                )  # fmt: skip
            if checked:
                project._intake.add_checked_arrays(checked, created=made)
        project._repair_on_open()
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
        project = cls(_Store.open(folder, read_only=read_only), _key=_PRIVATE)
        if not read_only:
            project._repair_on_open()
        return project

    def _repair_on_open(self) -> None:
        """Reconcile the label files with the catalog (read-write opens); warn what was fixed."""
        try:
            with self._store.lock:
                reconcile(self._labels, full=False)
        except BaseException:
            self.close()
            raise
        for message in self._store.repairs:
            warnings.warn(message, ProjectWarning, stacklevel=3)

    def close(self) -> None:
        """Close the catalog and release the lock (idempotent)."""
        self._store.close()

    def __enter__(self) -> Project:  # noqa: PYI034 (Project is not meant to be subclassed)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("read-only" if self.read_only else "open")
        return f"<Project {str(self.folder)!r} ({state})>"

    @property
    def folder(self) -> Path:
        return self._store.folder

    @property
    def read_only(self) -> bool:
        return self._store.read_only

    @property
    def warnings(self) -> list[str]:
        return self._store.warnings

    @property
    def repairs(self) -> list[str]:
        return self._store.repairs

    @property
    def closed(self) -> bool:
        return self._store.closed

    @property
    def schema_version(self) -> int:
        return self._store.schema_version()

    def integrity_check(self) -> list[str]:
        """Check (and, read-write, repair) the project; an empty list means all is well.

        Checks: SQLite's own ``integrity_check`` and foreign keys; every submitted image has a
        readable label file (and mask) of the right shape and class range; label files agree
        with the catalog (interrupted submissions are finished or adopted, see
        :mod:`~napari_activeseg.core.project._labels`); no leftover temporary files (removed);
        every model version is complete and parses (the weights of an interrupted save,
        without a JSON, are removed); every instance image of ``instances/`` is readable, of
        uint16 ids, of its image's shape, beside a labels file, in a project with an object
        class (reported, not changed). What was repaired is listed in :attr:`repairs`. Image
        files outside the project are checked by :meth:`check_images`.
        """
        with self._store.lock:
            problems = self._store.check_catalog()
            problems += reconcile(self._labels, full=True)
            problems += self._models.check_models()
            problems += self._instances.check_instances()
        return problems

    # ------------------------------------------------------------------ settings, classes

    get_setting = _forward("_settings", Settings.get_setting)
    set_setting = _forward("_settings", Settings.set_setting)
    settings = _forward("_settings", Settings.settings)
    classes = _forward_property("_settings", Settings.classes)
    n_classes = _forward_property("_settings", Settings.n_classes)
    colors = _forward_property("_settings", Settings.colors)
    set_class_modes = _forward("_settings", Settings.set_class_modes)
    class_modes = _forward_property("_settings", Settings.class_modes)
    object_classes = _forward_property("_settings", Settings.object_classes)
    instance_formulation = _forward_property("_settings", Settings.instance_formulation)

    # ------------------------------------------------------------------ images

    add_images = _forward("_intake", ImageIntake.add_images)
    add_folder = _forward("_intake", ImageIntake.add_folder)
    add_arrays = _forward("_intake", ImageIntake.add_arrays)
    channels = _forward_property("_intake", ImageIntake.channels)
    images = _forward("_catalog", ImageCatalog.images)
    get_image = _forward("_catalog", ImageCatalog.get_image)
    load_image = _forward("_catalog", ImageCatalog.load_image)
    open_lazy = _forward("_catalog", ImageCatalog.open_lazy)
    check_images = _forward("_catalog", ImageCatalog.check_images)
    relink = _forward("_catalog", ImageCatalog.relink)
    relink_folder = _forward("_catalog", ImageCatalog.relink_folder)
    set_status = _forward("_catalog", ImageCatalog.set_status)
    remove_image = _forward("_catalog", ImageCatalog.remove_image)

    # ------------------------------------------------------------------ labels and drafts

    submit = _forward("_labels", LabelStore.submit)
    load_labels = _forward("_labels", LabelStore.load_labels)
    reviewed_mask = _forward("_labels", LabelStore.reviewed_mask)
    labelled_ids = _forward("_labels", LabelStore.labelled_ids)
    submissions = _forward("_labels", LabelStore.submissions)
    label_path = _forward("_labels", LabelStore.label_path)
    reviewed_path = _forward("_labels", LabelStore.reviewed_path)
    submit_region = _forward("_regions", RegionLabels.submit_region)
    label_regions = _forward("_regions", RegionLabels.label_regions)
    save_draft = _forward("_drafts", DraftStore.save_draft)
    load_draft = _forward("_drafts", DraftStore.load_draft)
    load_draft_reviewed = _forward("_drafts", DraftStore.load_draft_reviewed)
    discard_draft = _forward("_drafts", DraftStore.discard_draft)
    drafts = _forward("_drafts", DraftStore.drafts)
    import_masks = _forward("_import", MaskImport.import_masks)
    submit_instances = _forward("_instances", InstanceStore.submit_instances)
    load_instances = _forward("_instances", InstanceStore.load_instances)
    object_floor = _forward("_instances", InstanceStore.object_floor)
    instances_path = _forward("_instances", InstanceStore.instances_path)
    save_objects_draft = _forward("_instances", InstanceStore.save_objects_draft)
    load_objects_draft = _forward("_instances", InstanceStore.load_objects_draft)

    # ------------------------------------------------------------------ history and rounds

    skip = _forward("_history", HistoryStore.skip)
    save_scores = _forward("_history", HistoryStore.save_scores)
    scores = _forward("_history", HistoryStore.scores)
    record_suggestion = _forward("_history", HistoryStore.record_suggestion)
    record_action = _forward("_history", HistoryStore.record_action)
    query_history = _forward("_history", HistoryStore.query_history)
    export_history = _forward("_history", HistoryStore.export_history)
    record_round = _forward("_history", HistoryStore.record_round)
    rounds = _forward("_history", HistoryStore.rounds)

    # ------------------------------------------------------------------ models

    save_model = _forward("_models", ModelStore.save_model)
    import_model = _forward("_models", ModelStore.import_model)
    models = _forward("_models", ModelStore.models)
    load_model = _forward("_models", ModelStore.load_model)
    load_unet = _forward("_models", ModelStore.load_unet)
