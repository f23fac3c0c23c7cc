"""The experiment runner behind ``activeseg benchmark``: simulated-annotator learning curves.

For every seed the dataset is split into a pool and a test set (:func:`.dataset.split_dataset`),
and ``initial`` pool images are drawn (``default_rng(seed).permutation(pool)[:initial]``); every
strategy of that seed starts from those same images. Each strategy then runs on the *real*
product: a :class:`~napari_activeseg.core.project.Project` under ``OUT/runs/<strategy>_s<seed>/``
(images referenced by path, not copied) driven by an
:class:`~napari_activeseg.core.session.ActiveLearningSession`. Round 0 labels the initial images;
every round ``r`` (0..rounds) then

1. (r >= 1) asks ``session.suggest(step)`` for the next images (or regions), shows the
   simulated annotator the model's prediction as the pre-annotation, and submits its correction
   (the ground truth, inside the reviewed box in region mode) with ``session.submit``; the
   effort is :func:`~napari_activeseg.core.effort.correction_effort` of the pre-annotation;
2. trains with ``session.train()``: a warm start from the previous round's model, for a fixed
   number of optimiser steps (``steps``), so results do not depend on the machine's load;
3. measures the mean per-image foreground Dice on the test images, predicted with the round's
   model on the same preprocessing as training (percentile normalisation, then the model's
   polarity rule; the default "pool" is decided once from the dataset's images).

The final round has ``initial + rounds * step`` labelled images (or regions).

Baselines, as extra "strategies" in the outputs:

``rf``
    The ilastik-style random forest (:class:`.rf.RandomForestSegmenter`), one per round, trained
    from scratch on *the same labelled images (and reviewed regions) as the ``random``
    strategy's run of that seed* when ``random`` is among the strategies; otherwise on its own
    random draws with the same counts (the initial images, then the seed's permutation of the
    pool; one random box per image in region mode). It sees the normalised images without the
    polarity rule, as ilastik would. Its effort columns are the from-scratch counts.
``full``
    The U-Net trained on the whole pool: the ceiling. One row per seed. With ``full_rounds = 1``
    one round of ``full_steps`` steps (validation-based best-weight selection kept, early
    stopping off). With ``full_rounds > 1`` it is trained *to a plateau*: rounds of
    ``full_steps`` steps, each a warm start from the last (a full warm-up + cosine cycle, so
    every measurement is taken at a low learning rate), the test Dice measured after each; it
    stops after the first round that does not beat the best so far by more than
    ``full_min_delta``, or after ``full_rounds`` rounds (the cap). The row reports the best
    round's Dice and its cumulative steps; ``results.json`` keeps every round
    (``full_plateau``). Stopping on the test Dice makes the ceiling, if anything, optimistic,
    which only makes fractions of it harder to reach.

Multi-class sets (more than one foreground class) add the Dice of each foreground class
(:func:`.dataset.class_dice`, columns ``dice_class1`` ..) and their mean (``dice_fg_mean``) to
every row. A dataset with a ``masks_2nd_observer/`` folder (a second human's masks, same file
names) gets that observer's mean Dice against ``masks/`` on each seed's test images in
``results.json`` (``second_observer``) and as a line on the plot.

Resume: each run keeps ``benchmark_state.json`` in its folder (finished rounds, and the picks
of the round in progress, written after every submission), next to its project, which holds
the labelled set and the models. Running the same command again skips finished rounds and
continues a half-done one where it stopped (a submission, a trained model are not redone).
``OUT/config.json`` pins the settings that define the experiment; continuing with different
ones is refused, but ``rounds``, ``seeds``, ``strategies`` and ``baselines`` may grow.

Long work is a generator: :func:`run_benchmark` yields :class:`BenchmarkProgress` records and
returns a :class:`BenchmarkResult`; :class:`TextProgress` renders them on stderr for the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, TextIO

import numpy as np

from ..core.atomic import atomic_path, atomic_write_text
from ..core.config import DEFAULT_STRATEGY
from ..core.progress import relay
from ..core.serialize import dumps, write_json
from .annotator import SimulatedAnnotator, box_mask
from .dataset import SegDataset, class_dice, load_dataset, mean_dice, split_dataset
from .report import (
    BASELINES,
    class_columns,
    format_summary,
    plot_learning_curves,
    summarise,
    write_csv,
)

__all__ = [
    "BenchmarkConfig",
    "BenchmarkProgress",
    "BenchmarkResult",
    "TextProgress",
    "run_benchmark",
    "STATE_NAME",
]

#: Per-run state file, next to the run's project.
STATE_NAME = "benchmark_state.json"
_STATE_VERSION = 1

# Work units for the progress bar and its ETA, in "optimiser step equivalents": a U-Net round
# costs its steps plus pool scoring and test prediction; a forest round costs its fit and
# prediction. Rough on purpose: they only weigh the ETA.
_ROUND_OVERHEAD = 100.0
_RF_ROUND = 90.0
_RF_PER_IMAGE = 20_000  # RandomForestSegmenter's default max_samples_per_image


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------- config


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
    baselines : sequence of {"rf", "full"}
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
    """

    data: Path
    out: Path
    strategies: tuple[str, ...] = ("random", DEFAULT_STRATEGY)
    seeds: tuple[int, ...] = (0, 1, 2)
    initial: int = 4
    step: int = 8
    rounds: int = 3
    baselines: tuple[str, ...] = BASELINES
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

    #: Fields that define the experiment: a resumed run must keep them.
    IDENTITY = ("data", "initial", "step", "regions", "region_size", "steps", "full_steps",
                "full_rounds", "full_min_delta", "max_images", "test_fraction", "model", "train",
                "inference", "rf_samples", "rf")
    #: Identity fields added later: a folder that predates them was made with these values.
    IDENTITY_DEFAULTS: ClassVar[dict[str, Any]] = {"full_rounds": 1, "full_min_delta": 0.005}

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
        for name, value, low in (("initial", self.initial, 1), ("step", self.step, 1),
                                 ("rounds", self.rounds, 0), ("steps", self.steps, 1),
                                 ("full_steps", self.full_steps, 1),
                                 ("full_rounds", self.full_rounds, 1),
                                 ("region_size", self.region_size, 16)):
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
        return dataclasses.replace(
            self,
            data=Path(self.data).expanduser().resolve(),
            out=Path(self.out).expanduser().resolve(),
            strategies=strategies,
            seeds=seeds,
            baselines=baselines,
            initial=int(self.initial),
            step=int(self.step),
            rounds=int(self.rounds),
            steps=int(self.steps),
            full_steps=int(self.full_steps),
            full_rounds=int(self.full_rounds),
            full_min_delta=float(self.full_min_delta),
            region_size=int(self.region_size),
            max_images=None if self.max_images is None else int(self.max_images),
            rf_samples=None if self.rf_samples is None else int(self.rf_samples),
            test_fraction=float(self.test_fraction),
            regions=bool(self.regions),
            model=dict(self.model),
            train=dict(self.train),
            inference=dict(self.inference),
            rf=dict(self.rf),
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


# ---------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class BenchmarkProgress:
    """Yielded by :func:`run_benchmark` as the run advances.

    ``done`` / ``total`` are work units (optimiser-step equivalents) of the whole run;
    ``eta_s`` is extrapolated from the work done in this process (None until some is done).
    ``event`` is ``"round"`` when a round has just finished (``message`` then summarises it),
    ``"note"`` for something worth a line of its own, ``"step"`` otherwise.
    """

    done: float
    total: float
    run: str
    round: int | None
    stage: str
    message: str
    elapsed_s: float
    eta_s: float | None
    event: str = "step"


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` returns."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: dict[str, Path]
    notes: list[str]
    config: BenchmarkConfig

    def table(self) -> str:
        """The summary table (plain text)."""
        return format_summary(self.summary, x=self.config.x_axis)


# ---------------------------------------------------------------------------------- state


class _RunState:
    """A run's ``benchmark_state.json``: finished rounds and the pending round's picks."""

    def __init__(self, path: Path, kind: str, strategy: str, seed: int) -> None:
        self.path = path
        self.data: dict[str, Any] = {"version": _STATE_VERSION, "kind": kind,
                                     "strategy": strategy, "seed": seed, "rounds": [],
                                     "pending": [], "notes": [], "exhausted": False}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"Cannot read the benchmark state {str(path)!r} ({exc}); delete its run "
                    f"folder {str(path.parent)!r} to recompute that run."
                ) from exc
            if loaded.get("strategy") != strategy or int(loaded.get("seed", -1)) != seed:
                raise ValueError(
                    f"{str(path)!r} belongs to {loaded.get('strategy')!r} seed "
                    f"{loaded.get('seed')!r}, not {strategy!r} seed {seed}; use another --out."
                )
            self.data.update(loaded)

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return self.data["rounds"]

    @property
    def pending(self) -> list[dict[str, Any]]:
        return self.data["pending"]

    def save(self) -> None:
        atomic_write_text(self.path, dumps(self.data, indent=1) + "\n")


# ---------------------------------------------------------------------------------- progress


class _Tracker:
    """Work accounting for progress records and the ETA."""

    def __init__(self, total: float) -> None:
        self.total = float(total)
        self.done = 0.0
        self.fresh = 0.0  # work done in this process (resumed work does not count for the rate)
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def record(self, run: str, rnd: int | None, stage: str, message: str = "",
               partial: float = 0.0, event: str = "step") -> BenchmarkProgress:
        done = min(self.total, self.done + partial)
        fresh = self.fresh + partial
        el = self.elapsed()
        eta = (self.total - done) * el / fresh if fresh > 0 and el > 5 else None
        return BenchmarkProgress(done, self.total, run, rnd, stage, message, el, eta, event)

    def advance(self, work: float, *, fresh: bool = True) -> None:
        self.done += work
        if fresh:
            self.fresh += work


def _fmt_time(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "--:--"
    s = int(round(s))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class TextProgress:
    """A plain-text progress bar for :class:`BenchmarkProgress` records (no dependencies).

    On a terminal the bar is redrawn in place; otherwise (a log file) a line is written at most
    every ``interval_s`` seconds. Finished rounds and notes always get a line of their own.
    """

    def __init__(self, stream: TextIO | None = None, *, width: int = 24,
                 interval_s: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.interval = interval_s if interval_s is not None else (0.25 if self.tty else 30.0)
        self._last = -math.inf
        self._drawn = False

    def _bar(self, p: BenchmarkProgress) -> str:
        frac = 0.0 if p.total <= 0 else min(1.0, p.done / p.total)
        fill = int(round(frac * self.width))
        where = f"{p.run} r{p.round}" if p.round is not None else p.run
        return (f"[{'#' * fill}{'.' * (self.width - fill)}] {100 * frac:5.1f}%  "
                f"{_fmt_time(p.elapsed_s)} elapsed, ~{_fmt_time(p.eta_s)} left | {where} "
                f"{p.stage}{': ' + p.message if p.message else ''}")

    def __call__(self, p: BenchmarkProgress) -> None:
        now = time.monotonic()
        if p.event in ("round", "note"):
            self._clear()
            where = f"{p.run} round {p.round}" if p.round is not None else p.run
            self.stream.write(f"{where}: {p.message}\n")
            self.stream.flush()
            self._last = -math.inf
        if now - self._last < self.interval and p.event == "step":
            return
        self._last = now
        line = self._bar(p)
        if self.tty:
            cols = 120
            self.stream.write("\r" + line[:cols].ljust(cols))
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r" + " " * 120 + "\r")
            self._drawn = False

    def close(self) -> None:
        self._clear()
        self.stream.flush()


# ---------------------------------------------------------------------------------- runner


class _Benchmark:
    """One invocation: the dataset, the configs, the plan; each task is a generator."""

    def __init__(self, cfg: BenchmarkConfig) -> None:
        from ..core.config import InferenceConfig, ModelConfig, TrainConfig

        self.cfg = cfg
        self.ds: SegDataset = load_dataset(cfg.data, max_images=cfg.max_images)
        ds = self.ds
        self.index = {name: i for i, name in enumerate(ds.names)}
        self.model_config = ModelConfig(**{"in_channels": ds.in_channels,
                                           "n_classes": ds.n_classes, **cfg.model})
        if self.model_config.polarity == "pool":
            from ..core.preprocess import decide_polarity

            # one rule for the whole dataset, as a project decides it from its images (from the
            # intensities only, no mask; test images included: every seed then trains under
            # the same rule); recorded as the concrete "invert"/"none"
            self.model_config = self.model_config.replace(polarity=decide_polarity(ds.images))
        if self.model_config.in_channels != ds.in_channels or \
                self.model_config.n_classes != ds.n_classes:
            raise ValueError(
                f"The dataset has {ds.in_channels} channel(s) and {ds.n_classes} classes; do not "
                "override in_channels or n_classes."
            )
        self.train_config = TrainConfig(**{"max_steps": cfg.steps, "time_budget_s": None,
                                           "device": cfg.device, **cfg.train})
        self.inference_config = InferenceConfig(**{"device": cfg.device, **cfg.inference})
        k = ds.n_classes
        self.classes = ("background", "foreground") if k == 2 else \
            ("background", *(f"class {i}" for i in range(1, k)))
        self.splits = {s: split_dataset(len(ds), seed=s, test_fraction=cfg.test_fraction)
                       for s in cfg.seeds}
        for seed, (pool, _) in self.splits.items():
            if cfg.initial > len(pool):
                raise ValueError(
                    f"--initial {cfg.initial} is more than the {len(pool)} pool images of seed "
                    f"{seed} ({len(ds)} images, test fraction {cfg.test_fraction}); lower it."
                )
        self.runs_dir = cfg.out / "runs"
        self.notes: list[str] = []
        self.annotator = SimulatedAnnotator()
        self._test_cache: tuple[int, list[np.ndarray]] | None = None
        self._pixels_scratch: dict[str, tuple[int, int]] = {}

    # -------------------------------------------------------------- helpers
    def order(self, seed: int) -> list[int]:
        """The seed's permutation of the pool: its first ``initial`` entries start every run."""
        pool, _ = self.splits[seed]
        return [int(i) for i in np.random.default_rng(seed).permutation(pool)]

    def initial_picks(self, seed: int) -> list[tuple[str, list[tuple[int, ...]] | None]]:
        """Round 0: ``initial`` images (and in region mode one random box in each)."""
        from ..core.strategies import region_boxes

        rng = np.random.default_rng([seed, 1])
        out = []
        for i in self.order(seed)[: self.cfg.initial]:
            boxes = None
            if self.cfg.regions:
                cands = region_boxes(self.ds.masks[i].shape, size=self.cfg.region_size)
                boxes = [tuple(int(v) for v in cands[int(rng.integers(len(cands)))])]
            out.append((self.ds.names[i], boxes))
        return out

    def test_inputs(self, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Test images as the network sees them (normalised, then the polarity rule)."""
        from ..core.preprocess import apply_polarity

        _, test = self.splits[seed]
        if self._test_cache is None or self._test_cache[0] != seed:
            pol, margin = self.model_config.polarity, self.model_config.polarity_margin
            self._test_cache = (seed, [apply_polarity(self.ds.images[i], pol, margin=margin)
                                       for i in test])
        return self._test_cache[1], [self.ds.masks[i] for i in test]

    def unet_round_work(self) -> float:
        return self.cfg.steps + _ROUND_OVERHEAD

    def plan(self) -> list[tuple[str, str, int]]:
        tasks = []
        for seed in self.cfg.seeds:
            for name in self.cfg.strategies:
                tasks.append(("al", name, seed))
            for b in self.cfg.baselines:
                tasks.append((b, b, seed))
        return tasks

    def task_work(self, kind: str) -> float:
        n = self.cfg.rounds + 1
        if kind == "al":
            return n * self.unet_round_work()
        if kind == "rf":
            return n * _RF_ROUND
        return self.cfg.full_rounds * (self.cfg.full_steps + _ROUND_OVERHEAD)

    def run_dir(self, name: str, seed: int) -> Path:
        return self.runs_dir / f"{name}_s{seed}"

    def _open_project(self, folder: Path, seed: int):
        """The run's project: opened if it exists, else created on the seed's pool (by path)."""
        from ..core.project import Project

        pool, _ = self.splits[seed]
        names = [self.ds.names[i] for i in pool]
        if (folder / "project.sqlite").is_file():
            project = Project.open(folder)
            have = sorted(r.name for r in project.images())
            if have != sorted(names):
                project.close()
                raise ValueError(
                    f"The project in {str(folder)!r} holds other images than the pool of seed "
                    f"{seed}; delete that run folder (or use another --out) to start it again."
                )
        else:
            project = Project.create(
                folder, images=[self.ds.root / "images" / n for n in names],
                classes=self.classes, skip_unreadable=False)
        return project

    def _evaluate(self, model, seed: int, track: _Tracker, run: str, rnd: int, base: float):
        """Mean test Dice of ``model`` and its per-class columns; yields progress per image."""
        from ..core.inference import predict

        images, masks = self.test_inputs(seed)
        preds = []
        for n, img in enumerate(images):
            preds.append(predict(model, img, mode="single", maps=(),
                                 config=self.inference_config).labels)
            if n % 5 == 4:
                yield track.record(run, rnd, "evaluate", f"{n + 1}/{len(images)} test images",
                                   base + _ROUND_OVERHEAD * 0.5 * (n + 1) / len(images))
        return self._scores(preds, masks)

    def _scores(self, preds, masks) -> tuple[float, dict[str, float]]:
        """Mean per-image foreground Dice, and per-class columns on a multi-class set."""
        k = self.ds.n_classes
        dice = mean_dice(preds, masks, k)
        return dice, class_columns(class_dice(preds, masks, k)) if k > 2 else {}

    def second_observer(self, seed: int) -> float | None:
        """Mean Dice of ``masks_2nd_observer/`` against ``masks/`` on the seed's test images."""
        from .dataset import _read_mask

        folder = self.ds.root / "masks_2nd_observer"
        if not folder.is_dir():
            return None
        _, test = self.splits[seed]
        preds, masks = [], []
        for i in test:
            path = folder / self.ds.names[i]
            if not path.is_file():
                continue
            other = _read_mask(path)
            if other.shape != self.ds.masks[i].shape or int(other.max()) >= self.ds.n_classes:
                self.notes.append(f"masks_2nd_observer/{path.name} does not fit its mask; "
                                  "the second observer's line leaves it out")
                continue
            preds.append(other)
            masks.append(self.ds.masks[i])
        return mean_dice(preds, masks, self.ds.n_classes) if preds else None

    def scratch(self, name: str, boxes) -> tuple[int, int]:
        """(pixels, objects) annotating an image (or its boxes) from scratch would take."""
        from ..core.effort import correction_effort

        key = (name, None if boxes is None else tuple(tuple(b) for b in boxes))
        if key not in self._pixels_scratch:
            truth = self.ds.masks[self.index[name]]
            rev = None if boxes is None else box_mask(truth.shape, boxes)
            e = correction_effort(None, truth, rev)
            self._pixels_scratch[key] = (e.pixels_from_scratch, e.objects_from_scratch)
        return self._pixels_scratch[key]

    # -------------------------------------------------------------- one strategy, one seed
    def run_strategy(self, name: str, seed: int, track: _Tracker):
        from ..core.session import ActiveLearningSession

        cfg = self.cfg
        run = f"{name} s{seed}"
        folder = self.run_dir(name, seed)
        state = _RunState(folder / STATE_NAME, "strategy", name, seed)
        n_rounds = cfg.rounds + 1
        done_rounds = min(len(state.rounds), n_rounds)
        track.advance(done_rounds * self.unet_round_work(), fresh=False)
        if done_rounds >= n_rounds or state.data.get("exhausted"):
            track.advance((n_rounds - done_rounds) * self.unet_round_work(), fresh=False)
            yield track.record(run, None, "done", f"{done_rounds} round(s) already computed")
            return
        if done_rounds:
            yield track.record(run, done_rounds, "resume",
                               f"resuming after {done_rounds} finished round(s)", event="note")
        folder.mkdir(parents=True, exist_ok=True)
        project = self._open_project(folder, seed)
        try:
            session = ActiveLearningSession(
                project, model_config=self.model_config,
                train_config=self.train_config.replace(seed=seed),
                inference_config=self.inference_config, strategy=name,
                strategy_options={"seed": seed}, seed=seed)
            for rnd in range(done_rounds, n_rounds):
                row = yield from self._strategy_round(session, state, name, seed, rnd, track)
                if row is None:  # the pool ran out
                    track.advance((n_rounds - rnd) * self.unet_round_work(), fresh=False)
                    break
        finally:
            project.close()

    def _recover_unlogged(self, session, state: _RunState) -> None:
        """Submissions in the project that the state missed (a crash between the two writes)."""
        project = session.project
        logged = {p["image"] for r in state.rounds for p in r["picks"]}
        logged |= {p["image"] for p in state.pending}
        by_id = {r.id: r.name for r in project.images()}
        for image_id in project.labelled_ids():
            name = by_id[image_id]
            if name in logged:
                continue
            sub = project.submissions(image_id)[-1]
            loaded = project.load_labels(image_id)
            rev = None if loaded is None else loaded[1]
            boxes = None
            if rev is not None:
                ys, xs = np.nonzero(rev)
                boxes = [(int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)]
            px, obj = self.scratch(name, boxes)
            state.pending.append({
                "image": name, "boxes": boxes, "score": None, "reason": "recovered",
                "pixels_reviewed": int(rev.sum()) if rev is not None else
                int(self.ds.masks[self.index[name]].size),
                "pixels_changed": sub.pixels_changed if sub.pixels_changed is not None else px,
                "objects_added": sub.objects_added if sub.objects_added is not None else obj,
                "objects_removed": sub.objects_removed or 0,
                "pixels_from_scratch": px, "objects_from_scratch": obj})
            state.data["notes"].append(f"recovered the submission of {name} from the project")
            state.save()

    def _annotate(self, session, state: _RunState, seed: int, rnd: int, track, run, base):
        """Fill the round's picks (resuming a half-done round); returns how many were added.

        Picks count images, or boxes in region mode (several boxes of one image are one
        submission with their union as the reviewed mask).
        """
        cfg = self.cfg
        project = session.project
        ids = {r.name: r.id for r in project.images()}
        want = cfg.initial if rnd == 0 else cfg.step
        self._recover_unlogged(session, state)

        def n_picks() -> int:
            return sum(len(p["boxes"]) if p["boxes"] else 1 for p in state.pending)

        added = 0
        while n_picks() < want:
            need = want - n_picks()
            if rnd == 0:
                done = {p["image"] for p in state.pending}
                batch = [(ids[n], boxes, None) for n, boxes in self.initial_picks(seed)
                         if n not in done][:need]
            else:
                yield track.record(run, rnd, "query", f"scoring the pool for {need} pick(s)",
                                   base)
                sugg = session.suggest(need, regions=cfg.regions, region_size=cfg.region_size)
                grouped: dict[int, list] = {}
                for s in sugg:
                    grouped.setdefault(s.image_id, []).append(s)
                batch = [(i, [tuple(s.box) for s in g] if cfg.regions and g[0].box is not None
                          else None, g) for i, g in grouped.items()]
            if not batch:  # the pool is used up
                break
            for image_id, boxes, group in batch:
                rec = project.get_image(image_id)
                truth = self.ds.masks[self.index[rec.name]]
                pred = session.predict(image_id) if session.model is not None else None
                pre = None if pred is None else pred.labels
                ann = self.annotator.annotate(truth, pre, boxes)
                sid = group[0].suggestion_id if group else None
                session.mark_shown(image_id, pre, sid)
                session.submit(image_id, ann.labels, ann.reviewed)
                state.pending.append({
                    "image": rec.name,
                    "boxes": None if boxes is None else [list(b) for b in boxes],
                    "score": None if not group else float(group[0].score),
                    "reason": "initial draw" if not group else group[0].reason,
                    "pixels_reviewed": ann.pixels_reviewed,
                    **ann.effort.to_dict()})
                state.save()
                added += 1
        return added

    def _strategy_round(self, session, state: _RunState, name: str, seed: int, rnd: int,
                        track: _Tracker):
        cfg = self.cfg
        run = f"{name} s{seed}"
        project = session.project
        work = self.unet_round_work()
        t0 = time.perf_counter()
        yield from self._annotate(session, state, seed, rnd, track, run, 0.0)
        if not state.pending:
            state.data["exhausted"] = True
            note = f"the pool is exhausted after round {rnd - 1}; {run} stops there"
            state.data["notes"].append(note)
            self.notes.append(note)
            state.save()
            yield track.record(run, rnd, "stop", note, event="note")
            return None
        query_s = time.perf_counter() - t0

        # train (unless a crash came after the model was saved)
        labelled = sorted(project.labelled_ids())
        rounds = project.rounds()
        t1 = time.perf_counter()
        if rounds and sorted(rounds[-1].labelled_ids) == labelled and session.model is not None \
                and len(rounds) > len(state.rounds):
            steps = int(rounds[-1].metrics.get("steps") or 0)
            train_s = float(rounds[-1].wall_times.get("train_s") or 0.0)
        elif rnd == 0 and (shared := self._shared_round0(session, seed, labelled)) is not None:
            steps, train_s = shared
            yield track.record(run, rnd, "train", "reusing the round-0 model of this seed "
                               "(same images, same training seed)", cfg.steps)
        else:
            summary = yield from relay(session.train(), lambda p: track.record(
                run, rnd, "train", f"step {p.step}/{cfg.steps} loss {p.loss_smooth:.3f}",
                min(p.fraction, 1.0) * cfg.steps) if p.step % 5 == 0 or p.val_dice is not None
                else None)
            if summary is None or not summary.saved:
                raise RuntimeError(f"Training of {run} round {rnd} was cancelled.")
            steps, train_s = int(summary.result.steps), float(summary.result.seconds)
            if rnd == 0:
                self._save_round0(session, seed, labelled, steps, train_s)
        train_wall = time.perf_counter() - t1

        t2 = time.perf_counter()
        dice, per_class = yield from self._evaluate(session.model, seed, track, run, rnd,
                                                    cfg.steps)
        eval_s = time.perf_counter() - t2

        picks = list(state.pending)
        row = self._row(name, seed, rnd, picks, state.rounds, dice)
        row.update(per_class)
        row.update(n_labelled=len(labelled), train_steps=steps, train_s=round(train_s, 2),
                   query_s=round(query_s, 2), eval_s=round(eval_s, 2),
                   seconds=round(query_s + train_wall + eval_s, 2),
                   model_version=session.model_version, finished_at=_now(), picks=picks)
        state.rounds.append(row)
        state.data["pending"] = []
        state.save()
        track.advance(work)
        yield track.record(run, rnd, "done", self._round_message(row), event="round")
        return row

    # Round 0 is the same for every strategy of a seed (same initial images, no pre-annotation,
    # same training seed): train it once, and let the other strategies adopt the weights.
    def _round0_paths(self, seed: int) -> tuple[Path, Path]:
        base = self.runs_dir / f"_round0_s{seed}"
        return base.with_suffix(".safetensors"), base.with_suffix(".json")

    @staticmethod
    def _shares_round0(session) -> bool:
        req = session.strategy.requirements
        return not (session.strategy.needs_ensemble or req["mode"] == "ensemble"
                    or (session.pseudo_config is not None and session.pseudo_config.enabled))

    def _round0_names(self, session, labelled) -> list[str]:
        by_id = {r.id: r.name for r in session.project.images()}
        return sorted(by_id[i] for i in labelled)

    def _save_round0(self, session, seed: int, labelled, steps: int, train_s: float) -> None:
        from safetensors.torch import save_file

        if not self._shares_round0(session):
            return
        weights, doc = self._round0_paths(seed)
        state = {k: v.detach().cpu().contiguous() for k, v in session.model.state_dict().items()}
        with atomic_path(weights) as tmp:
            save_file(state, str(tmp))
        atomic_write_text(doc, json.dumps({
            "images": self._round0_names(session, labelled), "steps": int(steps),
            "seconds": float(train_s), "model_config": self.model_config.to_dict(),
            "train_config": self.train_config.to_dict()}) + "\n")

    def _shared_round0(self, session, seed: int, labelled) -> tuple[int, float] | None:
        """Adopt the seed's cached round-0 model if it was trained on these images."""
        from ..core.project import load_state_dict

        weights, doc = self._round0_paths(seed)
        if not (self._shares_round0(session) and weights.is_file() and doc.is_file()):
            return None
        try:
            info = json.loads(doc.read_text(encoding="utf-8"))
            if info.get("images") != self._round0_names(session, labelled) or \
                    info.get("model_config") != self.model_config.to_dict() or \
                    info.get("train_config") != self.train_config.to_dict():
                return None
            state = load_state_dict(weights)
            session.adopt_model(state, {"steps": info["steps"], "seconds": info["seconds"],
                                        "shared_round0": True})
        except Exception:  # a damaged cache only costs the training it would have saved
            return None
        return int(info["steps"]), float(info["seconds"])

    @staticmethod
    def _row(name, seed, rnd, picks, previous, dice) -> dict[str, Any]:
        """Effort columns of a round: this round's picks, and running totals."""
        px = sum(int(p["pixels_changed"]) for p in picks)
        obj = sum(int(p["objects_added"]) + int(p["objects_removed"]) for p in picks)
        px0 = sum(int(p["pixels_from_scratch"]) for p in picks)
        obj0 = sum(int(p["objects_from_scratch"]) for p in picks)
        prev = previous[-1] if previous else {}
        return {
            "strategy": name, "seed": int(seed), "round": int(rnd),
            "n_picked": sum(len(p["boxes"]) if p.get("boxes") else 1 for p in picks),
            "pixels_reviewed": int(prev.get("pixels_reviewed", 0))
            + sum(int(p["pixels_reviewed"]) for p in picks),
            "dice": float(dice),
            "pixels_corrected": px, "objects_corrected": obj,
            "objects_added": sum(int(p["objects_added"]) for p in picks),
            "objects_removed": sum(int(p["objects_removed"]) for p in picks),
            "pixels_scratch": px0, "objects_scratch": obj0,
            "total_pixels_corrected": int(prev.get("total_pixels_corrected", 0)) + px,
            "total_objects_corrected": int(prev.get("total_objects_corrected", 0)) + obj,
            "total_pixels_scratch": int(prev.get("total_pixels_scratch", 0)) + px0,
            "total_objects_scratch": int(prev.get("total_objects_scratch", 0)) + obj0,
        }

    def _round_message(self, row) -> str:
        x = (f"{row['n_labelled']} images" if not self.cfg.regions
             else f"{row['pixels_reviewed']} px in {row['n_labelled']} images")
        return (f"Dice {row['dice']:.3f} with {x}; corrected {row['pixels_corrected']} px / "
                f"{row['objects_corrected']} objects (scratch {row['pixels_scratch']} / "
                f"{row['objects_scratch']}); {row['seconds']:.0f} s")

    # -------------------------------------------------------------- baselines
    def _rf_sets(self, seed: int) -> list[list[tuple[str, Any]]] | None:
        """Per round, the cumulative (name, boxes) the forest trains on."""
        cfg = self.cfg
        if "random" in cfg.strategies:
            st = _RunState(self.run_dir("random", seed) / STATE_NAME, "strategy", "random", seed)
            sets, acc = [], []
            for r in st.rounds[: cfg.rounds + 1]:
                acc = acc + [(p["image"], p["boxes"]) for p in r["picks"]]
                sets.append(list(acc))
            return sets
        order = self.order(seed)
        first = self.initial_picks(seed)
        rng = np.random.default_rng([seed, 2])
        rest = []
        for i in order[cfg.initial:]:
            boxes = None
            if cfg.regions:
                from ..core.strategies import region_boxes

                cands = region_boxes(self.ds.masks[i].shape, size=cfg.region_size)
                boxes = [tuple(int(v) for v in cands[int(rng.integers(len(cands)))])]
            rest.append((self.ds.names[i], boxes))
        sets = []
        for r in range(cfg.rounds + 1):
            n = r * cfg.step
            if r > 0 and n > len(rest):
                break
            sets.append(first + rest[:n])
        return sets

    def run_rf(self, seed: int, track: _Tracker):
        from .rf import RandomForestSegmenter

        cfg = self.cfg
        run = f"rf s{seed}"
        folder = self.run_dir("rf", seed)
        state = _RunState(folder / STATE_NAME, "baseline", "rf", seed)
        sets = self._rf_sets(seed)
        n_rounds = cfg.rounds + 1
        done_rounds = min(len(state.rounds), n_rounds)
        track.advance(done_rounds * _RF_ROUND, fresh=False)
        if done_rounds >= len(sets):
            track.advance((n_rounds - done_rounds) * _RF_ROUND, fresh=False)
            if done_rounds < n_rounds:
                yield track.record(run, None, "done", "no further labelled sets to train on")
            return
        folder.mkdir(parents=True, exist_ok=True)
        _, test = self.splits[seed]
        masks = [self.ds.masks[i] for i in test]
        for rnd in range(done_rounds, len(sets)):
            t0 = time.perf_counter()
            chosen = sets[rnd]
            yield track.record(run, rnd, "fit", f"random forest on {len(chosen)} images")
            imgs, labs, revs = [], [], []
            for name, boxes in chosen:
                i = self.index[name]
                rev = None if not boxes else box_mask(self.ds.masks[i].shape, boxes)
                imgs.append(self.ds.images[i])
                labs.append(self.ds.masks[i] if rev is None else
                            np.where(rev, self.ds.masks[i], 0).astype(self.ds.masks[i].dtype))
                revs.append(rev)
            options = {"seed": seed, **cfg.rf}
            if cfg.rf_samples is not None:
                per_image = options.get("max_samples_per_image", _RF_PER_IMAGE)
                options["max_samples_per_image"] = max(1, min(per_image,
                                                              cfg.rf_samples // len(chosen)))
            forest = RandomForestSegmenter(**options).fit(
                imgs, labs, revs, n_classes=self.ds.n_classes)
            fit_s = time.perf_counter() - t0
            preds = []
            for n, i in enumerate(test):
                preds.append(forest.predict(self.ds.images[i]))
                if n % 5 == 4:
                    yield track.record(run, rnd, "evaluate", f"{n + 1}/{len(test)} test images",
                                       _RF_ROUND * (0.3 + 0.7 * (n + 1) / len(test)))
            dice, per_class = self._scores(preds, masks)
            new = chosen[len(sets[rnd - 1]):] if rnd else chosen
            picks = []
            for name, boxes in new:
                px, obj = self.scratch(name, boxes)
                shape = self.ds.masks[self.index[name]].shape
                picks.append({"image": name, "boxes": boxes,
                              "pixels_reviewed": int(box_mask(shape, boxes).sum()) if boxes
                              else int(np.prod(shape)),
                              "pixels_changed": px, "objects_added": obj, "objects_removed": 0,
                              "pixels_from_scratch": px, "objects_from_scratch": obj})
            row = self._row("rf", seed, rnd, picks, state.rounds, dice)
            row.update(per_class)
            secs = time.perf_counter() - t0
            # distinct images, as the U-Net rows count them (in region mode one image may
            # come with several submissions, each with its own boxes)
            row.update(n_labelled=len({name for name, _ in chosen}), train_steps=None,
                       train_s=round(fit_s, 2),
                       query_s=0.0, eval_s=round(secs - fit_s, 2), seconds=round(secs, 2),
                       finished_at=_now(),
                       picks=[{"image": p["image"], "boxes": p["boxes"]} for p in picks],
                       source="random" if "random" in cfg.strategies else "own draw",
                       rf_samples_per_image=options.get("max_samples_per_image", _RF_PER_IMAGE))
            state.rounds.append(row)
            state.save()
            track.advance(_RF_ROUND)
            yield track.record(run, rnd, "done", self._round_message(row), event="round")
        track.advance((n_rounds - len(sets)) * _RF_ROUND, fresh=False)

    def run_full(self, seed: int, track: _Tracker):
        from ..core.session import ActiveLearningSession

        cfg = self.cfg
        run = f"full s{seed}"
        folder = self.run_dir("full", seed)
        state = _RunState(folder / STATE_NAME, "baseline", "full", seed)
        work = self.task_work("full")
        per_round = cfg.full_steps + _ROUND_OVERHEAD
        if state.rounds:
            track.advance(work, fresh=False)
            yield track.record(run, None, "done", "already computed")
            return
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        project = self._open_project(folder, seed)
        try:
            # the ceiling: long rounds, no early stopping inside a round (best validation
            # weights kept); with full_rounds > 1 further rounds until the test Dice plateaus
            tcfg = self.train_config.replace(
                seed=seed, max_steps=cfg.full_steps,
                patience=max(self.train_config.patience,
                             cfg.full_steps // max(1, self.train_config.val_every) + 1))
            session = ActiveLearningSession(
                project, model_config=self.model_config, train_config=tcfg,
                inference_config=self.inference_config, strategy="random",
                strategy_options={"seed": seed}, seed=seed)
            done = set(project.labelled_ids())
            todo = [r for r in project.images() if r.id not in done]
            for n, rec in enumerate(todo):
                session.submit(rec.id, self.ds.masks[self.index[rec.name]])
                if n % 10 == 9:
                    yield track.record(run, 0, "annotate", f"{n + 1}/{len(todo)} pool images")
            labelled = sorted(project.labelled_ids())
            plateau: list[dict[str, Any]] = state.data.setdefault("plateau", [])
            track.advance(len(plateau) * per_round, fresh=False)
            while self._plateau_stop(plateau) is None:
                k = len(plateau)
                rounds = project.rounds()
                t1 = time.perf_counter()
                if len(rounds) > k and sorted(rounds[-1].labelled_ids) == labelled and \
                        session.model is not None:  # trained before a crash, not yet measured
                    steps = int(rounds[-1].metrics.get("steps") or 0)
                else:
                    summary = yield from relay(session.train(), lambda p, k=k: track.record(
                        run, k, "train", f"step {p.step}/{cfg.full_steps} "
                        f"loss {p.loss_smooth:.3f}", min(p.fraction, 1.0) * cfg.full_steps)
                        if p.step % 10 == 0 or p.val_dice is not None else None)
                    if summary is None or not summary.saved:
                        raise RuntimeError(f"Training of {run} was cancelled.")
                    steps = int(summary.result.steps)
                train_s = time.perf_counter() - t1
                t2 = time.perf_counter()
                dice, per_class = yield from self._evaluate(session.model, seed, track, run, k,
                                                            cfg.full_steps)
                plateau.append({
                    "round": k, "steps": steps,
                    "cum_steps": steps + (plateau[-1]["cum_steps"] if plateau else 0),
                    "dice": float(dice), **per_class, "train_s": round(train_s, 2),
                    "eval_s": round(time.perf_counter() - t2, 2),
                    "model_version": session.model_version, "finished_at": _now()})
                state.save()
                track.advance(per_round)
                if cfg.full_rounds > 1:
                    yield track.record(run, k, "plateau",
                                       f"round {k}: Dice {dice:.3f} after "
                                       f"{plateau[-1]['cum_steps']} steps", event="note")
            best = max(plateau, key=lambda r: r["dice"])  # the first of equal bests
            pool, _ = self.splits[seed]
            px = sum(self.scratch(self.ds.names[i], None)[0] for i in pool)
            obj = sum(self.scratch(self.ds.names[i], None)[1] for i in pool)
            n_px = int(sum(self.ds.masks[i].size for i in pool))
            row = {"strategy": "full", "seed": seed, "round": 0, "n_picked": len(pool),
                   "n_labelled": len(labelled), "pixels_reviewed": n_px,
                   "dice": float(best["dice"]),
                   **{c: v for c, v in best.items() if c.startswith("dice_")},
                   "pixels_corrected": px, "objects_corrected": obj, "objects_added": obj,
                   "objects_removed": 0, "pixels_scratch": px, "objects_scratch": obj,
                   "total_pixels_corrected": px, "total_objects_corrected": obj,
                   "total_pixels_scratch": px, "total_objects_scratch": obj,
                   "train_steps": int(best["cum_steps"]),
                   "train_s": round(sum(r["train_s"] for r in plateau), 2), "query_s": 0.0,
                   "eval_s": round(sum(r["eval_s"] for r in plateau), 2),
                   "seconds": round(time.perf_counter() - t0, 2),
                   "full_rounds_run": len(plateau),
                   "steps_total": int(plateau[-1]["cum_steps"]),
                   "stop_reason": self._plateau_stop(plateau),
                   "model_version": best["model_version"], "finished_at": _now(),
                   "picks": []}
            state.rounds.append(row)
            state.save()
        finally:
            project.close()
        track.advance(max(0.0, work - len(plateau) * per_round), fresh=False)
        yield track.record(run, 0, "done", self._round_message(row), event="round")

    def _plateau_stop(self, plateau: list[dict[str, Any]]) -> str | None:
        """Why the ``full`` baseline stops after these rounds (None = train another one).

        ``"single"`` (one round asked for), ``"plateau"`` (the last round did not beat the
        best before it by more than ``full_min_delta``) or ``"cap"`` (``full_rounds`` done).
        """
        cfg = self.cfg
        if not plateau:
            return None
        if cfg.full_rounds == 1:
            return "single"
        if len(plateau) >= 2:
            before = max(r["dice"] for r in plateau[:-1])
            if plateau[-1]["dice"] <= before + cfg.full_min_delta:
                return "plateau"
        if len(plateau) >= cfg.full_rounds:
            return "cap"
        return None

    # -------------------------------------------------------------- outputs
    def collect(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[dict]]]]:
        """Rows of every requested run (rounds 0..rounds), and the curves with their picks."""
        rows, curves = [], {}
        names = [*self.cfg.strategies, *self.cfg.baselines]
        for name in names:
            for seed in self.cfg.seeds:
                path = self.run_dir(name, seed) / STATE_NAME
                if not path.is_file():
                    continue
                kind = "baseline" if name in BASELINES else "strategy"
                st = _RunState(path, kind, name, seed)
                self.notes += [n for n in st.data.get("notes", []) if n not in self.notes]
                mine = [r for r in st.rounds if r["round"] <= self.cfg.rounds]
                if not mine:
                    continue
                rows += [{k: v for k, v in r.items() if k != "picks"} for r in mine]
                curves.setdefault(name, {})[str(seed)] = mine
        return rows, curves

    def write_outputs(self, *, plot: bool = True) -> tuple[list[dict], dict, dict[str, Path]]:
        from .. import __version__

        cfg = self.cfg
        rows, curves = self.collect()
        summary = summarise(rows, x=cfg.x_axis)
        keys = ("round", "n_labelled", "pixels_reviewed", "dice", "pixels_corrected",
                "objects_corrected", "seconds", "n_picked", "pixels_scratch", "objects_scratch",
                "total_pixels_corrected", "total_objects_corrected", "total_pixels_scratch",
                "total_objects_scratch", "train_steps", "train_s", "query_s", "eval_s")
        keys += tuple(sorted({k for r in rows for k in r if k.startswith("dice_")}))
        json_curves = {
            name: {seed: {**{k: [r.get(k) for r in rs] for k in keys},
                          "picked": [[p["image"] for p in r.get("picks", [])] for r in rs],
                          "boxes": [[p.get("boxes") for p in r.get("picks", [])] for r in rs]
                          if cfg.regions else None}
                   for seed, rs in by_seed.items()}
            for name, by_seed in curves.items()}
        splits, observer, plateau = {}, {}, {}
        for seed in cfg.seeds:
            pool, test = self.splits[seed]
            splits[str(seed)] = {
                "pool": [self.ds.names[i] for i in pool],
                "test": [self.ds.names[i] for i in test],
                "initial": [n for n, _ in self.initial_picks(seed)],
                "pool_pixels": int(sum(self.ds.masks[i].size for i in pool))}
            second = self.second_observer(seed)
            if second is not None:
                observer[str(seed)] = second
            path = self.run_dir("full", seed) / STATE_NAME
            if "full" in cfg.baselines and path.is_file():
                st = _RunState(path, "baseline", "full", seed).data
                if st.get("plateau"):
                    plateau[str(seed)] = {"rounds": st["plateau"],
                                          "stop_reason": self._plateau_stop(st["plateau"])}
        doc = {
            "napari_activeseg": __version__,
            "created_at": _now(),
            "config": cfg.to_dict(),
            "model_config": self.model_config.to_dict(),
            "train_config": self.train_config.to_dict(),
            "inference_config": self.inference_config.to_dict(),
            "dataset": {"root": str(self.ds.root), "n_images": len(self.ds),
                        "n_classes": self.ds.n_classes, "in_channels": self.ds.in_channels,
                        "files": list(self.ds.names)},
            "splits": splits,
            "x_axis": cfg.x_axis,
            "metric": "mean over test images of the per-image foreground Dice",
            "rf_labelled_from": "random" if "random" in cfg.strategies else "own random draws",
            "classes": list(self.classes),
            "second_observer": observer or None,
            "full_plateau": plateau or None,
            "curves": json_curves,
            "aulc": {name: {k: s["aulc"][k] for k in ("mean", "std", "per_seed")}
                     for name, s in summary.items()},
            "summary": summary,
            "notes": list(dict.fromkeys(self.notes)),
        }
        files = {"json": cfg.out / "results.json", "csv": cfg.out / "results.csv",
                 "png": cfg.out / "learning_curve.png"}
        order = {n: i for i, n in enumerate([*cfg.strategies, *cfg.baselines])}
        rows.sort(key=lambda r: (order.get(r["strategy"], 99), r["seed"], r["round"]))
        write_json(files["json"], doc)
        write_csv(files["csv"], rows)
        if plot and rows:
            seeds = len(cfg.seeds)
            refs = [] if not observer else [
                (float(np.mean(list(observer.values()))), "second human observer")]
            plot_learning_curves(
                files["png"], rows, x=cfg.x_axis, references=refs,
                title=f"{self.ds.root.name}: {len(self.ds)} images, {seeds} seed"
                      f"{'s' if seeds != 1 else ''}, {cfg.steps} steps/round"
                      f"{', regions ' + str(cfg.region_size) + ' px' if cfg.regions else ''}")
        return rows, summary, files


def _check_resume(cfg: BenchmarkConfig) -> None:
    """Refuse to continue a run made with other experiment-defining settings."""
    path = cfg.out / "config.json"
    ident = json.loads(json.dumps(cfg.identity()))
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            dflt = BenchmarkConfig.IDENTITY_DEFAULTS
            diff = [f"{k}: {old.get(k, dflt.get(k))!r} -> {ident[k]!r}" for k in ident
                    if old.get(k, dflt.get(k)) != ident[k]]
            if diff:
                raise ValueError(
                    f"{str(cfg.out)!r} holds a benchmark run with other settings ("
                    + "; ".join(diff) + "); use another --out, or the same settings to resume "
                    "(rounds, seeds, strategies and baselines may change)."
                )
            return
    atomic_write_text(path, json.dumps(ident, indent=1) + "\n")


def run_benchmark(config: BenchmarkConfig) -> Generator[BenchmarkProgress, None, BenchmarkResult]:
    """Run (or resume) a benchmark; yields progress, returns the results.

    Parameters
    ----------
    config : BenchmarkConfig

    Returns
    -------
    BenchmarkResult
        Rows (one per strategy, seed and round, baselines included), the summary with the AULC
        per strategy, and the paths of ``results.json``, ``results.csv`` and
        ``learning_curve.png``.

    Raises
    ------
    ValueError
        Bad settings, a malformed data folder (the message names the files), or an output
        folder holding a run with other settings.
    """
    cfg = config.checked()
    for sub in ("images", "masks"):
        if cfg.out == cfg.data / sub or (cfg.data / sub) in cfg.out.parents:
            raise ValueError(f"--out {str(cfg.out)!r} must not be inside the data folder's "
                             f"{sub}/; pick a folder outside it.")
    bench = _Benchmark(cfg)  # loads (and checks) the dataset before anything is written
    cfg.out.mkdir(parents=True, exist_ok=True)
    _check_resume(cfg)
    plan = bench.plan()
    track = _Tracker(sum(bench.task_work(kind) for kind, _, _ in plan))
    yield track.record("benchmark", None, "start",
                       f"{len(bench.ds)} images; {len(cfg.seeds)} seed(s) x "
                       f"{len(cfg.strategies)} strateg{'y' if len(cfg.strategies) == 1 else 'ies'}"
                       f" x {cfg.rounds + 1} rounds"
                       f"{' + ' + ', '.join(cfg.baselines) if cfg.baselines else ''}",
                       event="note")
    for kind, name, seed in plan:
        if kind == "al":
            yield from bench.run_strategy(name, seed, track)
        elif kind == "rf":
            yield from bench.run_rf(seed, track)
        else:
            yield from bench.run_full(seed, track)
        bench.write_outputs(plot=False)
    rows, summary, files = bench.write_outputs(plot=True)
    return BenchmarkResult(rows, summary, files, list(dict.fromkeys(bench.notes)), cfg)


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
