"""Development suite: one configuration over every dataset, one table at pixel budgets.

Runs ``activeseg benchmark`` in region mode (:class:`~napari_activeseg.evaluation.config.
BenchmarkConfig` with ``regions=True``) over every dataset folder under ``--data-root`` (each
with ``images/`` and ``masks/``), with the *same* settings everywhere; what depends on the data
is decided from the data by one rule:

- the box side: :func:`~napari_activeseg.core.strategies.regions.auto_region_size` of the
  dataset's image shapes (what the product's session decides for a new project);
- the annotation schedule (:func:`plan_budget`): with ``P`` the pool's pixels (the largest pool
  over split seeds 0-4, so the schedule does not change when seeds are added) and ``A`` the mean
  area of the dataset's candidate windows, round 0 labels ``initial = floor(0.8 % P / A)``
  random boxes (at least 1; at most one per pool image, the runner's initial draw), and
  ``rounds`` rounds of ``step = ceil((ceil(11 % P / A) - initial) / rounds)`` boxes follow, so
  the last round reaches about 11 % of the pool: past the 10 % budget with some room for boxes
  smaller than the mean.

For every dataset the table gives, per strategy (mean ± std over seeds): the test Dice at 1, 2,
5 and 10 % of the pool's pixels annotated (the learning curve over ``pixels_reviewed``,
linearly interpolated, never extrapolated: a budget a run did not reach is marked), the
normalised area under the Dice-vs-pixels curve over 1-10 % (:func:`~napari_activeseg.
evaluation.report.budget_aulc`), the random forest (``rf``) on the same pixels as ``random``,
and the ceiling: the U-Net trained on the whole pool until its test Dice plateaus
(``full_rounds`` rounds of ``full_steps`` at most; its steps and the Dice of every round are
listed). Multi-class sets add a table of per-class Dice and the mean over foreground classes.

The default region strategy is chosen by one rule for all datasets (:func:`pick_default`): the
candidate with the largest mean, over datasets, of its paired (same seed) nAUC gain over
``random``, if that gain is above twice its standard error over seeds and datasets. The
claims of issue 16 are then checked for it (:func:`claims`).

Resumable: each dataset's runner folder (``OUT/<dataset>/``) resumes where it stopped, and
``--seeds``, ``--strategies`` and ``--rounds`` may grow; ``--analyse-only`` rebuilds the tables
from what is on disk without training. Run by hand, e.g.::

    OMP_NUM_THREADS=1 python benchmarks/suite.py --out bench_out/suite --seeds 3

Writes ``OUT/suite.md`` (the tables), ``OUT/suite.json`` (every number behind them) and
``OUT/<dataset>/learning_curve_pool.png`` (x = % of the pool's pixels).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_activeseg.core.atomic import atomic_write_text
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.serialize import write_json
from napari_activeseg.evaluation.config import BenchmarkConfig, parse_list, parse_seeds
from napari_activeseg.evaluation.dataset import IMAGE_SUFFIXES, split_dataset
from napari_activeseg.evaluation.progress import BenchmarkBar
from napari_activeseg.evaluation.report import (
    budget_aulc,
    curve_at,
    first_reach,
    plot_learning_curves,
)
from napari_activeseg.evaluation.runner import run_benchmark

#: Annotated-pixel budgets, as fractions of the pool's pixels.
BUDGETS = (0.01, 0.02, 0.05, 0.10)
#: Round 0 and the last round of the schedule, as fractions of the pool's pixels.
INITIAL_FRACTION, LAST_FRACTION = 0.008, 0.11
#: Split seeds the pool size is taken over (the largest pool): fixed, so adding seeds later
#: does not change the schedule of a folder being resumed.
PLAN_SEEDS = range(5)
#: Claims of issue 16: fraction of the ceiling at the 5 % budget, the fraction of the ceiling
#: whose pixel cost is compared with random's, and the largest cost ratio.
CEILING_AT_5, CEILING_TARGET, MAX_RATIO = 0.95, 0.90, 0.5

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SuiteSettings:
    """The one configuration every dataset runs with.

    Parameters
    ----------
    strategies : tuple of str
        ``random`` first, then the region-level candidates.
    seeds : tuple of int
    rounds : int
        Rounds after round 0 (the schedule spreads the budget over them).
    steps, full_steps, full_rounds, full_min_delta
        As in :class:`~napari_activeseg.evaluation.config.BenchmarkConfig`.
    max_images : int, optional
        Use only the first ``max_images`` images of each folder (a reduced run).
    max_pixels : int, optional
        Use only the first images of each folder (sorted names) whose pixels add up to at
        most this many (at least 2 images): a cap that costs every dataset about the same,
        where ``max_images`` would leave a set of small images with a pool of a few windows.
    device : str
    model, train, inference, rf : dict
        Overrides of the product defaults, the same for every dataset.
    rf_samples : int, optional
    baselines : tuple of str
    """

    strategies: tuple[str, ...] = ("random", "entropy", "bald")
    seeds: tuple[int, ...] = (0, 1, 2)
    rounds: int = 5
    steps: int = 125
    full_steps: int = 600
    full_rounds: int = 5
    full_min_delta: float = 0.005
    max_images: int | None = None
    max_pixels: int | None = None
    device: str = "auto"
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)
    rf: dict[str, Any] = field(default_factory=dict)
    rf_samples: int | None = 80_000
    baselines: tuple[str, ...] = ("rf", "full")


def find_datasets(root: Path, names: Sequence[str] | None = None) -> list[Path]:
    """Dataset folders under ``root`` (those with ``images/`` and ``masks/``), sorted."""
    root = Path(root)
    if names:
        out = [root / n for n in names]
        bad = [str(p) for p in out if not ((p / "images").is_dir() and (p / "masks").is_dir())]
        if bad:
            raise ValueError(f"No images/ and masks/ in {bad}; name folders of {str(root)!r}.")
        return out
    out = sorted(p for p in root.iterdir() if (p / "images").is_dir() and (p / "masks").is_dir())
    if not out:
        raise ValueError(f"No dataset folder (images/ + masks/) under {str(root)!r}.")
    return out


def image_shapes(data: Path, max_images: int | None = None) -> list[tuple[int, int]]:
    """(H, W) of the masks the runner will load (sorted names, first ``max_images``)."""
    from imageio import v3 as iio

    files = sorted(p for p in (Path(data) / "masks").iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_SUFFIXES)
    if max_images is not None:
        files = files[: int(max_images)]
    return [tuple(int(v) for v in iio.improps(p).shape[:2]) for p in files]


def plan_budget(shapes: Sequence[tuple[int, int]], *, rounds: int,
                test_fraction: float = 0.3) -> dict[str, Any]:
    """The data-dependent settings of one dataset, by the rule in the module docstring.

    Parameters
    ----------
    shapes : sequence of (H, W)
        Every image of the dataset (as the runner loads it).
    rounds : int
        Rounds after round 0.
    test_fraction : float

    Returns
    -------
    dict
        ``region_size``, ``window_area`` (mean candidate window, px), ``pool_pixels`` (the
        largest pool over :data:`PLAN_SEEDS`), ``min_pool_images``, ``initial``, ``step``,
        ``rounds`` and ``planned_fraction`` (the last round's boxes x the mean area / P).
    """
    from napari_activeseg.core.strategies.regions import auto_region_size, region_boxes

    shapes = [tuple(int(v) for v in s[:2]) for s in shapes]
    if len(shapes) < 2:
        raise ValueError(f"Need at least 2 images (pool + test), got {len(shapes)}.")
    if int(rounds) < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds!r}.")
    size = auto_region_size(shapes)
    areas = [(y1 - y0) * (x1 - x0) for s in shapes for y0, x0, y1, x1 in region_boxes(s, size=size)]
    area = float(np.mean(areas))
    pools = [split_dataset(len(shapes), seed=s, test_fraction=test_fraction)[0]
             for s in PLAN_SEEDS]
    pool_px = max(sum(shapes[i][0] * shapes[i][1] for i in pool) for pool in pools)
    n_pool = min(len(p) for p in pools)
    initial = int(min(n_pool, max(1, math.floor(INITIAL_FRACTION * pool_px / area))))
    last = max(initial + int(rounds), math.ceil(LAST_FRACTION * pool_px / area))
    step = max(1, math.ceil((last - initial) / int(rounds)))
    return {"region_size": int(size), "window_area": area, "pool_pixels": int(pool_px),
            "min_pool_images": int(n_pool), "n_images": len(shapes), "initial": initial,
            "step": int(step), "rounds": int(rounds),
            "planned_fraction": (initial + int(rounds) * step) * area / pool_px}


def dataset_config(data: Path, out: Path, settings: SuiteSettings) -> tuple[BenchmarkConfig,
                                                                              dict[str, Any]]:
    """The runner configuration of one dataset, and the plan it came from."""
    shapes = image_shapes(data, settings.max_images)
    max_images = settings.max_images
    if settings.max_pixels is not None:
        cum = np.cumsum([h * w for h, w in shapes])
        n = max(2, int(np.searchsorted(cum, int(settings.max_pixels), side="right")))
        if n < len(shapes):
            shapes, max_images = shapes[:n], n
    plan = plan_budget(shapes, rounds=settings.rounds)
    plan["max_images"] = max_images
    cfg = BenchmarkConfig(
        data=Path(data), out=Path(out), strategies=settings.strategies, seeds=settings.seeds,
        initial=plan["initial"], step=plan["step"], rounds=plan["rounds"],
        baselines=settings.baselines, regions=True, region_size=plan["region_size"],
        device=settings.device, steps=settings.steps, full_steps=settings.full_steps,
        full_rounds=settings.full_rounds, full_min_delta=settings.full_min_delta,
        max_images=max_images, model=dict(settings.model),
        train=dict(settings.train), inference=dict(settings.inference),
        rf_samples=settings.rf_samples, rf=dict(settings.rf))
    return cfg, plan


# ----------------------------------------------------------------------------- analysis


def _ms(values: Iterable[float]) -> dict[str, Any]:
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    return {"mean": float(np.mean(v)) if v else float("nan"),
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 if v else float("nan"),
            "n": len(v)}


def analyse_dataset(doc: Mapping[str, Any], *, budgets: Sequence[float] = BUDGETS
                    ) -> dict[str, Any]:
    """Budget figures of one dataset from its ``results.json``.

    Returns
    -------
    dict
        ``methods``: per strategy (and ``rf``): per seed the curve as pool fractions, Dice
        and per-class Dice at each budget (NaN = not reached), nAUC over the budget range,
        the largest fraction reached, and the fraction needed to reach 90 % of that seed's
        ceiling; ``ceiling``: per seed the Dice, steps, and plateau rounds;
        ``second_observer``; ``classes``.
    """
    curves = doc.get("curves", {})
    splits = doc.get("splits", {})
    lo, hi = min(budgets), max(budgets)
    ceiling: dict[str, Any] = {}
    for seed, c in curves.get("full", {}).items():
        plateau = (doc.get("full_plateau") or {}).get(seed) or {}
        ceiling[seed] = {
            "dice": c["dice"][0], "steps": c["train_steps"][0],
            "per_class": {k[10:]: c[k][0] for k in c if k.startswith("dice_class")},
            "fg_mean": c.get("dice_fg_mean", [None])[0],
            "plateau": [{"steps": r["cum_steps"], "dice": r["dice"]}
                        for r in plateau.get("rounds", [])],
            "stop": plateau.get("stop_reason") or "single"}
    methods: dict[str, Any] = {}
    for name, by_seed in curves.items():
        if name == "full":
            continue
        per_seed = {}
        for seed, c in by_seed.items():
            pool_px = (splits.get(seed) or {}).get("pool_pixels")
            if not pool_px:
                continue
            x = [p / pool_px for p in c["pixels_reviewed"]]
            y = c["dice"]
            class_keys = sorted((k for k in c if k.startswith("dice_class")),
                                key=lambda k: int(k[10:]))
            if "dice_fg_mean" in c:
                class_keys.append("dice_fg_mean")
            auc, covered = budget_aulc(x, y, lo, hi)
            ceil = ceiling.get(seed, {}).get("dice")
            per_seed[seed] = {
                "x": x, "dice": y,
                "at": {str(b): curve_at(x, y, b) for b in budgets},
                "class_at": {k: {str(b): curve_at(x, c[k], b) for b in budgets}
                             for k in class_keys},
                "naulc": auc, "covered": covered, "x_max": max(x), "x_min": min(x),
                "to_target": first_reach(x, y, CEILING_TARGET * ceil) if ceil else float("nan"),
                "ceiling": ceil,
            }
        if per_seed:
            methods[name] = per_seed
    observer = doc.get("second_observer") or {}
    return {"methods": methods, "ceiling": ceiling, "budgets": list(budgets),
            "second_observer": _ms(observer.values()) if observer else None,
            "classes": doc.get("classes"), "x_axis": doc.get("x_axis")}


def _paired(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> list[float]:
    return [a[s][key] - b[s][key] for s in a if s in b
            and np.isfinite(a[s][key]) and np.isfinite(b[s][key])]


#: A candidate takes the default only when its mean gain exceeds this many standard errors.
NOISE_MARGIN_SE = 2.0


def gain_standard_error(per_dataset: Mapping[str, Sequence[float]]) -> float:
    """Standard error of the mean over datasets of the per-dataset mean paired gains.

    Each dataset's mean of ``n_d`` seed gains has variance ``s_d² / n_d`` (``s_d²`` the sample
    variance of its seed gains); the mean over ``D`` datasets has ``Σ s_d² / n_d / D²``. A
    dataset with one seed borrows the variance pooled over the others; when no dataset has
    two seeds the spread of the dataset means stands in (0 with one dataset: no estimate).
    The seed-to-seed spread holds the run-to-run noise of a model-dependent strategy as well
    (docs/2026-12-02-region-noise-and-mixing.md: entropy's per-seed gains move by up to 0.10
    between re-runs of one seed on chase_db1_vessels)."""
    groups = [np.asarray(list(v), float) for v in per_dataset.values() if len(v)]
    if not groups:
        return float("nan")
    dof = sum(g.size - 1 for g in groups)
    pooled = (sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / dof) if dof else None
    if pooled is None:
        means = np.asarray([g.mean() for g in groups])
        return float(means.std(ddof=1) / math.sqrt(means.size)) if means.size > 1 else 0.0
    var = sum((float(g.var(ddof=1)) if g.size > 1 else pooled) / g.size for g in groups)
    return math.sqrt(var) / len(groups)


def pick_default(analyses: Mapping[str, Mapping[str, Any]], *, baseline: str = "random",
                 margin: float = NOISE_MARGIN_SE) -> dict[str, Any]:
    """The default region strategy: one rule for every dataset.

    The candidate (any strategy but ``baseline``) with the largest mean over datasets of its
    mean paired nAUC gain over ``baseline`` (same seeds), provided that mean is above
    ``margin`` standard errors (:func:`gain_standard_error`); else ``baseline`` itself: a
    strategy that does not beat random picks by more than the runs' own noise has not earned
    the default (the rule without the margin flipped its answer on a re-run of one dataset).
    Datasets where a candidate or the baseline is missing do not count for it.

    Returns
    -------
    dict
        ``default`` (None when no candidate has a paired measurement), ``gains`` (per
        candidate: per dataset the mean gain), ``mean_gain`` and ``gain_se`` (per candidate,
        over datasets), ``seeds_ahead`` (per candidate: paired seeds ahead / all).
    """
    gains: dict[str, dict[str, float]] = {}
    seed_gains: dict[str, dict[str, list[float]]] = {}
    for ds, an in analyses.items():
        base = an["methods"].get(baseline)
        if not base:
            continue
        for name, per_seed in an["methods"].items():
            if name in (baseline, "rf"):
                continue
            d = _paired(per_seed, base, "naulc")
            if d:
                gains.setdefault(name, {})[ds] = float(np.mean(d))
                seed_gains.setdefault(name, {})[ds] = d
    means = {n: float(np.mean(list(g.values()))) for n, g in gains.items()}
    se = {n: gain_standard_error(seed_gains[n]) for n in gains}
    ahead = {n: [sum(x > 0 for v in seed_gains[n].values() for x in v),
                 sum(len(v) for v in seed_gains[n].values())] for n in gains}
    best = max(means, key=lambda n: means[n]) if means else None
    default = best if best is None or means[best] > max(0.0, margin * se[best]) else baseline
    return {"default": default, "best_candidate": best, "gains": gains, "mean_gain": means,
            "gain_se": se, "seeds_ahead": ahead, "margin_se": margin,
            "rule": f"largest mean over datasets of the paired nAUC gain over {baseline}, "
                    f"if above {margin:g} standard errors (else {baseline})"}


def claims(an: Mapping[str, Any], default: str | None, *, baseline: str = "random"
           ) -> dict[str, Any]:
    """Issue 16's claims on one dataset for the default strategy (None where not measured)."""
    out: dict[str, Any] = {"default": default}
    methods, ceiling = an["methods"], an["ceiling"]
    d = methods.get(default) if default else None
    r = methods.get(baseline)
    if d and ceiling:
        frac = [d[s]["at"]["0.05"] / ceiling[s]["dice"] if ceiling[s]["dice"] > 0
                else float("nan") for s in d if s in ceiling]
        fin = [f for f in frac if np.isfinite(f)]
        out["ceiling_fraction_at_5"] = _ms(fin)
        out["ceiling_fraction_at_5"]["unreached_seeds"] = len(frac) - len(fin)
        out["reaches_95_at_5"] = bool(fin) and len(fin) == len(frac) and \
            min(fin) >= CEILING_AT_5
    if d and r and ceiling:
        rows = []
        for s in d:
            if s not in r or s not in ceiling:
                continue
            xd, xr = d[s]["to_target"], r[s]["to_target"]
            rows.append({"seed": s, "default": xd, "random": xr,
                         "random_max": r[s]["x_max"],
                         "ratio": xd / xr if np.isfinite(xd) and np.isfinite(xr) else
                         float("nan"),
                         "ratio_bound": xd / r[s]["x_max"] if np.isfinite(xd)
                         and not np.isfinite(xr) else None})
        out["pixels_to_90"] = rows
        ok = [row for row in rows if np.isfinite(row["default"])]
        out["half_of_random"] = bool(rows) and len(ok) == len(rows) and all(
            (np.isfinite(row["ratio"]) and row["ratio"] <= MAX_RATIO)
            or (row["ratio_bound"] is not None and row["ratio_bound"] <= MAX_RATIO)
            for row in rows)
    rf = methods.get("rf")
    if rf:
        vs = {}
        for name in dict.fromkeys([baseline, default]):
            if not name or name not in methods:
                continue
            vs[name] = {str(b): _ms(methods[name][s]["at"][str(b)] - rf[s]["at"][str(b)]
                                    for s in methods[name] if s in rf)
                        for b in an["budgets"]}
        out["unet_minus_rf"] = vs
        out["unet_beats_rf"] = {n: all(v["mean"] > 0 for v in per_b.values()
                                       if np.isfinite(v["mean"]))
                                and any(np.isfinite(v["mean"]) for v in per_b.values())
                                for n, per_b in vs.items()}
    obs = an.get("second_observer")
    if obs and d:
        at10 = _ms(d[s]["at"]["0.1"] for s in d)
        out["second_observer"] = obs["mean"]
        out["dice_at_10"] = at10
        out["reaches_observer_at_10"] = bool(np.isfinite(at10["mean"])) and \
            at10["mean"] >= obs["mean"]
    return out


# ----------------------------------------------------------------------------- tables


def _cell(stats: Mapping[str, Any], total: int, fmt: str = "{:.3f}", below: bool = False
          ) -> str:
    """``0.812±0.010``; ``(2/3)`` when only 2 of 3 seeds reached it; ``n/r`` when none did
    (``< r0`` when the budget lies below every seed's round 0: not measured, not failed)."""
    if not stats["n"]:
        return "< r0" if below else "n/r"
    text = fmt.format(stats["mean"])
    if stats["n"] > 1:
        text += "±" + fmt.format(stats["std"])
    if stats["n"] < total:
        text += f" ({stats['n']}/{total})"
    return text


def _pct(v: float | None) -> str:
    return "n/r" if v is None or not np.isfinite(v) else f"{100 * v:.2f} %"


def format_tables(suite: Mapping[str, Any]) -> str:
    """The suite's tables as Markdown (what ``OUT/suite.md`` holds and the script prints)."""
    budgets = suite["budgets"]
    out = []
    head = ["dataset", "method", "seeds", *(f"Dice @{100 * b:g} %" for b in budgets),
            f"nAUC {100 * min(budgets):g}-{100 * max(budgets):g} %", "reached"]
    lines = [head]
    for ds, an in suite["datasets"].items():
        if "error" in an:
            lines.append([ds, f"error: {an['error']}", *[""] * (len(head) - 2)])
            continue
        for name, per_seed in an["methods"].items():
            n = len(per_seed)
            label = "rf (same pixels as random)" if name == "rf" else name
            if name == suite["default"]["default"]:
                label += " (default)"
            cov = [v["covered"] for v in per_seed.values()]
            lines.append([ds, label, str(n),
                          *(_cell(_ms(v["at"][str(b)] for v in per_seed.values()), n,
                                  below=all(v["x_min"] > b for v in per_seed.values()))
                            for b in budgets),
                          _cell(_ms(v["naulc"] for v in per_seed.values()), n),
                          f"{100 * float(np.mean([v['x_max'] for v in per_seed.values()])):.1f} %"
                          + ("" if min(cov) >= 1 else " (range not covered)")])
        ceil = an["ceiling"]
        if ceil:
            n = len(ceil)
            steps = ", ".join(f"s{s}: {c['steps']} steps, " + (
                "Dice " + " → ".join(f"{p['dice']:.3f}" for p in c["plateau"])
                + f" ({c['stop']})" if c["plateau"] else "one round")
                for s, c in ceil.items())
            lines.append([ds, "ceiling (whole pool)", str(n),
                          _cell(_ms(c["dice"] for c in ceil.values()), n),
                          *[""] * (len(budgets) - 1), "", steps])
        if an.get("second_observer"):
            lines.append([ds, "second human observer", "", _cell(an["second_observer"],
                                                                 an["second_observer"]["n"]),
                          *[""] * (len(budgets) + 1)])
    out.append(_markdown(lines))

    multi = [(ds, an) for ds, an in suite["datasets"].items()
             if "error" not in an and any(v["class_at"] for m in an["methods"].values()
                                          for v in m.values())]
    if multi:
        out.append("\nPer-class Dice (mean over the images where the class occurs) and their "
                   "mean over foreground classes:\n")
        lines = [["dataset", "method", "class", *(f"@{100 * b:g} %" for b in budgets),
                  "ceiling"]]
        for ds, an in multi:
            names = an.get("classes") or []
            for name, per_seed in an["methods"].items():
                keys = next(iter(per_seed.values()))["class_at"]
                for k in keys:
                    cname = "mean of foreground classes" if k == "dice_fg_mean" else (
                        names[int(k[10:])] if int(k[10:]) < len(names) else k)
                    cvals = [c["fg_mean"] if k == "dice_fg_mean" else
                             c["per_class"].get(k[10:]) for c in an["ceiling"].values()]
                    lines.append([ds, name, cname,
                                  *(_cell(_ms(v["class_at"][k][str(b)]
                                              for v in per_seed.values()), len(per_seed))
                                    for b in budgets),
                                  _cell(_ms(cvals), len(cvals)) if cvals else "-"])
        out.append(_markdown(lines))

    default = suite["default"]
    out.append(f"\nDefault region strategy ({default['rule']}): **{default['default']}**; "
               "mean gains: " + (", ".join(
                   f"{n} {g:+.4f} ± {default.get('gain_se', {}).get(n, float('nan')):.4f}"
                   + (" ({}/{} seeds ahead)".format(*default["seeds_ahead"][n])
                      if n in default.get("seeds_ahead", {}) else "")
                   for n, g in default["mean_gain"].items()) or "none measured"))
    lines = [["dataset", f"Dice @5 % / ceiling (≥ {CEILING_AT_5:g})",
              f"pool px to {100 * CEILING_TARGET:g} % of ceiling: default / random (ratio)",
              "U-Net − rf at the budgets (random's pixels)", "second observer"]]
    for ds, c in suite["claims"].items():
        frac = c.get("ceiling_fraction_at_5")
        f5 = "-" if not frac else _cell(frac, frac["n"] + frac["unreached_seeds"]) + (
            " yes" if c.get("reaches_95_at_5") else " no")
        px = "-"
        if c.get("pixels_to_90"):
            parts = []
            for row in c["pixels_to_90"]:
                if np.isfinite(row["ratio"]):
                    ratio = f"{row['ratio']:.2f}"
                elif row["ratio_bound"] is not None:
                    ratio = f"≤ {row['ratio_bound']:.2f}, random n/r by {_pct(row['random_max'])}"
                else:
                    ratio = "-"
                parts.append(f"s{row['seed']}: {_pct(row['default'])} / {_pct(row['random'])} "
                             f"({ratio})")
            px = "; ".join(parts) + (" yes" if c.get("half_of_random") else " no")
        rf = "-"
        if c.get("unet_minus_rf", {}).get("random"):
            rf = ", ".join(f"{100 * float(b):g} %: " + (f"{v['mean']:+.3f}" if v["n"] else "n/r")
                           for b, v in c["unet_minus_rf"]["random"].items())
            rf += " yes" if c["unet_beats_rf"].get("random") else " no"
        obs = "-"
        if c.get("second_observer") is not None:
            obs = (f"{c['second_observer']:.3f} vs default @10 %: "
                   f"{_cell(c['dice_at_10'], c['dice_at_10']['n'] or 1)}"
                   + (" yes" if c.get("reaches_observer_at_10") else " no"))
        lines.append([ds, f5, px, rf, obs])
    out.append(_markdown(lines))
    return "\n".join(out) + "\n"


def _markdown(lines: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(lines[0]))]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    rows = [fmt.format(*lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    rows += [fmt.format(*r) for r in lines[1:]]
    return "\n".join(rows)


def plot_pool_curves(path: Path, doc: Mapping[str, Any], an: Mapping[str, Any]) -> None:
    """The dataset's learning curves with x = % of the pool's pixels, budgets as ticks."""
    rows = []
    for name, per_seed in an["methods"].items():
        for seed, v in per_seed.items():
            rows += [{"strategy": name, "seed": int(seed), "round": i, "pct": 100 * x,
                      "dice": y} for i, (x, y) in enumerate(zip(v["x"], v["dice"]))]
    for seed, c in an["ceiling"].items():
        rows.append({"strategy": "full", "seed": int(seed), "round": 0, "pct": 100.0,
                     "dice": c["dice"], "n_labelled": len(doc["splits"][seed]["pool"])})
    refs = []
    if an.get("second_observer"):
        refs.append((an["second_observer"]["mean"], "second human observer"))
    name = Path(doc["dataset"]["root"]).name
    plot_learning_curves(path, rows, x="pct", references=refs,
                         xlabel="annotated pixels (% of the pool)",
                         title=f"{name}: regions {doc['config']['region_size']} px, "
                               f"{len(doc['config']['seeds'])} seed(s), "
                               f"{doc['config']['steps']} steps/round")


# ----------------------------------------------------------------------------- running


def run_suite(data_root: Path, out: Path, settings: SuiteSettings, *,
              datasets: Sequence[str] | None = None, analyse_only: bool = False,
              log=None) -> dict[str, Any]:
    """Run (or resume) every dataset, then write ``suite.json`` and ``suite.md``.

    A dataset that fails is reported in the table and the log; the others still run.
    ``datasets``: run only these; the others already in ``out`` (a ``results.json``) are
    analysed again and kept in the tables, so re-running one dataset drops none.

    Returns
    -------
    dict
        ``settings``, ``plans`` (per dataset), ``datasets`` (per dataset the analysis or its
        error), ``default`` (:func:`pick_default`), ``claims`` (per dataset), ``budgets``.
    """
    log = log if log is not None else sys.stderr
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folders = find_datasets(Path(data_root), datasets)
    if datasets:  # the other datasets this folder already holds stay in the tables
        named = {f.name for f in folders}
        folders = sorted(folders + [
            f for f in find_datasets(Path(data_root))
            if f.name not in named and (out / f.name / "results.json").is_file()])
    plans, analyses, docs = {}, {}, {}
    for folder in folders:
        ds = folder.name
        run_it = not analyse_only and (not datasets or ds in datasets)
        try:
            cfg, plan = dataset_config(folder, out / ds, settings)
            plans[ds] = plan
            print(f"\n== {ds}: {plan['n_images']} images, boxes {plan['region_size']} px "
                  f"(mean window {plan['window_area']:.0f} px), pool {plan['pool_pixels']} px; "
                  f"initial {plan['initial']} + {plan['rounds']} x {plan['step']} boxes "
                  f"(~{100 * plan['planned_fraction']:.1f} % of the pool)", file=log, flush=True)
            if run_it:
                t0 = time.perf_counter()
                bar = BenchmarkBar(log, interval_s=60.0)
                try:
                    run_to_end(run_benchmark(cfg), bar)
                finally:
                    bar.close()
                print(f"== {ds} done in {(time.perf_counter() - t0) / 60:.1f} min", file=log,
                      flush=True)
            path = out / ds / "results.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist yet (nothing run)")
            docs[ds] = json.loads(path.read_text(encoding="utf-8"))
            analyses[ds] = analyse_dataset(docs[ds])
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken dataset must not lose the rest
            traceback.print_exc(file=log)
            analyses[ds] = {"error": f"{type(exc).__name__}: {exc}"}
    ok = {ds: an for ds, an in analyses.items() if "error" not in an}
    default = pick_default(ok)
    suite = {"settings": {**settings.__dict__}, "plans": plans, "budgets": list(BUDGETS),
             "datasets": analyses, "default": default,
             "claims": {ds: claims(an, default["default"]) for ds, an in ok.items()},
             "rule": {"initial_fraction": INITIAL_FRACTION, "last_fraction": LAST_FRACTION,
                      "plan_seeds": list(PLAN_SEEDS)}}
    for ds, an in ok.items():
        try:
            plot_pool_curves(out / ds / "learning_curve_pool.png", docs[ds], an)
        except Exception:  # noqa: BLE001 - a plot is not worth the tables
            traceback.print_exc(file=log)
    write_json(out / "suite.json", suite)
    atomic_write_text(out / "suite.md", format_tables(suite))
    return suite


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["calibrate_bias=true", "max_steps=200"]`` -> ``{"calibrate_bias": True, ...}``
    (values as JSON; a bare word stays a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Expected KEY=VALUE, got {item!r}.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                   help="folder holding one dataset folder (images/ + masks/) per dataset")
    p.add_argument("--datasets", default="", help="comma-separated folder names (default: all)")
    p.add_argument("--out", required=True)
    d = SuiteSettings()
    p.add_argument("--strategies", default=",".join(d.strategies))
    p.add_argument("--seeds", default="3", help="a count (3 = 0,1,2) or a list (0,4)")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--full-steps", type=int, default=d.full_steps)
    p.add_argument("--full-rounds", type=int, default=d.full_rounds)
    p.add_argument("--full-min-delta", type=float, default=d.full_min_delta)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--max-pixels", type=float, default=None,
                   help="first images of each folder up to this many pixels (e.g. 2e7)")
    p.add_argument("--baselines", default=",".join(d.baselines))
    p.add_argument("--device", default=d.device)
    p.add_argument("--rf-samples", type=int, default=d.rf_samples)
    p.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig override for every dataset, VALUE as JSON (e.g. "
                        "calibrate_bias=true); repeatable")
    p.add_argument("--analyse-only", action="store_true",
                   help="rebuild the tables from what is on disk; train nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = replace(
        SuiteSettings(), strategies=parse_list(args.strategies), seeds=parse_seeds(args.seeds),
        rounds=args.rounds, steps=args.steps, full_steps=args.full_steps,
        full_rounds=args.full_rounds, full_min_delta=args.full_min_delta,
        max_images=args.max_images,
        max_pixels=None if args.max_pixels is None else int(args.max_pixels),
        baselines=parse_list(args.baselines, none_ok=True),
        device=args.device, rf_samples=args.rf_samples or None,
        train=parse_overrides(args.train))
    suite = run_suite(Path(args.data_root), Path(args.out), settings,
                      datasets=parse_list(args.datasets) or None, analyse_only=args.analyse_only)
    print(format_tables(suite))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
