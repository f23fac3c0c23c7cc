"""The active-learning loop: train -> predict -> score -> suggest -> submit.

:class:`ActiveLearningSession` owns a :class:`~.project.Project`, the current model and the
query strategy. The napari widgets and the CLI drive the loop only through it:

- :meth:`~ActiveLearningSession.train` and :meth:`~ActiveLearningSession.score_pool` are
  generators of small progress records (the GUI runs them in thread workers, the CLI in a
  progress bar); :meth:`~ActiveLearningSession.request_stop` ends either within one step;
- :meth:`~ActiveLearningSession.suggest`, :meth:`~ActiveLearningSession.submit`,
  :meth:`~ActiveLearningSession.skip` and :meth:`~ActiveLearningSession.predict` are quick calls.

Everything that must survive a crash (labels, models, rounds, scores, query history, settings)
goes to the project at once; the session itself holds only caches (prepared images,
predictions, candidates), which are rebuilt on demand.

Threading: one long job (training or scoring) at a time, in any thread; quick calls may run
concurrently from the GUI thread. The model is swapped in one assignment at the end of a
round, so a prediction never sees half-updated weights.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from psygnal import Signal

from .config import DEFAULT_STRATEGY, InferenceConfig, ModelConfig, TrainConfig
from .effort import correction_effort
from .inference import Prediction, predict
from .model import UNet
from .preprocess import prepare_image
from .progress import run_to_end
from .project import Project, ProjectError, ProjectWarning
from .review import compose_review
from .strategies import (
    Candidate,
    Pick,
    PseudoLabelConfig,
    QueryStrategy,
    StrategyContext,
    bootstrap_indices,
    build_candidates,
    get_strategy,
    make_pseudo_labels,
    pseudo_training_set,
)
from .strategies.regions import auto_region_size, region_boxes, region_key, reviewed_fraction
from .training import Trainer, TrainProgress, TrainResult

_CACHE_BYTES = 1 << 30  # per cache: prepared images, predictions


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
    """What :meth:`ActiveLearningSession.train` returns."""

    model_version: str | None
    result: TrainResult
    n_labelled: int
    n_pseudo: int = 0
    committee: int = 0
    saved: bool = True
    notes: list[str] = field(default_factory=list)


_FOCUS_CONFIDENCE = 0.8  # below this top-class probability a pixel counts as "unsure"
_MAX_REVIEWED = 0.5  # a window with this fraction of its pixels reviewed is not suggested


class _LRU:
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


def _nbytes(pred: Prediction) -> int:
    return pred.probs.nbytes + pred.labels.nbytes + sum(m.nbytes for m in pred.uncertainty.values())


class ActiveLearningSession:
    """The loop over one project.

    It announces what changes (psygnal signals, emitted in the thread that made the change;
    a GUI connects with ``thread="main"``): :attr:`image_submitted` (image id),
    :attr:`status_changed` (image id: suggested, skipped, submitted, draft),
    :attr:`model_changed` (the new version, or None when the model was reset),
    :attr:`scores_changed` (the pool's scores, or the strategy they belong to).

    Parameters
    ----------
    project : Project
        An open project (read-write for training and submitting).
    model_config, train_config, inference_config : optional
        Default: the ones saved in the project, else defaults sized for a CPU, with
        ``in_channels`` from the project's channel count (``Project.channels``) and
        ``n_classes`` from the project's classes.
        Given ones are saved to the project.
    strategy : str
        Registry name (:func:`~.strategies.available_strategies`); options via
        ``strategy_options``.
    pseudo_labels : PseudoLabelConfig or None
        CEAL pseudo-labels of confident unlabelled pixels in training (None = off).
    committee_size : int
        Members trained on bootstrap resamples for the ``ensemble`` strategy.
    seed : int
    """

    image_submitted = Signal(int)
    status_changed = Signal(int)
    model_changed = Signal(object)
    scores_changed = Signal()

    def __init__(
        self,
        project: Project,
        *,
        model_config: ModelConfig | None = None,
        train_config: TrainConfig | None = None,
        inference_config: InferenceConfig | None = None,
        strategy: str | None = None,
        strategy_options: dict[str, Any] | None = None,
        pseudo_labels: PseudoLabelConfig | None = None,
        committee_size: int = 3,
        seed: int = 0,
    ) -> None:
        self.project = project
        self.seed = int(seed)
        self.committee_size = int(committee_size)
        self.pseudo_config = pseudo_labels
        self._stop = threading.Event()
        self._job_lock = threading.Lock()
        self._images = _LRU(_CACHE_BYTES)
        self._predictions = _LRU(_CACHE_BYTES)
        self._candidates: dict[int, list[Candidate]] = {}
        self._candidates_key: tuple | None = None
        self._shown: dict[int, tuple[float, np.ndarray | None, int | None]] = {}
        self._trainer: Trainer | None = None
        self.committee: list[UNet] = []
        self._focus: dict[int, np.ndarray] = {}  # image id -> hard pixels (this process only)
        self._views: dict[int, ImageView] = {}  # the last view handed out per image

        self.model_config = model_config or self._saved(ModelConfig, "model_config") \
            or self._default_model_config()
        self.train_config = train_config or self._saved(TrainConfig, "train_config") \
            or TrainConfig()
        self.inference_config = inference_config or self._saved(
            InferenceConfig, "inference_config") or InferenceConfig()
        if self.model_config.n_classes != project.n_classes:
            raise ValueError(
                f"The model has n_classes={self.model_config.n_classes} but the project has "
                f"{project.n_classes} classes {project.classes}; use the same count."
            )
        saved_strategy = project.get_setting("strategy") or {}
        name = strategy or saved_strategy.get("name") or DEFAULT_STRATEGY
        options = strategy_options if strategy_options is not None else (
            saved_strategy.get("options", {}) if name == saved_strategy.get("name") else {})
        self.strategy: QueryStrategy = get_strategy(name, **options)
        self._strategy_spec = {"name": name, "options": dict(options)}

        self.model: UNet | None = None
        self.model_version: str | None = None
        if project.models():
            want = self.model_config

            def fits(cfg: ModelConfig) -> str | None:
                if cfg.in_channels != want.in_channels:
                    return (f"it takes {cfg.in_channels} input channel(s) but the images have "
                            f"{want.in_channels}")
                return None

            try:
                state, cfg, meta = project.load_model(fits=fits)
            except ProjectError as err:  # every version is damaged or foreign: start afresh
                warnings.warn(f"No saved model could be used ({err}); the next training "
                              "starts a new model.", ProjectWarning, stacklevel=2)
            else:
                self.model_config = cfg
                self.model = self._build(state)
                # not models()[-1]: a damaged or foreign latest version makes load_model fall
                # back to the newest one that fits
                self.model_version = meta["version"]
        if self.model_config.polarity == "pool":
            # decided now, once, from the project's images: later calls (predict_array on a
            # layer) need no project access, and every image shares the rule
            self.model_config = self.model_config.replace(
                polarity=self._default_model_config().polarity)
        if not project.read_only:
            self._save_settings()

    # ------------------------------------------------------------------ configuration
    def _saved(self, cls, key):
        data = self.project.get_setting(key)
        return cls.from_dict(data) if data else None

    def _default_model_config(self) -> ModelConfig:
        recs = self.project.images()
        if not recs:
            raise ValueError("The project has no image; add images before starting a session.")
        from .preprocess import decide_project_polarity

        # polarity is decided once, from a sample of the project's images, and saved as the
        # concrete rule ("invert"/"none"): every image of the project is prepared alike
        return ModelConfig(in_channels=self.project.channels, n_classes=self.project.n_classes,
                           polarity=decide_project_polarity(self.project))

    def _save_settings(self) -> None:
        self.project.set_setting("model_config", self.model_config.to_dict())
        self.project.set_setting("train_config", self.train_config.to_dict())
        self.project.set_setting("inference_config", self.inference_config.to_dict())
        self.project.set_setting("strategy", self._strategy_spec)

    def configure(
        self,
        *,
        model_config: ModelConfig | None = None,
        train_config: TrainConfig | None = None,
        inference_config: InferenceConfig | None = None,
    ) -> None:
        """Change settings (saved in the project). A new architecture starts a fresh model."""
        if model_config is not None and model_config != self.model_config:
            if model_config.n_classes != self.project.n_classes:
                raise ValueError(f"n_classes must stay {self.project.n_classes} (the project's "
                                 "classes).")
            arch_changed = any(getattr(model_config, f) != getattr(self.model_config, f) for f in
                               ("in_channels", "n_classes", "depth", "width", "polarity", "norm"))
            self.model_config = model_config
            if arch_changed:
                self.model, self.model_version, self.committee = None, None, []
                self._images.clear()
                self._invalidate_predictions()
                self.model_changed.emit(None)
        if train_config is not None:
            self.train_config = train_config
        if inference_config is not None:
            self.inference_config = inference_config
            self._invalidate_predictions()
        self._save_settings()

    def set_strategy(self, name: str, **options: Any) -> None:
        """Choose the query strategy by registry name (unknown names raise a ValueError)."""
        self.strategy = get_strategy(name, **options)
        self._strategy_spec = {"name": name, "options": dict(options)}
        self._candidates.clear()
        if not self.project.read_only:
            self.project.set_setting("strategy", self._strategy_spec)
        self.scores_changed.emit()

    def _build(self, state) -> UNet:
        model = UNet(self.model_config)
        model.load_state_dict(state)
        return model.eval()

    # ------------------------------------------------------------------ data access
    def prepared(self, image_id: int) -> np.ndarray:
        """The network input of an image: (C, H, W) float32, cached."""
        if self.model_config.polarity == "pool":
            # a configuration given with its polarity still to decide: decide it once for the
            # project, so that every image and the model trained on them share one rule
            self.model_config = self.model_config.replace(
                polarity=self._default_model_config().polarity)
        key = (image_id, self.model_config.polarity, self.model_config.polarity_margin)
        img = self._images.get(key)
        if img is None:
            raw = self.project.load_image(image_id)  # (H, W) or channels-last (H, W, C)
            try:
                img = prepare_image(raw, polarity=self.model_config.polarity,
                                    polarity_margin=self.model_config.polarity_margin,
                                    channel_axis=-1 if raw.ndim == 3 else None,
                                    channels=self.model_config.in_channels)
            except ValueError as exc:
                raise ValueError(f"Image {image_id}: {exc} Or remove it from the project "
                                 f"(project.remove_image({image_id})).") from exc
            self._images.put(key, img, img.nbytes)
        return img

    def _pool_ids(self) -> list[int]:
        """Images that may be suggested: not skipped, and not submitted whole (an image with
        reviewed boxes or scribbles only stays in the pool for its other windows)."""
        return [r.id for r in self.project.images()
                if r.status in ("unlabelled", "suggested", "in_progress") or r.partial]

    @property
    def region_size(self) -> int:
        """The side of suggested boxes: the project's ``region_size`` setting, else decided
        once from the pool's image shapes (:func:`~.strategies.regions.auto_region_size`)
        and saved in the project, so every later suggestion uses the same boxes."""
        size = self.project.get_setting("region_size")
        if size is None:
            shapes = [r.shape for r in self.project.images()]
            if not shapes:
                raise ValueError("The project has no image to size the boxes from.")
            size = auto_region_size(shapes)
            if not self.project.read_only:
                self.project.set_setting("region_size", int(size))
        return int(size)

    def annotation(self, image_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        """What to show for correcting an image, and which of it is already ground truth.

        Returns
        -------
        labels : (H, W) ndarray
            The image's draft if it has one; else its stored ground truth inside the reviewed
            pixels and the current model's prediction (zeros before the first model)
            everywhere else -- never last round's prediction that happened to be stored
            beside a box.
        reviewed : (H, W) bool ndarray or None
            The pixels already reviewed (all False for a new image); None = the whole image.
        """
        reviewed = self.project.reviewed_mask(image_id)
        draft = self.project.load_draft(image_id)
        if draft is not None:
            return draft, reviewed
        pred = self.predict(image_id)
        shape = self.project.get_image(image_id).shape[:2]
        shown = pred.labels.copy() if pred is not None else np.zeros(shape, np.uint8)
        if reviewed is None or reviewed.any():
            loaded = self.project.load_labels(image_id)
            if loaded is not None:
                truth = loaded[0]
                shown = truth.copy() if reviewed is None else np.where(
                    reviewed, truth, shown).astype(truth.dtype)
        return shown, reviewed

    def _labelled(self) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        out = []
        for image_id in self.project.labelled_ids():
            loaded = self.project.load_labels(image_id)
            if loaded is not None:
                out.append((image_id, loaded[0], loaded[1]))
        return out

    # ------------------------------------------------------------------ prediction
    def _invalidate_predictions(self) -> None:
        self._predictions.clear()
        self._candidates.clear()

    def predict(self, image_id: int, *, maps: Sequence[str] | None = None) -> Prediction | None:
        """The current model's prediction of a project image (cached), or None before the
        first model. ``maps`` defaults to the strategy's maps, or entropy."""
        if self.model is None:
            return None
        req = self.strategy.requirements
        mode = req["mode"] if maps is None else "single"
        maps = tuple(maps) if maps is not None else (tuple(req["maps"]) or ("entropy",))
        if mode == "ensemble" and not self.committee:
            mode, maps = "single", ("entropy",)
        key = (image_id, self.model_version, mode, maps)
        pred = self._predictions.get(key)
        if pred is None:
            target = self.committee if mode == "ensemble" else self.model
            pred = predict(target, self.prepared(image_id), mode=mode, maps=maps,
                           config=self.inference_config)
            self._predictions.put(key, pred, _nbytes(pred))
        return pred

    def predict_array(self, image: np.ndarray, *, channel_axis: int | None = None,
                      maps: Sequence[str] = ("entropy",), mode: str = "single") -> Prediction:
        """Predict any image (e.g. a napari layer) with the project's model."""
        if self.model is None:
            raise ValueError("No trained model yet: submit labels and train first.")
        if self.model_config.polarity == "pool":  # a model saved before its rule was decided
            self.model_config = self.model_config.replace(
                polarity=self._default_model_config().polarity)
        img = prepare_image(image, polarity=self.model_config.polarity,
                            polarity_margin=self.model_config.polarity_margin,
                            channel_axis=channel_axis, channels=self.model_config.in_channels)
        return predict(self.model, img, mode=mode, maps=maps, config=self.inference_config)

    # ------------------------------------------------------------------ long jobs
    def request_stop(self) -> None:
        """Stop the running training or scoring within one step (thread-safe)."""
        self._stop.set()
        trainer = self._trainer
        if trainer is not None:
            trainer.request_stop()

    def _begin_job(self, what: str) -> None:
        if not self._job_lock.acquire(blocking=False):
            raise RuntimeError(f"Cannot start {what}: another training or scoring job is "
                               "running; wait for it or cancel it.")
        self._stop.clear()

    def train(self, *, train_config: TrainConfig | None = None
              ) -> Generator[TrainProgress, None, RoundSummary | None]:
        """Fine-tune on everything submitted so far (warm start from the current model).

        Yields :class:`~.training.TrainProgress`; returns a :class:`RoundSummary` (None when
        cancelled before any step). The new model is saved in the project as a new version and
        becomes current; a cancelled round keeps the last good model and saves nothing.
        """
        self._begin_job("training")
        try:
            return (yield from self._train(train_config or self.train_config))
        finally:
            self._trainer = None
            self._job_lock.release()

    def _train(self, cfg: TrainConfig):
        t0 = time.perf_counter()
        labelled = self._labelled()
        if not labelled:
            raise ValueError("Nothing to train on yet: submit labels for at least one image.")
        if not self.project.read_only:
            self.project.set_setting("submissions_since_train", 0)
        images = [self.prepared(i) for i, _, _ in labelled]
        labels = [lab for _, lab, _ in labelled]
        reviewed = [rev for _, _, rev in labelled]
        n_pseudo = 0
        notes: list[str] = []
        round_no = len(self.project.rounds())
        if self.pseudo_config is not None and self.pseudo_config.enabled and self.model:
            done = {i for i, _, _ in labelled}
            n_filled = 0
            for n, (image_id, _, rev) in enumerate(labelled):
                if rev is None:
                    continue
                # the unreviewed pixels of a partly reviewed image: confident predictions fill
                # them in this round's arrays only; the reviewed pixels keep their truth and
                # nothing here reaches the project's labels
                pred = self.predict(image_id, maps=("entropy",))
                p = make_pseudo_labels(str(image_id), pred.probs, round_no, self.pseudo_config)
                if p is None:
                    continue
                extra = p.mask & ~rev
                if extra.any():
                    labels[n] = np.where(rev, labels[n], p.labels).astype(labels[n].dtype)
                    reviewed[n] = rev | extra
                    n_filled += 1
            if n_filled:
                notes.append(f"Confident predictions filled the unreviewed pixels of "
                             f"{n_filled} partly reviewed image(s).")
            pseudo = []
            for image_id in self._pool_ids():
                if image_id in done:
                    continue
                pred = self.predict(image_id, maps=("entropy",))
                p = make_pseudo_labels(str(image_id), pred.probs, round_no, self.pseudo_config)
                if p is not None:
                    pseudo.append(p)
            if pseudo:
                extra = pseudo_training_set(
                    pseudo, {p.image_id: self.prepared(int(p.image_id)) for p in pseudo},
                    reviewed_ids={str(i) for i in done},
                    max_images=self.pseudo_config.max_images)
                images += extra[0]
                labels += extra[1]
                reviewed += extra[2]
                n_pseudo = len(extra[0])
                notes.append(f"{n_pseudo} pseudo-labelled image(s) joined training.")
        init = None if self.model is None else self.model.state_dict()
        self._trainer = Trainer(self.model_config, cfg.replace(seed=cfg.seed + round_no))
        if self._stop.is_set():
            return None
        focus = [self._focus.get(i) for i, _, _ in labelled] + \
            [None] * (len(images) - len(labelled))  # pseudo-labelled images have none
        result: TrainResult = yield from self._trainer.fit(
            images, labels, reviewed, init_state=init, focus=focus)
        if result.stop_reason == "stop_requested":
            notes.append("Training cancelled: the last good model is kept.")
            return RoundSummary(self.model_version, result, len(labelled), n_pseudo,
                                saved=False, notes=notes)

        committee: list[UNet] = []
        if self.strategy.needs_ensemble or self.strategy.requirements["mode"] == "ensemble":
            member_cfg = cfg.replace(
                time_budget_s=None if cfg.time_budget_s is None
                else cfg.time_budget_s / self.committee_size,
                max_steps=None if cfg.max_steps is None
                else max(1, cfg.max_steps // self.committee_size))
            n_real = len(labelled)
            for m, idx in enumerate(bootstrap_indices(n_real, self.committee_size,
                                                      seed=self.seed + round_no)):
                if self._stop.is_set():
                    break
                self._trainer = Trainer(self.model_config, member_cfg.replace(seed=m + 1))
                res = yield from self._trainer.fit(
                    [images[i] for i in idx], [labels[i] for i in idx],
                    [reviewed[i] for i in idx], init_state=result.state_dict)
                committee.append(res.build_model())
            notes.append(f"Committee of {len(committee)} trained for the ensemble strategy.")

        meta = {
            "round": round_no,
            "labelled_ids": [i for i, _, _ in labelled],
            "n_pseudo": n_pseudo,
            "train_config": cfg.to_dict(),
            "steps": result.steps,
            "seconds": round(result.seconds, 2),
            "stop_reason": result.stop_reason,
            "best_val_dice": result.best_val_dice,
            "history": result.history[-200:],
        }
        version = self._install(
            result.state_dict, meta, cfg.seed + round_no, [i for i, _, _ in labelled],
            {"best_val_dice": result.best_val_dice, "final_loss":
             result.history[-1]["loss"] if result.history else None, "steps": result.steps},
            {"train_s": round(result.seconds, 2), "round_s": round(time.perf_counter() - t0, 2)},
            model=result.build_model())
        self.committee = committee
        return RoundSummary(version, result, len(labelled), n_pseudo, len(committee),
                            notes=notes)

    def _install(self, state_dict, meta, seed, labelled_ids, metrics, wall_times, *,
                 model: UNet | None = None) -> str:
        """Save weights as a new version + round and make them the current model."""
        version = self.project.save_model(state_dict, self.model_config, meta)
        self.project.record_round(version, self._strategy_spec["name"], seed, labelled_ids,
                                  metrics, wall_times)
        self.model = model if model is not None else self._build(state_dict)
        self.model_version = version
        self._invalidate_predictions()
        self.model_changed.emit(version)
        return version

    def adopt_model(self, state_dict: Mapping[str, Any], meta: Mapping[str, Any] | None = None,
                    ) -> str:
        """Make trained weights the current model, recorded as a round on the labelled set.

        For weights trained elsewhere on exactly these labels (the benchmark reuses the round 0
        that every strategy shares). The committee is cleared. Returns the new version.

        Raises
        ------
        ProjectError
            If the weights do not fit the session's model config (nothing is written).
        """
        self._begin_job("adopting a model")
        try:
            meta = dict(meta or {})
            labelled = sorted(self.project.labelled_ids())
            round_no = len(self.project.rounds())
            meta.setdefault("round", round_no)
            meta["labelled_ids"] = labelled
            meta["adopted"] = True
            metrics = {k: meta.get(k) for k in ("best_val_dice", "final_loss", "steps")}
            version = self._install(state_dict, meta, self.train_config.seed + round_no,
                                    labelled, metrics, {"train_s": meta.get("seconds", 0.0),
                                                        "round_s": 0.0})
            self.committee = []
            return version
        finally:
            self._job_lock.release()

    def score_pool(self, *, regions: bool = False, region_size: int | None = None
                   ) -> Generator[ScoreProgress, None, int]:
        """Predict and score every image not yet submitted whole; returns how many were scored.

        Only images without up-to-date candidates are recomputed (a new model or strategy
        invalidates them; a submission re-scores its image). ``regions``: one candidate per
        window of ``region_size`` (default :attr:`region_size`), windows mostly reviewed
        already left out. Scores go to the project.
        """
        region_size = self.region_size if region_size is None else int(region_size)
        self._begin_job("scoring")
        try:
            return (yield from self._score_pool(regions, region_size))
        finally:
            self._job_lock.release()

    def _cand_key(self, regions: bool, region_size: int) -> tuple:
        return (self.model_version, self._strategy_spec["name"],
                repr(sorted(self._strategy_spec["options"].items())), regions, region_size,
                len(self.committee))

    def _score_pool(self, regions: bool, region_size: int):
        key = self._cand_key(regions, region_size)
        if key != self._candidates_key:
            self._candidates.clear()
            self._candidates_key = key
        todo = [i for i in self._pool_ids() if i not in self._candidates]
        t0 = time.perf_counter()
        blind = not self.strategy.requirements["probs"]
        if self.model is None or blind:
            # before the first model there is nothing to be unsure about: random order; a
            # strategy that ignores the prediction (random) does not need the pool predicted
            for i in todo:
                self._candidates[i] = self._blind_candidates(i, regions, region_size)
            note = ("No model yet: suggestions are random until the first training."
                    if self.model is None else
                    f"{self._strategy_spec['name']!r} does not look at predictions: the pool "
                    "was not predicted.")
            yield ScoreProgress(len(todo), len(todo), None, time.perf_counter() - t0, note)
            return len(todo)
        total = len(todo)
        for n, image_id in enumerate(todo, 1):
            if self._stop.is_set():
                yield ScoreProgress(n - 1, total, None, time.perf_counter() - t0, "Cancelled.")
                return n - 1
            self._candidates[image_id] = self._build_candidates(image_id, regions, region_size)
            yield ScoreProgress(n, total, image_id, time.perf_counter() - t0)
        self._save_scores()
        return total

    def _blind_candidates(self, image_id: int, regions: bool, region_size: int
                          ) -> list[Candidate]:
        """Candidates without a prediction (no model yet, or a strategy that ignores it):
        the image, or its windows not yet mostly reviewed."""
        if not regions:
            return [Candidate(key=str(image_id), image_id=str(image_id), box=None, probs=None,
                              maps={})]
        shape = self.project.get_image(image_id).shape[:2]
        reviewed = self.project.reviewed_mask(image_id)
        return [Candidate(key=region_key(str(image_id), box), image_id=str(image_id), box=box,
                          probs=None, maps={})
                for box in region_boxes(shape, size=region_size)
                if reviewed_fraction(reviewed, box) < _MAX_REVIEWED]

    def _build_candidates(self, image_id: int, regions: bool, region_size: int,
                          labelled: bool = False, labels: np.ndarray | None = None):
        pred = None if labelled else self.predict(image_id)
        cands = build_candidates(
            self.strategy, str(image_id), self.prepared(image_id), self.model,
            committee=self.committee or None, prediction=pred,
            inference_config=self.inference_config,
            region_size=region_size if regions else None, labelled=labelled, labels=labels)
        if regions and not labelled:
            reviewed = self.project.reviewed_mask(image_id)
            # a window mostly reviewed already would teach little: only the others compete
            cands = [c for c in cands if reviewed_fraction(reviewed, c.box) < _MAX_REVIEWED]
        return cands

    def _labelled_candidates(self) -> list[Candidate]:
        req = self.strategy.requirements
        if not (req["labelled_set"] or req["images"]) or self.model is None:
            return []
        out = []
        for image_id, lab, _ in self._labelled():
            out += self._build_candidates(image_id, False, 0, labelled=True, labels=lab)
        return out

    def _context(self) -> StrategyContext:
        return StrategyContext(round=len(self.project.rounds()),
                               labelled=self._labelled_candidates(),
                               stop=self._stop.is_set)

    def _save_scores(self) -> None:
        cands = [c for cs in self._candidates.values() for c in cs]
        if not cands or self.project.read_only or self.model is None:
            return
        ctx = self._context()
        if ctx.rng is None:  # score() outside select() still needs the rng select() would set
            ctx = replace(ctx, rng=np.random.default_rng([self.strategy.seed, max(ctx.round, 0)]))
        scores = self.strategy.score(cands, ctx)
        best: dict[int, float] = {}
        for c, s in zip(cands, scores, strict=True):
            i = int(c.image_id)
            best[i] = max(best.get(i, -np.inf), float(s))
        name = self._strategy_spec["name"]
        self.project.save_scores([(i, name, self.model_version, s, None)
                                  for i, s in best.items()])
        self.scores_changed.emit()

    # ------------------------------------------------------------------ the user's side
    def suggest(self, k: int = 1, *, regions: bool = False, region_size: int | None = None,
                boxes_per_image: int = 1) -> list[Suggestion]:
        """The next k images (or regions) to annotate, recorded in the query history.

        Scores the pool first if needed (quick before the first model; the GUI runs
        :meth:`score_pool` in a worker beforehand so this returns at once).

        ``boxes_per_image`` (regions only): after the best window, up to that many windows of
        the *same* image, ranked by the strategy among that image's windows, so the user
        reviews several boxes in one go ("review 3 boxes in this image"). ``k`` is then the
        number of images (only the first is used).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        if int(boxes_per_image) != boxes_per_image or boxes_per_image < 1:
            raise ValueError(f"boxes_per_image must be an integer >= 1, got {boxes_per_image!r}.")
        region_size = self.region_size if region_size is None else int(region_size)
        if self._cand_key(regions, region_size) != self._candidates_key or \
                any(i not in self._candidates for i in self._pool_ids()):
            run_to_end(self.score_pool(regions=regions, region_size=region_size))
        pool = set(self._pool_ids())
        cands = [c for i, cs in self._candidates.items() if i in pool for c in cs]
        if not cands:
            return []
        if self.model is None:
            strategy = get_strategy("random", seed=self.seed)
            ctx = StrategyContext(round=len(self.project.rounds()))
            name = "random (no model yet)"
        else:
            strategy, ctx, name = self.strategy, self._context(), self._strategy_spec["name"]
        picks: list[Pick] = strategy.select(cands, 1 if boxes_per_image > 1 else k, ctx)
        if regions and boxes_per_image > 1 and picks:
            same = [c for c in cands if c.image_id == picks[0].image_id]
            more = strategy.select(same, min(boxes_per_image, len(same)), ctx)
            # the overall best window first, then the image's others in the strategy's order
            picks = [picks[0]] + [p for p in more if p.key != picks[0].key]
            picks = picks[:boxes_per_image]
        out = []
        for p in picks:
            image_id = int(p.image_id)
            sid = None
            if not self.project.read_only:
                sid = self.project.record_suggestion(image_id, name, self.model_version,
                                                     float(p.score), p.reason, box=p.box)
            out.append(Suggestion(image_id, p.box, float(p.score), p.reason, name, p.rank, sid,
                                  self.model_version))
        for image_id in dict.fromkeys(s.image_id for s in out):
            self.status_changed.emit(image_id)
        return out

    def mark_shown(self, image_id: int, pre_annotation: np.ndarray | None = None,
                   suggestion_id: int | None = None) -> None:
        """Remember when an image was shown and with which pre-annotation (effort + time)."""
        self._shown[image_id] = (time.monotonic(), None if pre_annotation is None
                                 else np.array(pre_annotation, copy=True), suggestion_id)

    def submit(self, image_id: int, labels: np.ndarray, reviewed: np.ndarray | None = None,
               *, suggestion_id: int | None = None, merge: bool = True) -> int:
        """Save corrected labels at once; returns the submission id.

        The time spent (since :meth:`mark_shown`) and the correction effort against the
        pre-annotation shown are recorded with it. A partial ``reviewed`` mask adds to what
        earlier submissions of the image reviewed (``merge=False`` replaces them; see
        :meth:`~.project.Project.submit`).
        """
        labels = np.asarray(labels)
        shown = self._shown.get(image_id)  # popped once saved: a retry still has it
        seconds = pre = None
        if shown is not None:
            seconds = time.monotonic() - shown[0]
            pre = shown[1]
            suggestion_id = suggestion_id if suggestion_id is not None else shown[2]
        if pre is not None and pre.shape != labels.shape:
            pre = None
        effort = correction_effort(pre, labels, reviewed)
        self._record_focus(image_id, pre, labels)
        sub = self.project.submit(
            image_id, labels, reviewed, seconds=seconds, pixels_changed=effort.pixels_changed,
            objects_added=effort.objects_added, objects_removed=effort.objects_removed,
            model_version=self.model_version, strategy=self._strategy_spec["name"],
            suggestion_id=suggestion_id, merge=merge)
        self._shown.pop(image_id, None)
        self._views.pop(image_id, None)
        self._candidates.pop(image_id, None)
        self.project.discard_draft(image_id)
        if not self.project.read_only:
            self.project.set_setting("submissions_since_train", self.submissions_since_train + 1)
        self.image_submitted.emit(image_id)
        self.status_changed.emit(image_id)
        return sub

    # ------------------------------------------------------------------ views and corrections
    def view(self, image_id: int, suggestions: Sequence[Suggestion] = ()) -> ImageView:
        """What to show for correcting an image (loads and predicts: call it off the GUI
        thread). ``suggestions``: the picks of this image being answered (their boxes are the
        boxes to review). The view is remembered for :meth:`review` and
        :meth:`submit_correction`, and marks the image as shown (time and effort)."""
        rec = self.project.get_image(image_id)
        raw = self.project.load_image(image_id)
        pred = self.predict(image_id) if self.model is not None else None
        labels, reviewed = self.annotation(image_id)
        pending = self.project.load_draft_reviewed(image_id)
        if pending is not None and reviewed is not None:
            reviewed = reviewed | pending
        suggestions = tuple(suggestions)
        boxes = tuple(tuple(int(v) for v in s.box) for s in suggestions if s.box is not None)
        first = suggestions[0] if suggestions else None
        view = ImageView(image_id, rec.name, raw, np.array(labels), pred, reviewed, pending,
                         boxes, suggestions)
        self._views[image_id] = view
        self.mark_shown(image_id, None if pred is None else pred.labels,
                        None if first is None else first.suggestion_id)
        return view

    def review(self, image_id: int, labels: np.ndarray, *, scribbles: np.ndarray | None = None,
               whole: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The labels and reviewed mask a correction of the last :meth:`view` amounts to:
        its boxes, the scribbles, the edited pixels and the draft's reviewed pixels -- or the
        whole image (:func:`~.review.compose_review`; ValueError when nothing was reviewed)."""
        view = self._views.get(image_id)
        return compose_review(
            labels, n_classes=self.project.n_classes,
            boxes=() if view is None else view.boxes, scribbles=scribbles,
            shown=None if view is None else view.labels,
            reviewed=None if view is None else view.pending, whole=whole)

    def submit_correction(self, image_id: int, labels: np.ndarray, *,
                          scribbles: np.ndarray | None = None, whole: bool = False) -> int:
        """Submit what the user reviewed in the last :meth:`view` of the image (see
        :meth:`review`); nothing is written when nothing was reviewed (ValueError)."""
        labels, reviewed = self.review(image_id, labels, scribbles=scribbles, whole=whole)
        return self.submit(image_id, labels, reviewed)

    def save_draft(self, image_id: int, labels: np.ndarray, *,
                   scribbles: np.ndarray | None = None) -> None:
        """Autosave a correction in progress with what it has reviewed so far."""
        try:
            labels, reviewed = self.review(image_id, labels, scribbles=scribbles)
        except ValueError:  # nothing reviewed yet, or a bad scribble: the labels alone
            reviewed = None
        self.project.save_draft(image_id, labels, reviewed)
        self.status_changed.emit(image_id)

    # ------------------------------------------------------------------ automatic training
    @property
    def submissions_since_train(self) -> int:
        """Submissions since the last training round started (kept in the project)."""
        return int(self.project.get_setting("submissions_since_train") or 0)

    @property
    def auto_train_every(self) -> int:
        """Train by itself after this many submissions (0 = only when asked); saved."""
        return int(self.project.get_setting("auto_train_every") or 0)

    @auto_train_every.setter
    def auto_train_every(self, n: int) -> None:
        if int(n) != n or n < 0:
            raise ValueError(f"auto_train_every must be an integer >= 0, got {n!r}.")
        self.project.set_setting("auto_train_every", int(n))

    @property
    def training_due(self) -> bool:
        """Whether enough was submitted since the last round for an automatic one."""
        n = self.auto_train_every
        return bool(n) and self.n_labelled > 0 and self.submissions_since_train >= n

    def _record_focus(self, image_id: int, pre: np.ndarray | None, labels: np.ndarray) -> None:
        """Remember the "hard" pixels of a submission for ``TrainConfig.focus_p``: where the
        pre-annotation was corrected, or the current model's (cached) confidence is low.
        Nothing is computed or kept while focus sampling is off (the default)."""
        if self.train_config.focus_p <= 0:
            self._focus.pop(image_id, None)
            return
        hard = None if pre is None else pre != labels
        cached = self._predictions.find(lambda key: key[0] == image_id
                                        and key[1] == self.model_version)
        if cached is not None and cached.probs.shape[1:] == labels.shape:
            unsure = cached.probs.max(0) < _FOCUS_CONFIDENCE
            hard = unsure if hard is None else hard | unsure
        if hard is None or not hard.any():
            self._focus.pop(image_id, None)
        else:
            self._focus[image_id] = hard

    def skip(self, image_id: int, *, suggestion_id: int | None = None) -> None:
        shown = self._shown.pop(image_id, None)
        if suggestion_id is None and shown is not None:
            suggestion_id = shown[2]
        self.project.skip(image_id, suggestion_id=suggestion_id)
        self._candidates.pop(image_id, None)
        self._views.pop(image_id, None)
        self.status_changed.emit(image_id)

    @property
    def n_labelled(self) -> int:
        return len(self.project.labelled_ids())
