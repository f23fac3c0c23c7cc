"""The session's caches: prepared network inputs and predictions, each bounded in bytes.

Nothing here is durable (the project is): both are rebuilt on demand, and the session clears
the predictions when the model or the inference settings change. An image larger than the
project's ``large_image_pixels`` is never prepared or predicted whole: the cache holds its lazy
source (:class:`~..largeimage.LazyPrepared`, a few statistics) and the display-resolution
:class:`~..largeimage.Overview` of its prediction; :meth:`PredictionCache.holdings` says what
is held.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import InferenceConfig, ModelConfig
from ..inference import Prediction, predict
from ..largeimage import LazyPrepared, Overview, display_levels, is_large, large_threshold
from ..preprocess import prepare_image
from ..project import Project
from ._records import RegionView

CACHE_BYTES = 1 << 30  # per cache: prepared images, predictions
REGION_CONTEXT = 64  # px of context around a large image's box when it is predicted


class LRU:
    """A small byte-bounded LRU cache of numpy-holding values."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def items(self) -> list[tuple[Any, Any]]:
        """``(key, value)`` of every entry, least recently used first."""
        with self._lock:
            return [(k, v) for k, (v, _) in self._data.items()]

    def find(self, match):
        """The most recently used value whose key satisfies ``match(key)``, or None."""
        with self._lock:
            for key in reversed(self._data):
                if match(key):
                    return self._data[key][0]
        return None

    def get(self, key):
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key][0]

    def put(self, key, value, nbytes: int) -> None:
        with self._lock:
            if key in self._data:
                self._bytes -= self._data.pop(key)[1]
            self._data[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes and len(self._data) > 1:
                _, (_, n) = self._data.popitem(last=False)
                self._bytes -= n

    def drop(self, pred) -> None:
        with self._lock:
            for key in [k for k in self._data if pred(k)]:
                self._bytes -= self._data.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


def prediction_nbytes(pred: Prediction) -> int:
    """The memory a prediction holds: probabilities, labels and uncertainty maps."""
    return pred.probs.nbytes + pred.labels.nbytes + sum(m.nbytes for m in pred.uncertainty.values())


class PredictionCache:
    """Prepared images keyed by (image id, polarity rule, margin), and predictions keyed by
    (image id, model version, mode, maps)."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self._images = LRU(max_bytes)
        self._predictions = LRU(max_bytes)
        self._sources = LRU(64)  # lazy sources of large images: count-bounded (nbytes 1)
        self._overviews = LRU(max_bytes)

    def is_large(self, project: Project, image_id: int) -> bool:
        """Whether an image is over the project's ``large_image_pixels``: read lazily, scored
        tile by tile (:meth:`source`), never prepared or predicted whole."""
        return is_large(project.get_image(image_id).shape, large_threshold(project))

    def source(self, project: Project, image_id: int, config: ModelConfig) -> LazyPrepared:
        """The lazy network input of a large image under ``config``'s polarity rule."""
        key = (image_id, config.polarity, config.polarity_margin, config.in_channels)
        src = self._sources.get(key)
        if src is None:
            src = LazyPrepared(project.open_lazy(image_id), polarity=config.polarity,
                               polarity_margin=config.polarity_margin,
                               channels=config.in_channels)
            self._sources.put(key, src, 1)
        return src

    def keep_overview(self, image_id: int, model_version: str | None,
                      overview: Overview) -> None:
        """Remember a large image's prediction at display resolution."""
        unc, labels = overview.result()
        self._overviews.put((image_id, model_version), (overview.factor, unc, labels),
                            unc.nbytes + labels.nbytes)

    def overview(self, image_id: int, model_version: str | None
                 ) -> tuple[int, np.ndarray, np.ndarray] | None:
        """``(factor, uncertainty, labels)`` of a large image's last scoring by that model,
        downsampled ``factor`` times, or None."""
        return self._overviews.get((image_id, model_version))

    def region_view(self, project: Project, image_id: int, box: tuple[int, int, int, int],
                    config: ModelConfig, model: Any, inference: InferenceConfig,
                    model_version: str | None) -> RegionView:
        """See :meth:`ActiveLearningSession.region_view`: the box is predicted with a margin
        of :data:`REGION_CONTEXT` px of context on each side."""
        rec = project.get_image(image_id)
        h, w = rec.shape[:2]
        y0, x0, y1, x1 = (int(v) for v in box)
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(f"Box {box} is not inside image {image_id} of {h} x {w} pixels.")
        labels = np.zeros((y1 - y0, x1 - x0), np.uint8)
        unc = None
        if model is not None:
            m = REGION_CONTEXT
            cy0, cx0, cy1, cx1 = max(0, y0 - m), max(0, x0 - m), min(h, y1 + m), min(w, x1 + m)
            crop = self.source(project, image_id, config).rows(cy0, cy1, cx0, cx1)
            pred = predict(model, crop, maps=("entropy",), config=inference)
            inner = (slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0))
            labels, unc = pred.labels[inner].copy(), pred.uncertainty["entropy"][inner].copy()
        project.open_lazy(image_id)  # the file is still the one added (else ProjectError)
        levels = display_levels(project.get_image(image_id).path, rec.channel_axis)
        return RegionView(image_id, rec.name, levels, (y0, x0, y1, x1), labels, unc,
                          self.overview(image_id, model_version))

    def holdings(self) -> list[dict[str, Any]]:
        """What the cache holds: one ``{"kind", "image_id", "shapes", "nbytes"}`` per entry
        (kinds ``prepared``, ``prediction``, ``overview``)."""
        out = []
        for kind, lru in (("prepared", self._images), ("prediction", self._predictions),
                          ("overview", self._overviews)):
            for key, value in lru.items():
                arrays = _arrays(value)
                out.append({"kind": kind, "image_id": key[0],
                            "shapes": [a.shape for a in arrays],
                            "nbytes": sum(a.nbytes for a in arrays)})
        return out

    def prepared(self, project: Project, image_id: int, config: ModelConfig) -> np.ndarray:
        """The network input of a project image under ``config``'s (decided) polarity rule:
        (C, H, W) float32, prepared on a miss."""
        key = (image_id, config.polarity, config.polarity_margin)
        img = self._images.get(key)
        if img is None:
            raw = project.load_image(image_id)  # (H, W) or channels-last (H, W, C)
            try:
                img = prepare_image(raw, polarity=config.polarity,
                                    polarity_margin=config.polarity_margin,
                                    channel_axis=-1 if raw.ndim == 3 else None,
                                    channels=config.in_channels)
            except ValueError as exc:
                raise ValueError(f"Image {image_id}: {exc} Or remove it from the project "
                                 f"(project.remove_image({image_id})).") from exc
            self._images.put(key, img, img.nbytes)
        return img

    def prediction(self, key: tuple, compute: Callable[[], Prediction]) -> Prediction:
        """The cached prediction under ``key``, else ``compute()``'s (then cached)."""
        pred = self._predictions.get(key)
        if pred is None:
            pred = compute()
            self._predictions.put(key, pred, prediction_nbytes(pred))
        return pred

    def latest(self, image_id: int, model_version: str | None) -> Prediction | None:
        """The most recently used prediction of an image by that model (any mode), or None."""
        return self._predictions.find(lambda key: key[0] == image_id and key[1] == model_version)

    def clear_predictions(self) -> None:
        self._predictions.clear()
        self._overviews.clear()

    def clear(self) -> None:
        """Forget the prepared images, the large images' sources and the predictions."""
        self._images.clear()
        self._sources.clear()
        self.clear_predictions()


def _arrays(value: Any) -> list[np.ndarray]:
    if isinstance(value, Prediction):
        return [value.probs, value.labels, *value.uncertainty.values()]
    if isinstance(value, tuple):
        return [v for v in value if isinstance(v, np.ndarray)]
    return [value]
