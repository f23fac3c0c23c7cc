"""The facade of the active-learning loop: :class:`ActiveLearningSession`.

:class:`SessionBase` owns the project, the configurations, the query strategy, the stop flag,
the signals and the saved settings; :class:`ActiveLearningSession` adds the loop's calls. Both
hand each job to a collaborator: training rounds and the current model
(:mod:`._training`), scoring the pool and suggesting (:mod:`._scoring`), the user's side of
an image (:mod:`._annotations`), the caches (:mod:`._cache`), the saved settings
(:mod:`._settings`) and the automatic-training counter (:mod:`._autotrain`).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import numpy as np
from psygnal import Signal

from ..cluster import check_scheduler
from ..config import InferenceConfig, ModelConfig, TrainConfig
from ..inference import Prediction, predict
from ..instances import InstancePrediction, predict_instances
from ..model import UNet
from ..preprocess import prepare_image
from ..progress import run_to_end
from ..project import Project
from ..strategies import PseudoLabelConfig, QueryStrategy, get_strategy
from ..training import TrainProgress
from . import _settings as settings
from ._annotations import Annotations
from ._autotrain import AutoTrainCounter
from ._cache import PredictionCache
from ._large import LargeImageCalls
from ._objects import ObjectsCalls
from ._records import ImageView, RoundSummary, ScoreProgress, Suggestion
from ._scoring import LargeImages, PoolScorer, ScoringInputs
from ._training import RoundRunner


class SessionBase:
    """What a session is made of and how it is set up: the project, the configurations, the
    query strategy, the signals, the collaborators that do the work, the current model, the
    job lock, and every setting the session saves in the project. The loop itself (predict,
    train, score, suggest, submit) is :class:`ActiveLearningSession`."""

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
        self._stop_count, self._stop_count_lock = 0, threading.Lock()
        self._job_lock = threading.Lock()
        self._cache = PredictionCache()
        self._rounds = RoundRunner(project, stop=self._stop,
                                   model_config=lambda: self.model_config,
                                   on_installed=self._installed)
        self._scoring = PoolScorer(project, stop=self._stop, on_saved=self.scores_changed.emit)
        self._desk = Annotations(project)
        self._auto = AutoTrainCounter(project)

        # a project's first session sizes the defaults for this machine's device (a GPU gets
        # a wider network and larger batches; a CPU the configurations' own defaults)
        self.model_config = model_config or settings.saved_config(
            project, ModelConfig, "model_config") or settings.for_device(
            settings.default_model_config(project))
        self.train_config = train_config or settings.saved_config(
            project, TrainConfig, "train_config") or settings.for_device(TrainConfig())
        self.inference_config = inference_config or settings.saved_config(
            project, InferenceConfig, "inference_config") or settings.for_device(
            InferenceConfig())
        if self.model_config.n_classes != project.n_classes:
            raise ValueError(
                f"The model has n_classes={self.model_config.n_classes} but the project has "
                f"{project.n_classes} classes {project.classes}; use the same count."
            )
        # the boundary outputs follow the project's class modes (core.instances)
        self.model_config = settings.with_object_classes(project, self.model_config)
        self._strategy_spec = settings.strategy_spec(project, strategy, strategy_options)
        self.strategy: QueryStrategy = get_strategy(self._strategy_spec["name"],
                                                    **self._strategy_spec["options"])
        self.model_config = self._rounds.load_saved() or self.model_config
        # decided now, once, from the project's images: later calls (predict_array on a layer)
        # need no project access, and every image shares the rule
        self.model_config = settings.decided(project, self.model_config)
        if not project.read_only:
            self._save_settings()

    # ------------------------------------------------------------------ the current model
    @property
    def model(self) -> UNet | None:
        """The current model (None before the first round)."""
        return self._rounds.model

    @property
    def model_version(self) -> str | None:
        return self._rounds.model_version

    @property
    def committee(self) -> list[UNet]:
        """The members trained for the ensemble strategy in the last round (else empty)."""
        return self._rounds.committee

    def _installed(self, version: str | None) -> None:
        self._invalidate_predictions()
        self.model_changed.emit(version)

    # ------------------------------------------------------------------ configuration
    def _save_settings(self) -> None:
        settings.save_settings(self.project, self.model_config, self.train_config,
                               self.inference_config, self._strategy_spec)

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
            arch_changed = settings.architecture_changed(self.model_config, model_config)
            self.model_config = model_config
            if arch_changed:
                self._rounds.reset()
                self._cache.clear()
                self._scoring.drop_queue()
                self.model_changed.emit(None)
        if train_config is not None:
            self.train_config = train_config
        if inference_config is not None:
            self.inference_config = inference_config
            self._invalidate_predictions()
        self._save_settings()

    def set_class_modes(self, modes: Mapping[str, str]) -> None:
        """Set which classes are "objects" (``{"nucleus": "objects"}``, the others "area"),
        saved in the project. When that changes the network's outputs (a boundary per
        object class), the next round starts a fresh model, as after :meth:`configure`."""
        self.project.set_class_modes(modes)
        self.configure(model_config=settings.with_object_classes(self.project,
                                                                 self.model_config))

    def set_strategy(self, name: str, **options: Any) -> None:
        """Choose the query strategy by registry name (unknown names raise a ValueError)."""
        self.strategy = get_strategy(name, **options)
        self._strategy_spec = {"name": name, "options": dict(options)}
        self._scoring.drop_queue()
        if not self.project.read_only:
            self.project.set_setting("strategy", self._strategy_spec)
        self.scores_changed.emit()

    @property
    def region_size(self) -> int:
        """The side of suggested boxes: the project's ``region_size`` setting, else decided
        once from the pool's image shapes (:func:`~.strategies.regions.auto_region_size`)
        and saved in the project, so every later suggestion uses the same boxes."""
        return settings.region_size(self.project)

    @property
    def scoring_budget_s(self) -> float:
        """Seconds a strategy's own ranking of the pool may take (beyond predicting it); a
        costlier one ranks only the most uncertain candidates (see :meth:`score_pool`)."""
        return self._scoring.budget_s

    @scoring_budget_s.setter
    def scoring_budget_s(self, seconds: float) -> None:
        self._scoring.budget_s = float(seconds)
        self._scoring.forget()

    @property
    def scheduler(self) -> Any:
        """Where pool scoring predicts the images: None (here), or a Dask scheduler address
        (``tcp://host:8786``, saved in the project) or ``distributed.Client``; one task per
        image, the same scores as here, the ranking always here."""
        return self._scoring.scheduler

    @scheduler.setter
    def scheduler(self, scheduler: Any) -> None:
        self._scoring.scheduler = check_scheduler(scheduler)
        if not self.project.read_only and (scheduler is None or isinstance(scheduler, str)):
            self.project.set_setting("scheduler", self._scoring.scheduler)

    def _invalidate_predictions(self) -> None:
        self._cache.clear_predictions()
        self._scoring.forget()

    def request_stop(self) -> None:
        """Stop the running training or scoring within one step (thread-safe)."""
        with self._stop_count_lock:
            self._stop_count += 1
        self._stop.set()
        self._rounds.request_stop()

    @property
    def stop_requests(self) -> int:
        """How many times :meth:`request_stop` was called: a job queued behind another one
        compares it with the count when it was queued, so a cancel pressed while it waited
        is not lost (starting a job clears the stop flag)."""
        return self._stop_count

    @property
    def job_running(self) -> bool:
        """Whether a training or scoring job holds the session now."""
        return self._job_lock.locked()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no training or scoring job holds the session (one asked to stop ends
        within a step); False if one still holds it after ``timeout`` seconds. For a worker
        about to start the next job: training and scoring refuse to start over another."""
        if not self._job_lock.acquire(timeout=-1 if timeout is None else float(timeout)):
            return False
        self._job_lock.release()
        return True

    def _begin_job(self, what: str) -> None:
        if not self._job_lock.acquire(blocking=False):
            raise RuntimeError(f"Cannot start {what}: another training or scoring job is "
                               "running; wait for it or cancel it.")
        self._stop.clear()

    # ------------------------------------------------------------------ automatic training
    @property
    def submissions_since_train(self) -> int:
        """Submissions since the last training round started (kept in the project)."""
        return self._auto.since_train

    @property
    def auto_train_every(self) -> int:
        """Train by itself after this many submissions (0 = only when asked); saved."""
        return self._auto.every

    @auto_train_every.setter
    def auto_train_every(self, n: int) -> None:
        self._auto.every = n

    @property
    def training_due(self) -> bool:
        """Whether enough was submitted since the last round for an automatic one."""
        return self._auto.due(self.n_labelled)

    @property
    def continuous_training(self) -> bool:
        """Whether the dock trains continuously (:class:`~._continuous.ContinuousTrainer`);
        saved in the project, on unless turned off. A script trains continuously only when
        it runs a ContinuousTrainer."""
        return self._auto.continuous

    @continuous_training.setter
    def continuous_training(self, on: bool) -> None:
        self._auto.continuous = on

    @property
    def n_labelled(self) -> int:
        return len(self.project.labelled_ids())


class ActiveLearningSession(LargeImageCalls, ObjectsCalls, SessionBase):
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

    # ------------------------------------------------------------------ data and prediction
    def _decided_config(self):
        # a configuration given with its polarity still to decide ("pool"): decide it once
        # for the project, so that every image and the model trained on them share one rule
        self.model_config = settings.decided(self.project, self.model_config)
        return self.model_config

    def prepared(self, image_id: int) -> np.ndarray:
        """The network input of an image: (C, H, W) float32, cached."""
        return self._cache.prepared(self.project, image_id, self._decided_config())

    def cache_holdings(self) -> list[dict]:
        """What the session's caches hold (:meth:`._cache.PredictionCache.holdings`)."""
        return self._cache.holdings()

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
        return self._desk.annotation(image_id, self.predict)

    def predict(self, image_id: int, *, maps: Sequence[str] | None = None) -> Prediction | None:
        """The current model's prediction of a project image (cached), or None before the
        first model. ``maps`` defaults to the strategy's maps, or entropy."""
        if self.model is None:
            return None
        self._refuse_large(image_id, "predicted whole; use session.overview(image_id) for its "
                                     "prediction at display resolution")
        req = self.strategy.requirements
        mode = req["mode"] if maps is None else "single"
        maps = tuple(maps) if maps is not None else (tuple(req["maps"]) or ("entropy",))
        if mode == "ensemble" and not self.committee:
            mode, maps = "single", ("entropy",)
        target = self.committee if mode == "ensemble" else self.model
        return self._cache.prediction(
            (image_id, self.model_version, mode, maps),
            lambda: predict(target, self.prepared(image_id), mode=mode, maps=maps,
                            config=self.inference_config))

    def predict_array(self, image: np.ndarray, *, channel_axis: int | None = None,
                      maps: Sequence[str] = ("entropy",), mode: str = "single") -> Prediction:
        """Predict any image (e.g. a napari layer) with the project's model."""
        if self.model is None:
            raise ValueError("No trained model yet: submit labels and train first.")
        # a model saved before its rule was decided
        self.model_config = settings.decided(self.project, self.model_config)
        img = prepare_image(image, polarity=self.model_config.polarity,
                            polarity_margin=self.model_config.polarity_margin,
                            channel_axis=channel_axis, channels=self.model_config.in_channels)
        return predict(self.model, img, mode=mode, maps=maps, config=self.inference_config)

    # ------------------------------------------------------------------ long jobs
    def predict_instances(self, image_id: int) -> InstancePrediction | None:
        """The current model's objects on an image (:func:`core.instances.predict_instances`:
        ``instances`` uint16 one id per object, ``object_class[id]``, the class map), or
        None before the first model. Needs a class in "objects" mode; refused (ValueError)
        for an image over ``large_image_pixels``."""
        if not self.project.object_classes:
            raise ValueError("No class is in 'objects' mode: set one with "
                             "set_class_modes({'nucleus': 'objects'}) first.")
        if self._cache.is_large(self.project, image_id):  # it would be read and predicted whole
            raise ValueError(
                f"Image {image_id} is over the project's large_image_pixels setting, so its "
                "objects are not predicted: that would read and predict it whole. Crop it "
                "into images under the limit, or raise large_image_pixels if it fits in memory.")
        if self.model is None:
            return None
        return predict_instances(self.model, self.prepared(image_id),
                                 object_classes=self.project.object_classes,
                                 config=self.inference_config)

    def train(self, *, train_config: TrainConfig | None = None, publish_if_better: bool = False
              ) -> Generator[TrainProgress, None, RoundSummary | None]:
        """Fine-tune on everything submitted so far (warm start from the current model).

        Yields :class:`~.training.TrainProgress`; returns a :class:`RoundSummary` (None when
        cancelled before any step). The new model is saved in the project as a new version and
        becomes current; a cancelled round keeps the last good model and saves nothing.
        ``publish_if_better``: the same images are held back every round, and the new model is
        saved only when its Dice on them is at least the current model's (else the summary
        has ``kept_previous`` and a note; too few to hold back: saved, a note says so).
        """
        self._begin_job("training")
        try:
            return (yield from self._rounds.run(
                train_config or self.train_config, strategy=self.strategy,
                strategy_name=self._strategy_spec["name"], committee_size=self.committee_size,
                seed=self.seed, pseudo_config=self.pseudo_config, prepared=self.prepared,
                predict=self.predict, focus=self._desk.focus, on_start=self._auto.restart,
                publish_if_better=publish_if_better, crop=self.prepared_region))
        finally:
            self._job_lock.release()

    def pretrain(self, *, steps: int = 200, max_images: int = 64, keep: str = "all") -> Any:
        """Self-supervised warm-up on the pool (:func:`core.pretrain.pretrain`, masked-block
        reconstruction of up to ``max_images`` pool images, drawn by the session's seed) for
        the first round to start from; returns its :class:`~core.pretrain.PretrainResult`.
        Ignored once a model exists (rounds warm-start from it)."""
        from ..pretrain import pretrain

        self._begin_job("pre-training")
        try:
            ids = [r.id for r in self.project.images()  # a large image: not whole in memory
                   if not self._cache.is_large(self.project, r.id)]
            rng = np.random.default_rng(self.seed)
            if len(ids) > max_images:
                ids = sorted(rng.choice(ids, max_images, replace=False).tolist())
            cfg = self.train_config
            result = pretrain(self.model_config, [self.prepared(i) for i in ids], steps=steps,
                              patch_size=cfg.patch_size, batch_size=cfg.batch_size, lr=cfg.lr,
                              seed=self.seed, device=cfg.device, num_threads=cfg.num_threads,
                              keep=keep, stop=self._stop)
            self._rounds.initial_state = result.state_dict
            return result
        finally:
            self._job_lock.release()

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
            return self._rounds.adopt(state_dict, meta, strategy_name=self._strategy_spec["name"],
                                      seed=self.train_config.seed)
        finally:
            self._job_lock.release()

    def _refuse_large(self, image_id: int, what: str) -> None:
        if self._cache.is_large(self.project, image_id):
            raise ValueError(
                f"Image {image_id} is over the project's large_image_pixels: it is scored tile "
                f"by tile and never {what}, or session.region_view(image_id, box) for a box.")

    @property
    def scoring_strategy(self) -> QueryStrategy:
        """The strategy as the next scoring pass runs it: :attr:`strategy` with the options it
        takes from the project and the current model where the user gave none
        (``QueryStrategy.project_options``; e.g. ``objects`` cuts the project's object
        classes and drops the model's fragments, as the objects layer does)."""
        return self._scoring_strategy()[0]

    def _scoring_strategy(self) -> tuple[QueryStrategy, dict[str, Any]]:
        name, options = self._strategy_spec["name"], self._strategy_spec["options"]
        derived = type(self.strategy).project_options(
            object_classes=self.project.object_classes,
            min_object_area=getattr(getattr(self.model, "config", None), "min_object_area",
                                    None))
        derived = {k: v for k, v in derived.items() if k not in options}
        if not derived:
            return self.strategy, options
        options = {**options, **derived}
        return get_strategy(name, **options), options

    def _scoring_inputs(self) -> ScoringInputs:
        version = self.model_version
        large = LargeImages(
            lambda i: self._cache.is_large(self.project, i),
            lambda i: self._cache.source(self.project, i, self._decided_config()),
            lambda i, overview: self._cache.keep_overview(i, version, overview))
        strategy, options = self._scoring_strategy()
        return ScoringInputs(strategy, self._strategy_spec["name"], options, self.model,
                             self.model_version,
                             self.committee, self.inference_config, self.prepared, self.predict,
                             self.seed, large)

    def score_pool(self, *, regions: bool = False, region_size: int | None = None
                   ) -> Generator[ScoreProgress, None, int]:
        """Predict and score every image not yet submitted whole, and rank the pool into the
        queue of next suggestions; returns how many images were scored.

        Incremental: only images without candidates for the current model and strategy are
        predicted (a new model, strategy or inference setting invalidates them; a submission
        does not: its image's other windows keep their scores, and the queue passes over
        what was reviewed), and nothing at all when the queue is fresh. Bounded: the first
        record states the cost ("about N s"), and a strategy whose own cost exceeds
        ``scoring_budget_s`` ranks only the most uncertain candidates (:mod:`._queue`).
        ``regions``: one candidate per window of ``region_size`` (default
        :attr:`region_size`), windows mostly reviewed already left out. Scores go to the
        project.
        """
        region_size = self.region_size if region_size is None else int(region_size)
        self._begin_job("scoring")
        try:
            return (yield from self._scoring.score(self._scoring_inputs(), regions, region_size))
        finally:
            self._job_lock.release()

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
        if not self._scoring.up_to_date(self._scoring_inputs(), regions, region_size):
            run_to_end(self.score_pool(regions=regions, region_size=region_size))
        return self._pick(k, regions, boxes_per_image)

    def _pick(self, k: int, regions: bool, boxes_per_image: int) -> list[Suggestion]:
        out = self._scoring.suggest(self._scoring_inputs(), k, regions=regions,
                                    boxes_per_image=boxes_per_image)
        for image_id in dict.fromkeys(s.image_id for s in out):
            self.status_changed.emit(image_id)
        return out

    def queue_state(self, *, regions: bool = False, region_size: int | None = None) -> str:
        """The queue of next suggestions: ``"fresh"`` (ranked by the current model and
        strategy over the whole pool), ``"stale"`` (it serves, but a :meth:`score_pool` is
        due: a new model, or new images) or ``"none"``."""
        region_size = self.region_size if region_size is None else int(region_size)
        return self._scoring.queue_state(self._scoring_inputs(), regions, region_size)

    def next_view(self, *, regions: bool = False, region_size: int | None = None,
                  boxes_per_image: int = 1):
        """What *Suggest next* shows: the next pick of the queue (or its boxes) and its view;
        returns ``(images scored, ImageView or None when nothing is left)``.

        A generator of :class:`ScoreProgress`. It scores only when there is no queue for this
        box mode yet; a stale queue (a new model since) serves at once, the suggestion saying
        so -- call :meth:`score_pool` to refresh it. It never waits for a training round:
        with no queue while one runs, the pool is served in random order until it is scored.
        """
        region_size = self.region_size if region_size is None else int(region_size)
        n = 0
        if self.queue_state(regions=regions, region_size=region_size) == "none":
            if self._job_lock.locked():
                self._scoring.stopgap_queue(self._scoring_inputs(), regions, region_size)
            else:
                n = yield from self.score_pool(regions=regions, region_size=region_size)
        picks = self._pick(1, regions, boxes_per_image if regions else 1)
        return n, (self.open_pick(picks) if picks else None)

    def prefetch_next(self, exclude: int | None = None) -> int | None:
        """Predict the image the queue suggests after ``exclude`` (the one shown now) ahead
        of time, so that the next Submit only puts layers on screen; returns its id."""
        image_id = self._scoring.upcoming(exclude)
        if image_id is not None and not self._cache.is_large(self.project, image_id):
            self.project.load_image(image_id)  # the OS keeps the file warm
            self.predict(image_id)
        return image_id

    def mark_shown(self, image_id: int, pre_annotation: np.ndarray | None = None,
                   suggestion_id: int | None = None) -> None:
        """Remember when an image was shown and with which pre-annotation (effort + time)."""
        self._desk.mark_shown(image_id, pre_annotation, suggestion_id)

    def submit(self, image_id: int, labels: np.ndarray | None,
               reviewed: np.ndarray | None = None, *, suggestion_id: int | None = None,
               merge: bool = True, instances: np.ndarray | None = None) -> int:
        """Save corrected labels at once; returns the submission id.

        The time spent (since :meth:`mark_shown`) and the correction effort against the
        pre-annotation shown are recorded with it. A partial ``reviewed`` mask adds to what
        earlier submissions of the image reviewed (``merge=False`` replaces them; see
        :meth:`~.project.Project.submit`). ``instances``: the objects of the project's
        object class, one id per object (:meth:`~.project.Project.submit_instances`, which
        derives the class map; ``labels`` then holds only the "area" classes, or is None).
        """
        sub = self._desk.submit(
            image_id, labels, reviewed, suggestion_id=suggestion_id, merge=merge,
            model_version=self.model_version, strategy=self._strategy_spec["name"],
            focus_p=self.train_config.focus_p, instances=instances,
            cached=lambda: self._cache.latest(image_id, self.model_version))
        self._submitted(image_id)
        return sub

    def _submitted(self, image_id: int) -> None:
        # its candidates stay: same model, same scores; the queue passes over what is reviewed
        self.project.discard_draft(image_id)
        self._auto.count_submission()
        self.image_submitted.emit(image_id)
        self.status_changed.emit(image_id)

    def view(self, image_id: int, suggestions: Sequence[Suggestion] = ()) -> ImageView:
        """What to show for correcting an image (loads and predicts: call it off the GUI
        thread). ``suggestions``: the picks of this image being answered (their boxes are the
        boxes to review). The view is remembered for :meth:`review` and
        :meth:`submit_correction`, and marks the image as shown (time and effort). A large
        image is refused (:meth:`region_view` shows a box of it)."""
        self._refuse_large(image_id, "loaded whole for correction; use session.overview(image_id)")
        return self._desk.view(image_id, suggestions, self.predict)

    def review(self, image_id: int, labels: np.ndarray, *, scribbles: np.ndarray | None = None,
               whole: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The labels and reviewed mask a correction of the last :meth:`view` amounts to:
        its boxes, the scribbles, the edited pixels and the draft's reviewed pixels -- or the
        whole image (:func:`~.review.compose_review`; ValueError when nothing was reviewed)."""
        return self._desk.review(image_id, labels, scribbles=scribbles, whole=whole)

    def submit_correction(self, image_id: int, labels: np.ndarray, *,
                          scribbles: np.ndarray | None = None, whole: bool = False) -> int:
        """Submit what the user reviewed in the last :meth:`view` of the image (see
        :meth:`review`); nothing is written when nothing was reviewed (ValueError)."""
        labels, reviewed = self.review(image_id, labels, scribbles=scribbles, whole=whole)
        return self.submit(image_id, labels, reviewed)

    def save_draft(self, image_id: int, labels: np.ndarray, *,
                   scribbles: np.ndarray | None = None) -> None:
        """Autosave a correction in progress with what it has reviewed so far."""
        self._desk.save_draft(image_id, labels, scribbles=scribbles)
        self.status_changed.emit(image_id)

    def skip(self, image_id: int, *, suggestion_id: int | None = None) -> None:
        self._desk.skip(image_id, suggestion_id=suggestion_id)
        self._scoring.forget(image_id)
        self.status_changed.emit(image_id)
