"""The settings of one benchmark run: :class:`BenchmarkConfig`, its validation, and the parsers
of the command line's comma-separated values (:func:`parse_seeds`, :func:`parse_list`).

``BenchmarkConfig.checked`` is the one place a bad value becomes a ``ValueError`` naming it;
``identity`` is the part of the settings a resumed run must keep (:mod:`.resume`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..core.config import BENCHMARK_STRATEGIES
from .report import BASELINES, DEFAULT_BASELINES

__all__ = ["BenchmarkConfig", "parse_list", "parse_seeds"]


@dataclass(frozen=True)
class BenchmarkConfig:
    """Settings of one benchmark run (what ``activeseg benchmark`` parses).

    Parameters
    ----------
    data : path
        Folder with ``images/`` and ``masks/`` of matching file names.
    out : path
        Output folder (``results.json``, ``results.csv``, ``learning_curve.png``, ``runs/``).
    strategies : sequence of str
        Query strategies: registry names
        (:func:`~napari_activeseg.core.strategies.available_strategies`).
    seeds : sequence of int
        One pool/test split, initial draw and training seed each.
    initial, step, rounds : int
        Images (regions) labelled in round 0, added per round, and rounds after round 0.
    baselines : sequence of {"rf", "full", "cellpose"}
        ``cellpose`` (Cellpose trained from scratch, :mod:`.cellpose_baseline`) only when
        asked for; a dataset without ``instances/`` or without the package skips it.
    regions : bool
        Annotate suggested ``region_size`` boxes instead of whole images; the x axis becomes
        annotated pixels.
    region_size : int
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``: for training and prediction.
    steps : int
        Optimiser steps per round (fixed, so the result does not depend on the machine's load).
    full_steps : int
        Optimiser steps of the ``full`` baseline (per round when ``full_rounds > 1``).
    full_rounds : int
        The most rounds of ``full_steps`` the ``full`` baseline trains for; 1 = one round,
        more = train until the test Dice plateaus (module docstring), at most this many.
    full_min_delta : float
        The gain in test Dice a further ``full`` round must make to count as an improvement.
    max_images : int, optional
        Use only the first ``max_images`` images of the folder (sorted by name), for quick runs.
    test_fraction : float
    model, train, inference : dict
        Overrides of :class:`~napari_activeseg.core.config.ModelConfig`, ``TrainConfig`` and
        ``InferenceConfig`` fields (e.g. ``{"width": 16}``), on top of the product defaults.
    rf_samples : int, optional
        Total training pixels of the forest per round, spread evenly over its images (at
        most ``max_samples_per_image`` each, 20 000 by default). Its fit time grows with the
        pixels, so without a cap it dominates big rounds; None = no cap.
    rf : dict
        Keyword arguments of :class:`.rf.RandomForestSegmenter`.
    objects : bool
        Train the U-Net in the product's instance mode: the foreground class is in "objects"
        mode, the annotator submits the dataset's ``instances/`` (one id per object) and the
        network gets its boundary output (:mod:`napari_activeseg.core.instances`). Needs a
        dataset with ``instances/`` and one foreground class.
    """

    data: Path
    out: Path
    strategies: tuple[str, ...] = BENCHMARK_STRATEGIES
    seeds: tuple[int, ...] = (0, 1, 2)
    initial: int = 4
    step: int = 8
    rounds: int = 3
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    regions: bool = False
    region_size: int = 256
    device: str = "auto"
    steps: int = 125
    full_steps: int = 600
    full_rounds: int = 1
    full_min_delta: float = 0.005
    max_images: int | None = None
    test_fraction: float = 0.3
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)
    rf_samples: int | None = 80_000
    rf: dict[str, Any] = field(default_factory=dict)
    objects: bool = False

    #: Fields that define the experiment: a resumed run must keep them.
    IDENTITY = ("data", "initial", "step", "regions", "region_size", "steps", "full_steps",
                "full_rounds", "full_min_delta", "max_images", "test_fraction", "model", "train",
                "inference", "rf_samples", "rf", "objects")
    #: Identity fields added later: a folder that predates them was made with these values.
    IDENTITY_DEFAULTS: ClassVar[dict[str, Any]] = {"full_rounds": 1, "full_min_delta": 0.005,
                                                   "objects": False}
    #: Integer fields and their smallest valid value.
    INTEGERS: ClassVar[dict[str, int]] = {"initial": 1, "step": 1, "rounds": 0, "steps": 1,
                                          "full_steps": 1, "full_rounds": 1, "region_size": 16}

    def checked(self) -> BenchmarkConfig:
        """A normalised copy (absolute paths, tuples), or a ValueError naming the bad value."""
        from ..core.strategies import available_strategies, get_strategy

        strategies = tuple(dict.fromkeys(str(s).strip() for s in self.strategies if str(s).strip()))
        if not strategies:
            raise ValueError(
                "No strategy given; pass e.g. --strategies random,entropy (valid: "
                f"{', '.join(available_strategies())})."
            )
        for name in strategies:
            if name in BASELINES:
                raise ValueError(
                    f"{name!r} is a baseline, not a query strategy; ask for it with "
                    f"--baselines {name}."
                )
            get_strategy(name)  # unknown names raise a ValueError listing the valid ones
        baselines = tuple(dict.fromkeys(str(b).strip() for b in self.baselines if str(b).strip()))
        bad = [b for b in baselines if b not in BASELINES]
        if bad:
            raise ValueError(
                f"Unknown baseline(s) {bad}; valid baselines are {list(BASELINES)} (or none)."
            )
        seeds = tuple(int(s) for s in self.seeds)
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers, got {list(seeds)}.")
        for name, low in self.INTEGERS.items():
            value = getattr(self, name)
            if int(value) != value or int(value) < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if not float(self.full_min_delta) >= 0.0:
            raise ValueError(f"full_min_delta must be >= 0, got {self.full_min_delta!r}.")
        if self.rf_samples is not None and int(self.rf_samples) < 100:
            raise ValueError(f"rf_samples must be at least 100 pixels, got {self.rf_samples!r}.")
        if self.max_images is not None and int(self.max_images) < 2:
            raise ValueError(f"max_images must be at least 2 (pool + test), got {self.max_images}.")
        if not 0.0 < float(self.test_fraction) < 1.0:
            raise ValueError(
                f"test_fraction must be between 0 and 1 (exclusive), got {self.test_fraction!r}."
            )
        ints = {name: int(getattr(self, name)) for name in self.INTEGERS}
        optional = {name: None if getattr(self, name) is None else int(getattr(self, name))
                    for name in ("max_images", "rf_samples")}
        overrides = {name: dict(getattr(self, name))
                     for name in ("model", "train", "inference", "rf")}
        return dataclasses.replace(
            self,
            data=Path(self.data).expanduser().resolve(),
            out=Path(self.out).expanduser().resolve(),
            strategies=strategies,
            seeds=seeds,
            baselines=baselines,
            full_min_delta=float(self.full_min_delta),
            test_fraction=float(self.test_fraction),
            regions=bool(self.regions),
            objects=bool(self.objects),
            **ints, **optional, **overrides,
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"], d["out"] = str(self.data), str(self.out)
        d["strategies"], d["seeds"] = list(self.strategies), list(self.seeds)
        d["baselines"] = list(self.baselines)
        return d

    def identity(self) -> dict[str, Any]:
        from ..core.config import ModelConfig

        d = self.to_dict()
        out = {k: d[k] for k in self.IDENTITY}
        # the network as the product defaults resolve it (the channel and class counts come
        # from the data): a folder begun under other defaults (e.g. BatchNorm before GroupNorm
        # became the default) is not silently continued with a different network
        resolved = ModelConfig(**{k: v for k, v in self.model.items()
                                  if k not in ("in_channels", "n_classes")}).to_dict()
        out["resolved_model"] = {k: v for k, v in resolved.items()
                                 if k not in ("in_channels", "n_classes")}
        return out

    @property
    def x_axis(self) -> str:
        """The learning curves' x: labelled images, or annotated pixels in region mode."""
        return "pixels_reviewed" if self.regions else "n_labelled"


def parse_seeds(text: str | Iterable[int]) -> tuple[int, ...]:
    """``"3"`` -> (0, 1, 2) (a count); ``"0,4,7"`` or ``"5,"`` -> those seeds (a list)."""
    if not isinstance(text, str):
        return tuple(int(s) for s in text)
    t = text.strip()
    try:
        if "," in t:
            return tuple(int(s) for s in t.split(",") if s.strip())
        n = int(t)
    except ValueError:
        raise ValueError(
            f"--seeds takes a count (3 = seeds 0,1,2) or a comma-separated list (0,4,7), got "
            f"{text!r}."
        ) from None
    if n < 1:
        raise ValueError(f"--seeds must be at least 1, got {n}.")
    return tuple(range(n))


def parse_list(text: str, *, none_ok: bool = False) -> tuple[str, ...]:
    """``"a,b"`` -> ("a", "b"); ``"none"`` or ``""`` -> () when allowed."""
    items = tuple(s.strip() for s in str(text).split(",") if s.strip())
    if none_ok and (not items or items == ("none",)):
        return ()
    return items
