"""Benchmark outputs: area under the learning curve, CSV/JSON files, the plot, the summary table.

Everything here works on plain row dicts, one per strategy, seed and round (the rows of
``results.csv``), so it can be re-run on a finished ``results.json`` without training anything.
matplotlib is imported inside :func:`plot_learning_curves` (Agg backend, no display needed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_path
from ..core.serialize import write_csv as write_table

__all__ = [
    "CSV_COLUMNS",
    "BASELINES",
    "DEFAULT_BASELINES",
    "aulc",
    "budget_aulc",
    "class_columns",
    "curve_at",
    "first_reach",
    "summarise",
    "write_csv",
    "plot_learning_curves",
    "format_summary",
]

#: Columns of ``results.csv`` in order. The first nine are the benchmark contract's.
CSV_COLUMNS = (
    "strategy", "seed", "round", "n_labelled", "pixels_reviewed", "dice", "pixels_corrected",
    "objects_corrected", "seconds",
    "n_picked", "pixels_scratch", "objects_scratch", "objects_added", "objects_removed",
    "total_pixels_corrected", "total_objects_corrected", "total_pixels_scratch",
    "total_objects_scratch", "train_steps", "train_s", "query_s", "eval_s",
)

#: Strategy names the baselines use in the outputs (``cellpose`` only when asked for).
BASELINES = ("rf", "full", "cellpose")
#: The baselines a run has unless told otherwise.
DEFAULT_BASELINES = ("rf", "full")


def aulc(x: Sequence[float], y: Sequence[float]) -> float:
    """Normalised area under a learning curve: the mean of ``y`` over the span of ``x``.

    The trapezoid area divided by ``x[-1] - x[0]`` (points sorted by x), so a curve at a
    constant Dice d has AULC d, and curves over the same x range compare directly. A single
    point (or a zero-width span) gives the mean of ``y``.

    Parameters
    ----------
    x : sequence of float
        Labelled images or annotated pixels.
    y : sequence of float
        Test Dice at each x.

    Returns
    -------
    float
        In the range of ``y`` (0..1 for Dice); NaN for an empty curve.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1D of the same length, got {x.shape} and {y.shape}.")
    if x.size == 0:
        return float("nan")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    span = x[-1] - x[0]
    if x.size == 1 or span <= 0:
        return float(np.mean(y))
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return area / float(span)


def _sorted_curve(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1D of the same length, got {x.shape} and {y.shape}.")
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def curve_at(x: Sequence[float], y: Sequence[float], at: float) -> float:
    """A learning curve's value at ``at``, linearly interpolated between measured points.

    Parameters
    ----------
    x : sequence of float
        Annotated pixels (or any budget) of the measured rounds.
    y : sequence of float
        Test Dice of those rounds.
    at : float
        The budget to read the curve at.

    Returns
    -------
    float
        NaN when ``at`` lies outside the measured span (below the first round or beyond the
        last one): a curve is never extrapolated.
    """
    x, y = _sorted_curve(x, y)
    if x.size == 0 or not x[0] <= at <= x[-1]:
        return float("nan")
    return float(np.interp(at, x, y))


def first_reach(x: Sequence[float], y: Sequence[float], target: float) -> float:
    """The smallest budget at which the interpolated curve reaches ``target``.

    Returns the x of the first measured point at or above ``target``, moved back along the
    segment from the point before it to where that segment crosses ``target``; the first point
    itself when it is already there; NaN when the curve never reaches it.
    """
    x, y = _sorted_curve(x, y)
    hit = np.nonzero(y >= target)[0]
    if hit.size == 0:
        return float("nan")
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def budget_aulc(x: Sequence[float], y: Sequence[float], lo: float, hi: float
                ) -> tuple[float, float]:
    """Normalised area under the interpolated curve between two budgets.

    Parameters
    ----------
    x, y : sequence of float
        The learning curve.
    lo, hi : float
        The budget range (e.g. 1 % and 10 % of the pool's pixels), ``lo < hi``.

    Returns
    -------
    aulc : float
        Mean Dice over the part of ``[lo, hi]`` the curve covers (the curve is not
        extrapolated); NaN if it covers none of it.
    covered : float
        The fraction of ``[lo, hi]`` the curve covers (1 = the whole range).
    """
    if not hi > lo:
        raise ValueError(f"Need lo < hi, got lo={lo!r}, hi={hi!r}.")
    x, y = _sorted_curve(x, y)
    if x.size == 0:
        return float("nan"), 0.0
    a, b = max(lo, float(x[0])), min(hi, float(x[-1]))
    if not b > a:
        return float("nan"), 0.0
    inner = x[(x > a) & (x < b)]
    xs = np.concatenate([[a], inner, [b]])
    return aulc(xs, np.interp(xs, x, y)), float((b - a) / (hi - lo))


def class_columns(per_class: Mapping[int, float]) -> dict[str, float]:
    """``{"dice_class1": .., "dice_class2": .., "dice_fg_mean": ..}`` for a multi-class set.

    ``dice_fg_mean`` is the mean of the per-class Dice over the foreground classes that
    occurred (each class weighs the same, however often it occurs); empty for a binary set,
    whose ``dice`` already is its one class.
    """
    if len(per_class) < 2:
        return {}
    out = {f"dice_class{int(k)}": float(v) for k, v in sorted(per_class.items())}
    vals = [v for v in per_class.values() if np.isfinite(v)]
    out["dice_fg_mean"] = float(np.mean(vals)) if vals else float("nan")
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _order(names: Iterable[str]) -> list[str]:
    """Strategies in first-seen order, baselines last."""
    names = list(dict.fromkeys(names))
    return [n for n in names if n not in BASELINES] + [n for n in BASELINES if n in names]


def summarise(rows: Sequence[Mapping[str, Any]], *, x: str = "n_labelled") -> dict[str, Any]:
    """Per strategy: AULC per seed, its mean and std over seeds, first and last Dice, effort.

    Parameters
    ----------
    rows : sequence of dict
        One per strategy, seed and round (``results.csv`` rows).
    x : {"n_labelled", "pixels_reviewed"}
        The learning curve's x axis.

    Returns
    -------
    dict
        ``{strategy: {"aulc": {"mean", "std", "per_seed": {seed: value}}, "seeds", "rounds",
        "dice_first", "dice_last", "n_labelled_last", "pixels_reviewed_last",
        "total_pixels_corrected", "total_pixels_scratch", "total_objects_corrected",
        "total_objects_scratch", "seconds"}}``; means and stds over seeds. The ``full``
        baseline has one point per seed: its AULC is its Dice (a flat reference line).
    """
    out: dict[str, Any] = {}
    for name in _order(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == name]
        seeds = sorted({int(r["seed"]) for r in mine})
        per_seed: dict[str, float] = {}
        firsts, lasts, last_rows = [], [], []
        for seed in seeds:
            curve = sorted((r for r in mine if int(r["seed"]) == seed), key=lambda r: r["round"])
            per_seed[str(seed)] = aulc([r[x] for r in curve], [r["dice"] for r in curve])
            firsts.append(curve[0]["dice"])
            lasts.append(curve[-1]["dice"])
            last_rows.append(curve[-1])
        m, s = _mean_std(list(per_seed.values()))

        def ms(key: str, src: Sequence[Mapping[str, Any]] = last_rows) -> dict[str, float]:
            mm, ss = _mean_std([r.get(key) for r in src])
            return {"mean": mm, "std": ss}

        rounds = sorted({int(r["round"]) for r in mine})
        out[name] = {
            "aulc": {"mean": m, "std": s, "per_seed": per_seed},
            "seeds": seeds,
            "rounds": rounds,
            "dice_first": dict(zip(("mean", "std"), _mean_std(firsts))),
            "dice_last": dict(zip(("mean", "std"), _mean_std(lasts))),
            "n_labelled_last": ms("n_labelled"),
            "pixels_reviewed_last": ms("pixels_reviewed"),
            "total_pixels_corrected": ms("total_pixels_corrected"),
            "total_pixels_scratch": ms("total_pixels_scratch"),
            "total_objects_corrected": ms("total_objects_corrected"),
            "total_objects_scratch": ms("total_objects_scratch"),
            **{f"{k}_last": ms(k) for k in _object_keys(mine)},
            "seconds": {"mean": float(np.mean([sum(r["seconds"] for r in mine
                                                   if int(r["seed"]) == sd) for sd in seeds]))
                        if seeds else float("nan"), "std": float("nan")},
        }
        out[name]["seconds"]["std"] = _mean_std(
            [sum(r["seconds"] for r in mine if int(r["seed"]) == sd) for sd in seeds])[1]
    return out


def _object_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The numeric object-level columns present in any row (``evaluation.object_columns``)."""
    from .object_columns import OBJECT_COLUMNS

    present = {k for r in rows for k in r}
    return [k for k in OBJECT_COLUMNS if k in present and k != "inst_method"]


def _extra_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per-class Dice columns present in any row (multi-class sets), in class order, then
    the object-level columns of a dataset with ``instances/``."""
    from .object_columns import OBJECT_COLUMNS

    keys = {k for r in rows for k in r if k.startswith("dice_class") and k[10:].isdigit()}
    cols = sorted(keys, key=lambda k: int(k[10:]))
    if any("dice_fg_mean" in r for r in rows):
        cols.append("dice_fg_mean")
    present = {k for r in rows for k in r}
    return cols + [k for k in OBJECT_COLUMNS if k in present]


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the rows with :data:`CSV_COLUMNS` (missing values empty), atomically.

    Multi-class runs add ``dice_class1 .. dice_classK-1`` and ``dice_fg_mean`` after them;
    datasets with ``instances/`` the object-level columns (``evaluation.object_columns``).
    """
    write_table(path, [*CSV_COLUMNS, *_extra_columns(rows)], rows, cell=_csv_cell)


def _csv_cell(column: str, value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return round(value, 2) if column == "seconds" or column.endswith("_s") else round(value, 5)
    return value


def plot_learning_curves(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str = "n_labelled",
    title: str = "",
    references: Sequence[tuple[float, str]] = (),
    xlabel: str | None = None,
) -> None:
    """Learning curves, mean and ±1 std over seeds per strategy, baselines as references.

    ``rf`` is drawn as a dashed curve (it is trained on the same labelled counts), ``full`` as a
    horizontal line at its mean Dice with its spread as a band.

    Parameters
    ----------
    path : path
        The PNG to write.
    rows : sequence of dict
        ``results.csv`` rows.
    x : str
        The row key on the x axis.
    title : str
    references : sequence of (float, str)
        Extra horizontal lines ``(dice, label)``, e.g. a second human observer's agreement.
    xlabel : str, optional
        Axis label; by default named after ``x``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = _order(r["strategy"] for r in rows)
    for i, name in enumerate(n for n in names if n != "full"):
        mine = [r for r in rows if r["strategy"] == name]
        rounds = sorted({int(r["round"]) for r in mine})
        xs, ms, ss = [], [], []
        for rnd in rounds:
            at = [r for r in mine if int(r["round"]) == rnd]
            xs.append(float(np.mean([r[x] for r in at])))
            d = [r["dice"] for r in at]
            ms.append(float(np.mean(d)))
            ss.append(float(np.std(d)))
        xs, ms, ss = np.array(xs), np.array(ms), np.array(ss)
        n_seeds = len({r["seed"] for r in mine})
        color = "0.35" if name == "rf" else colors[i % len(colors)]
        style = "--" if name == "rf" else "-"
        label = f"{name} (random forest)" if name == "rf" else name
        ax.plot(xs, ms, style, marker="o", ms=3.5, color=color,
                label=f"{label}, {n_seeds} seed{'s' if n_seeds != 1 else ''}")
        if n_seeds > 1:
            ax.fill_between(xs, np.clip(ms - ss, 0, 1), np.clip(ms + ss, 0, 1), color=color,
                            alpha=0.15, lw=0)
    full = [r for r in rows if r["strategy"] == "full"]
    if full:
        d = np.array([r["dice"] for r in full], float)
        m, s = float(d.mean()), float(d.std())
        ax.axhline(m, color="k", lw=1.2, ls=":",
                   label=f"full pool ({int(np.mean([r['n_labelled'] for r in full]))} images): "
                         f"{m:.3f}")
        if s > 0:
            ax.axhspan(m - s, m + s, color="k", alpha=0.06, lw=0)
    for j, (value, label) in enumerate(references):
        ax.axhline(float(value), color="tab:red", lw=1.2, ls=("-.", (0, (5, 2)), ":")[j % 3],
                   label=f"{label}: {float(value):.3f}")
    if x == "n_labelled":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if xlabel is None:
        xlabel = {"n_labelled": "labelled images", "pixels_reviewed": "annotated pixels"}.get(x, x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test Dice (mean per image, foreground)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _pm(d: Mapping[str, float], fmt: str = "{:.3f}") -> str:
    m, s = d.get("mean"), d.get("std")
    if m is None or not np.isfinite(m):
        return "-"
    if s is None or not np.isfinite(s) or s == 0:
        return fmt.format(m)
    return f"{fmt.format(m)}±{fmt.format(s)}"


def _count(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.0f}k"
    return f"{v:.0f}"


#: Summary-table columns of the object scores (last round): key -> heading.
_SUMMARY_OBJECTS = {"cc_f1_50_last": "F1@.5 cc", "inst_f1_50_last": "F1@.5 inst",
                    "cc_count_error_last": "count err cc",
                    "inst_count_error_last": "count err inst"}


def format_summary(summary: Mapping[str, Any], *, x: str = "n_labelled") -> str:
    """The summary table printed at the end of a run (plain text, one line per strategy)."""
    head = ["strategy", "seeds", "labelled" if x == "n_labelled" else "pixels",
            "Dice first", "Dice last", "AULC", "px corrected/scratch", "objects corr/scratch"]
    # object-level columns of the last round, where the dataset has instances/
    objects = [k for k in _SUMMARY_OBJECTS if any(k in s for s in summary.values())]
    head += [_SUMMARY_OBJECTS[k] for k in objects] + ["time/seed"]
    lines = []
    for name, s in summary.items():
        if x == "n_labelled":
            last = s["n_labelled_last"]["mean"]
        else:
            last = s["pixels_reviewed_last"]["mean"]
        px = (f"{_count(s['total_pixels_corrected']['mean'])}/"
              f"{_count(s['total_pixels_scratch']['mean'])}")
        ob = (f"{_count(s['total_objects_corrected']['mean'])}/"
              f"{_count(s['total_objects_scratch']['mean'])}")
        secs = s["seconds"]["mean"]
        lines.append([
            name, str(len(s["seeds"])), _count(last), _pm(s["dice_first"]), _pm(s["dice_last"]),
            _pm(s["aulc"]), px, ob,
            *(_pm(s.get(k, {}), "{:.2f}") for k in objects),
            "-" if not np.isfinite(secs) else f"{secs / 60:.1f} min",
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)
