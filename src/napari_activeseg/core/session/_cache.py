"""The session's caches: prepared network inputs and predictions, each bounded in bytes.

Nothing here is durable (the project is): both are rebuilt on demand, and the session clears
the predictions when the model or the inference settings change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from ..config import ModelConfig
from ..inference import Prediction
from ..preprocess import prepare_image
from ..project import Project

CACHE_BYTES = 1 << 30  # per cache: prepared images, predictions


class LRU:
    """A small byte-bounded LRU cache of numpy-holding values."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

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

    def clear(self) -> None:
        """Forget the prepared images and the predictions."""
        self._images.clear()
        self._predictions.clear()
