"""The ``activeseg benchmark`` runner on tiny synthetic folders: files, schema, resume, regions.

Every run here uses a tiny U-Net (width 4, depth 2, 32-pixel patches, a few steps) and a
small forest on 48x64 blob images, so a whole benchmark takes seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from imageio import v3 as iio

from napari_activeseg.cli import main
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.review import box_mask
from napari_activeseg.evaluation.annotator import SimulatedAnnotator
from napari_activeseg.evaluation.config import BenchmarkConfig, parse_seeds
from napari_activeseg.evaluation.progress import ROUND_OVERHEAD, BenchmarkBar, BenchmarkProgress
from napari_activeseg.evaluation.report import CSV_COLUMNS, aulc, format_summary, summarise
from napari_activeseg.evaluation.resume import STATE_NAME
from napari_activeseg.evaluation.runner import run_benchmark

from ..conftest import make_blobs

CONTRACT_COLUMNS = ["strategy", "seed", "round", "n_labelled", "pixels_reviewed", "dice",
                    "pixels_corrected", "objects_corrected", "seconds"]
SHAPE = (48, 64)
TINY = dict(model={"width": 4, "depth": 2},
            train={"patch_size": 32, "batch_size": 4, "lr": 1e-2},
            rf={"n_estimators": 5, "sigma_max": 4, "max_samples_per_image": 2000, "n_jobs": 1},
            steps=8, full_steps=12, initial=2, step=1)
TINY_FLAGS = ["--width", "4", "--depth", "2", "--patch-size", "32", "--batch-size", "4",
              "--steps", "8", "--full-steps", "12", "--initial", "2", "--step", "1"]


def _blob_folder(root: Path, n: int = 8) -> Path:
    for s in range(n):
        image, labels = make_blobs(shape=SHAPE, n=4, seed=s)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        iio.imwrite(root / "images" / f"im{s:02d}.png",
                    (np.clip(image, 0, 1) * 255).astype(np.uint8))
        iio.imwrite(root / "masks" / f"im{s:02d}.png", labels * 255)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _blob_folder(tmp_path_factory.mktemp("blobs"))


def _config(data: Path, out: Path, **kw) -> BenchmarkConfig:
    return BenchmarkConfig(data=data, out=out, **{"seeds": (0,), "rounds": 1, **TINY, **kw})


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _state(out: Path, run: str) -> dict:
    return json.loads((out / "runs" / run / STATE_NAME).read_text())


# ------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A whole tiny run: 2 strategies x 2 seeds x rounds 0..2, both baselines."""
    out = tmp_path_factory.mktemp("bench") / "out"
    records = []
    result = run_to_end(run_benchmark(_config(data, out, strategies=("random", "entropy"),
                                              seeds=(0, 1), rounds=2)),
                        records.append)
    return out, result, records


def test_the_default_run_compares_the_default_strategy_with_random(tmp_path):
    # one name decides what the GUI, the session and the benchmark use unless told otherwise
    from napari_activeseg.cli import build_parser
    from napari_activeseg.core.config import CANDIDATE_STRATEGY, DEFAULT_STRATEGY, QueryConfig

    assert DEFAULT_STRATEGY == QueryConfig().strategy
    run = BenchmarkConfig(data=tmp_path, out=tmp_path).strategies
    assert run[0] == "random" and DEFAULT_STRATEGY in run and CANDIDATE_STRATEGY in run
    assert len(set(run)) == len(run)  # random as the default is run once
    args = build_parser().parse_args(["benchmark", "--data", "d", "--out", "o"])
    assert args.strategies.split(",") == list(run)


def test_end_to_end_writes_the_three_files(finished):
    out, result, _ = finished
    for name in ("results.json", "results.csv", "learning_curve.png"):
        assert (out / name).is_file(), name
    png = (out / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert set(result.files) == {"json", "csv", "png"}


def test_csv_has_one_row_per_strategy_seed_round(finished):
    out, _, _ = finished
    rows = _rows(out)
    assert list(rows[0])[:9] == CONTRACT_COLUMNS
    assert list(rows[0]) == list(CSV_COLUMNS)
    keys = [(r["strategy"], int(r["seed"]), int(r["round"])) for r in rows]
    assert len(keys) == len(set(keys))
    expected = {(s, seed, rnd) for s in ("random", "entropy", "rf") for seed in (0, 1)
                for rnd in (0, 1, 2)} | {("full", 0, 0), ("full", 1, 0)}
    assert set(keys) == expected
    for r in rows:
        assert 0.0 <= float(r["dice"]) <= 1.0
        assert float(r["seconds"]) >= 0
        assert int(r["pixels_corrected"]) >= 0 and int(r["objects_corrected"]) >= 0
    by = {(r["strategy"], int(r["seed"]), int(r["round"])): r for r in rows}
    for s in ("random", "entropy", "rf"):
        assert [int(by[s, 0, k]["n_labelled"]) for k in range(3)] == [2, 3, 4]
        # whole-image mode: every labelled image is reviewed entirely
        assert int(by[s, 0, 2]["pixels_reviewed"]) == 4 * SHAPE[0] * SHAPE[1]
    pool = 8 - round(8 * 0.3)
    assert int(by["full", 0, 0]["n_labelled"]) == pool


def test_every_strategy_of_a_seed_starts_from_the_same_images(finished):
    out, _, _ = finished
    doc = json.loads((out / "results.json").read_text())
    for seed in ("0", "1"):
        first = {name: doc["curves"][name][seed]["picked"][0] for name in ("random", "entropy")}
        assert first["random"] == first["entropy"] == doc["splits"][seed]["initial"]
        # and the same trained model: round 0 Dice agrees
        assert doc["curves"]["random"][seed]["dice"][0] == pytest.approx(
            doc["curves"]["entropy"][seed]["dice"][0], abs=1e-6)
        # ... trained once: the second strategy adopted the first one's round-0 weights
        with Project.open(out / "runs" / f"entropy_s{seed}", read_only=True) as proj:
            assert proj.load_model(proj.rounds()[0].model_version)[2].get("shared_round0")
        with Project.open(out / "runs" / f"random_s{seed}", read_only=True) as proj:
            assert not proj.load_model(proj.rounds()[0].model_version)[2].get("shared_round0")
    # the forest trains on the random strategy's images
    assert doc["rf_labelled_from"] == "random"
    assert doc["curves"]["rf"]["0"]["picked"] == doc["curves"]["random"]["0"]["picked"]


@pytest.mark.parametrize("change", [None, {"lr": 5e-3}])
def test_a_cached_round0_model_is_adopted_only_under_the_same_training_config(
        finished, data, tmp_path, change):
    import shutil

    src, _, _ = finished
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    for f in (src / "runs").glob("_round0_s0.*"):
        shutil.copy(f, out / "runs" / f.name)
    train = {**TINY["train"], **(change or {})}
    run_to_end(run_benchmark(_config(data, out, strategies=("entropy",), baselines=(),
                                     rounds=1, train=train)))
    with Project.open(out / "runs" / "entropy_s0", read_only=True) as proj:
        meta = proj.load_model(proj.rounds()[0].model_version)[2]
    assert bool(meta.get("shared_round0")) is (change is None)


def test_json_schema(finished):
    out, _, _ = finished
    doc = json.loads((out / "results.json").read_text())
    for key in ("config", "splits", "curves", "aulc", "dataset", "model_config",
                "train_config", "x_axis"):
        assert key in doc
    assert doc["config"]["strategies"] == ["random", "entropy"]
    assert doc["config"]["seeds"] == [0, 1]
    for seed in ("0", "1"):
        split = doc["splits"][seed]
        assert set(split) >= {"pool", "test", "initial"}
        assert not set(split["pool"]) & set(split["test"])
        assert len(split["pool"]) + len(split["test"]) == 8
    for name in ("random", "entropy", "rf", "full"):
        a = doc["aulc"][name]
        assert 0.0 <= a["mean"] <= 1.0 and a["std"] >= 0.0
        assert set(a["per_seed"]) == {"0", "1"}
        for seed in ("0", "1"):
            curve = doc["curves"][name][seed]
            for key in CONTRACT_COLUMNS[2:]:
                assert key in curve
            assert len(curve["dice"]) == (1 if name == "full" else 3)


def test_progress_records_and_summary_table(finished):
    _, result, records = finished
    assert records[0].stage == "start"
    done = [r.done for r in records]
    assert done == sorted(done) and done[-1] == pytest.approx(records[-1].total)
    assert sum(r.event == "round" for r in records) == 2 * (3 + 3 + 3 + 1)
    table = result.table()
    for name in ("random", "entropy", "rf", "full", "AULC"):
        assert name in table
    assert all(name in result.summary for name in ("random", "entropy", "rf", "full"))


def test_benchmark_bar_shows_the_total_and_a_line_per_round():
    import io

    stream = io.StringIO()
    bar = BenchmarkBar(stream, interval_s=0)
    bar(BenchmarkProgress(5, 10, "entropy s0", 1, "train", "step 5/10", 3.0, 3.0))
    bar(BenchmarkProgress(10, 10, "entropy s0", 1, "done", "Dice 0.5", 6.0, 0.0, "round"))
    bar.close()
    bar.close()  # a second close draws nothing more
    text = stream.getvalue()
    assert "50.0%" in text and "5/10" in text and "entropy s0 r1 train: step 5/10" in text
    assert "entropy s0 round 1: Dice 0.5\n" in text  # a line of its own
    final = text.rstrip("\n").split("\r")[-1]  # what the bar shows when closed
    assert "100.0%" in final and "10/10" in final and text.endswith("\n")


def test_cli_quiet_draws_no_bar(data, tmp_path, capsys):
    code = main(["benchmark", "--data", str(data), "--out", str(tmp_path / "out"), "--seeds",
                 "1", "--rounds", "0", "--strategies", "random", "--baselines", "none",
                 "--quiet", *TINY_FLAGS])
    assert code == 0
    captured = capsys.readouterr()
    assert "AULC" in captured.out and captured.err == ""


# ------------------------------------------------------------------------ resume


def test_resume_does_not_recompute_finished_rounds(data, tmp_path):
    out = tmp_path / "out"
    cfg = _config(data, out, strategies=("entropy",), baselines=(), rounds=1)
    run_to_end(run_benchmark(cfg))
    first = _state(out, "entropy_s0")["rounds"]
    assert [r["round"] for r in first] == [0, 1]

    records = []
    run_to_end(run_benchmark(_config(data, out, strategies=("entropy",), baselines=(),
                                     rounds=2)), records.append)
    again = _state(out, "entropy_s0")["rounds"]
    assert [r["round"] for r in again] == [0, 1, 2]
    # rounds 0 and 1 are read back, not recomputed: same timestamps, same models
    for old, new in zip(first, again[:2]):
        assert new["finished_at"] == old["finished_at"]
        assert new["model_version"] == old["model_version"]
    assert sum(r.event == "round" for r in records) == 1
    with Project.open(out / "runs" / "entropy_s0", read_only=True) as project:
        assert len(project.rounds()) == 3  # one training per round, none repeated
        assert len(project.labelled_ids()) == 4
    assert [int(r["round"]) for r in _rows(out)] == [0, 1, 2]


def test_interrupted_run_continues_where_it_stopped(data, tmp_path):
    out = tmp_path / "out"
    cfg = _config(data, out, strategies=("random", "entropy"), baselines=("rf",), rounds=1,
                  rf_samples=3000)
    gen = run_benchmark(cfg)
    for rec in gen:  # stop in the middle of the entropy run, as Ctrl+C would
        if rec.run == "entropy s0" and rec.stage == "train" and rec.round == 1:
            gen.close()
            break
    assert [r["round"] for r in _state(out, "entropy_s0")["rounds"]] == [0]
    random_before = _state(out, "random_s0")["rounds"]

    result = run_to_end(run_benchmark(cfg))
    assert _state(out, "random_s0")["rounds"] == random_before
    keys = [(r["strategy"], r["round"]) for r in result.rows]
    assert sorted(keys) == sorted((s, k) for s in ("random", "entropy", "rf") for k in (0, 1))
    with Project.open(out / "runs" / "entropy_s0", read_only=True) as project:
        assert len(project.rounds()) == 2
        assert len(project.labelled_ids()) == 3
    # the forest's pixel budget is spread over its images
    assert [r["rf_samples_per_image"] for r in _state(out, "rf_s0")["rounds"]] == [1500, 1000]


def test_a_later_run_with_more_seeds_keeps_a_baseline_it_did_not_ask_for(data, tmp_path):
    out = tmp_path / "out"
    run_to_end(run_benchmark(_config(data, out, strategies=("random",), baselines=("rf",),
                                     rounds=0, rf_samples=2000)))
    # seeds 0 and 1 without the forest: seed 0's forest stays in the results, seed 1 has none
    result = run_to_end(run_benchmark(_config(data, out, strategies=("random",), baselines=(),
                                              rounds=0, seeds=(0, 1), rf_samples=2000)))
    keys = sorted((r["strategy"], r["seed"]) for r in result.rows)
    assert keys == [("random", 0), ("random", 1), ("rf", 0)]
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["curves"]) == {"random", "rf"} and set(doc["curves"]["rf"]) == {"0"}
    # a seed not asked for is not reported
    result = run_to_end(run_benchmark(_config(data, out, strategies=("random",), baselines=(),
                                              rounds=0, seeds=(1,), rf_samples=2000)))
    assert sorted((r["strategy"], r["seed"]) for r in result.rows) == [("random", 1)]


def test_resume_with_other_settings_is_refused(data, tmp_path):
    out = tmp_path / "out"
    run_to_end(run_benchmark(_config(data, out, strategies=("random",), baselines=(),
                                     rounds=0)))
    with pytest.raises(ValueError, match=r"other settings.*step: 1 -> 2"):
        run_to_end(run_benchmark(_config(data, out, strategies=("random",), baselines=(),
                                         rounds=0, step=2)))


def test_a_run_begun_under_other_network_defaults_is_not_continued(data, tmp_path):
    """A folder whose config.json predates the resolved network (the BatchNorm era) is
    refused; the same settings resume."""
    out = tmp_path / "out"
    cfg = _config(data, out, strategies=("random",), baselines=(), rounds=0)
    run_to_end(run_benchmark(cfg))
    pinned = json.loads((out / "config.json").read_text())
    assert pinned["resolved_model"]["norm"] == "group"
    run_to_end(run_benchmark(cfg))  # same settings: resumes
    del pinned["resolved_model"]
    (out / "config.json").write_text(json.dumps(pinned))
    with pytest.raises(ValueError, match=r"other settings.*resolved_model: None"):
        run_to_end(run_benchmark(cfg))


def test_a_run_pinned_before_a_network_field_existed_resumes(data, tmp_path):
    """A ModelConfig field added after a folder was begun, at its default, is the network
    the folder was made with: the run resumes; the field at another value is refused."""
    out = tmp_path / "out"
    cfg = _config(data, out, strategies=("random",), baselines=(), rounds=0)
    run_to_end(run_benchmark(cfg))
    pinned = json.loads((out / "config.json").read_text())
    del pinned["resolved_model"]["distance_head"]  # as written before the field existed
    (out / "config.json").write_text(json.dumps(pinned))
    run_to_end(run_benchmark(cfg))  # resumes
    with pytest.raises(ValueError, match=r"other settings.*distance_head"):
        run_to_end(run_benchmark(_config(data, out, strategies=("random",), baselines=(),
                                         rounds=0, model={"distance_head": True})))


# ------------------------------------------------------------------------ regions


def test_region_mode_counts_annotated_pixels(data, tmp_path):
    out = tmp_path / "out"
    result = run_to_end(run_benchmark(_config(
        data, out, strategies=("entropy",), baselines=("rf",), rounds=1, regions=True,
        region_size=32)))
    rows = _rows(out)
    assert {r["strategy"] for r in rows} == {"entropy", "rf"}
    for r in rows:
        n, px = int(r["n_labelled"]), int(r["pixels_reviewed"])
        assert 0 < px < n * SHAPE[0] * SHAPE[1]
    assert result.config.x_axis == "pixels_reviewed"
    doc = json.loads((out / "results.json").read_text())
    assert doc["x_axis"] == "pixels_reviewed"
    boxes = doc["curves"]["entropy"]["0"]["boxes"]
    assert all(len(b) == 4 for rnd in boxes for pick in rnd for b in pick)
    # a box leaves the rest of its image in the pool: a later round may pick its other
    # windows, and only an image whose every window was submitted is reviewed whole
    covered: dict[str, np.ndarray] = {}
    curve = doc["curves"]["entropy"]["0"]
    for names, rnd_boxes in zip(curve["picked"], boxes):
        for name, pick in zip(names, rnd_boxes):
            covered[name] = covered.get(name, np.zeros(SHAPE, bool)) | box_mask(SHAPE, pick)
    with Project.open(out / "runs" / "entropy_s0", read_only=True) as project:
        by_id = {r.id: r.name for r in project.images()}
        for image_id in project.labelled_ids():
            labels, reviewed = project.load_labels(image_id)
            want = covered[by_id[image_id]]
            if want.all():
                assert reviewed is None or reviewed.all()
                continue
            assert reviewed is not None and np.array_equal(reviewed, want)
            assert not labels[~reviewed].any()


# ------------------------------------------------------------------------ bad input, CLI


def test_malformed_folder_names_the_files(data, tmp_path):
    bad = tmp_path / "bad"
    _blob_folder(bad, n=3)
    (bad / "masks" / "im01.png").unlink()
    with pytest.raises(ValueError, match="im01.png"):
        run_to_end(run_benchmark(_config(bad, tmp_path / "out")))
    assert not (tmp_path / "out").exists()  # nothing written for bad input


def test_bad_options_are_clear(data, tmp_path):
    with pytest.raises(ValueError, match="Unknown .*nonsense"):
        run_to_end(run_benchmark(_config(data, tmp_path / "o", strategies=("nonsense",))))
    with pytest.raises(ValueError, match="baseline"):
        run_to_end(run_benchmark(_config(data, tmp_path / "o", baselines=("svm",))))
    with pytest.raises(ValueError, match="--initial"):
        run_to_end(run_benchmark(_config(data, tmp_path / "o", initial=50)))
    assert parse_seeds("3") == (0, 1, 2)
    assert parse_seeds("4,7") == (4, 7) and parse_seeds("5,") == (5,)
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("three")


def test_cli_malformed_folder_exits_2(tmp_path, capsys):
    bad = _blob_folder(tmp_path / "bad", n=3)
    (bad / "images" / "im02.png").unlink()
    code = main(["benchmark", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "im02.png" in err and "Traceback" not in err


def test_cli_runs_and_prints_the_summary(data, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["benchmark", "--data", str(data), "--out", str(out), "--seeds", "1",
                 "--rounds", "1", "--strategies", "random", "--baselines", "full",
                 *TINY_FLAGS])
    assert code == 0
    captured = capsys.readouterr()
    assert "AULC" in captured.out and "random" in captured.out and "full" in captured.out
    assert "results.csv" in captured.out
    # the progress bar ends full, on the run's total work: two U-Net rounds and one full round
    total = 2 * (8 + ROUND_OVERHEAD) + (12 + ROUND_OVERHEAD)
    final = captured.err.rstrip("\n").split("\r")[-1]
    assert "100.0%" in final and f"{total:.0f}/{total:.0f}" in final
    assert "random s0 round 1: Dice" in captured.err  # each finished round has its line
    rows = _rows(out)
    assert [(r["strategy"], r["round"]) for r in rows] == [("random", "0"), ("random", "1"),
                                                          ("full", "0")]


# ------------------------------------------------------------------------ annotator, AULC


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_annotator_effort_on_hand_made_masks():
    shape = (40, 60)
    a, b, c = _disk(shape, 10, 10, 5), _disk(shape, 28, 45, 6), _disk(shape, 30, 12, 4)
    truth = np.zeros(shape, np.uint8)
    truth[a | b] = 1
    pre = np.zeros(shape, np.uint8)
    pre[a | c] = 1  # object A right, an extra object C, object B missed
    pre[10, 15] = 0  # and one pixel of A wrong
    ann = SimulatedAnnotator().annotate(truth, pre)
    e = ann.effort
    assert (e.objects_added, e.objects_removed) == (1, 1)
    assert e.objects_added + e.objects_removed == 2
    assert e.pixels_changed == int(b.sum() + c.sum() + 1)
    assert e.pixels_from_scratch == int((a | b).sum()) and e.objects_from_scratch == 2
    assert ann.reviewed is None and np.array_equal(ann.labels, truth)
    assert ann.pixels_reviewed == truth.size

    # from scratch: every object drawn, every foreground pixel painted
    scratch = SimulatedAnnotator().annotate(truth, None).effort
    assert (scratch.pixels_changed, scratch.objects_added, scratch.objects_removed) == (
        int((a | b).sum()), 2, 0)

    # region mode: only the box around B counts
    box = (20, 36, 40, 56)
    reg = SimulatedAnnotator().annotate(truth, pre, [box])
    inside = box_mask(shape, [box])
    assert reg.pixels_reviewed == int(inside.sum()) == 20 * 20
    assert (reg.effort.objects_added, reg.effort.objects_removed) == (1, 0)
    assert reg.effort.pixels_changed == int((b & inside).sum())
    assert np.array_equal(reg.reviewed, inside)
    assert not reg.labels[~inside].any() and np.array_equal(reg.labels[inside], truth[inside])


def test_annotator_rejects_bad_shapes():
    with pytest.raises(ValueError, match="Pre-annotation shape"):
        SimulatedAnnotator().annotate(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="cover no pixel"):
        SimulatedAnnotator().annotate(np.zeros((4, 4), np.uint8), None, [(10, 10, 12, 12)])


def test_aulc_is_the_mean_height_over_the_span():
    assert aulc([2, 4, 6], [0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert aulc([0, 10], [0.0, 1.0]) == pytest.approx(0.5)
    assert aulc([0, 1, 3], [0.0, 1.0, 1.0]) == pytest.approx((0.5 + 2.0) / 3)
    assert aulc([6, 2, 4], [1.0, 0.0, 0.5]) == pytest.approx(0.5)  # order of points is free
    assert aulc([28], [0.8]) == pytest.approx(0.8)
    rows = [{"strategy": "a", "seed": s, "round": k, "n_labelled": 2 + 2 * k,
             "pixels_reviewed": 0, "dice": d, "seconds": 1.0}
            for s, ds in ((0, (0.2, 0.4)), (1, (0.4, 0.6))) for k, d in enumerate(ds)]
    summary = summarise(rows)
    assert summary["a"]["aulc"]["mean"] == pytest.approx(0.4)
    assert summary["a"]["aulc"]["std"] == pytest.approx(np.std([0.3, 0.5], ddof=1))
    assert "a" in format_summary(summary)
