"""From an image and a model to the candidates a strategy needs: one function for the session,
the benchmark and scripts, driven only by :attr:`QueryStrategy.requirements`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from ..config import InferenceConfig
from ..inference import Prediction, predict
from .base import QueryStrategy
from .datatypes import Candidate
from .embeddings import gradient_embedding, image_descriptor
from .regions import region_candidates

__all__ = ["build_candidates", "onehot_probs"]


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
