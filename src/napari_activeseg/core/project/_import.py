"""Importing masks made elsewhere (Fiji, ilastik, Cellpose, ...) as submitted labels.

:meth:`MaskImport.import_masks` matches the files of a folder to the project's images by
name, converts what the project's classes allow, and submits each one as a whole-image review
through :meth:`~._labels.LabelStore.submit` (so each is atomic, exactly like a GUI submit),
with ``strategy = "imported"`` in its submission row: that is where the project keeps where a
submission came from.

Matching: a mask's file stem equals an image's name stem, or does after removing one of
:data:`MASK_SUFFIXES` (case-insensitive). A mask matching two images, or an image matched by
two masks, is a conflict: reported and skipped, never guessed.

Conversion (``n`` = the project's number of classes, background included):

- values within ``0..n-1``: a class map, imported as is;
- a two-class project and any other values with background 0 (a 0/255 binary mask, a uint16
  instance id image of Cellpose): every object becomes class 1;
- otherwise (more values than classes in a multi-class project, no background at all):
  skipped, saying why.

Gray saved as RGB (all channels equal) is read as gray. A mask of another height or width than
its image, an image that already has labels or an unsubmitted draft (unless ``replace``), JPEG
masks (lossy), files of other types and the image files themselves are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import _store_files as sf
from ..imageio import SUPPORTED_SUFFIXES, read_image
from ._records import ImageRecord, ProjectError

if TYPE_CHECKING:  # pragma: no cover
    from ._catalog import ImageCatalog
    from ._labels import LabelStore
    from ._settings import Settings
    from ._store import _Store

__all__ = ["IMPORTED", "MASK_SUFFIXES", "ImportItem", "ImportReport", "MaskImport"]

#: The ``strategy`` of an imported submission (its provenance).
IMPORTED = "imported"
#: Endings of a mask's file stem that name the image before them (Cellpose's first).
MASK_SUFFIXES = ("_cp_masks", "_masks", "_mask", "_labels", "_label", "_seg")


@dataclass(frozen=True)
class ImportItem:
    """What happened to one file of the mask folder.

    ``action`` is ``"imported"`` (a class map as is), ``"converted"`` (``detail`` says from
    what) or ``"skipped"`` (``detail`` says why); ``image`` is the matched image's name.
    """

    mask: str
    image: str | None
    action: str
    detail: str = ""
    image_id: int | None = None

    def __str__(self) -> str:
        target = f" -> {self.image}" if self.image else ""
        what = self.action + (f" ({self.detail})" if self.detail else "")
        return f"{self.mask}{target}: {what}"


@dataclass
class ImportReport:
    """The outcome of :meth:`MaskImport.import_masks`, one :class:`ImportItem` per file;
    ``str(report)`` is the printable report, :meth:`summary` its last line."""

    mask_dir: Path
    dry_run: bool = False
    items: list[ImportItem] = field(default_factory=list)

    @property
    def imported(self) -> list[ImportItem]:
        """The masks that became (or, in a dry run, would become) labels."""
        return [i for i in self.items if i.action != "skipped"]

    @property
    def converted(self) -> list[ImportItem]:
        return [i for i in self.items if i.action == "converted"]

    @property
    def skipped(self) -> list[ImportItem]:
        return [i for i in self.items if i.action == "skipped"]

    def summary(self) -> str:
        n, done = len(self.items), len(self.imported)
        verb = "Would import" if self.dry_run else "Imported"
        text = f"{verb} {done} of {n} mask file(s) from {self.mask_dir}"
        if self.converted:
            text += f" ({len(self.converted)} converted)"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped"
        return text + (" (dry run: nothing was written)." if self.dry_run else ".")

    def __str__(self) -> str:
        return "\n".join([*map(str, self.items), self.summary()])


class _Skip(Exception):
    """A mask that cannot be imported; the message says why and what to do."""


def _stem(name: str) -> str:
    return Path(name).stem.lower()


def _keys(mask_stem: str) -> list[str]:
    """The image stems a mask's (lower-case) stem can stand for, the exact one first."""
    keys = [mask_stem]
    for suffix in MASK_SUFFIXES:
        if mask_stem.endswith(suffix) and len(mask_stem) > len(suffix):
            keys.append(mask_stem[: -len(suffix)])
            break
    return keys


def match_masks(files: Sequence[Path], images: Sequence[ImageRecord]
                ) -> tuple[dict[Path, ImageRecord], dict[Path, str]]:
    """Pair mask files with images by name (module docstring): ``(matched, skipped with
    why)``; conflicts go to the skipped ones."""
    by_stem: dict[str, list[ImageRecord]] = {}
    for rec in images:
        by_stem.setdefault(_stem(rec.name), []).append(rec)
    matched: dict[Path, ImageRecord] = {}
    skipped: dict[Path, str] = {}
    for path in files:
        keys = _keys(path.stem.lower())
        found = next((by_stem[k] for k in keys if k in by_stem), [])
        if not found:
            names = " or ".join(repr(f"{k}.*") for k in keys)
            skipped[path] = (f"no image of the project is named {names}; a mask is matched by "
                             "the image's name, optionally followed by "
                             f"{', '.join(MASK_SUFFIXES)}")
        elif len(found) > 1:
            skipped[path] = ("matches several images (" + ", ".join(r.name for r in found)
                             + "); rename it after one of them, e.g. its folder and name")
        else:
            matched[path] = found[0]
    per_image: dict[int, list[Path]] = {}
    for path, rec in matched.items():
        per_image.setdefault(rec.id, []).append(path)
    for paths in per_image.values():
        if len(paths) > 1:
            for path in paths:
                others = ", ".join(p.name for p in paths if p != path)
                skipped[path] = (f"{matched.pop(path).name} is also matched by {others}; keep "
                                 "one of them in the folder")
    return matched, skipped


def convert_mask(mask: np.ndarray, n_classes: int) -> tuple[np.ndarray, str]:
    """A read mask as a class map of the project: ``(labels, what was converted or "")``.

    Raises :class:`_Skip` when it cannot be one (module docstring).
    """
    if mask.ndim == 3:
        if not (mask == mask[..., :1]).all():
            raise _Skip(f"it has {mask.shape[-1]} different channels (a colour image?); save "
                        "it as a single-channel class map")
        mask = mask[..., 0]
    if mask.dtype.kind == "f" and (not np.isfinite(mask).all() or (mask != np.round(mask)).any()):
        raise _Skip("it holds non-integer values (a probability map?); save a class map of "
                    "integers")
    values = np.unique(mask)
    if values[0] < 0:
        raise _Skip(f"it has negative values (min {values[0]:g}); classes are 0..{n_classes-1}")
    top = int(values[-1])
    if top < n_classes:
        return mask.astype(np.uint8 if top < 256 else np.uint16), ""
    if values[0] != 0:
        raise _Skip(f"it has no background (0) pixel and values up to {top}; if it is a "
                    "1-based class map (ilastik's Simple Segmentation), subtract 1 before "
                    "importing")
    n_objects = len(values) - 1
    if n_classes == 2:
        if n_objects == 1:
            what = f"binary 0/{top} mask -> class 1"
        else:
            what = f"{n_objects} instance ids (values up to {top}) -> class 1"
        return (mask > 0).astype(np.uint8), what
    raise _Skip(f"its values go up to {top} ({n_objects} distinct non-zero values) but the "
                f"project's {n_classes} classes are 0..{n_classes - 1}; instance id images "
                "are imported (every object as foreground) only into two-class projects; "
                "save a class map with the project's class indices")


class MaskImport:
    """Imports a folder of masks as submitted labels (see the module docstring)."""

    def __init__(self, store: _Store, settings: Settings, catalog: ImageCatalog,
                 labels: LabelStore) -> None:
        self._store = store
        self._settings = settings
        self._catalog = catalog
        self._labels = labels

    def import_masks(self, mask_dir: str | os.PathLike, *, replace: bool = False,
                     dry_run: bool = False) -> ImportReport:
        """Import the masks of a folder as whole-image submissions of the matched images.

        Parameters
        ----------
        mask_dir : path
            A folder of mask files (TIFF, PNG), named after the images (module docstring);
            sub-folders are not searched.
        replace : bool, optional
            Overwrite an image's existing labels (and discard its draft). By default such an
            image is skipped and its files are left untouched.
        dry_run : bool, optional
            Match, read and convert, but write nothing (also works on a read-only project).

        Returns
        -------
        ImportReport
            What was imported, converted and skipped, and why. Each import is its own atomic
            submission with ``strategy="imported"``; a failure on one mask skips it only.

        Raises
        ------
        ProjectError
            If the folder does not exist or holds no file, or (not a dry run) the project is
            read-only.
        """
        folder = Path(mask_dir).expanduser()
        if not folder.is_dir():
            raise ProjectError(f"Mask folder {str(folder)!r} does not exist or is not a "
                               "folder; choose the folder that holds the mask files.")
        if not dry_run:
            self._store.check_writable()
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ProjectError(f"Mask folder {str(folder)!r} holds no file; choose the folder "
                               "that holds the mask files.")
        report = ImportReport(folder, dry_run=dry_run)
        readable = [p for p in files if p.suffix.lower() in SUPPORTED_SUFFIXES]
        with self._store.lock:
            matched, skipped = match_masks(readable, self._catalog.images())
            labelled = set(self._labels.labelled_ids())
            for path in files:
                if path in matched:
                    rec = matched[path]
                    item = self._import_one(path, rec, rec.id in labelled, replace, dry_run)
                else:
                    why = skipped.get(path) or _unsupported(path)
                    item = ImportItem(path.name, None, "skipped", why)
                report.items.append(item)
        return report

    def _import_one(self, path: Path, rec: ImageRecord, labelled: bool, replace: bool,
                    dry_run: bool) -> ImportItem:
        try:
            if not replace and labelled:
                raise _Skip("the image already has labels; import with replace (--replace) "
                            "to overwrite them")
            if not replace and self._labels.draft_file(rec.key).exists():
                raise _Skip("the image has an unsubmitted draft; submit or discard it, or "
                            "import with replace (--replace)")
            if path.suffix.lower() in (".jpg", ".jpeg"):
                raise _Skip("JPEG is lossy, so the mask's edges hold stray values; save masks "
                            "as PNG or TIFF")
            if _is_image_file(path, rec):
                raise _Skip("it is the image itself; choose the folder of masks")
            try:
                mask = read_image(path)
            except ValueError as err:
                raise _Skip(str(err)) from None
            if mask.shape[:2] != rec.shape[:2]:
                raise _Skip(f"the mask is {_hw(mask.shape)} but the image is {_hw(rec.shape)}; "
                            "export the mask at the image's size")
            labels, converted = convert_mask(mask, self._settings.n_classes)
            if not dry_run:
                try:
                    self._labels.submit(rec.id, labels, strategy=IMPORTED)
                except (ValueError, OSError) as err:
                    raise _Skip(f"could not save it: {err}") from None
        except _Skip as why:
            return ImportItem(path.name, rec.name, "skipped", str(why), rec.id)
        action = "converted" if converted else "imported"
        return ImportItem(path.name, rec.name, action, converted, rec.id)


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[0]} x {shape[1]} pixels"


def _is_image_file(path: Path, rec: ImageRecord) -> bool:
    """Whether a mask file is in fact the image (the folder of images chosen by mistake)."""
    if path.resolve() == rec.path.resolve():
        return True
    return path.stat().st_size == rec.size and sf.sha256_file(path) == rec.sha256


def _unsupported(path: Path) -> str:
    hint = (" (Cellpose's _seg.npy: save the masks as PNG or TIFF instead)"
            if path.suffix.lower() == ".npy" else "")
    return (f"not a mask file of a supported type ({', '.join(SUPPORTED_SUFFIXES)}){hint}")
