"""``activeseg predict`` of an image over ``large_image_pixels``: read lazily, predicted strip by
strip, its outputs written as tiled TIFFs a tile row at a time -- the same files, names and
values as the in-memory path (labels bit for bit), and the same messages for bad input."""

from __future__ import annotations

import json
import zipfile

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from napari_activeseg.cli import main
from napari_activeseg.core import export as ex
from napari_activeseg.core.config import InferenceConfig, ModelConfig
from napari_activeseg.core.export import bioimageio_run
from napari_activeseg.core.export.bioimageio_run import PackageModel
from napari_activeseg.core.largeimage import LARGE_SETTING, TiledTiffWriter
from napari_activeseg.core.model import UNet
from napari_activeseg.core.preprocess import prepare_image
from napari_activeseg.core.project import Project

from ..conftest import make_blobs
from .test_export import _few_threads  # noqa: F401 - one torch thread (benchmarks run beside)

TINY = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, polarity="auto")
# several strips of tiles, several batches per strip
INFER = InferenceConfig(tile_size=96, overlap=16, batch_size=3)
SMALL = 10_000  # pixels: the 300 x 420 images below count as large, the 40 x 40 one does not
MAPS = ("entropy", "margin")


def _blobs(shape, seed):
    img, _ = make_blobs(shape=shape, seed=seed, n=8)
    return (img * 200).astype(np.uint8)


def _model():
    """Untrained weights, the head's bias set so that both classes are predicted."""
    torch.manual_seed(0)
    model = UNet(TINY).eval()
    head = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        x = torch.from_numpy(prepare_image(_blobs((300, 420), 1), polarity="auto"))[None]
        logits = model(x)[0]
        head.bias[1] -= torch.median(logits[1] - logits[0])
    return model


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("large_predict") / "proj"
    proj = Project.create(folder, arrays={"a": _blobs((48, 48), 0)},
                          classes=("background", "nucleus"))
    proj.save_model(_model().state_dict(), TINY)
    proj.set_setting("inference_config", INFER.to_dict())
    proj.close()
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("large_in")
    tifffile.imwrite(folder / "tiled.tif", _blobs((300, 420), 1), tile=(64, 64),
                     compression="zlib")  # read lazily, tile by tile
    iio.imwrite(folder / "wide.png", _blobs((130, 333), 2))  # no lazy reader: read, then strips
    tifffile.imwrite(folder / "small.tif", _blobs((40, 40), 3))  # under the threshold
    (folder / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF")
    return folder


def _predict(project, inputs, out, **kwargs):
    records = []
    result = ex.predict_folder(project, inputs, out, uncertainty=MAPS, probabilities=True,
                               device="cpu", progress=records.append, **kwargs)
    return result, records


@pytest.fixture(scope="module")
def in_memory(project, inputs, tmp_path_factory):
    return _predict(project, inputs, tmp_path_factory.mktemp("whole") / "out")


@pytest.fixture(scope="module")
def by_strips(project, inputs, tmp_path_factory):
    return _predict(project, inputs, tmp_path_factory.mktemp("strips") / "out",
                    large_image_pixels=SMALL)


def test_strips_write_what_the_in_memory_path_writes(in_memory, by_strips):
    whole, strips = in_memory[0], by_strips[0]
    assert sorted(strips.written) == sorted(whole.written) == ["small.tif", "tiled.tif",
                                                               "wide.png"]
    for name in whole.written:
        assert [p.name for p in strips.written[name]] == [p.name for p in whole.written[name]]
        for want_path, got_path in zip(whole.written[name], strips.written[name], strict=True):
            want, got = tifffile.imread(want_path), tifffile.imread(got_path)
            assert got.shape == want.shape and got.dtype == want.dtype, got_path.name
            if got_path.name.endswith("_labels.tif"):
                assert got.tobytes() == want.tobytes(), got_path.name
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                           err_msg=got_path.name)
    labels = tifffile.imread(strips.written["tiled.tif"][0])
    assert labels.shape == (300, 420) and 0 < labels.mean() < 1  # both classes predicted
    assert tifffile.imread(strips.written["tiled.tif"][1]).shape == (2, 300, 420)


def test_large_outputs_are_tiled_and_compressed(by_strips, in_memory):
    strips = by_strips[0]
    for name, tiled in (("tiled.tif", True), ("wide.png", True), ("small.tif", False)):
        for path in strips.written[name]:
            with tifffile.TiffFile(path) as tif:
                pages = tif.pages
                assert all(p.is_tiled == tiled for p in pages), path.name
                assert all(p.compression == tifffile.COMPRESSION.ADOBE_DEFLATE for p in pages)
                if tiled:
                    assert pages[0].tile == (256, 256)
    with tifffile.TiffFile(strips.written["tiled.tif"][1]) as tif:
        assert len(tif.pages) == 2  # one grey page per class, as the in-memory path writes
    assert not [p for p in strips.out_dir.rglob(".*")]  # no temporary file left behind


def test_progress_is_reported_per_strip(by_strips, in_memory):
    for records in (by_strips[1], in_memory[1]):
        tiles = [r for r in records if r.kind == "tiles" and r.name == "tiled.tif"]
        # 300 x 420 in 96 px tiles overlapping 16: 4 x 6 tiles in batches of 3
        assert [r.tiles_done for r in tiles] == list(range(3, 25, 3))
        assert {r.tiles_total for r in tiles} == {24}
    images = [r for r in by_strips[1] if r.kind == "image"]
    assert [(r.name, r.error is None) for r in images] == [
        ("broken.tif", False), ("small.tif", True), ("tiled.tif", True), ("wide.png", True)]


def test_corrupt_tiff_gets_the_same_message(by_strips, in_memory):
    [(name, reason)] = by_strips[0].failed
    assert (name, reason) == in_memory[0].failed[0]
    assert name == "broken.tif" and "broken.tif" in reason


def test_manifest_records_the_threshold_and_shapes(by_strips):
    result = by_strips[0]
    manifest = json.loads(result.manifest.read_text())
    assert manifest[LARGE_SETTING] == SMALL
    shapes = {f["input"]: f.get("shape") for f in manifest["files"]}
    assert shapes == {"broken.tif": None, "small.tif": [40, 40], "tiled.tif": [300, 420],
                      "wide.png": [130, 333]}


def test_project_setting_is_the_default_threshold_and_cli_option(project, inputs, tmp_path,
                                                                 by_strips):
    with Project.open(project) as proj:
        proj.set_setting(LARGE_SETTING, SMALL)
    try:
        result = ex.predict_folder(project, inputs, tmp_path / "a", pattern="tiled.tif")
    finally:
        with Project.open(project) as proj:
            proj.set_setting(LARGE_SETTING, 4096 * 4096)
    with tifffile.TiffFile(result.written["tiled.tif"][0]) as tif:
        assert tif.pages[0].is_tiled
    assert main(["predict", str(project), str(inputs), str(tmp_path / "b"),
                 "--pattern", "tiled.tif", "--large-image-pixels", str(SMALL)]) == 0
    got = tifffile.imread(tmp_path / "b" / "tiled_labels.tif")
    assert got.tobytes() == tifffile.imread(by_strips[0].written["tiled.tif"][0]).tobytes()


def test_bad_threshold_is_refused_and_writes_nothing(project, inputs, tmp_path):
    with pytest.raises(ValueError, match=LARGE_SETTING):
        ex.predict_folder(project, inputs, tmp_path / "out", large_image_pixels=0)
    assert not (tmp_path / "out").exists()


def test_package_refuses_a_large_image_with_a_clear_message(inputs, tmp_path, monkeypatch):
    package = PackageModel(
        source=tmp_path / "m.zip", name="m", version="v1", channels=1,
        classes=["background", "nucleus"], inference=INFER.replace(device="cpu"),
        preprocessing=[("scale_range", {"axes": ["y", "x"], "min_percentile": 1.0,
                                        "max_percentile": 99.8})],
        model=_model())
    with zipfile.ZipFile(package.source, "w") as zf:
        zf.writestr("rdf.yaml", "type: model\n")
    monkeypatch.setattr(bioimageio_run, "open_package", lambda path, device: package)
    result = ex.predict_folder(package.source, inputs, tmp_path / "out",
                               large_image_pixels=SMALL)
    assert sorted(result.written) == ["small.tif"]
    reasons = dict(result.failed)
    assert sorted(reasons) == ["broken.tif", "tiled.tif", "wide.png"]
    assert "300 x 420 pixels, over large_image_pixels (10000)" in reasons["tiled.tif"]
    assert "Predict it with the project" in reasons["wide.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "predict.json", "small_labels.tif"]


# --------------------------------------------------------------------------- the writer


def test_writer_round_trips_uneven_bands(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.random((3, 300, 277)).astype(np.float32)
    with TiledTiffWriter(tmp_path / "p.tif", stack.shape, np.float32, tile=64) as writer:
        y = 0
        for n in (10, 100, 1, 150, 39):
            writer.add(stack[:, y:y + n])
            y += n
    assert np.array_equal(tifffile.imread(tmp_path / "p.tif"), stack)
    labels = (stack[0] * 5).astype(np.uint8)
    with TiledTiffWriter(tmp_path / "l.tif", labels.shape, np.uint8, tile=64) as writer:
        writer.add(labels)
    assert tifffile.imread(tmp_path / "l.tif").tobytes() == labels.tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.tif", "p.tif"]


def test_writer_leaves_nothing_when_rows_are_missing_or_it_fails(tmp_path):
    labels = np.zeros((100, 80), np.uint8)
    with pytest.raises(ValueError, match="40 of 100 rows"), \
            TiledTiffWriter(tmp_path / "x.tif", labels.shape, np.uint8) as writer:
        writer.add(labels[:40])
    with pytest.raises(RuntimeError, match="boom"), \
            TiledTiffWriter(tmp_path / "y.tif", (2, 100, 80), np.float32) as writer:
        writer.add(np.zeros((2, 40, 80), np.float32))
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="do not continue"), \
            TiledTiffWriter(tmp_path / "z.tif", labels.shape, np.uint8) as writer:
        writer.add(np.zeros((10, 81), np.uint8))
    # the writer's own error reaches the caller
    with pytest.raises(OSError), \
            TiledTiffWriter(tmp_path / "missing" / "w.tif", labels.shape, np.uint8) as writer:
        writer.add(labels)
    assert list(tmp_path.iterdir()) == []
