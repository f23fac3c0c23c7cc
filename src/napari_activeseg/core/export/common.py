"""What every export does first: get hold of the project, the output folder and the model's rule.

- :func:`opened`: an open :class:`~napari_activeseg.core.project.Project` used as it is, or a
  project folder opened read-only for the duration (exports never change a project);
- :func:`output_folder`: the output folder, created, with a clear ``ValueError`` when it cannot be;
- :func:`decided_config`: a model's configuration with a concrete polarity, as a session uses it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..config import ModelConfig
from ..preprocess import decide_project_polarity
from ..project import Project, ProjectError

__all__ = ["decided_config", "opened", "output_folder"]


@contextlib.contextmanager
def opened(project: Project | str | os.PathLike) -> Iterator[Project]:
    """Use an open Project as it is, or open a folder read-only for the duration."""
    if isinstance(project, Project):
        if project.closed:
            raise ProjectError(f"Project {str(project.folder)!r} is closed; open it again.")
        yield project
        return
    proj = Project.open(project, read_only=True)
    try:
        yield proj
    finally:
        proj.close()


def output_folder(out_dir: str | os.PathLike) -> Path:
    """`out_dir` as a Path, created if missing; ``ValueError`` if it is a file or cannot be made."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output {str(out)!r} exists and is not a folder; pick a folder path.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"Cannot create output folder {str(out)!r}: {err}.") from err
    return out


def decided_config(cfg: ModelConfig, project: Project) -> ModelConfig:
    """``cfg`` with a concrete polarity: a model saved with "pool" still to decide (by a script;
    a session decides it before training) gets the project's rule, as a session would."""
    if cfg.polarity != "pool":
        return cfg
    return cfg.replace(polarity=decide_project_polarity(project))
