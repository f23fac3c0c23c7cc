"""Export of a project's provenance: how every label and model came to be.

The query history, the active-learning rounds with their models' training records, every
submission with its effort, and the project's classes, settings, images and models, as CSV/JSON.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from ... import __version__
from .. import _store_files as sf
from .. import serialize
from ..project import Project
from .common import opened, output_folder

__all__ = ["export_provenance"]

_SUBMISSION_COLUMNS = (
    "submission_id", "image_id", "image_name", "image_key", "created_at", "seconds",
    "pixels_changed", "objects_added", "objects_removed", "model_version", "strategy",
    "recovered", "labels_sha256", "reviewed_sha256",
)  # fmt: skip


def export_provenance(
    project: Project | str | os.PathLike, out_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write how every label and model came to be.

    Files in `out_dir`:

    - ``history.csv`` / ``history.json``: the query history (:meth:`Project.export_history`):
      what was suggested, by which model version and strategy, with which score, and what the
      user did at what effort;
    - ``rounds.json``: one entry per active-learning round (model version, strategy, seed,
      labelled image ids and names, metrics, wall times) with the model's training record
      (config, steps, stop reason, ...);
    - ``submissions.csv``: every submission with its time spent and correction effort
      (pixels changed, objects added/removed), model version and strategy;
    - ``project.json``: classes, colours, settings, images with status, model versions.

    Returns
    -------
    files : dict of str to Path
    """
    with opened(project) as proj:
        out = output_folder(out_dir)
        files = {"history_csv": proj.export_history(out / "history.csv"),
                 "history_json": proj.export_history(out / "history.json")}
        records = {r.id: r for r in proj.images(include_removed=True)}
        models = {m.version: m for m in proj.models()}

        def name_of(image_id: int) -> str | None:
            rec = records.get(image_id)
            return None if rec is None else rec.name

        rounds = []
        for r in proj.rounds():
            model = models.get(r.model_version or "")
            model_meta = None
            if model is not None:
                model_meta = {k: v for k, v in model.meta.items() if k != "history"}
                model_meta["model_config"] = model.model_config.to_dict()
                model_meta["created_at"] = model.created_at
            rounds.append({**asdict(r), "labelled_names": [name_of(i) for i in r.labelled_ids],
                           "n_labelled": len(r.labelled_ids), "model": model_meta})
        files["rounds"] = out / "rounds.json"
        serialize.write_json(files["rounds"], rounds)

        rows = []
        for s in proj.submissions():
            rec = records.get(s.image_id)
            rows.append({
                "submission_id": s.id, "image_id": s.image_id, "image_name": name_of(s.image_id),
                "image_key": None if rec is None else rec.key, "created_at": s.created_at,
                "seconds": s.seconds, "pixels_changed": s.pixels_changed,
                "objects_added": s.objects_added, "objects_removed": s.objects_removed,
                "model_version": s.model_version, "strategy": s.strategy,
                "recovered": int(s.recovered), "labels_sha256": s.labels_sha256,
                "reviewed_sha256": s.reviewed_sha256,
            })  # fmt: skip
        files["submissions"] = out / "submissions.csv"
        serialize.write_csv(files["submissions"], _SUBMISSION_COLUMNS, rows)

        files["project"] = out / "project.json"
        serialize.write_json(files["project"], {
            "napari_activeseg": __version__, "exported_at": sf.utc_now(),
            "project": str(proj.folder), "schema_version": proj.schema_version,
            "classes": proj.classes, "colors": proj.colors, "settings": proj.settings(),
            "images": [{"image_id": r.id, "name": r.name, "key": r.key, "path": str(r.path),
                        "sha256": r.sha256, "shape": list(r.shape), "dtype": r.dtype,
                        "status": r.status, "removed": r.removed, "origin": r.origin}
                       for r in records.values()],
            "models": [{"version": m.version, "created_at": m.created_at,
                        "model_config": m.model_config.to_dict()} for m in models.values()],
        })  # fmt: skip
        return files
