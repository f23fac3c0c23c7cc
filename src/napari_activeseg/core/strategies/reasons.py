"""The wording of the one-line reasons shown with each pick in the GUI.

Human names of the uncertainty maps (:data:`MAP_LABELS`), ranks in words (:func:`ordinal`),
numbers at three significant digits (:func:`format_number`) and the noun for a pool
(:func:`pool_noun`), shared by :meth:`.base.QueryStrategy.select` and the strategies that
write their own batch notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .datatypes import Candidate

__all__ = ["MAP_LABELS", "format_number", "ordinal", "pool_noun"]

#: Human names of the maps, for the reasons shown in the GUI.
MAP_LABELS = {
    "entropy": "entropy",
    "margin": "margin uncertainty",
    "least_confidence": "least confidence",
    "bald": "BALD",
    "variance": "MC-dropout variance",
    "expected_entropy": "expected entropy",
    "tta": "TTA disagreement",
    "ensemble": "committee disagreement",
    "tta_disagreement": "TTA disagreement",
    "ensemble_disagreement": "committee disagreement",
    "grad_norm": "gradient norm",
}


def ordinal(n: int) -> str:
    """Rank ``n`` (1-based) in a reason: ``"highest"``, ``"2nd-highest"``, ``"11th-highest"``."""
    if n == 1:
        return "highest"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}-highest"


def format_number(x: float) -> str:
    """A score, distance or cost in a reason: three significant digits (``0.412``, ``1.23e+03``)."""
    return f"{x:.3g}"


def pool_noun(pool: Sequence[Candidate]) -> str:
    """``"images"``, ``"regions"`` or, for a mixed pool, ``"candidates"``."""
    boxes = [c.box is not None for c in pool]
    if all(boxes):
        return "regions"
    if not any(boxes):
        return "images"
    return "candidates"
