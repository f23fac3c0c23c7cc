"""The records the session hands out: scoring progress, suggestions, views and round summaries.

Plain frozen (or simple) dataclasses, with no behaviour beyond a convenience property; every
other module of the session package builds or reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..inference import Prediction
from ..training import TrainResult


@dataclass(frozen=True)
class RegionView:
    """A box of a large image to correct (:meth:`ActiveLearningSession.region_view`): the
    image as a lazy pyramid and arrays of the box's size only.

    Attributes
    ----------
    image_id : int
    name : str
    levels : list of lazy (H, W) or (H, W, C) arrays
        Full resolution first (the file's own pyramid, or strided levels).
    box : (y0, x0, y1, x1)
    labels : (y1 - y0, x1 - x0) ndarray
        The prediction inside the box (zeros before the first model).
    uncertainty : (y1 - y0, x1 - x0) float32 ndarray or None
        Entropy inside the box.
    overview : (factor, uncertainty, labels) or None
        The whole image's prediction ``factor`` times smaller, from its last scoring.
    suggestions : tuple of Suggestion
        The suggestions this box answers (empty for a box opened by hand).
    """

    image_id: int
    name: str
    levels: list
    box: tuple[int, int, int, int]
    labels: np.ndarray
    uncertainty: np.ndarray | None
    overview: tuple[int, np.ndarray, np.ndarray] | None
    suggestions: tuple = ()

    @property
    def boxes(self) -> tuple[tuple[int, int, int, int], ...]:
        """The box to review, as :attr:`ImageView.boxes` has them."""
        return (self.box,)

    @property
    def suggestion(self):
        """The first suggestion answered, or None."""
        return self.suggestions[0] if self.suggestions else None


@dataclass(frozen=True)
class ScoreProgress:
    """Yielded by :meth:`ActiveLearningSession.score_pool` after each image."""

    done: int
    total: int
    image_id: int | None
    seconds: float
    message: str = ""


@dataclass(frozen=True)
class Suggestion:
    """A pick shown to the user: an image, or a box inside it, with its score and reason."""

    image_id: int
    box: tuple[int, int, int, int] | None
    score: float
    reason: str
    strategy: str
    rank: int
    suggestion_id: int | None = None
    model_version: str | None = None  # the model whose prediction it was picked from


@dataclass(frozen=True, eq=False)
class ImageView:
    """Everything needed to show one image for correction (:meth:`ActiveLearningSession.view`).

    Attributes
    ----------
    image_id : int
    name : str
    image : (H, W) or (H, W, C) ndarray
        The raw image, as stored.
    labels : (H, W) ndarray
        What the annotation layer starts from: the draft, else the ground truth inside the
        reviewed pixels and the current prediction elsewhere.
    prediction : Prediction or None
        None before the first model.
    reviewed : (H, W) bool ndarray or None
        Pixels already ground truth (submitted, or reviewed in the draft); None = all.
    pending : (H, W) bool ndarray or None
        Pixels reviewed in a draft of this correction, not submitted yet (they count when it
        is submitted).
    boxes : tuple of (y0, x0, y1, x1)
        The boxes to review now (from the suggestions).
    suggestions : tuple of Suggestion
        The suggestions this view answers (empty for an image opened by hand).
    """

    image_id: int
    name: str
    image: np.ndarray
    labels: np.ndarray
    prediction: Prediction | None
    reviewed: np.ndarray | None
    pending: np.ndarray | None
    boxes: tuple[tuple[int, int, int, int], ...]
    suggestions: tuple[Suggestion, ...] = ()

    @property
    def suggestion(self) -> Suggestion | None:
        """The first (best) suggestion answered, or None."""
        return self.suggestions[0] if self.suggestions else None


@dataclass
class RoundSummary:
    """What :meth:`ActiveLearningSession.train` returns.

    ``saved``: the round's model became a new version (``model_version``); a cancelled round,
    or one that lost to the current model on the held-back images (``kept_previous``: the
    current ``model_version`` stays), saves nothing. ``labelled_ids``: the images the round
    learnt from (its snapshot of the labelled set). ``held_back_dice`` / ``previous_dice``:
    the round's model and the model it would replace on the same held-back images, when the
    round was asked to judge (``publish_if_better``) and there were enough to hold back.
    """

    model_version: str | None
    result: TrainResult
    n_labelled: int
    n_pseudo: int = 0
    committee: int = 0
    saved: bool = True
    notes: list[str] = field(default_factory=list)
    labelled_ids: list[int] = field(default_factory=list)
    held_back_dice: float | None = None
    previous_dice: float | None = None
    kept_previous: bool = False
