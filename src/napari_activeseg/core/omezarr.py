"""Reading a local OME-Zarr image (a ``*.zarr`` folder) lazily, with the ``ome-zarr`` package.

Only the full-resolution level of the first multiscale image is read, as a dask array whose
planes are loaded when indexed; the axes come from the OME metadata (``'czyx'`` ->
``'CZYX'``). ``ome-zarr`` is an optional dependency: ``pip install napari-activeseg[ome-zarr]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["ZARR_SUFFIX", "is_zarr", "open_ome_zarr"]

ZARR_SUFFIX = ".zarr"
_INSTALL = "pip install 'napari-activeseg[ome-zarr]'"


def is_zarr(path: Path) -> bool:
    """Whether `path` names a Zarr folder (by its suffix)."""
    return path.suffix.lower() == ZARR_SUFFIX


def open_ome_zarr(path: str | Path) -> tuple[Any, str]:
    """The full-resolution level of an OME-Zarr image, lazily, and its axes (e.g. ``'CZYX'``).

    Raises
    ------
    ValueError
        If ``ome-zarr`` is not installed (saying how to install it), the folder is missing, or
        it holds no OME-Zarr image.
    """
    path = Path(path)
    try:
        from ome_zarr.io import parse_url
        from ome_zarr.reader import Multiscales, Reader
    except ImportError as err:
        raise ValueError(
            f"Cannot read {str(path)!r}: OME-Zarr needs the optional 'ome-zarr' package "
            f"({err}). Install it with {_INSTALL}."
        ) from None
    if not path.is_dir():
        raise ValueError(f"Cannot read {str(path)!r}: no such OME-Zarr folder.")
    location = parse_url(str(path))
    if location is None:
        raise ValueError(f"Cannot read {str(path)!r}: not a Zarr folder (no .zattrs/zarr.json).")
    try:
        nodes = [n for n in Reader(location)() if n.load(Multiscales) is not None and n.data]
    except Exception as err:  # the reader raises many kinds on broken metadata
        raise ValueError(f"Cannot read {str(path)!r} as OME-Zarr: {err}.") from err
    if not nodes:
        raise ValueError(
            f"Cannot read {str(path)!r}: it holds no OME-Zarr multiscale image (only images "
            "are read, not plates or label groups)."
        )
    node = nodes[0]
    data = node.data[0]  # level 0: full resolution
    names = [a["name"] if isinstance(a, dict) else str(a) for a in node.metadata.get("axes", [])]
    if len(names) != data.ndim:  # OME-Zarr 0.1/0.2 had no axes: 5D TCZYX
        names = list("tczyx")[-data.ndim:]
    return data, "".join(n[:1] for n in names).upper()
