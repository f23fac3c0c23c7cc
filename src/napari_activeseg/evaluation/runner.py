"""The experiment runner behind ``activeseg benchmark``: simulated-annotator learning curves.

For every seed the dataset is split into a pool and a test set (:func:`.dataset.split_dataset`),
and ``initial`` pool images are drawn (``default_rng(seed).permutation(pool)[:initial]``); every
strategy of that seed starts from those same images. Each strategy then runs on the *real*
product, a project and a session of its own (:mod:`.loop`): every round the simulated annotator
corrects the model's prediction on the strategy's picks (:mod:`.annotator`), the session trains a
fixed number of optimiser steps (``steps``, a warm start from the previous round), and the mean
per-image foreground Dice on the test images is measured with the round's model on the same
preprocessing as training (percentile normalisation, then the model's polarity rule; the default
"pool" is decided once from the dataset's images). The final round has
``initial + rounds * step`` labelled images (or regions).

Baselines, as extra "strategies" in the outputs (:mod:`.baselines`): ``rf``, the ilastik-style
random forest on the ``random`` strategy's labelled images, and ``full``, the U-Net trained on
the whole pool (the ceiling, optionally to a plateau of its test Dice); and, when asked for,
``cellpose``, Cellpose trained from scratch on the ``rf`` baseline's images with the same step
budget (:mod:`.cellpose_baseline`; skipped with a note without the package).

Datasets with ``instances/`` (one label image per image, one id per object) add object-level
columns to every row (:mod:`.object_columns`): F1 and AP at IoU 0.5 and over 0.5..0.9, the count
error, splits and merges, for connected components of the semantic prediction (``cc_*``) and for
the U-Net's instance mode or Cellpose (``inst_*``), and the annotator's effort in objects.

Multi-class sets (more than one foreground class) add the Dice of each foreground class
(:func:`.dataset.class_dice`, columns ``dice_class1`` ..) and their mean (``dice_fg_mean``) to
every row. A dataset with a ``masks_2nd_observer/`` folder (a second human's masks, same file
names) gets that observer's mean Dice against ``masks/`` on each seed's test images in
``results.json`` (``second_observer``) and as a line on the plot.

Resume (:mod:`.resume`): each run keeps its state next to its project; running the same command
again skips finished rounds and continues a half-done one where it stopped. ``OUT/config.json``
pins the settings that define the experiment; ``rounds``, ``seeds``, ``strategies`` and
``baselines`` may grow.

Where things are: the settings in :mod:`.config`, the dataset, configs and draws shared by all
runs in :mod:`.experiment`, the outputs in :mod:`.results` and :mod:`.report`, the progress
records and their ETA in :mod:`.progress`. Long work is a generator: :func:`run_benchmark` yields
:class:`~.progress.BenchmarkProgress` records and returns a :class:`BenchmarkResult`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .baselines import run_full, run_rf
from .cellpose_baseline import run_cellpose
from .config import BenchmarkConfig
from .experiment import Experiment
from .loop import StrategyRun
from .progress import BenchmarkProgress, Tracker, task_work
from .report import format_summary
from .results import write_outputs
from .resume import check_resume

__all__ = ["BenchmarkResult", "plan", "run_benchmark"]


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


def plan(cfg: BenchmarkConfig) -> list[tuple[str, str, int]]:
    """The runs in order, as (kind, name, seed): per seed its strategies, then its baselines."""
    tasks = []
    for seed in cfg.seeds:
        for name in cfg.strategies:
            tasks.append(("al", name, seed))
        for b in cfg.baselines:
            tasks.append((b, b, seed))
    return tasks


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
    exp = Experiment(cfg)  # loads (and checks) the dataset before anything is written
    cfg.out.mkdir(parents=True, exist_ok=True)
    check_resume(cfg)
    tasks = plan(cfg)
    track = Tracker(sum(task_work(kind, cfg) for kind, _, _ in tasks))
    yield track.record("benchmark", None, "start",
                       f"{len(exp.ds)} images; {len(cfg.seeds)} seed(s) x "
                       f"{len(cfg.strategies)} strateg{'y' if len(cfg.strategies) == 1 else 'ies'}"
                       f" x {cfg.rounds + 1} rounds"
                       f"{' + ' + ', '.join(cfg.baselines) if cfg.baselines else ''}",
                       event="note")
    for kind, name, seed in tasks:
        if kind == "al":
            yield from StrategyRun(exp, name, seed, track).rounds()
        elif kind == "rf":
            yield from run_rf(exp, seed, track)
        elif kind == "cellpose":
            yield from run_cellpose(exp, seed, track)
        else:
            yield from run_full(exp, seed, track)
        write_outputs(exp, plot=False)
    rows, summary, files = write_outputs(exp, plot=True)
    return BenchmarkResult(rows, summary, files, list(dict.fromkeys(exp.notes)), cfg)
