"""napari's reader and writer contributions: a project folder opens the dock, a labels layer
saves as a TIFF.

- :func:`get_reader` (``readers`` in ``napari.yaml``, directories only): for a folder holding a
  project catalog, a reader that docks the ActiveSeg widget in the current viewer (or reuses
  the one already docked) and opens the project there. It adds no layer: it returns napari's
  null-layer sentinel ``[(None,)]``. Anything else gets None, so another reader can take it.
- :func:`write_labels_tiff` (``writers``, one ``labels`` layer, ``.tif`` / ``.tiff``): the
  layer's ids, checked as a class map (:func:`~.core.validation.check_labels`) and written
  atomically by :func:`~.core.imageio.write_tiff`.

napari and the dock are imported inside the functions: napari asks :func:`get_reader` about
every folder it opens.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DOCK_NAME", "PLUGIN", "get_reader", "read_project", "write_labels_tiff"]

PLUGIN = "napari-activeseg"
#: The dock's display name in ``napari.yaml`` (``widgets``)
DOCK_NAME = "Active learning"


def _project_folder(path: Any) -> Path | None:
    """The folder, if ``path`` is one project folder (a folder with the catalog in it)."""
    from .core.project import DB_NAME

    if not isinstance(path, (str, os.PathLike)):  # a list: napari's stack of paths
        return None
    folder = Path(path).expanduser()
    return folder.resolve() if (folder / DB_NAME).is_file() else None


def get_reader(path: str | list[str]) -> Callable[[Any], list[tuple]] | None:
    """napari's ``get_reader``: :func:`read_project` for a project folder, None otherwise."""
    return read_project if _project_folder(path) is not None else None


def read_project(path: str | os.PathLike) -> list[tuple]:
    """Dock the ActiveSeg widget in the current viewer and open the project ``path`` in it.

    A dock already docked is reused; the project it already has open is left as it is. A
    project that cannot be opened (open read-write elsewhere, too new, unreadable) is a napari
    error notification from the dock, which keeps what it had open. No layer is added: the
    result is napari's null-layer sentinel ``[(None,)]``.
    """
    import napari

    from ._widgets._common import notify

    folder = _project_folder(path)
    viewer = napari.current_viewer()
    if folder is None or viewer is None:
        notify("error", f"Cannot open {str(path)!r} as a napari-activeseg project: "
                        + ("no napari window is open." if folder is not None
                           else "it is not a project folder."))
        return [(None,)]
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, DOCK_NAME)
    if dock.session is None or dock.session.project.folder != folder:
        dock.open_project(folder)
    return [(None,)]


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """napari's single-layer writer for a labels layer: a TIFF of its class map.

    The values are kept and the file is uint8, or uint16 above 255 (what the project's label
    files are); 2D layers and stacks (one page per plane) are written atomically.

    Raises
    ------
    ValueError
        On a multiscale layer, non-integer, negative or above-65535 ids, a bad suffix or a
        missing folder; nothing is written then.
    """
    import numpy as np
    import tifffile

    from .core.atomic import atomic_path
    from .core.imageio import write_tiff
    from .core.validation import check_labels

    name = str(meta.get("name") or "labels")
    if meta.get("multiscale"):
        raise ValueError(f"Cannot write {name!r}: it is a multiscale labels layer; save its "
                         "full-resolution level (layer.data[0]) as a new labels layer first.")
    array = np.asarray(data)
    if array.ndim < 2:
        raise ValueError(f"Cannot write {name!r}: a labels layer of shape {array.shape} is not "
                         "an image; it needs at least two dimensions.")
    # the class-map checks, on a stack's planes laid side by side
    checked = check_labels(array.reshape(-1, array.shape[-1]), name=name).reshape(array.shape)
    if checked.ndim == 2:
        return [str(write_tiff(path, checked))]
    # a stack: one grey page per plane (tifffile's default would take 3 or 4 planes for RGB)
    if Path(path).suffix.lower() not in (".tif", ".tiff") or not Path(path).parent.is_dir():
        raise ValueError(f"Cannot write {str(path)!r}: give a .tif or .tiff path in a folder "
                         "that exists.")
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, checked, compression="zlib", photometric="minisblack")
    return [str(path)]
