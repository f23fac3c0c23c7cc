"""The records of the long exports: :class:`ExportProgress` while they run, :class:`ExportResult`
at the end.

:func:`~.predictions.export_predictions_iter` and :func:`~.folder.predict_folder_iter` yield
the first and return the second; the napari dock and the CLI show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ExportProgress", "ExportResult"]


@dataclass(frozen=True)
class ExportProgress:
    """Yielded by the long exports, after each batch of tiles and after each image.

    Attributes
    ----------
    done, total : int
        Images finished (written or failed) and images in the job.
    name : str
        The image being worked on (its project name, or its path relative to the input folder).
    kind : {"tiles", "image"}
        ``"tiles"``: progress inside one image (``tiles_done`` of ``tiles_total``);
        ``"image"``: the image is finished (``outputs`` written, or ``error``).
    outputs : tuple of Path
        Files written for this image.
    error : str or None
        Why the image was skipped (unreadable, wrong channel count, ...).
    seconds : float
        Wall time since the job started.
    """

    done: int
    total: int
    name: str
    kind: str = "image"
    outputs: tuple[Path, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    tiles_done: int = 0
    tiles_total: int = 0


@dataclass
class ExportResult:
    """What a long export returns.

    ``written`` maps each image to its files and ``failed`` lists ``(image, reason)``, an image
    being its key in the project (:func:`export_predictions_iter`) or its path relative to the
    input folder (:func:`predict_folder_iter`); ``manifest`` is the JSON record of the job.
    """

    out_dir: Path
    model_version: str | None
    written: dict[str, list[Path]] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    manifest: Path | None = None
    completed: bool = False

    @property
    def files(self) -> list[Path]:
        return [p for paths in self.written.values() for p in paths]
