"""Configuration dataclasses with a JSON round trip.

The defaults are chosen for a laptop/workstation CPU (measured on a 2-core machine, see the
README): a small U-Net on small patches with a short cosine schedule learns more in a one-minute
round than a large one, because on a CPU the number of optimiser steps per second decides.
Bigger settings are one field away, and are the natural choice on a GPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin: ``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json`` for flat dataclasses."""

    _kind: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        # tuples become lists in JSON; keep them lists here so a round trip is exact
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(
                f"Unknown {cls._kind} field(s) {unknown}; valid fields are {sorted(names)}."
            )
        kwargs = {}
        for k, v in data.items():
            default = names[k].default
            if isinstance(default, tuple) and isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# polarity rules (core.preprocess): "pool" = decided once from the project's images and
# resolved to "invert" or "none" before use; "auto" = the per-image rule of older models
POLARITIES = ("pool", "invert", "none", "auto")


def ensure(cond: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``cond``: the check of every config field."""
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Architecture of the U-Net.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 gray, 3 RGB, ...).
    n_classes : int
        Output classes including background (2 for a binary foreground/background task).
    depth : int
        Number of down-sampling steps (the input is padded to a multiple of ``2**depth``).
    width : int
        Channels of the first level; doubled at every level.
    dropout : float
        Drop probability used by the dropout layers (training and MC sampling).
    dropout_head : bool
        Dropout on the last feature map, just before the 1x1 classifier. Alone, it makes
        T MC samples cost about one forward pass (the rest of the network runs once).
    dropout_decoder : int
        How many of the last decoder stages get dropout on their input (0 = none).
    dropout_bottleneck : bool
        Dropout on the bottleneck output (classic MC-dropout U-Net placement; every MC sample
        then re-runs the whole decoder).
    dropout_mode : {"channel", "element"}
        "channel" (default) drops whole feature channels, the same for every pixel of an image
        (spatial dropout; for a convolution it is dropout on its kernel, the Bayesian-CNN form
        of MC dropout). With head-only dropout the T samples then fold into one 1x1
        convolution with T x n_classes outputs: T samples cost about one forward pass.
        "element" drops single activations (classic nn.Dropout).
    polarity : {"pool", "invert", "none", "auto"}
        Preprocessing saved with the model (see :mod:`core.preprocess`). "pool" (default):
        decided once from the project's images (inverted when the typical image has a bright
        background) and replaced by the rule it resolves to, "invert" or "none", which the
        saved model and its exported ``preprocessing.json`` record. "invert" / "none": the
        project's rule (see ``polarity_margin`` for the only exceptions). "auto": the per-image
        rule (an image with a bright background is inverted) of models saved before "pool"
        existed; kept so that they predict as before. It split datasets: 3 of 10
        axondeepseg_sem images inverted, and cost 0.35 test Dice there
        (docs/2026-12-01-polarity.md).
    polarity_margin : float or None
        With "invert" / "none": an image departs from the project's rule only when its
        background is unmistakably of the other kind, its background level (0..1, threshold
        0.5) beyond ``0.5 +- polarity_margin`` on the other side: above 0.75 in a project that
        is not inverted, below 0.25 in one that is (default 0.25). Images near the threshold,
        where EM and fundus images sit, all follow the project; a pool that really mixes
        fluorescence with brightfield (DSB 2018) still gets its brightfield images inverted
        (a fixed rule cost 0.05 test Dice there). None: the rule is fixed for every image.
        Ignored by "auto"; a saved configuration without the field has None.
    norm : {"group", "batch"}
        Normalisation of the conv blocks. "group" (default): GroupNorm, each patch normalised
        by its own statistics; test Dice after a short round moved about 3x less with the
        training seed than with "batch" (BatchNorm) on DSB 2018 (README, "Training defaults").
        A saved configuration without this field is a BatchNorm model (saved before it
        existed).
    boundary_classes : tuple of int
        The object classes (project class indices, :mod:`core.instances`) that get an extra
        "boundary" output each: the head has :attr:`n_outputs` = ``n_classes +
        len(boundary_classes)`` channels, the boundary of class ``boundary_classes[j]`` being
        channel ``n_classes + j``. ``forward`` folds each back into its class (the
        semantic probabilities everything else uses); ``forward_full`` keeps them. Empty
        (default) = a semantic model.
    distance_head : bool
        With ``boundary_classes``: one more output per object class after the boundaries,
        regressing each object's normalised distance to its own edge (1 at its centre, 0 on
        its boundary; :func:`core.instances.distance_target`), learned from the same target
        and used to seed and split the objects
        (:func:`core.instances.instances_from_distance_head`). Ignored without object classes. Default False (and models saved before it existed).
    min_object_area : float or None
        Objects smaller than this many pixels are dropped by the instance post-processing
        (:func:`core.instances.min_object_area`): decided at training from the labelled
        objects' areas and kept with the model, so exports and ``activeseg predict`` drop
        the same fragments. None (default, and models saved before it existed): only the
        per-image rule. Not part of the architecture.
    """

    _kind: ClassVar[str] = "model"

    in_channels: int = 3
    n_classes: int = 2
    depth: int = 3
    width: int = 8
    dropout: float = 0.2
    dropout_head: bool = True
    dropout_decoder: int = 0
    dropout_bottleneck: bool = False
    dropout_mode: str = "channel"
    polarity: str = "pool"
    polarity_margin: float | None = 0.25
    norm: str = "group"
    boundary_classes: tuple[int, ...] = ()
    distance_head: bool = False
    min_object_area: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        # models saved before the ``norm`` field existed are BatchNorm networks; a saved
        # configuration without ``polarity`` keeps the per-image rule it was made under, and
        # one without ``polarity_margin`` its rule without exceptions
        return super().from_dict({"norm": "batch", "polarity": "auto", "polarity_margin": None,
                                  **data})

    def __post_init__(self) -> None:
        ensure(self.norm in ("group", "batch"),
               f"norm must be 'group' or 'batch', got {self.norm!r}.")
        ensure(self.dropout_mode in ("channel", "element"),
               f"dropout_mode must be 'channel' or 'element', got {self.dropout_mode!r}.")
        ensure(self.polarity in POLARITIES,
               f"polarity must be one of {list(POLARITIES)}, got {self.polarity!r}.")
        ensure(self.polarity_margin is None or 0.0 < self.polarity_margin < 0.5,
               f"polarity_margin must be in (0, 0.5) or None (no exception), got "
               f"{self.polarity_margin!r}.")
        ensure(1 <= self.in_channels <= 64, f"in_channels must be 1..64, got {self.in_channels}.")
        ensure(2 <= self.n_classes <= 65535, f"n_classes must be >= 2 (background + at least one "
               f"class), got {self.n_classes}.")
        ensure(1 <= self.depth <= 6, f"depth must be 1..6, got {self.depth}.")
        ensure(2 <= self.width <= 256, f"width must be 2..256, got {self.width}.")
        ensure(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}.")
        ensure(0 <= self.dropout_decoder <= self.depth,
               f"dropout_decoder must be 0..depth ({self.depth}), got {self.dropout_decoder}.")
        bc = tuple(self.boundary_classes)
        ensure(all(isinstance(c, int) and 1 <= c < self.n_classes for c in bc)
               and list(bc) == sorted(set(bc)),
               f"boundary_classes must be increasing foreground class indices "
               f"(1..{self.n_classes - 1}), got {self.boundary_classes!r}.")
        object.__setattr__(self, "boundary_classes", bc)
        ensure(self.min_object_area is None or self.min_object_area >= 0,
               f"min_object_area must be >= 0 pixels or None, got {self.min_object_area!r}.")

    @property
    def n_targets(self) -> int:
        """Values of the integer training target: the classes plus one boundary per object
        class (the outputs trained by the segmentation loss)."""
        return self.n_classes + len(self.boundary_classes)

    @property
    def distance_outputs(self) -> int:
        """Distance outputs (one per object class with :attr:`distance_head`, else 0)."""
        return len(self.boundary_classes) if self.distance_head else 0

    @property
    def n_outputs(self) -> int:
        """Output channels of the head: the classes, one boundary per object class, then
        one distance per object class with :attr:`distance_head`."""
        return self.n_targets + self.distance_outputs

    @property
    def multiple(self) -> int:
        """Spatial size multiple the network needs (inputs are padded to it)."""
        return 2 ** self.depth


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """How one training round runs.

    A round stops at whichever comes first: ``max_steps`` optimiser steps, ``time_budget_s``
    seconds, early stopping on held-back images, or a stop request. The learning-rate schedule
    (linear warm-up, cosine decay) follows the fraction of the budget used, so it completes
    whichever budget binds.
    """

    _kind: ClassVar[str] = "training"

    patch_size: int = 128
    batch_size: int = 16
    max_steps: int | None = 300
    # 60 s: a CPU round (training + re-scoring a 100-image pool) fits in 90 s (issue 16;
    # benchmarks/round_100.py); rounds follow each other with continuous training
    time_budget_s: float | None = 60.0
    lr: float = 3e-3
    # peak learning rate of a warm-started round, as a fraction of ``lr`` (fine-tuning gently
    # keeps what the previous round learnt); 1 = the same schedule as from scratch
    warm_lr_factor: float = 1.0
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    final_lr_fraction: float = 0.02
    dice_weight: float = 1.0
    class_weights: tuple[float, ...] | None = None
    # without explicit class_weights: weigh each class by (f_max / f_c) ** class_weight_power,
    # f_c its share of the reviewed pixels in the round's own patches (decided from the data
    # at every round; capped at MAX_AUTO_CLASS_WEIGHT); 0 = unweighted
    class_weight_power: float = 0.0
    # after a round, shift the classes' logits (the head's bias) so the class map agrees best
    # with the reviewed pixels (held-back crops when there are some), never calling a class
    # further from its true share: a model trained on a few labels ranks a thin class right
    # but under-calls it (core.training.calibrate_logit_bias; docs/2026-12-02-calibration.md)
    calibrate_bias: bool = True
    # augmentation
    flips: bool = True
    rot90: bool = True
    intensity_jitter: float = 0.1
    gamma_jitter: float = 0.2
    invert_p: float = 0.0
    # patch sampling: fraction of patches centred on a reviewed foreground (non-zero) pixel
    foreground_p: float = 0.5
    # fraction of patches centred on "hard" pixels: where the previous model's pre-annotation
    # was corrected or its confidence was low (recorded at submission); 0 = off
    focus_p: float = 0.0
    # how images share the patches: in proportion to (reviewed area) ** area_exponent.
    # 1 = every reviewed pixel has the same chance (a few huge images then take most patches
    # of a pool of small ones and the model forgets the small ones' look); 0 = every image the
    # same share. 0.5 measured best on DSB 2018 (README, "Training defaults")
    area_exponent: float = 0.5
    # validation / early stopping on held-back labelled images
    val_fraction: float = 0.2
    min_val_images: int = 10
    val_every: int = 50
    patience: int = 4
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_threads: int | None = None
    # consistency regularisation on unlabelled pixels (core/consistency.py, FixMatch): the
    # weight of its loss (0 = off; measured in docs/2026-12-01-consistency.md), the teacher's
    # confidence a pixel needs, the ramp-up (fraction of the round), unlabelled crops per
    # step, and pool images sampled per round
    consistency_weight: float = 0.0
    consistency_threshold: float = 0.95
    consistency_rampup: float = 0.3
    consistency_batch: int = 8
    consistency_images: int = 32

    def __post_init__(self) -> None:
        ensure(self.patch_size >= 16 and self.patch_size % 8 == 0,
               f"patch_size must be a multiple of 8 and >= 16, got {self.patch_size}.")
        ensure(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}.")
        ensure(self.max_steps is None or self.max_steps >= 1,
               f"max_steps must be >= 1 or None, got {self.max_steps}.")
        ensure(self.time_budget_s is None or self.time_budget_s > 0,
               f"time_budget_s must be > 0 or None, got {self.time_budget_s}.")
        ensure(self.max_steps is not None or self.time_budget_s is not None,
               "Set max_steps or time_budget_s (or both); otherwise training never ends.")
        ensure(self.lr > 0, f"lr must be > 0, got {self.lr}.")
        ensure(0.0 <= self.class_weight_power <= 1.0,
               f"class_weight_power must be in [0, 1] (0 = off), got {self.class_weight_power}.")
        ensure(0.0 <= self.invert_p <= 1.0, f"invert_p must be in [0, 1], got {self.invert_p}.")
        ensure(0.0 <= self.foreground_p <= 1.0,
               f"foreground_p must be in [0, 1], got {self.foreground_p}.")
        ensure(0.0 <= self.focus_p <= 1.0, f"focus_p must be in [0, 1], got {self.focus_p}.")
        ensure(0.0 <= self.area_exponent <= 1.0,
               f"area_exponent must be in [0, 1], got {self.area_exponent}.")
        ensure(0.0 < self.warm_lr_factor <= 1.0,
               f"warm_lr_factor must be in (0, 1], got {self.warm_lr_factor}.")
        ensure(0.0 <= self.val_fraction < 1.0,
               f"val_fraction must be in [0, 1), got {self.val_fraction}.")
        ensure(self.consistency_weight >= 0,
               f"consistency_weight must be >= 0 (0 = off), got {self.consistency_weight}.")
        ensure(0.0 < self.consistency_threshold <= 1.0,
               f"consistency_threshold must be in (0, 1], got {self.consistency_threshold}.")
        ensure(0.0 <= self.consistency_rampup <= 1.0,
               f"consistency_rampup must be in [0, 1], got {self.consistency_rampup}.")
        ensure(self.consistency_batch >= 1 and self.consistency_images >= 0,
               f"consistency_batch must be >= 1 and consistency_images >= 0, got "
               f"{self.consistency_batch} and {self.consistency_images}.")


@dataclass(frozen=True)
class InferenceConfig(JsonConfig):
    """Tiled prediction settings."""

    _kind: ClassVar[str] = "inference"

    tile_size: int = 512
    overlap: int = 64
    batch_size: int = 4
    mc_samples: int = 8
    # seed of the MC-dropout masks shared by all tiles and images (head-only channel dropout:
    # reproducible, comparable scores); None = fresh masks on every call
    mc_seed: int | None = 0
    device: str = "auto"
    amp: bool = True

    def __post_init__(self) -> None:
        ensure(self.tile_size >= 32, f"tile_size must be >= 32, got {self.tile_size}.")
        ensure(0 <= self.overlap < self.tile_size // 2,
               f"overlap must be in [0, tile_size/2), got {self.overlap}.")
        ensure(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}.")
        ensure(self.mc_samples >= 1, f"mc_samples must be >= 1, got {self.mc_samples}.")


# The query strategy used unless the user picks another: "random" (boxes drawn at random from
# the pool, no model needed to rank them). Chosen by the development suite's rule
# (benchmarks/suite.py): in region mode (the dock's default), over the five development sets at
# 3 seeds, the candidate with the largest mean paired nAUC gain over random boxes, provided it
# is above 0, else random. With the calibrated class threshold (TrainConfig.calibrate_bias, on
# since 2026-12-02) every set was re-run and entropy's mean gain is -0.010: chase_db1 -0.056
# (behind on 3 of 3 seeds), wbc -0.012, bbbc039 -0.001, axondeepseg -0.000, dsb2018 +0.021
# (ahead on 3 of 3) -- docs/2026-12-02-suite-calibrated.md. Before calibration entropy led by
# +0.005 and was the default for a day; before that "task_similarity" (whole-image mode only).
# Entropy, BALD, margin, objects, power_entropy, ... stay one click away in the dock.
DEFAULT_STRATEGY = "random"

#: the strongest candidate the rule has measured (entropy): what a benchmark compares with
#: the default unless told otherwise
CANDIDATE_STRATEGY = "entropy"

#: the strategies a benchmark runs by default: random boxes, the default and the candidate
BENCHMARK_STRATEGIES: tuple[str, ...] = tuple(dict.fromkeys(
    ("random", DEFAULT_STRATEGY, CANDIDATE_STRATEGY)))


@dataclass(frozen=True)
class QueryConfig(JsonConfig):
    """How candidates are scored and picked (used by the query strategies)."""

    _kind: ClassVar[str] = "query"

    strategy: str = DEFAULT_STRATEGY
    aggregation: str = "topk"
    topk_fraction: float = 0.1
    foreground_only: bool = False
    batch_size: int = 1
    region_size: int = 256
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
