"""From an image and a model to the candidates a strategy needs: one function for the session,
the benchmark and scripts, driven only by :attr:`QueryStrategy.requirements`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
from torch import nn

from .. import uncertainty as unc
from ..config import InferenceConfig
from ..inference import Prediction, RowBand, TileProgress, predict, predict_rows
from ..largeimage import Overview
from .base import QueryStrategy
from .datatypes import Candidate
from .embeddings import gradient_embedding, image_descriptor
from .regions import correction_cost, region_boxes, region_candidates, region_key

__all__ = ["build_candidates", "check_streamable", "onehot_probs", "stream_candidates"]

#: Window side a large image is scored by when whole images are suggested.
WHOLE_IMAGE_WINDOW = 256


def onehot_probs(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(H, W)`` class map -> ``(K, H, W)`` float32 one-hot "probabilities" (for labelled
    candidates of strategies that read ``probs``, e.g. task_similarity)."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {lab.shape}.")
    if lab.size and int(lab.max()) >= n_classes:
        raise ValueError(f"labels contain class {int(lab.max())} >= n_classes={n_classes}.")
    return (np.arange(n_classes)[:, None, None] == lab[None]).astype(np.float32)


def build_candidates(
    strategy: QueryStrategy,
    image_id: str,
    image: np.ndarray,
    model: nn.Module,
    *,
    committee: Sequence[nn.Module] | None = None,
    prediction: Prediction | None = None,
    inference_config: InferenceConfig | None = None,
    region_size: int | None = None,
    region_stride: int | None = None,
    min_region_size: int = 64,
    labelled: bool = False,
    labels: np.ndarray | None = None,
) -> list[Candidate]:
    """Everything ``strategy`` needs for one image, as one candidate or one per region.

    Parameters
    ----------
    strategy : QueryStrategy
    image_id : str
    image : (C, H, W) float32 ndarray
        Normalised image.
    model : UNet
        The current model (descriptors and gradient embeddings come from it).
    committee : sequence of UNet, optional
        Required when ``strategy.prediction_mode == "ensemble"``.
    prediction : Prediction, optional
        Reuse an existing prediction (it must hold ``strategy.required_maps``).
    inference_config : InferenceConfig, optional
    region_size : int, optional
        Cut the image into windows of this size (:func:`.regions.region_candidates`).
    labelled : bool
        Build a labelled candidate (context for coreset / task_similarity).
    labels : (H, W) int ndarray, optional
        For a labelled candidate: its reviewed labels become its ``probs`` (one-hot).

    Returns
    -------
    list of Candidate
    """
    req = strategy.requirements
    img = np.asarray(image, np.float32)
    if img.ndim == 2:
        img = img[None]
    if prediction is None or any(m not in prediction.uncertainty for m in req["maps"]):
        mode = req["mode"]
        if mode == "ensemble":
            if not committee:
                raise ValueError(f"Strategy {strategy.name!r} needs a committee of models "
                                 "(committee=[...]; see ensemble.bootstrap_indices).")
            target: nn.Module | Sequence[nn.Module] = list(committee)
        else:
            target = model
        prediction = predict(target, img, mode=mode, maps=req["maps"], config=inference_config)
    probs = prediction.probs
    if labels is not None:
        probs = onehot_probs(labels, probs.shape[0])
    maps = {m: prediction.uncertainty[m] for m in req["maps"]}
    embedding = None
    if req["gradients"]:
        # one pass gives both: the embedding (badge) and the per-pixel norm map (alges)
        embedding, maps["grad_norm"] = gradient_embedding(model, img)
    keep_image = req["images"]

    if region_size is None:
        return [Candidate(
            key=image_id, image_id=image_id, probs=probs, maps=maps,
            features=image_descriptor(model, img) if req["features"] else None,
            embedding=embedding, image=img if keep_image else None, labelled=labelled,
        )]
    regions = region_candidates(image_id, probs, maps, size=region_size, stride=region_stride,
                                min_size=min_region_size, image=img, labelled=labelled)
    for c in regions:
        crop = c.image
        if req["features"]:
            c.features = image_descriptor(model, crop)
        if req["gradients"]:
            c.embedding = gradient_embedding(model, crop)[0]
        if not keep_image:
            c.image = None
    return regions


#: Windows of a large image that keep their arrays for a strategy that needs them (images,
#: gradients): the most uncertain ones (mean entropy), as the queue's pre-filter would keep.
STREAM_KEEP = 64


def streamable(strategy: QueryStrategy) -> bool:
    """Whether ``strategy`` scores a window from what it is while predicted (its aggregated
    map, cost, features), so no window needs its arrays later."""
    req = strategy.requirements
    return not (req["images"] or req["gradients"])


def check_streamable(strategy: QueryStrategy, shape: tuple[int, ...]) -> None:
    """A ValueError unless ``strategy`` can score a large image as one whole-image candidate
    (:func:`stream_candidates` with ``region_size`` None)."""
    if not streamable(strategy):
        raise ValueError(
            f"Strategy {strategy.name!r} needs the image or gradients of a whole image, which "
            f"an image of {shape[-2]} x {shape[-1]} pixels (scored tile by tile, "
            "large_image_pixels) does not keep. Suggest boxes (regions) in it, choose a map or "
            "feature strategy (entropy, margin, bald, coreset, ...), or raise the project's "
            "'large_image_pixels' setting.")


def stream_candidates(
    strategy: QueryStrategy,
    image_id: str,
    source: Any,
    model: nn.Module,
    *,
    committee: Sequence[nn.Module] | None = None,
    inference_config: InferenceConfig | None = None,
    region_size: int | None = None,
    min_region_size: int = 64,
    stop: Callable[[], bool] | None = None,
) -> Generator[TileProgress, None, tuple[list[Candidate], Overview] | None]:
    """:func:`build_candidates` for an image too large to hold, predicted row by row.

    ``source`` gives the prepared rows (:class:`..largeimage.LazyPrepared`). Each window
    (:func:`.regions.region_boxes`; the whole image is covered) is scored as soon as its rows
    are final and keeps only its scores (``Candidate.scores``: the strategy's aggregated map,
    the correction cost) and features, which equal :func:`build_candidates`' on the same
    prediction; the rows are then dropped. With ``region_size`` None the image is one
    candidate scored by its best window of :data:`WHOLE_IMAGE_WINDOW` px (cost: their sum;
    features: their mean). Returns the candidates and the prediction's :class:`Overview`
    (None when ``stop`` ended it).
    """
    if region_size is None:
        check_streamable(strategy, tuple(source.shape))
    req = strategy.requirements
    keep = None if streamable(strategy) else _Kept(STREAM_KEEP, req["gradients"])
    target: Any = model
    if req["mode"] == "ensemble":
        if not committee:
            raise ValueError(f"Strategy {strategy.name!r} needs a committee of models.")
        target = list(committee)
    _, h, w = source.shape
    size = WHOLE_IMAGE_WINDOW if region_size is None else region_size
    boxes = region_boxes((h, w), size=size, min_size=min(min_region_size, size))
    spans = list(dict.fromkeys((b[0], b[2]) for b in boxes))
    windows: list[Candidate] = []
    overview: Overview | None = None
    held: list[RowBand] = []  # final rows not yet scored
    for item in predict_rows(target, source, mode=req["mode"], maps=req["maps"],
                             config=inference_config, stop=stop):
        if isinstance(item, TileProgress):
            yield item
            continue
        if overview is None:
            overview = Overview((h, w), item.probs.shape[0])
        shown = item.maps[req["maps"][0]] if req["maps"] else unc.entropy(item.probs)
        overview.add(item.y0, item.probs, shown)
        held.append(item)
        while spans and held and held[-1].y1 >= spans[0][1]:
            y0, y1 = spans.pop(0)
            probs, maps = _rows(held, y0, y1)
            windows += [_scored_window(strategy, model, source, image_id, b, probs, maps, keep)
                        for b in boxes if (b[0], b[2]) == (y0, y1)]
            nxt = spans[0][0] if spans else h
            held = [b for b in held if b.y1 > nxt]
    if spans or overview is None:  # stopped
        return None
    if region_size is not None:
        return (windows if keep is None else keep.merge(windows)), overview
    return [_whole(image_id, windows, strategy)], overview


def _rows(bands: list[RowBand], y0: int, y1: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows ``[y0, y1)`` of consecutive bands, joined."""
    parts = [(b, max(y0, b.y0) - b.y0, min(y1, b.y1) - b.y0) for b in bands
             if b.y1 > y0 and b.y0 < y1]
    probs = np.concatenate([b.probs[:, a:z] for b, a, z in parts], axis=1)
    maps = {n: np.concatenate([b.maps[n][a:z] for b, a, z in parts]) for n in bands[0].maps}
    return probs, maps


class _Kept:
    """The ``n`` most uncertain windows with their arrays (a strategy needs them)."""

    def __init__(self, n: int, gradients: bool) -> None:
        self.n, self.gradients = n, gradients
        self.full: list[tuple[float, int, Candidate]] = []

    def offer(self, c: Candidate, model: nn.Module, source: Any) -> None:
        score = c.scores["mean_entropy"]
        if len(self.full) >= self.n and score <= self.full[-1][0]:
            return
        y0, x0, y1, x1 = c.box
        c = Candidate(key=c.key, image_id=c.image_id, box=c.box, probs=c.probs.copy(),
                      maps={k: v.copy() for k, v in c.maps.items()}, scores=c.scores,
                      image=source.rows(y0, y1, x0, x1))
        if self.gradients:
            c.embedding, c.maps["grad_norm"] = gradient_embedding(model, c.image)
        self.full.append((score, len(self.full), c))
        self.full.sort(key=lambda t: (-t[0], t[1]))
        del self.full[self.n:]

    def merge(self, windows: list[Candidate]) -> list[Candidate]:
        """The windows in order, the kept ones with their arrays."""
        full = {c.key: c for _, _, c in self.full}
        return [full.get(c.key, c) for c in windows]


def _scored_window(strategy: QueryStrategy, model: nn.Module, source: Any, image_id: str,
                   box, probs: np.ndarray, maps: dict[str, np.ndarray],
                   keep: _Kept | None = None) -> Candidate:
    """A window's candidate with its scores computed from the rows, then without arrays
    (``keep`` may hold on to them, for a strategy that needs them)."""
    y0, x0, y1, x1 = box
    full = Candidate(key=region_key(image_id, box), image_id=image_id, box=box,
                     probs=probs[:, :, x0:x1], maps={n: m[:, x0:x1] for n, m in maps.items()})
    scores = {"mean_entropy": float(np.mean(unc.entropy(full.probs)))}
    full.scores = scores
    if keep is not None:
        keep.offer(full, model, source)
    if strategy.map_name is not None and strategy.map_name != "grad_norm":
        scores[strategy.map_name] = strategy.map_score(full)
    if strategy.cost_aware:
        scores["cost"] = correction_cost(full.probs, constant=strategy.cost_constant)
    features = image_descriptor(model, source.rows(y0, y1, x0, x1)) \
        if strategy.requirements["features"] else None
    return Candidate(key=full.key, image_id=image_id, box=box, features=features,
                     scores=scores)


def _whole(image_id: str, windows: list[Candidate], strategy: QueryStrategy) -> Candidate:
    area = np.array([(c.box[2] - c.box[0]) * (c.box[3] - c.box[1]) for c in windows], float)
    scores = {"mean_entropy": float(np.average([c.scores["mean_entropy"] for c in windows],
                                               weights=area))}
    if strategy.map_name in (windows[0].scores if windows else {}):
        scores[strategy.map_name] = max(c.scores[strategy.map_name] for c in windows)
    if windows and "cost" in windows[0].scores:
        scores["cost"] = float(sum(c.scores["cost"] for c in windows))
    feats = [c.features for c in windows if c.features is not None]
    return Candidate(key=image_id, image_id=image_id, scores=scores,
                     features=np.mean(feats, axis=0) if feats else None)
