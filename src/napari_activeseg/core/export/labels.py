"""Export of the submitted labels: one TIFF class map per image, partial-review masks, a CSV.

The files are what the project's ``labels/`` folder holds, under the image's key, so that Fiji or
napari opens them as they are; ``labels.csv`` says which image each file belongs to.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import serialize
from ..imageio import write_tiff
from ..project import Project
from .common import opened, output_folder

__all__ = ["export_labels"]


def export_labels(
    project: Project | str | os.PathLike, out_dir: str | os.PathLike
) -> list[Path]:
    """Write every submitted image's labels as TIFF class maps.

    Parameters
    ----------
    project : Project or path
        An open project, or a project folder (opened read-only).
    out_dir : path
        Created if missing. Receives ``<key>.tif`` per submitted image (``key`` is the
        file-name-safe name of the image, as in the project's ``labels/`` folder),
        ``reviewed/<key>.tif`` (0/1 uint8) for images where only part of the image was
        reviewed (absent = the whole image is ground truth), and ``labels.csv``: image id,
        name, key, source path, files, reviewed fraction.

    Returns
    -------
    paths : list of Path
        The files written (label maps, masks, then ``labels.csv``); empty (no CSV) when nothing
        was submitted yet.
    """
    with opened(project) as proj:
        out = output_folder(out_dir)
        written: list[Path] = []
        rows = []
        for image_id in proj.labelled_ids():
            rec = proj.get_image(image_id)
            loaded = proj.load_labels(image_id)
            if loaded is None:  # submitted row but files gone is raised by load_labels
                continue
            labels, reviewed = loaded
            path = write_tiff(out / f"{rec.key}.tif", labels)
            written.append(path)
            mask_path = None
            if reviewed is not None:
                (out / "reviewed").mkdir(exist_ok=True)
                mask_path = write_tiff(out / "reviewed" / f"{rec.key}.tif",
                                       reviewed.astype(np.uint8))
                written.append(mask_path)
            rows.append({
                "image_id": rec.id, "name": rec.name, "key": rec.key, "source": str(rec.path),
                "labels": path.name,
                "reviewed": "" if mask_path is None else f"reviewed/{mask_path.name}",
                "reviewed_fraction": 1.0 if reviewed is None else round(float(reviewed.mean()), 6),
                "height": labels.shape[0], "width": labels.shape[1], "dtype": str(labels.dtype),
            })  # fmt: skip
        if rows:
            serialize.write_csv(out / "labels.csv", list(rows[0]), rows)
            written.append(out / "labels.csv")
        return written
