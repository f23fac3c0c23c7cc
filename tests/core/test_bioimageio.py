"""The bioimage.io model package: it validates with bioimageio.spec, says what the project says,
its test output is what its weights give, and ``activeseg predict PACKAGE.zip`` labels images as
``activeseg predict PROJECT`` does."""

from __future__ import annotations

import io
import sys
import zipfile

import numpy as np
import pytest
import tifffile
import torch

from napari_activeseg.cli import main
from napari_activeseg.core import export as ex
from napari_activeseg.core.export.bioimageio import build_unet
from napari_activeseg.core.export.bioimageio_run import apply_processing
from napari_activeseg.core.inference import predict
from napari_activeseg.core.preprocess import prepare_image

from ..conftest import make_blobs
from .test_export import _few_threads, trained  # noqa: F401 - the tiny trained project

spec = pytest.importorskip("bioimageio.spec")


@pytest.fixture(scope="module")
def package(trained, tmp_path_factory):  # noqa: F811
    return ex.export_bioimageio(trained, tmp_path_factory.mktemp("bioimageio"),
                                authors=["A. Tester"], tags=["nuclei"])


def _member(path, name) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def test_package_validates_and_describes_the_project(trained, package):  # noqa: F811
    descr = spec.load_description(package, perform_io_checks=True)
    summary = descr.validation_summary
    assert not isinstance(descr, spec.InvalidDescr), summary
    assert summary.status in ("passed", "valid-format")
    assert [e for d in summary.details for e in d.errors] == []
    assert package.name == f"proj_{trained.models()[-1].version}.bioimageio.zip"
    inp, out = descr.inputs[0], descr.outputs[0]
    assert [str(a.id) for a in inp.axes] == ["batch", "channel", "y", "x"]
    assert [str(a.id) for a in out.axes] == ["batch", "channel", "y", "x"]
    assert inp.axes[1].channel_names == ["gray"]
    assert out.axes[1].channel_names == list(trained.classes)
    ops = [op.id for op in inp.preprocessing]
    assert ops[1:3] == ["scale_range", "clip"]
    scale = inp.preprocessing[1].kwargs
    assert (scale.min_percentile, scale.max_percentile) == (1.0, 99.8)
    assert [str(a) for a in scale.axes] == ["y", "x"]
    assert next(op.id for op in out.postprocessing) == "softmax"
    assert descr.weights.torchscript is not None and descr.weights.pytorch_state_dict is not None
    assert "2 labelled image(s)" in descr.description
    assert [a.name for a in descr.authors] == ["A. Tester"] and "nuclei" in descr.tags
    assert str(descr.license) == "CC-BY-4.0"
    x = np.load(io.BytesIO(_member(package, "test_input.npy")))
    m = trained.models()[-1].model_config.multiple
    assert x.shape[:2] == (1, 1) and all(s % m == 0 and s <= 64 for s in x.shape[2:])
    readme = _member(package, "README.md").decode()
    assert "## Validation" in readme and "margin" in readme


def test_test_output_is_what_the_weights_and_the_project_model_give(trained, package):  # noqa: F811
    x = np.load(io.BytesIO(_member(package, "test_input.npy")))
    y = np.load(io.BytesIO(_member(package, "test_output.npy")))
    descr = spec.load_description(package)
    ops = [(op.id, op.kwargs.model_dump(mode="json")) for op in descr.inputs[0].preprocessing]
    prepared = torch.from_numpy(apply_processing(x[0], ops)[None])
    scripted = torch.jit.load(io.BytesIO(_member(package, "weights.torchscript.pt")))
    net = build_unet(**descr.weights.pytorch_state_dict.architecture.kwargs)
    net.load_state_dict(torch.load(io.BytesIO(_member(package, "weights.pt"))))
    with torch.no_grad():
        np.testing.assert_allclose(torch.softmax(scripted(prepared), 1).numpy(), y, atol=1e-5)
        np.testing.assert_allclose(torch.softmax(net(prepared), 1).numpy(), y, atol=1e-4)
    # the project's own model on the same crop, prepared as napari-activeseg prepares images
    model, _ = trained.load_unet(None)
    cfg = model.config
    ours = predict(model, prepare_image(x[0, 0], polarity=cfg.polarity,
                                        polarity_margin=cfg.polarity_margin), maps=())
    np.testing.assert_array_equal(y[0].argmax(0), ours.labels)


def test_cli_predict_package_gives_the_projects_labels(trained, tmp_path, capsys):  # noqa: F811
    assert main(["export", str(trained.folder), str(tmp_path / "exp"), "--bioimageio"]) == 0
    [zip_path] = (tmp_path / "exp").glob("*.bioimageio.zip")
    assert "validated" in capsys.readouterr().out
    folder = tmp_path / "new"
    folder.mkdir()
    for seed, shape in ((11, (40, 70)), (12, (90, 75))):  # the second one takes 4 tiles
        img, _ = make_blobs(shape=shape, seed=seed, n=5)
        tifffile.imwrite(folder / f"n{seed}.tif", (img * 180).astype(np.uint8))
    assert main(["predict", str(trained.folder), str(folder), str(tmp_path / "a"),
                 "--probabilities"]) == 0
    assert main(["predict", str(zip_path), str(folder), str(tmp_path / "b"),
                 "--uncertainty", "--probabilities"]) == 0
    for seed in (11, 12):
        a = tifffile.imread(tmp_path / "a" / f"n{seed}_labels.tif")
        b = tifffile.imread(tmp_path / "b" / f"n{seed}_labels.tif")
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(tifffile.imread(tmp_path / "b" / f"n{seed}_probs.tif"),
                                   tifffile.imread(tmp_path / "a" / f"n{seed}_probs.tif"),
                                   atol=1e-4)
        assert (tmp_path / "b" / f"n{seed}_entropy.tif").is_file()
    assert "package" in (tmp_path / "b" / "predict.json").read_text()


def test_bad_inputs_say_what_to_do_and_write_nothing(trained, tmp_path, monkeypatch, capsys):  # noqa: F811
    with pytest.raises(ValueError, match="at least 5"):
        ex.export_bioimageio(trained, tmp_path / "x.zip", name="ab")
    with pytest.raises(ValueError, match="SPDX"):
        ex.export_bioimageio(trained, tmp_path / "x.zip", license="not a licence")
    assert not list(tmp_path.iterdir())
    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", np.zeros((20, 20), np.uint8))
    assert main(["predict", str(fake), str(tmp_path / "in"), str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
    assert "not a zip" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)
    monkeypatch.setitem(sys.modules, "bioimageio", None)
    with pytest.raises(ImportError, match=r"\[bioimageio\]"):
        ex.export_bioimageio(trained, tmp_path / "y.zip")
    assert main(["export", str(trained.folder), str(tmp_path / "e"), "--bioimageio"]) == 2
    assert "[bioimageio]" in capsys.readouterr().err
