"""Export: labels, predictions, the model (TorchScript/ONNX + preprocessing), predict_folder,
provenance, and the ``activeseg predict`` / ``export`` commands, on a tiny synthetic project."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest
import tifffile
import torch

from napari_activeseg.cli import main
from napari_activeseg.core import export as ex
from napari_activeseg.core.config import (
    DEFAULT_STRATEGY,
    InferenceConfig,
    ModelConfig,
    TrainConfig,
)
from napari_activeseg.core.inference import predict
from napari_activeseg.core.model import UNet
from napari_activeseg.core.preprocess import prepare_image
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project, ProjectError
from napari_activeseg.core.session import ActiveLearningSession

from ..conftest import make_blobs

TINY = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4)
TRAIN = TrainConfig(max_steps=5, time_budget_s=None, patch_size=32, batch_size=2)
SHAPE = (48, 56)


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    """Keep CPU use modest (benchmarks may run next to the tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n=4, shape=SHAPE):
    pairs = [make_blobs(shape=shape, seed=s, n=4) for s in range(n)]
    return ({f"img{s}": (p[0] * 200).astype(np.uint8) for s, p in enumerate(pairs)},
            {f"img{s}": p[1] for s, p in enumerate(pairs)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project held open read-write (as napari would) with two submissions (one partial),
    a query history and one trained round."""
    images, truth = _images()
    folder = tmp_path_factory.mktemp("export") / "proj"
    project = Project.create(folder, arrays=images, classes=("background", "nucleus"))
    session = ActiveLearningSession(project, model_config=TINY, train_config=TRAIN,
                                    inference_config=InferenceConfig(tile_size=64, overlap=8))
    submitted = {}
    for i, pick in enumerate(session.suggest(2)):
        rec = project.get_image(pick.image_id)
        session.mark_shown(pick.image_id, np.zeros(SHAPE, np.uint8), pick.suggestion_id)
        reviewed = None
        if i == 1:
            reviewed = np.zeros(SHAPE, bool)
            reviewed[:20, :30] = True
        session.submit(pick.image_id, truth[rec.name], reviewed)
        submitted[pick.image_id] = (truth[rec.name], reviewed)
    summary = run_to_end(session.train())
    assert summary.saved
    project.submitted = submitted
    project.session = session
    yield project
    project.close()


def _random_model_project(folder, n=3, shape=(40, 52)):
    images, _ = _images(n, shape)
    project = Project.create(folder, arrays=images)
    torch.manual_seed(0)
    project.save_model(UNet(TINY).state_dict(), TINY)
    return project


# --------------------------------------------------------------------------- labels


def test_exported_labels_round_trip_byte_for_byte(trained, tmp_path):
    # by path: opened read-only while the fixture holds the project read-write
    files = ex.export_labels(trained.folder, tmp_path / "labels")
    assert (tmp_path / "labels" / "labels.csv") in files
    for image_id, (labels, reviewed) in trained.submitted.items():
        key = trained.get_image(image_id).key
        got = tifffile.imread(tmp_path / "labels" / f"{key}.tif")
        assert got.dtype == np.uint8 and got.shape == labels.shape
        # the stored (and exported) map is 0 outside the reviewed pixels: nothing is known there
        want = labels if reviewed is None else np.where(reviewed, labels, 0)
        assert got.tobytes() == want.astype(np.uint8).tobytes()
        mask_file = tmp_path / "labels" / "reviewed" / f"{key}.tif"
        if reviewed is None:
            assert not mask_file.exists()
        else:
            mask = tifffile.imread(mask_file)
            assert mask.dtype == np.uint8 and np.array_equal(mask.astype(bool), reviewed)
    with open(tmp_path / "labels" / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {int(r["image_id"]) for r in rows} == set(trained.submitted)
    assert sorted(float(r["reviewed_fraction"]) < 1 for r in rows) == [False, True]


def test_labels_above_255_classes_are_uint16(tmp_path):
    images, _ = _images(1)
    classes = ["background"] + [f"c{i}" for i in range(299)]
    with Project.create(tmp_path / "p", arrays=images, classes=classes) as project:
        labels = np.zeros(SHAPE, np.uint16)
        labels[5:9, 5:9] = 299
        project.submit(project.images()[0].id, labels)
        assert ex.export_labels(project, tmp_path / "empty-not") != []
    got = tifffile.imread(tmp_path / "empty-not" / "img0.tif")
    assert got.dtype == np.uint16 and np.array_equal(got, labels)


def test_no_submission_exports_nothing(tmp_path):
    images, _ = _images(1)
    with Project.create(tmp_path / "p", arrays=images) as project:
        assert ex.export_labels(project, tmp_path / "out") == []


# --------------------------------------------------------------------------- predictions


def test_export_predictions_all_images(trained, tmp_path):
    records = []
    result = ex.export_predictions(trained.folder, tmp_path / "pred", maps=("entropy", "margin"),
                                   progress=records.append)
    assert result.completed and not result.failed
    assert result.model_version == trained.session.model_version
    assert len(result.written) == len(trained.images()) == 4
    assert [r.done for r in records if r.kind == "image"] == [1, 2, 3, 4]
    net, _ = trained.load_unet()
    for rec in trained.images():
        pred = predict(net, prepare_image(trained.load_image(rec.id)), maps=("entropy",),
                       config=InferenceConfig(tile_size=512, device="cpu"))
        labels = tifffile.imread(tmp_path / "pred" / f"{rec.key}_labels.tif")
        probs = tifffile.imread(tmp_path / "pred" / f"{rec.key}_probs.tif")
        entropy = tifffile.imread(tmp_path / "pred" / f"{rec.key}_entropy.tif")
        assert labels.dtype == np.uint8 and labels.shape == SHAPE
        assert probs.shape == (2, *SHAPE) and probs.dtype == np.float32
        np.testing.assert_allclose(probs, pred.probs, atol=1e-5)
        np.testing.assert_allclose(entropy, pred.uncertainty["entropy"], atol=1e-5)
        assert (tmp_path / "pred" / f"{rec.key}_margin.tif").is_file()
    manifest = json.loads(result.manifest.read_text())
    assert manifest["model_version"] == result.model_version and manifest["completed"]


def test_export_predictions_skips_an_image_that_cannot_be_loaded(tmp_path):
    with _random_model_project(tmp_path / "p") as project:
        victim = project.images()[1]
        victim.path.unlink()
        records = []
        result = ex.export_predictions(project, tmp_path / "out", progress=records.append)
    assert len(result.written) == 2 and [k for k, _ in result.failed] == [victim.key]
    assert "missing" in result.failed[0][1]
    assert any(r.error for r in records)


def test_export_predictions_bad_arguments(tmp_path):
    with _random_model_project(tmp_path / "p") as project:
        with pytest.raises(ValueError, match="several samples"):
            ex.export_predictions(project, tmp_path / "out", maps=("bald",))
        with pytest.raises(ValueError, match="mode"):
            ex.export_predictions(project, tmp_path / "out", mode="nope")
        with pytest.raises(ValueError, match="device"):
            ex.export_predictions(project, tmp_path / "out", device="tpu")
    images, _ = _images(1)
    with Project.create(tmp_path / "q", arrays=images) as empty, \
            pytest.raises(ProjectError, match="no saved model"):
        ex.export_predictions(empty, tmp_path / "out2")


# --------------------------------------------------------------------------- model


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:DeprecationWarning")
def test_torchscript_matches_project_model_on_another_size(trained, tmp_path):
    info = ex.export_model(trained.folder, tmp_path / "model")
    assert info["version"] == trained.session.model_version
    for name in (ex.TORCHSCRIPT_NAME, ex.WEIGHTS_NAME, ex.CONFIG_NAME, ex.PREPROCESSING_NAME):
        assert (tmp_path / "model" / name).is_file()
    trace = info["torchscript"]["trace_size"]
    assert all(c["max_abs_diff"] <= 1e-5 for c in info["torchscript"]["checks"])
    scripted = torch.jit.load(str(tmp_path / "model" / ex.TORCHSCRIPT_NAME))
    net, _ = trained.load_unet()
    image, _ = make_blobs(shape=(45, 61), seed=9)
    assert [45, 61] != trace and 45 % TINY.multiple and 61 % TINY.multiple
    x = prepare_image((image * 1000).astype(np.uint16))
    ref = predict(net, x, config=InferenceConfig(device="cpu")).probs
    with torch.no_grad():
        got = scripted(torch.from_numpy(x[None]))[0].numpy()
    assert got.shape == ref.shape == (2, 45, 61)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # a batch, and an image too small to reflect-pad
    with torch.no_grad():
        batch = torch.rand(2, 1, 3, 70)
        np.testing.assert_allclose(scripted(batch).numpy(),
                                   torch.softmax(net(batch), 1).numpy(), atol=1e-5)


def test_onnx_is_verified_or_recorded_as_skipped(trained, tmp_path):
    info = ex.export_model(trained, tmp_path / "model")
    onnx = info["onnx"]
    spec = json.loads((tmp_path / "model" / ex.PREPROCESSING_NAME).read_text())
    if importlib.util.find_spec("onnx") is None:
        assert onnx["status"] == "skipped" and onnx["path"] is None
        assert "onnx" in onnx["note"] and "not installed" in onnx["note"]
        assert not (tmp_path / "model" / ex.ONNX_NAME).exists()
        assert spec["files"]["onnx"] is None and spec["onnx"]["status"] == "skipped"
    elif importlib.util.find_spec("onnxruntime") is not None:
        assert onnx["status"] == "verified" and onnx["max_abs_diff"] <= 1e-4
    else:
        assert onnx["status"] in ("written", "failed")
    off = ex.export_model(trained, tmp_path / "no-onnx", onnx=False)
    assert off["onnx"]["status"] == "skipped" and "onnx" not in off["files"]


@pytest.mark.skipif(importlib.util.find_spec("onnx") is not None,
                    reason="the real exporter runs when onnx is installed")
def test_onnx_exporter_failure_is_a_note_not_an_error(trained, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "onnx" else real(name, *a))
    info = ex.export_model(trained, tmp_path / "model")
    assert info["onnx"]["status"] == "failed" and info["onnx"]["path"] is None
    assert "TorchScript" in info["onnx"]["note"]
    assert (tmp_path / "model" / ex.TORCHSCRIPT_NAME).is_file()


def _apply_spec(raw: np.ndarray, spec: dict) -> np.ndarray:
    """preprocessing.json applied by hand, without napari-activeseg code."""
    norm, pol = spec["normalization"], spec["polarity"]
    img = raw[..., None] if raw.ndim == 2 else raw
    h, w, c = img.shape
    out = np.zeros((c, h, w), np.float32)
    for k in range(c):
        ch = img[..., k]
        step = int(np.ceil(np.sqrt(h * w / norm["max_pixels"])))
        sample = ch[::step, ::step] if step > 1 else ch
        lo, hi = np.percentile(sample, [norm["low_percentile"], norm["high_percentile"]])
        if hi <= lo:
            lo, hi = ch.min(), ch.max()
            if hi <= lo:
                continue
        lo, hi = np.float32(lo), np.float32(hi)
        out[k] = np.clip((ch.astype(np.float32) - lo) / (hi - lo), *norm["clip"])
    if pol["rule"] == "auto":
        s = max(1, int(np.sqrt(h * w / pol["sample_pixels"])))
        if np.median(out[:, ::s, ::s].mean(axis=0)) > pol["threshold"]:
            out = 1.0 - out
    return out


@pytest.mark.parametrize("polarity", ["auto", "none"])
def test_preprocessing_json_reproduces_prepare_image(polarity):
    cfg = ModelConfig(in_channels=3, depth=2, width=4, polarity=polarity)
    spec = ex.preprocessing_spec(cfg, classes=["background", "cell"],
                                 colors=["#000000", "#ff0000"], version="v0007")
    spec = json.loads(json.dumps(spec))  # as read back from the file
    for key in ("normalization", "polarity", "input", "output", "model_config", "how_to_apply",
                "model_version", "python_example"):
        assert key in spec
    assert spec["input"]["in_channels"] == 3 and len(spec["input"]["channel_order"]) == 3
    assert spec["output"]["classes"] == ["background", "cell"]
    assert spec["polarity"]["rule"] == polarity and spec["model_version"] == "v0007"
    assert ModelConfig.from_dict(spec["model_config"]) == cfg
    rng = np.random.default_rng(3)
    dark, _ = make_blobs(shape=(37, 41), seed=1)
    bright = 1.0 - dark  # brightfield-like: inverted by "auto"
    raws = [(dark * 60000).astype(np.uint16), (bright * 255).astype(np.uint8),
            (rng.random((33, 35, 3)) * 4000).astype(np.uint16), rng.random((20, 30))]
    for raw in raws:
        expected = prepare_image(raw, polarity=polarity)
        np.testing.assert_allclose(_apply_spec(raw, spec), expected, atol=1e-6)


def test_preprocessing_file_and_weights_reimport(trained, tmp_path):
    ex.export_model(trained, tmp_path / "model", onnx=False)
    spec = json.loads((tmp_path / "model" / ex.PREPROCESSING_NAME).read_text())
    assert spec["model_version"] == trained.session.model_version
    assert spec["input"]["in_channels"] == 1 and spec["input"]["size_multiple"] == 4
    assert spec["output"]["classes"] == ["background", "nucleus"]
    assert spec["files"]["torchscript"] == ex.TORCHSCRIPT_NAME
    images, _ = _images(1)
    with Project.create(tmp_path / "other", arrays=images,
                        classes=("background", "nucleus")) as other:
        version = other.import_model(tmp_path / "model" / ex.WEIGHTS_NAME)
        state, cfg, _ = other.load_model(version)
    ref, ref_cfg, _ = trained.load_model()
    assert cfg == ref_cfg and all(torch.equal(state[k], ref[k]) for k in ref)


# --------------------------------------------------------------------------- predict a folder


def _input_folder(folder, corrupt=True):
    folder.mkdir()
    a, _ = make_blobs(shape=(50, 44), seed=11)
    b, _ = make_blobs(shape=(36, 70), seed=12)
    tifffile.imwrite(folder / "a.tif", (a * 4000).astype(np.uint16))
    import imageio.v3 as iio

    iio.imwrite(folder / "b.png", (b * 255).astype(np.uint8))
    if corrupt:
        (folder / "c.tif").write_bytes(b"II*\x00 this is not a TIFF")
    (folder / "notes.txt").write_text("not an image")
    return {"a": (a * 4000).astype(np.uint16), "b": (b * 255).astype(np.uint8)}


def test_predict_folder_skips_corrupt_file_while_project_is_open(trained, tmp_path):
    raws = _input_folder(tmp_path / "in")
    assert not trained.read_only  # the fixture keeps it open read-write, like napari
    records = []
    result = ex.predict_folder(trained.folder, tmp_path / "in", tmp_path / "out",
                               uncertainty="entropy", progress=records.append)
    assert sorted(result.written) == ["a.tif", "b.png"]
    assert [n for n, _ in result.failed] == ["c.tif"] and "c.tif" in result.failed[0][1]
    assert [r.name for r in records if r.error] == ["c.tif"]
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["a_entropy.tif", "a_labels.tif", "b_entropy.tif", "b_labels.tif",
                   "predict.json"]
    net, meta = trained.load_unet()
    saved = InferenceConfig.from_dict(trained.get_setting("inference_config"))
    assert saved.tile_size == 64  # b.png is 70 wide: tiled and blended as in the session
    for stem, raw in raws.items():
        expected = predict(net, prepare_image(raw, polarity=net.config.polarity),
                           config=saved.replace(device="cpu")).labels
        assert np.array_equal(tifffile.imread(tmp_path / "out" / f"{stem}_labels.tif"), expected)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["model_version"] == meta["version"] and manifest["n_failed"] == 1
    assert {f["input"]: f["status"] for f in manifest["files"]} == {
        "a.tif": "written", "b.png": "written", "c.tif": "failed"}


def test_predict_folder_bad_inputs(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No images"):
        ex.predict_folder(trained.folder, tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="does not exist"):
        ex.predict_folder(trained.folder, tmp_path / "missing", tmp_path / "out")
    _input_folder(tmp_path / "in", corrupt=False)
    with pytest.raises(ValueError, match="must differ"):
        ex.predict_folder(trained.folder, tmp_path / "in", tmp_path / "in")
    with pytest.raises(ValueError, match="several samples"):
        ex.predict_folder(trained.folder, tmp_path / "in", tmp_path / "out", uncertainty="bald")
    with pytest.raises(ProjectError, match="not a napari-activeseg project"):
        ex.predict_folder(tmp_path / "in", tmp_path / "in", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_predict_folder_recursive_names_and_wrong_channels(trained, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    img, _ = make_blobs(shape=(40, 40), seed=5)
    tifffile.imwrite(src / "x.tif", (img * 255).astype(np.uint8))
    tifffile.imwrite(src / "sub" / "x.tif", (img * 255).astype(np.uint8))
    import imageio.v3 as iio

    iio.imwrite(src / "x.png", (img * 255).astype(np.uint8))
    rgb = np.stack([img] * 3, -1)
    rgb[..., 1] *= 0.5
    iio.imwrite(src / "rgb.png", (rgb * 255).astype(np.uint8))  # gray model: its mean is used
    two = np.stack([img, 1 - img], -1)  # gray + a varying alpha: no conversion
    iio.imwrite(src / "two.png", (two * 255).astype(np.uint8))
    result = ex.predict_folder(trained, src, tmp_path / "out", recursive=True)
    assert sorted(result.written) == ["rgb.png", "sub/x.tif", "x.png", "x.tif"]
    assert [n for n, _ in result.failed] == ["two.png"]
    assert "2 channel(s) but the model takes 1" in result.failed[0][1]
    for name in ("x_tif_labels.tif", "x_png_labels.tif", "sub/x_labels.tif"):
        assert (tmp_path / "out" / name).is_file()


# --------------------------------------------------------------------------- provenance


def test_export_provenance(trained, tmp_path):
    files = ex.export_provenance(trained.folder, tmp_path / "prov")
    assert set(files) == {"history_csv", "history_json", "rounds", "submissions", "project"}
    rounds = json.loads(files["rounds"].read_text())
    assert len(rounds) == 1
    r = rounds[0]
    assert r["model_version"] == trained.session.model_version and r["strategy"] == DEFAULT_STRATEGY
    assert r["seed"] is not None and sorted(r["labelled_ids"]) == sorted(trained.submitted)
    assert r["metrics"]["steps"] == 5 and "train_s" in r["wall_times"]
    # the session saved the polarity its images decided ("pool" resolved), not "pool"
    saved = TINY.replace(polarity="none").to_dict()
    assert r["model"]["model_config"] == saved and len(r["labelled_names"]) == 2
    with open(files["submissions"]) as fh:
        subs = list(csv.DictReader(fh))
    assert len(subs) == 2
    assert all(s["seconds"] != "" and s["pixels_changed"] != "" for s in subs)
    assert {int(s["image_id"]) for s in subs} == set(trained.submitted)
    history = json.loads(files["history_json"].read_text())
    assert len(history) == 2 and {h["action"] for h in history} == {"submitted"}
    with open(files["history_csv"]) as fh:
        assert len(list(csv.DictReader(fh))) == 2
    project = json.loads(files["project"].read_text())
    assert project["classes"] == ["background", "nucleus"] and len(project["images"]) == 4


# --------------------------------------------------------------------------- command line


def test_cli_predict(trained, tmp_path, capsys):
    _input_folder(tmp_path / "in")
    code = main(["predict", str(trained.folder), str(tmp_path / "in"), str(tmp_path / "out"),
                 "--uncertainty", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0
    assert "2 image(s) predicted" in captured.out and "1 skipped" in captured.out
    assert "c.tif: skipped" in captured.err  # a line of its own
    final = captured.err.rstrip("\n").split("\r")[-1]  # the bar when it closed: all 3 images
    assert "100%" in final and "3/3" in final and captured.err.endswith("\n")
    assert (tmp_path / "out" / "a_labels.tif").is_file()
    assert (tmp_path / "out" / "b_entropy.tif").is_file()


def test_cli_predict_bad_input_exits_2(trained, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["predict", str(trained.folder), str(tmp_path / "empty"), str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("activeseg: error: No images") and err.count("\n") == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.tif").write_bytes(b"garbage")
    assert main(["predict", str(trained.folder), str(tmp_path / "bad"), str(tmp_path / "o")]) == 2
    assert "none of the 1 image(s)" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nope"), str(tmp_path / "bad"),
                 str(tmp_path / "o")]) == 2


def test_cli_export_everything(trained, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(trained.folder), str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "ONNX" in text and "labels: 2 submitted" in text
    assert len(list((out / "labels").glob("*.tif"))) == 2
    assert (out / "predictions" / "predictions.json").is_file()
    assert len(list((out / "predictions").glob("*_labels.tif"))) == 4
    assert (out / "model" / ex.TORCHSCRIPT_NAME).is_file()
    assert (out / "model" / ex.PREPROCESSING_NAME).is_file()
    for name in ("history.csv", "history.json", "rounds.json", "submissions.csv"):
        assert (out / "provenance" / name).is_file()


def test_cli_export_selected_parts_and_no_model(trained, tmp_path, capsys):
    assert main(["export", str(trained.folder), str(tmp_path / "a"), "--labels",
                 "--provenance"]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["labels", "provenance"]
    images, _ = _images(1)
    Project.create(tmp_path / "fresh", arrays=images).close()
    assert main(["export", str(tmp_path / "fresh"), str(tmp_path / "b")]) == 0
    assert "no trained model yet" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "fresh"), str(tmp_path / "c"), "--model"]) == 2
    assert "no saved model" in capsys.readouterr().err
