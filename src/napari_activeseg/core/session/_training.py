"""Training rounds and the current model: fine-tune on the labelled set (with CEAL
pseudo-labels and an ensemble committee when asked), save the weights as a new version with
its round, and make them current -- or load the newest saved model, or adopt weights trained
elsewhere."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import numpy as np

from ..config import ModelConfig, TrainConfig
from ..inference import Prediction
from ..instances import boundary_target
from ..model import UNet
from ..project import Project, ProjectError, ProjectWarning
from ..strategies import (
    PseudoLabelConfig,
    QueryStrategy,
    bootstrap_indices,
    make_pseudo_labels,
    pseudo_training_set,
)
from ..training import Trainer, TrainProgress, TrainResult, held_back_dice
from ._pool import labelled_examples, labelled_regions, pool_ids
from ._records import RoundSummary


def held_back_ids(labelled: Sequence[tuple[int, np.ndarray, np.ndarray | None]],
                  cfg: TrainConfig) -> list[int]:
    """The images a judged round holds back: as many as :meth:`~.training.Trainer.fit` would
    (``val_fraction`` of the labelled set, once there are ``min_val_images``, from the fully
    reviewed images with at least one to spare), but chosen by a fixed hash of their ids, so
    the same images stay held back round after round and two models are compared on images
    neither learnt from. Empty when there are too few."""
    full = [i for i, _, rev in labelled if rev is None or rev.all()]
    n_val = round(len(labelled) * cfg.val_fraction)
    if len(labelled) < cfg.min_val_images or n_val < 1 or len(full) <= n_val:
        return []
    return sorted(sorted(full, key=lambda i: (i * 2654435761) % 2**32)[:n_val])


def unlabelled_pixels(project: Project, labelled, images, reviewed, prepared, cfg: TrainConfig,
                      seed: int) -> list[tuple[np.ndarray, np.ndarray | None]] | None:
    """What the consistency term learns from (None when ``consistency_weight`` is 0): the
    unreviewed pixels of the partly reviewed images (``images``/``reviewed`` in the order of
    ``labelled``), and up to ``consistency_images`` unlabelled pool images drawn for ``seed``.
    Read only: nothing of it is stored."""
    if cfg.consistency_weight <= 0:
        return None
    out = [(images[n], ~reviewed[n]) for n in range(len(labelled))
           if reviewed[n] is not None and not reviewed[n].all()]
    done = {i for i, _, _ in labelled}
    pool = [i for i in pool_ids(project) if i not in done]
    if pool and cfg.consistency_images:
        picked = np.random.default_rng(seed).choice(
            pool, min(cfg.consistency_images, len(pool)), replace=False)
        out += [(prepared(int(i)), None) for i in sorted(picked.tolist())]
    return out


def build_model(config: ModelConfig, state: Mapping[str, Any]) -> UNet:
    """A U-Net of ``config`` with the given weights, in eval mode."""
    model = UNet(config)
    model.load_state_dict(state)
    return model.eval()


class RoundRunner:
    """Runs training rounds and keeps the current model, its version and the committee.

    Parameters
    ----------
    project : Project
    stop : threading.Event
        Set by the session to end a round within one step.
    model_config : callable
        The session's current model configuration (read when a round needs it: preparing
        the images may decide its polarity first).
    on_installed : callable
        Called with the version when new weights became current (the committee is set
        after it).
    """

    def __init__(self, project: Project, *, stop: threading.Event,
                 model_config: Callable[[], ModelConfig],
                 on_installed: Callable[[str], None]) -> None:
        self.project = project
        self._stop = stop
        self._model_config = model_config
        self._on_installed = on_installed
        self.model: UNet | None = None
        self.model_version: str | None = None
        self.committee: list[UNet] = []
        self._trainer: Trainer | None = None
        #: weights the first round starts from while there is no model (the self-supervised
        #: warm-up, core.pretrain); None: a fresh initialisation
        self.initial_state: dict[str, Any] | None = None

    def load_saved(self) -> ModelConfig | None:
        """Make the newest saved model that fits the images current; returns its config, or
        None (no saved model, or none usable: a warning says so)."""
        if not self.project.models():
            return None
        want = self._model_config()

        def fits(cfg: ModelConfig) -> str | None:
            if cfg.in_channels != want.in_channels:
                return (f"it takes {cfg.in_channels} input channel(s) but the images have "
                        f"{want.in_channels}")
            if cfg.boundary_classes != want.boundary_classes:
                return (f"it has boundary outputs for classes {list(cfg.boundary_classes)} but "
                        f"the project's object classes ask for {list(want.boundary_classes)}")
            if cfg.distance_outputs != want.distance_outputs:
                return ("its distance outputs do not match the project's instance "
                        "formulation")
            return None

        try:
            state, cfg, meta = self.project.load_model(fits=fits)
        except ProjectError as err:  # every version is damaged or foreign: start afresh
            warnings.warn(f"No saved model could be used ({err}); the next training "
                          "starts a new model.", ProjectWarning, stacklevel=3)
            return None
        self.model = build_model(cfg, state)
        # not models()[-1]: a damaged or foreign latest version makes load_model fall back to
        # the newest one that fits
        self.model_version = meta["version"]
        return cfg

    def reset(self) -> None:
        """No model any more (a new architecture): the next round starts afresh."""
        self.model, self.model_version, self.committee = None, None, []

    def request_stop(self) -> None:
        trainer = self._trainer
        if trainer is not None:
            trainer.request_stop()

    def run(self, cfg: TrainConfig, *, strategy: QueryStrategy, strategy_name: str,
            committee_size: int, seed: int, pseudo_config: PseudoLabelConfig | None,
            prepared: Callable[[int], np.ndarray], predict: Callable[..., Prediction | None],
            focus: Callable[[int], np.ndarray | None], on_start: Callable[[], None],
            publish_if_better: bool = False, crop: Callable[[int, tuple], np.ndarray] | None = None,
            ) -> Generator[TrainProgress, None, RoundSummary | None]:
        """One round (see :meth:`ActiveLearningSession.train`). ``focus``: an image's hard
        pixels; ``on_start``: called once there is something to train on.
        ``publish_if_better``: hold back the same images every round (:func:`held_back_ids`)
        and save the round's model only when its Dice on them is at least the current
        model's (else keep the current one and say so). ``crop(image_id, box)``: the network
        input of a box of a large image; its stored boxes are trained on as crops."""
        try:
            return (yield from self._run(cfg, strategy, strategy_name, committee_size, seed,
                                         pseudo_config, prepared, predict, focus, on_start,
                                         publish_if_better, crop))
        finally:
            self._trainer = None

    def _run(self, cfg, strategy, strategy_name, committee_size, seed, pseudo_config,
             prepared, predict, focus, on_start, publish_if_better, crop=None):
        t0 = time.perf_counter()
        labelled = labelled_examples(self.project)
        boxes = labelled_regions(self.project) if crop is not None else []
        if not labelled and not boxes:
            raise ValueError("Nothing to train on yet: submit labels for at least one image.")
        on_start()
        ids = list(dict.fromkeys([i for i, _, _ in labelled] + [i for i, _ in boxes]))
        # each labelled image's stored objects, for the targets
        objects = {i: self.project.load_instances(i) for i, _, _ in labelled} \
            if self.project.object_classes else {}
        floor = self.project.object_floor()  # from every labelled image, held back or not
        held = held_back_ids(labelled, cfg) if publish_if_better else []
        val = ([prepared(i) for i in held],
               [lab for i, lab, _ in labelled if i in held]) if held else (None, None)
        labelled = [ex for ex in labelled if ex[0] not in held]
        images = [prepared(i) for i, _, _ in labelled]
        labels = self._targets(labelled, objects)
        reviewed = [rev for _, _, rev in labelled]
        notes: list[str] = []
        if boxes and self._model_config().boundary_classes:
            notes.append(f"{len(boxes)} box(es) of large images left out: a model with "
                         "object boundaries does not train on boxes yet.")
            boxes = []
        for image_id, region in boxes:  # a large image's boxes: crops read lazily, box-sized
            images.append(crop(image_id, region.box))
            labels.append(region.labels)
            reviewed.append(region.reviewed)
        n_real = len(images)
        n_pseudo = 0
        round_no = len(self.project.rounds())
        if pseudo_config is not None and pseudo_config.enabled and self.model:
            n_pseudo = self._add_pseudo_labels(labelled, images, labels, reviewed, round_no,
                                               pseudo_config, prepared, predict, notes)
        unlabelled = unlabelled_pixels(self.project, labelled, images, reviewed, prepared,
                                       cfg, cfg.seed + round_no)
        init = self.initial_state if self.model is None else self.model.state_dict()
        model_config = self._model_config().replace(min_object_area=floor)
        self._trainer = Trainer(model_config, cfg.replace(seed=cfg.seed + round_no))
        if self._stop.is_set():
            return None
        hard = [focus(i) for i, _, _ in labelled] + \
            [None] * (len(images) - len(labelled))  # boxes and pseudo-labelled images: none
        result: TrainResult = yield from self._trainer.fit(
            images, labels, reviewed, init_state=init, focus=hard, val_images=val[0],
            val_labels=val[1], unlabelled=unlabelled)
        if result.stop_reason == "stop_requested":
            notes.append("Training cancelled: the last good model is kept.")
            return RoundSummary(self.model_version, result, len(ids), n_pseudo,
                                saved=False, notes=notes, labelled_ids=ids)
        dice = (None, None)
        if publish_if_better:
            dice, kept = self._judge(result, val, cfg, len(ids), notes)
            if kept:
                return RoundSummary(self.model_version, result, len(ids), n_pseudo,
                                    saved=False, notes=notes, labelled_ids=ids,
                                    held_back_dice=dice[0], previous_dice=dice[1],
                                    kept_previous=True)

        committee: list[UNet] = []
        if strategy.needs_ensemble or strategy.requirements["mode"] == "ensemble":
            committee = yield from self._train_committee(
                cfg, model_config, result, images, labels, reviewed, n_real,
                committee_size, seed + round_no)
            notes.append(f"Committee of {len(committee)} trained for the ensemble strategy.")

        meta = {
            "round": round_no,
            "labelled_ids": ids,
            "n_pseudo": n_pseudo,
            "train_config": cfg.to_dict(),
            "steps": result.steps,
            "seconds": round(result.seconds, 2),
            "stop_reason": result.stop_reason,
            "best_val_dice": result.best_val_dice,
            "logit_bias": result.logit_bias,  # the calibrated threshold (in the weights)
            "held_back_ids": held,
            "held_back_dice": dice[0],
            "history": result.history[-200:],
        }
        version = self._install(
            result.state_dict, meta, cfg.seed + round_no, ids,
            {"best_val_dice": result.best_val_dice, "final_loss":
             result.history[-1]["loss"] if result.history else None, "steps": result.steps},
            {"train_s": round(result.seconds, 2), "round_s": round(time.perf_counter() - t0, 2)},
            strategy_name=strategy_name, model=result.build_model(),
            config=result.model_config)
        self.committee = committee
        return RoundSummary(version, result, len(ids), n_pseudo, len(committee),
                            notes=notes, labelled_ids=ids, held_back_dice=dice[0],
                            previous_dice=dice[1])

    def _targets(self, labelled, objects) -> list[np.ndarray]:
        """The training targets: the class maps, with the boundary of every object of an
        object class as its own output when the model has them (core.instances)."""
        cfg = self._model_config()
        if not cfg.boundary_classes:
            return [lab for _, lab, _ in labelled]
        return [boundary_target(lab, objects[i][0], cfg.n_classes, cfg.boundary_classes)
                for i, lab, _ in labelled]

    def _judge(self, result: TrainResult, val, cfg: TrainConfig, n_labelled: int,
               notes: list[str]) -> tuple[tuple[float | None, float | None], bool]:
        """``((new Dice, current Dice), keep the current model?)`` on the held-back images;
        a note says what was decided."""
        if not val[0]:
            notes.append(f"Held-back set too small to judge ({n_labelled} labelled image(s); "
                         f"{cfg.min_val_images} with fully reviewed ones to spare are needed): "
                         "published without a comparison.")
            return (None, None), False
        new = held_back_dice(result.build_model(), *val, patch_size=cfg.patch_size)
        if self.model is None:
            return (new, None), False
        old = held_back_dice(self.model, *val, patch_size=cfg.patch_size)
        if new < old:
            notes.append(f"kept {self.model_version}: held-back Dice {new:.3f} < {old:.3f} "
                         f"on {len(val[0])} image(s)")
            return (new, old), True
        notes.append(f"held-back Dice {new:.3f} >= {old:.3f} ({self.model_version}) on "
                     f"{len(val[0])} image(s)")
        return (new, old), False

    def _add_pseudo_labels(self, labelled, images, labels, reviewed, round_no, pseudo_config,
                           prepared, predict, notes: list[str]) -> int:
        """Fill this round's arrays (in place) with confident predictions: the unreviewed
        pixels of partly reviewed images, then whole pool images; returns how many pool
        images joined."""
        done = {i for i, _, _ in labelled}
        n_filled = 0
        for n, (image_id, _, rev) in enumerate(labelled):
            if rev is None:
                continue
            # the unreviewed pixels of a partly reviewed image: confident predictions fill
            # them in this round's arrays only; the reviewed pixels keep their truth and
            # nothing here reaches the project's labels
            pred = predict(image_id, maps=("entropy",))
            p = make_pseudo_labels(str(image_id), pred.probs, round_no, pseudo_config)
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
        for image_id in pool_ids(self.project):
            if image_id in done:
                continue
            pred = predict(image_id, maps=("entropy",))
            p = make_pseudo_labels(str(image_id), pred.probs, round_no, pseudo_config)
            if p is not None:
                pseudo.append(p)
        if not pseudo:
            return 0
        extra = pseudo_training_set(
            pseudo, {p.image_id: prepared(int(p.image_id)) for p in pseudo},
            reviewed_ids={str(i) for i in done}, max_images=pseudo_config.max_images)
        images += extra[0]
        labels += extra[1]
        reviewed += extra[2]
        notes.append(f"{len(extra[0])} pseudo-labelled image(s) joined training.")
        return len(extra[0])

    def _train_committee(self, cfg: TrainConfig, model_config: ModelConfig,
                         result: TrainResult, images: Sequence[np.ndarray],
                         labels: Sequence[np.ndarray], reviewed: Sequence[np.ndarray | None],
                         n_real: int, size: int, seed: int):
        """Members fine-tuned from the round's weights on bootstrap resamples of the
        labelled images, each with a share of the round's budget (stops early on request)."""
        member_cfg = cfg.replace(
            time_budget_s=None if cfg.time_budget_s is None else cfg.time_budget_s / size,
            max_steps=None if cfg.max_steps is None else max(1, cfg.max_steps // size))
        committee: list[UNet] = []
        for m, idx in enumerate(bootstrap_indices(n_real, size, seed=seed)):
            if self._stop.is_set():
                break
            self._trainer = Trainer(model_config, member_cfg.replace(seed=m + 1))
            res = yield from self._trainer.fit(
                [images[i] for i in idx], [labels[i] for i in idx],
                [reviewed[i] for i in idx], init_state=result.state_dict)
            committee.append(res.build_model())
        return committee

    def adopt(self, state_dict: Mapping[str, Any], meta: Mapping[str, Any] | None, *,
              strategy_name: str, seed: int) -> str:
        """Install weights trained elsewhere as a round on the labelled set (see
        :meth:`ActiveLearningSession.adopt_model`); clears the committee."""
        meta = dict(meta or {})
        labelled = sorted(self.project.labelled_ids())
        round_no = len(self.project.rounds())
        meta.setdefault("round", round_no)
        meta["labelled_ids"] = labelled
        meta["adopted"] = True
        metrics = {k: meta.get(k) for k in ("best_val_dice", "final_loss", "steps")}
        version = self._install(state_dict, meta, seed + round_no, labelled, metrics,
                                {"train_s": meta.get("seconds", 0.0), "round_s": 0.0},
                                strategy_name=strategy_name)
        self.committee = []
        return version

    def _install(self, state_dict, meta, seed, labelled_ids, metrics, wall_times, *,
                 strategy_name: str, model: UNet | None = None,
                 config: ModelConfig | None = None) -> str:
        """Save weights as a new version + round and make them the current model.

        `config` is the one the weights were trained with (the round's, with the decisions
        taken at training such as ``min_object_area``); default: the session's."""
        config = config if config is not None else self._model_config()
        version = self.project.save_model(state_dict, config, meta)
        self.project.record_round(version, strategy_name, seed, labelled_ids, metrics,
                                  wall_times)
        self.model = model if model is not None else build_model(config, state_dict)
        self.model_version = version
        self._on_installed(version)
        return version
