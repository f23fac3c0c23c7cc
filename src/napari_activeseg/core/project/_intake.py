"""Adding images to the pool: files (referenced or copied), folders, in-memory arrays.

Each file is read once (to learn its shape and check it is an image) and hashed; each image
gets a ``<key>``: a file-name-safe, unique, never-reused name derived from its name, so that
``labels/`` can be opened next to the images in Fiji or napari. Files that cannot be read as
images are skipped with a warning (``Project.warnings``) by default, so one bad file does not
stop a folder import; ``skip_unreadable=False`` raises. The project's channel count is decided
by its first images; others are converted (gray <-> RGB) or refused. One batch is inserted in
one transaction; files copied before a failure are removed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .. import _store_files as sf
from .. import atomic
from ..axes import check_axes
from ..imageio import FOLDER_SUFFIXES, SUPPORTED_SUFFIXES, image_sources, list_images
from ..largeimage import large_threshold
from ..preprocess import channels_convertible, common_channel_count
from ..validation import check_image
from ._catalog import probe_file, relpath
from ._records import ImageRecord, ProjectError, check_text, stat_key
from ._store import BACKUPS_DIR, DRAFTS_DIR, IMAGES_DIR, LABELS_DIR, REVIEWED_DIR, SUBDIRS

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3

    from ._catalog import ImageCatalog
    from ._labels import LabelStore
    from ._settings import Settings
    from ._store import _Store

__all__ = ["AXES_SETTING", "ImageIntake", "check_arrays", "pool_items", "source_entries"]

# settings key of the channel count the project's model takes
_CHANNELS_SETTING = "channels"
#: settings key of the axes rule of the project's files (None: from each file's metadata)
AXES_SETTING = "axes"


def pool_items(
    name: str, data: npt.ArrayLike, *, rgb: bool = False, channels: bool = False
) -> dict[str, np.ndarray]:
    """The pool items of one image (a napari image layer): a 2D image (gray, or RGB when `rgb`)
    is one item; a 2D+t / 2D+z stack is one item per slice, named ``<name>_0000`` etc., or,
    with `channels`, a ``(C, H, W)`` stack is one multichannel item (channels last)."""
    data = np.asarray(data)
    spatial = data.ndim - (1 if rgb else 0)
    if spatial == 2:
        return {name: data}
    if channels and spatial == 3 and not rgb:
        return {name: np.moveaxis(data, 0, -1)}
    if spatial == 3:
        return {f"{name}_{i:04d}": data[i] for i in range(data.shape[0])}
    raise ProjectError(f"{name!r} has shape {data.shape}: only 2D images (gray or RGB) and "
                       "2D+t / 2D+z stacks can join a project.")


def check_arrays(
    arrays: Mapping[str, npt.ArrayLike], *, channel_axis: int | None
) -> dict[str, np.ndarray]:
    """Checked in-memory images ``{name: (H, W) or (H, W, C) array}`` (before anything runs);
    `channel_axis` is that of the 3D arrays (a 2D one is gray)."""
    if not isinstance(arrays, Mapping):
        raise ProjectError(
            "arrays must be a mapping of name -> image array (e.g. {layer.name: layer.data})."
        )
    out = {}
    for name, array in arrays.items():
        check_text(name, "array name", optional=False)
        axis = channel_axis if np.ndim(array) == 3 else None
        out[name] = check_image(array, name=name, channel_axis=axis)
    return out


def source_entries(
    folder: Path, source_folder: str | os.PathLike | None, pattern: str, recursive: bool,
    images: Iterable[str | os.PathLike] | None,
) -> list[tuple[Path, str]]:
    """``(path, name)`` of the images to add to a new project at `folder`: a source folder's
    (names relative to it, skipping the project's own files) and single files."""
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
    return entries


class ImageIntake:
    """Adds images to a project's catalog (see the module docstring)."""

    def __init__(self, store: _Store, catalog: ImageCatalog, settings: Settings,
                 labels: LabelStore) -> None:  # fmt: skip
        self._store = store
        self._catalog = catalog
        self._settings = settings
        self._labels = labels

    def add_images(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        copy: bool | None = None,
        channel_axis: int | None = None,
        axes: str | None = None,
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
        axes : str, optional
            The files' axes (``'CYX'``, ``'ZYX'``, ...; see :mod:`~napari_activeseg.core.axes`);
            defaults to the project's (the ``axes`` setting, else each file's metadata). Z and
            T planes and the series of an OME-TIFF become images of their own, saved as TIFFs
            under ``images/``.
        skip_unreadable : bool, optional
            Skip unreadable files with a warning in :attr:`warnings` (default) or raise.

        Returns
        -------
        records : list of ImageRecord
            The images added (or brought back), in order.
        """
        self._store.check_writable()
        entries = [(Path(p).expanduser(), Path(p).name) for p in paths]
        if copy is None:
            copy = bool(self._settings.get_setting("copy_images", False))
        axes = self._axes(axes, channel_axis)
        with self._store.lock:
            return self.add_files(entries, copy=copy, channel_axis=channel_axis, axes=axes,
                                  skip_unreadable=skip_unreadable)  # fmt: skip

    def add_folder(
        self,
        source_folder: str | os.PathLike,
        *,
        pattern: str = "*",
        recursive: bool = False,
        copy: bool | None = None,
        channel_axis: int | None = None,
        axes: str | None = None,
    ) -> list[ImageRecord]:
        """Add the images of a folder that are not in the project yet (a re-scan)."""
        self._store.check_writable()
        axes = self._axes(axes, channel_axis)
        src = Path(source_folder).expanduser().resolve()
        with self._store.lock:
            known = {r.path for r in self._catalog.images(include_removed=False)}
            entries = [
                (p, p.relative_to(src).as_posix())
                for p in list_images(src, pattern=pattern, recursive=recursive)
                if p not in known and not _is_project_file(p, self._store.folder)
            ]
            if copy is None:
                copy = bool(self._settings.get_setting("copy_images", False))
            return self.add_files(entries, copy=copy, channel_axis=channel_axis, axes=axes,
                                  skip_unreadable=True, quiet_duplicates=True)  # fmt: skip

    def _axes(self, axes: str | None, channel_axis: int | None) -> str | None:
        """The axes rule of a batch: the given one, else the project's (not with a
        channel_axis, which says how to read the files instead)."""
        if axes is not None or channel_axis is not None:
            return check_axes(axes)
        return check_axes(self._settings.get_setting(AXES_SETTING))

    def add_arrays(
        self, arrays: Mapping[str, npt.ArrayLike], *, channel_axis: int | None = None
    ) -> list[ImageRecord]:
        """Add in-memory images (e.g. napari layers: ``{layer.name: layer.data}``).

        They are saved as TIFF under ``images/`` (channels as separate pages), so the project
        does not depend on the session that made them.
        """
        self._store.check_writable()
        checked = check_arrays(arrays, channel_axis=channel_axis)
        with self._store.lock:
            return self.add_checked_arrays(checked)

    @property
    def channels(self) -> int | None:
        """The channel count the project's model takes (None before the first image).

        Set when the first images are added: the most common count among them (see
        :func:`~napari_activeseg.core.preprocess.match_channels` for the others); projects made
        before this was recorded take their first image's count.
        """
        saved = self._settings.get_setting(_CHANNELS_SETTING)
        if saved is not None:
            return int(saved)
        row = self._store.db.execute("SELECT shape FROM images ORDER BY id LIMIT 1").fetchone()
        return None if row is None else _n_channels(json.loads(row["shape"]))

    def _remember_channels(self, count: int | None) -> None:
        if count is not None and self._settings.get_setting(_CHANNELS_SETTING) is None:
            self._settings.set_setting(_CHANNELS_SETTING, int(count))

    def _taken_keys(self) -> set[str]:
        """Keys in use, plus the stems of any file in our folders: a stray label file must
        never become the labels of a new image that happens to get its name."""
        taken = {r[0].lower() for r in self._store.db.execute("SELECT key FROM images")}
        for sub in (IMAGES_DIR, LABELS_DIR, REVIEWED_DIR, DRAFTS_DIR):
            directory = self._store.folder / sub
            if directory.is_dir():
                taken.update(p.name.split(".")[0].lower() for p in directory.iterdir())
        return taken

    def _by_sha(self) -> dict[str, sqlite3.Row]:
        rows = self._store.db.execute(
            "SELECT * FROM images ORDER BY removed_at IS NULL, id").fetchall()  # fmt: skip
        return {r["sha256"]: r for r in rows}  # live rows win over removed ones

    def add_files(
        self,
        entries: Sequence[tuple[Path, str]],
        *,
        copy: bool,
        channel_axis: int | None,
        skip_unreadable: bool,
        axes: str | None = None,
        created: list[Path] | None = None,
        quiet_duplicates: bool = False,
    ) -> list[ImageRecord]:
        """Probe, (copy), and insert image files in one transaction; `created` collects the
        copies made (for a project being created, which removes them if it fails). A file of
        several images (Z/T planes, OME series, OME-Zarr) is split into arrays saved under
        ``images/`` (see :meth:`add_checked_arrays`)."""
        folder = self._store.folder
        problems: list[str] = []
        probed, split = [], {}
        large = large_threshold(self._settings)
        seen: set[str] = set()
        for path, name in entries:
            try:
                sources = image_sources(path, axes=axes, channel_axis=channel_axis)
                if len(sources) == 1 and sources[0].is_plain and path.is_file():
                    layout = sources[0].layout
                    axis = layout.channel_axis if axes is not None and layout else channel_axis
                    probed.append((name, *probe_file(path, axis, large), axis))
                    continue
                stem = _strip_suffix(name)
                for source in sources:
                    split.update((f"{stem}{suffix}", image) for suffix, image
                                 in source.items(channel_axis))  # fmt: skip
            except (ValueError, OSError) as err:
                if not skip_unreadable:
                    raise
                problems.append(f"Skipped {str(path)!r}: {err}")
        expected = self.channels
        if expected is None:
            expected = common_channel_count([_n_channels(item[5]) for item in probed]
                                            + [_n_channels(a.shape) for a in split.values()])
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
        for key, image in list(split.items()):
            n = _n_channels(image.shape)
            if not channels_convertible(n, expected):
                err = _channel_message(repr(key), n, expected)
                if not skip_unreadable:
                    raise ValueError(err)
                problems.append(f"Skipped {err}")
                del split[key]
        if split and not probed:
            self._store.note(problems, stacklevel=5)
            return self.add_checked_arrays(split, created, quiet=quiet_duplicates,
                                           expected=expected)  # fmt: skip
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
            for name, path, sha, size, mtime, shape, dtype, axis in probed:
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
                origin, stored, rel = "external", str(path), relpath(path, folder)
                if copy:
                    target = folder / IMAGES_DIR / f"{key}{path.suffix.lower()}"
                    if target.exists():
                        raise ProjectError(f"{str(target)!r} already exists; not overwriting it.")
                    copied_sha = atomic.atomic_copy(path, target)
                    copies.append(target)
                    if copied_sha != sha:
                        raise ProjectError(
                            f"{str(path)!r} changed while it was being copied; try again."
                        )
                    origin, stored = "copied", target.relative_to(folder).as_posix()
                    rel = stored
                    size, mtime = stat_key(target)  # type: ignore[misc]
                rows.append((key, name, stored, rel, sha, size, mtime, json.dumps(shape), dtype,
                             axis, now, origin))  # fmt: skip
            ids = self._insert_images(rows, revive)
        except BaseException:
            for target in copies:
                target.unlink(missing_ok=True)
            raise
        records = self._added(ids, copies, created, expected, problems)
        if split:
            records += self.add_checked_arrays(split, created, quiet=quiet_duplicates)
        return records

    def add_checked_arrays(
        self, arrays: Mapping[str, np.ndarray], created: list[Path] | None = None, *,
        quiet: bool = False, expected: int | None = None,
    ) -> list[ImageRecord]:
        """Save and insert arrays checked by :func:`check_arrays` (see :meth:`add_files`);
        `quiet` says nothing of duplicates (a re-scan), `expected` is the batch's channel
        count when the project has none yet."""
        folder = self._store.folder
        expected = self.channels or expected
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
                    if not quiet:
                        problems.append(f"Skipped array {name!r}: same content as an image "
                                        "already in the project.")  # fmt: skip
                    continue
                seen.add(sha)
                if old is not None:
                    revive.append((old, folder / old["path"]))
                    continue
                key = _make_key(name, taken)
                target = folder / IMAGES_DIR / f"{key}.tif"
                if target.exists():
                    raise ProjectError(f"{str(target)!r} already exists; not overwriting it.")
                atomic.atomic_write_bytes(target, data)
                written.append(target)
                size, mtime = stat_key(target)  # type: ignore[misc]
                stored = target.relative_to(folder).as_posix()
                rows.append((key, name, stored, stored, sha, size, mtime,
                             json.dumps(list(image.shape)), str(image.dtype), stored_axis, now,
                             "array"))  # fmt: skip
            ids = self._insert_images(rows, revive)
        except BaseException:
            for target in written:
                target.unlink(missing_ok=True)
            raise
        return self._added(ids, written, created, expected, notes + problems)

    def _added(self, ids: list[int], written: list[Path], created: list[Path] | None,
               channels: int | None, messages: list[str]) -> list[ImageRecord]:  # fmt: skip
        """The end of a batch: what was made, the project's channel count, the messages."""
        if created is not None:
            created.extend(written)
        if ids:
            self._remember_channels(channels)
        self._store.note(messages, stacklevel=6)  # the caller of Project.add_*
        return [self._catalog.get_image(i) for i in ids]

    def _insert_images(
        self, rows: list[tuple], revive: list[tuple[sqlite3.Row, Path]]
    ) -> list[int]:
        ids = []
        purged = []
        with self._store.transaction() as conn:
            for row in rows:
                cur = conn.execute(
                    "INSERT INTO images(key, name, path, rel_path, sha256, size, mtime_ns, shape, "
                    "dtype, channel_axis, added_at, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    row,
                )
                ids.append(int(cur.lastrowid))
            for old, path in revive:
                if old["origin"] == "external":
                    size, mtime = stat_key(path)  # type: ignore[misc]
                    conn.execute(
                        "UPDATE images SET path = ?, rel_path = ?, size = ?, mtime_ns = ? "
                        "WHERE id = ?",
                        (str(path), relpath(path, self._store.folder), size, mtime, old["id"]),
                    )
                conn.execute(
                    "UPDATE images SET removed_at = NULL, labels_purged = 0 WHERE id = ?",
                    (old["id"],),
                )
                if old["labels_purged"]:
                    purged.append(old["key"])
                ids.append(int(old["id"]))
        for key in purged:  # leftovers of a purge interrupted by a crash
            self._labels.unlink_image_files(key)
        return ids


# --------------------------------------------------------------------------- helpers


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


def _strip_suffix(name: str) -> str:
    """An image name without its file type (``a/b.ome.tif`` -> ``a/b``)."""
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", *SUPPORTED_SUFFIXES, *FOLDER_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _make_key(name: str, taken: set[str]) -> str:
    """A file-name-safe key from an image name, unique among `taken` (case-insensitively)."""
    stem = _strip_suffix(Path(name).name)
    # no dots: a key is the part of a file name before its first dot
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:80] or "image"
    key, n = stem, 1
    while key.lower() in taken:
        n += 1
        key = f"{stem}-{n}"
    taken.add(key.lower())
    return key


def _is_project_file(path: Path, folder: Path) -> bool:
    """Whether `path` is one of the project's own files (when the project sits inside the
    image folder, its labels must not be added as images)."""
    try:
        parts = path.relative_to(folder).parts
    except ValueError:
        return False
    return len(parts) > 1 and parts[0] in (*SUBDIRS, BACKUPS_DIR)
