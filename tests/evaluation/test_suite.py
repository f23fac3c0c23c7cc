"""benchmarks/suite.py: the budget rule, the analysis on hand-made results, a tiny whole run.

The whole run uses a tiny U-Net (width 4, depth 2, 32-pixel patches, a few steps) on two
synthetic 8-image folders (a binary one with a second observer, and a three-class one).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from imageio import v3 as iio

from napari_activeseg.core.progress import run_to_end
from napari_activeseg.evaluation.config import BenchmarkConfig
from napari_activeseg.evaluation.dataset import mean_dice, split_dataset
from napari_activeseg.evaluation.runner import run_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _load_suite():
    spec = importlib.util.spec_from_file_location("suite", ROOT / "benchmarks" / "suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["suite"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


suite = _load_suite()

TINY = dict(model={"width": 4, "depth": 2}, train={"patch_size": 32, "batch_size": 4, "lr": 1e-2},
            rf={"n_estimators": 5, "sigma_max": 4, "max_samples_per_image": 2000, "n_jobs": 1})


# ------------------------------------------------------------------------ the budget rule


@pytest.mark.parametrize("shapes", [
    [(120, 120)] * 300,  # many small images: one window per image
    [(2001, 2001)] * 4 + [(737, 758)] * 6,  # few large ones
    [(256, 256)] * 80 + [(520, 696)] * 25 + [(1024, 1024)] * 8,  # mixed sizes
    [(960, 999)] * 28,
])
@pytest.mark.parametrize("rounds", [3, 5])
def test_the_schedule_spans_the_budgets_on_any_data(shapes, rounds):
    plan = suite.plan_budget(shapes, rounds=rounds)
    p, a = plan["pool_pixels"], plan["window_area"]
    first = plan["initial"] * a / p
    last = (plan["initial"] + rounds * plan["step"]) * a / p
    assert last >= 0.10  # the last round passes the 10 % budget ...
    assert last < 0.10 + 0.01 + plan["step"] * a / p  # ... by less than one round's boxes
    assert first <= 0.01 or plan["initial"] == 1  # round 0 at or below the 1 % budget
    assert 1 <= plan["initial"] <= plan["min_pool_images"]
    # the box side is the data's, one rule (96-256 px, never above the median short side)
    assert 96 <= plan["region_size"] <= 256 or plan["region_size"] == min(min(s) for s in shapes)
    # the pool is the largest over the plan seeds: every seed's pool is at most it
    for seed in suite.PLAN_SEEDS:
        pool, _ = split_dataset(len(shapes), seed=seed)
        assert sum(shapes[i][0] * shapes[i][1] for i in pool) <= p


def test_the_schedule_does_not_depend_on_the_requested_seeds(tmp_path):
    data = _folder(tmp_path / "d", classes=2)
    a, pa = suite.dataset_config(data, tmp_path / "o", suite.SuiteSettings(seeds=(0,)))
    b, pb = suite.dataset_config(data, tmp_path / "o", suite.SuiteSettings(seeds=(0, 1, 2)))
    assert pa == pb and (a.initial, a.step, a.region_size) == (b.initial, b.step, b.region_size)
    assert a.regions and a.region_size == pa["region_size"]


def test_a_pixel_cap_takes_the_same_share_of_small_and_large_images(tmp_path):
    data = _folder(tmp_path / "d", classes=2)  # 8 images of 200 x 200
    cfg, plan = suite.dataset_config(data, tmp_path / "o",
                                     suite.SuiteSettings(max_pixels=5 * 40_000 + 1))
    assert cfg.max_images == 5 and plan["n_images"] == 5
    cfg, _ = suite.dataset_config(data, tmp_path / "o", suite.SuiteSettings(max_pixels=10**9))
    assert cfg.max_images is None  # the whole folder fits: no cap recorded
    cfg, _ = suite.dataset_config(data, tmp_path / "o", suite.SuiteSettings(max_pixels=1))
    assert cfg.max_images == 2  # a pool and a test image at least


# ------------------------------------------------------------------------ the analysis


def _curve(px, dice):
    return {"pixels_reviewed": px, "dice": dice}


def _doc(ceil=0.80, pool_px=1000, observer=None):
    """A results.json with known answers: random reaches 0.72 (90 % of 0.80) at 8 % of the pool,
    entropy at 3 %; the forest sits 0.1 below random."""
    rnd = _curve([10, 40, 70, 110], [0.40, 0.60, 0.69, 0.75])
    ent = _curve([10, 40, 70, 110], [0.40, 0.75, 0.78, 0.79])
    rf = _curve([10, 40, 70, 110], [0.30, 0.50, 0.59, 0.65])
    full = {"pixels_reviewed": [pool_px], "dice": [ceil], "train_steps": [1800]}
    return {
        "config": {"full_rounds": 4, "full_min_delta": 0.005, "region_size": 96,
                   "seeds": [0], "steps": 10},
        "dataset": {"root": "/x/set"}, "x_axis": "pixels_reviewed", "classes": ["bg", "fg"],
        "splits": {"0": {"pool_pixels": pool_px, "pool": ["a"], "test": ["b"]}},
        "curves": {"random": {"0": rnd}, "entropy": {"0": ent}, "rf": {"0": rf},
                   "full": {"0": full}},
        "full_plateau": {"0": {"rounds": [{"cum_steps": 600, "dice": 0.7},
                                          {"cum_steps": 1200, "dice": 0.8},
                                          {"cum_steps": 1800, "dice": 0.801}],
                               "stop_reason": "plateau"}},
        "second_observer": observer,
    }


def test_analysis_reads_the_budgets_off_the_curves():
    an = suite.analyse_dataset(_doc())
    rnd = an["methods"]["random"]["0"]
    assert rnd["at"]["0.01"] == pytest.approx(0.40)
    assert rnd["at"]["0.05"] == pytest.approx(0.60 + 0.09 / 3)
    assert rnd["at"]["0.1"] == pytest.approx(0.69 + 0.06 * 3 / 4)
    assert math.isnan(rnd["at"]["0.02"]) is False
    # 90 % of the ceiling (0.72): random crosses between 7 % (0.69) and 11 % (0.75)
    assert rnd["to_target"] == pytest.approx(0.07 + 0.04 * 0.03 / 0.06)
    ent = an["methods"]["entropy"]["0"]
    assert ent["to_target"] == pytest.approx(0.01 + 0.03 * 0.32 / 0.35)
    assert an["ceiling"]["0"]["steps"] == 1800 and an["ceiling"]["0"]["stop"] == "plateau"
    assert [p["dice"] for p in an["ceiling"]["0"]["plateau"]] == [0.7, 0.8, 0.801]


def test_default_pick_and_claims_on_known_curves():
    an = {"a": suite.analyse_dataset(_doc()), "b": suite.analyse_dataset(_doc())}
    pick = suite.pick_default(an)
    assert pick["default"] == "entropy" and pick["mean_gain"]["entropy"] > 0
    # a candidate behind random on average does not get the default: random keeps it
    worse = _doc()
    worse["curves"]["entropy"]["0"]["dice"] = [d - 0.05 for d in
                                               worse["curves"]["random"]["0"]["dice"]]
    behind = suite.pick_default({"a": suite.analyse_dataset(worse)})
    assert behind["default"] == "random" and behind["best_candidate"] == "entropy"
    assert behind["mean_gain"]["entropy"] < 0
    c = suite.claims(an["a"], "entropy")
    # entropy at 5 %: 0.75 + 0.03 * 1/3 = 0.76 -> 0.95 of 0.80
    assert c["ceiling_fraction_at_5"]["mean"] == pytest.approx(0.76 / 0.80)
    assert c["reaches_95_at_5"] is True
    row = c["pixels_to_90"][0]
    assert row["ratio"] == pytest.approx(row["default"] / row["random"]) and row["ratio"] < 0.5
    assert c["half_of_random"] is True
    assert c["unet_beats_rf"] == {"random": True, "entropy": True}
    assert c["unet_minus_rf"]["random"]["0.05"]["mean"] == pytest.approx(0.1)
    assert "second_observer" not in c


def test_gain_standard_error_known_answers():
    # two datasets, 3 seeds each: variances 1e-4 and 4e-4 -> sqrt(1e-4/3 + 4e-4/3) / 2
    se = suite.gain_standard_error({"a": [0.01, 0.02, 0.03], "b": [0.0, 0.02, 0.04]})
    assert se == pytest.approx(math.sqrt(1e-4 / 3 + 4e-4 / 3) / 2)
    # a one-seed dataset borrows the pooled variance of the others (here 1e-4)
    se1 = suite.gain_standard_error({"a": [0.01, 0.02, 0.03], "b": [0.05]})
    assert se1 == pytest.approx(math.sqrt(1e-4 / 3 + 1e-4 / 1) / 2)
    # one seed everywhere: the spread of the dataset means
    assert suite.gain_standard_error({"a": [0.01], "b": [0.03]}) == pytest.approx(
        0.02 / math.sqrt(2) / math.sqrt(2))


def _seeded(gains: list[float]) -> dict:
    """An analysis with random and entropy on len(gains) seeds, entropy ahead by gains[s]."""
    methods = {"random": {}, "entropy": {}}
    for s, g in enumerate(gains):
        methods["random"][str(s)] = {"naulc": 0.5}
        methods["entropy"][str(s)] = {"naulc": 0.5 + g}
    return {"methods": methods}


def test_default_needs_a_gain_above_the_noise():
    # mean +0.007 with seeds spread by +-0.08 on one set: within the noise, random keeps it
    noisy = {"chase": _seeded([-0.06, 0.0, 0.10]), "axon": _seeded([0.01, 0.02, 0.015]),
             "dsb": _seeded([0.02, 0.01, -0.03])}
    pick = suite.pick_default(noisy)
    assert pick["best_candidate"] == "entropy" and pick["mean_gain"]["entropy"] > 0
    assert pick["mean_gain"]["entropy"] < 2 * pick["gain_se"]["entropy"]
    assert pick["default"] == "random"
    assert pick["seeds_ahead"]["entropy"] == [6, 9]
    # the same mean gain with a tight spread takes the default
    steady = {k: _seeded([0.011, 0.012, 0.013]) for k in ("a", "b", "c")}
    assert suite.pick_default(steady)["default"] == "entropy"
    # without the margin the noisy gain would have won
    assert suite.pick_default(noisy, margin=0.0)["default"] == "entropy"


def test_claims_say_when_random_never_gets_there_and_name_the_observer():
    doc = _doc(ceil=0.90, observer={"0": 0.777})  # target 0.81: random never reaches it
    doc["curves"]["entropy"]["0"]["dice"] = [0.40, 0.82, 0.85, 0.86]
    an = suite.analyse_dataset(doc)
    c = suite.claims(an, "entropy")
    row = c["pixels_to_90"][0]
    assert math.isnan(row["random"]) and math.isnan(row["ratio"])
    assert row["ratio_bound"] == pytest.approx(row["default"] / 0.11)
    assert c["second_observer"] == pytest.approx(0.777) and c["reaches_observer_at_10"]
    text = suite.format_tables({"budgets": list(suite.BUDGETS), "datasets": {"set": an},
                                "default": suite.pick_default({"set": an}),
                                "claims": {"set": c}})
    assert "random n/r" in text and "second human observer" in text and "0.777" in text


# ------------------------------------------------------------------------ a whole tiny run


def _folder(root: Path, classes: int, n: int = 8, observer: bool = False) -> Path:
    h = w = 200
    yy, xx = np.mgrid[:h, :w]
    for s in range(n):
        rng = np.random.default_rng(s)
        lab = np.zeros((h, w), np.uint8)
        for _ in range(8):
            r = rng.uniform(6, 12)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            lab[d2 <= r * r] = 1
            if classes == 3:
                lab[d2 <= (r / 2) ** 2] = 2
        img = 0.1 + 0.4 * (lab > 0) + 0.3 * (lab == 2) + rng.normal(0, 0.05, (h, w))
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        iio.imwrite(root / "images" / f"im{s}.png", (np.clip(img, 0, 1) * 255).astype(np.uint8))
        iio.imwrite(root / "masks" / f"im{s}.png", lab)
        if observer:
            (root / "masks_2nd_observer").mkdir(exist_ok=True)
            iio.imwrite(root / "masks_2nd_observer" / f"im{s}.png", np.roll(lab, 2, axis=1))
    return root


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    base = tmp_path_factory.mktemp("suite")
    _folder(base / "data" / "binary", classes=2, observer=True)
    _folder(base / "data" / "three", classes=3)
    settings = suite.SuiteSettings(strategies=("random", "entropy"), seeds=(0,), rounds=2,
                                   steps=6, full_steps=6, full_rounds=3, **TINY)
    result = suite.run_suite(base / "data", base / "out", settings, log=io.StringIO())
    return base, settings, result


@pytest.mark.slow
def test_tiny_suite_writes_one_table_over_every_dataset(tiny_suite):
    base, _, result = tiny_suite
    out = base / "out"
    assert set(result["datasets"]) == {"binary", "three"}
    assert all("error" not in an for an in result["datasets"].values())
    md = (out / "suite.md").read_text()
    for needle in ("binary", "three", "random", "entropy", "rf (same pixels as random)",
                   "ceiling (whole pool)", "second human observer", "Per-class Dice",
                   "mean of foreground classes", "Default region strategy"):
        assert needle in md, needle
    doc = json.loads((out / "suite.json").read_text())
    pick = doc["default"]
    assert pick["best_candidate"] == "entropy"  # the only candidate
    ahead = pick["mean_gain"]["entropy"] > max(0.0, 2 * pick["gain_se"]["entropy"])
    assert pick["default"] == ("entropy" if ahead else "random")
    for ds in ("binary", "three"):
        assert (out / ds / "learning_curve_pool.png").is_file()
        cfg = json.loads((out / ds / "config.json").read_text())
        plan = doc["plans"][ds]
        assert cfg["regions"] is True and cfg["region_size"] == plan["region_size"]
        assert (cfg["initial"], cfg["step"]) == (plan["initial"], plan["step"])
        # every strategy's last round is past the 10 % budget of its own pool
        res = json.loads((out / ds / "results.json").read_text())
        pool_px = res["splits"]["0"]["pool_pixels"]
        for name in ("random", "entropy"):
            assert res["curves"][name]["0"]["pixels_reviewed"][-1] >= 0.10 * pool_px
        # the forest saw random's boxes: the same pixels and the same (distinct) images
        for key in ("pixels_reviewed", "n_labelled"):
            assert res["curves"]["rf"]["0"][key] == res["curves"]["random"]["0"][key]


@pytest.mark.slow
def test_tiny_suite_reports_per_class_dice_and_the_observer(tiny_suite):
    base, _, result = tiny_suite
    three = json.loads((base / "out" / "three" / "results.json").read_text())
    curve = three["curves"]["random"]["0"]
    assert {"dice_class1", "dice_class2", "dice_fg_mean"} <= set(curve)
    binary = json.loads((base / "out" / "binary" / "results.json").read_text())
    assert "dice_class1" not in binary["curves"]["random"]["0"]
    # the second observer's Dice is the one of its masks on this seed's test images
    _, test = split_dataset(8, seed=0)
    names = sorted(f"im{s}.png" for s in range(8))
    data = base / "data" / "binary"
    truth = [iio.imread(data / "masks" / names[i]) for i in test]
    other = [iio.imread(data / "masks_2nd_observer" / names[i]) for i in test]
    assert binary["second_observer"]["0"] == pytest.approx(mean_dice(other, truth, 2))
    assert result["datasets"]["binary"]["second_observer"]["mean"] == pytest.approx(
        mean_dice(other, truth, 2))
    assert "second_observer" in result["claims"]["binary"]


@pytest.mark.slow
def test_tiny_suite_resumes_without_training_and_analyses_only(tiny_suite):
    base, settings, result = tiny_suite
    before = {p: p.stat().st_mtime_ns for p in (base / "out").rglob("benchmark_state.json")}
    again = suite.run_suite(base / "data", base / "out", settings, log=io.StringIO())
    after = {p: p.stat().st_mtime_ns for p in (base / "out").rglob("benchmark_state.json")}
    assert before == after  # nothing was redone
    assert suite.format_tables(again) == suite.format_tables(result)
    only = suite.run_suite(base / "data", base / "out", settings, analyse_only=True,
                           log=io.StringIO())
    assert suite.format_tables(only) == suite.format_tables(result)
    # re-running one dataset keeps the other's figures in the tables
    one = suite.run_suite(base / "data", base / "out", settings, datasets=["three"],
                          log=io.StringIO())
    assert {p: p.stat().st_mtime_ns for p in (base / "out").rglob("benchmark_state.json")
            } == before
    assert set(one["datasets"]) == {"binary", "three"}
    assert suite.format_tables(one) == suite.format_tables(result)
    assert set(json.loads((base / "out" / "suite.json").read_text())["datasets"]) == {
        "binary", "three"}


# ------------------------------------------------------------------------ the ceiling's plateau


def test_full_baseline_trains_until_the_test_dice_plateaus(tmp_path):
    data = _folder(tmp_path / "d", classes=2, n=6)
    out = tmp_path / "out"
    cfg = BenchmarkConfig(data=data, out=out, strategies=("random",), seeds=(0,), rounds=0,
                          initial=1, step=1, baselines=("full",), steps=4, full_steps=4,
                          full_rounds=3, full_min_delta=0.0, **TINY)
    run_to_end(run_benchmark(cfg))
    doc = json.loads((out / "results.json").read_text())
    plateau = doc["full_plateau"]["0"]
    rounds = plateau["rounds"]
    dice = [r["dice"] for r in rounds]
    assert 1 <= len(rounds) <= 3 and [r["cum_steps"] for r in rounds] == [4 * (k + 1) for k in
                                                                           range(len(rounds))]
    best = int(np.argmax(dice))
    # the row is the best round: its Dice and its cumulative steps
    assert doc["curves"]["full"]["0"]["dice"][0] == pytest.approx(dice[best])
    assert doc["curves"]["full"]["0"]["train_steps"][0] == rounds[best]["cum_steps"]
    if len(rounds) < 3:  # stopped early: the last round did not improve on the best before it
        assert plateau["stop_reason"] == "plateau" and dice[-1] <= max(dice[:-1])
    else:
        assert plateau["stop_reason"] in ("plateau", "cap")
    # a different cap is another experiment: refused on resume
    with pytest.raises(ValueError, match="full_rounds"):
        run_to_end(run_benchmark(BenchmarkConfig(**{**cfg.__dict__, "full_rounds": 5})))


def test_a_folder_from_before_the_plateau_option_resumes(tmp_path):
    data = _folder(tmp_path / "d", classes=2, n=6)
    out = tmp_path / "out"
    cfg = BenchmarkConfig(data=data, out=out, strategies=("random",), seeds=(0,), rounds=0,
                          initial=1, step=1, baselines=(), steps=4, **TINY)
    run_to_end(run_benchmark(cfg))
    ident = json.loads((out / "config.json").read_text())
    for key in ("full_rounds", "full_min_delta"):
        del ident[key]  # what a folder made before these settings existed holds
    (out / "config.json").write_text(json.dumps(ident))
    run_to_end(run_benchmark(cfg))  # same settings (the old defaults): resumes
    with pytest.raises(ValueError, match="full_rounds"):
        run_to_end(run_benchmark(BenchmarkConfig(**{**cfg.__dict__, "full_rounds": 2})))


def test_command_line_train_overrides_reach_every_dataset_config(tmp_path):
    assert suite.parse_overrides(["calibrate_bias=true", "max_steps=200", "device=cpu"]) == {
        "calibrate_bias": True, "max_steps": 200, "device": "cpu"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        suite.parse_overrides(["calibrate_bias"])
    data = _folder(tmp_path / "d", classes=2)
    args = suite.build_parser().parse_args(["--out", "x", "--train", "calibrate_bias=true"])
    settings = suite.SuiteSettings(train=suite.parse_overrides(args.train))
    cfg, _ = suite.dataset_config(data, tmp_path / "o", settings)
    assert cfg.train["calibrate_bias"] is True
