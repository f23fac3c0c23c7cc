"""The bad-input matrix (issue 8, item 1): every row at the level a user meets it.

Each row drives the public entry points a biologist reaches -- ``Project.create`` /
``add_images``, the session's ``submit`` / ``train`` / ``predict``, ``activeseg predict`` -- with
one kind of bad (or merely unusual) input, and checks that

(a) a refused input raises an error whose message names the problem and the fix, and
(b) nothing on disk changed (:func:`._util.unchanged`: names, bytes and the catalog's dump),

while an unusual but valid input (a huge, a 1x1, a 16-bit, a 5-channel image ...) just works.
Narrower unit tests of the same code live in tests/core (test_imageio, test_validation,
test_project); this file is the one place that goes through every row end to end.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from napari_activeseg.cli import main as cli_main
from napari_activeseg.core.config import InferenceConfig, ModelConfig
from napari_activeseg.core.model import UNet
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import (
    SCHEMA_VERSION,
    Project,
    ProjectError,
    ProjectVersionError,
    load_state_dict,
)
from napari_activeseg.core.session import ActiveLearningSession
from napari_activeseg.core.training import Trainer

from ._util import (
    TINY_INFER,
    TINY_MODEL,
    TINY_TRAIN,
    PeakRSS,
    blob_arrays,
    snapshot,
    tiny_project,
    unchanged,
)

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.filterwarnings("ignore::napari_activeseg.core.project.ProjectWarning"),
]

SUPPORTED = r"\.tif, \.tiff, \.png, \.jpg, \.jpeg"
CHILD = Path(__file__).with_name("_child.py")


# --------------------------------------------------------------------------- helpers


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``activeseg ARGS`` in this process: (exit status, stdout, stderr)."""
    rc = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def with_model(project: Project, config: ModelConfig = TINY_MODEL) -> str:
    """Save an (untrained) model: enough for the plumbing of ``activeseg predict``."""
    torch.manual_seed(0)
    return project.save_model(UNet(config).state_dict(), config)


@pytest.fixture
def model_project(tmp_path):
    """A closed project with a saved model, as ``activeseg predict`` finds one."""
    project, _ = tiny_project(tmp_path / "proj")
    with_model(project)
    project.close()
    return tmp_path / "proj"


def train_and_predict(project: Project, model_config: ModelConfig = TINY_MODEL):
    """Submit a label for every image, train, predict each: (losses, predictions)."""
    session = ActiveLearningSession(project, model_config=model_config, train_config=TINY_TRAIN,
                                    inference_config=TINY_INFER)
    rng = np.random.default_rng(0)
    for rec in project.images():
        session.submit(rec.id, rng.integers(0, 2, rec.shape[:2], dtype=np.uint8))
    records = []
    summary = run_to_end(session.train(), records.append)
    assert summary.saved and summary.model_version is not None
    losses = [r.loss for r in records]
    assert losses and np.isfinite(losses).all(), losses
    preds = {rec.id: session.predict(rec.id) for rec in project.images()}
    for rec in project.images():
        pred = preds[rec.id]
        assert pred.labels.shape == rec.shape[:2]
        assert np.isfinite(pred.probs).all() and np.isfinite(pred.uncertainty["entropy"]).all()
    return losses, preds


def write_folder(folder: Path, files: dict[str, object]) -> Path:
    """Write {name: array (as TIFF/PNG by suffix) or bytes} into a new folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif path.suffix == ".png":
            iio.imwrite(path, content)
        else:
            tifffile.imwrite(path, content)
    return folder


def good_image(seed=0, shape=(32, 32)) -> np.ndarray:
    images, _ = blob_arrays(1, shape, seed=seed)
    return next(iter(images.values()))


# --------------------------------------------------------------------------- 1. empty folder


def test_empty_folder(tmp_path, model_project, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with unchanged(tmp_path):
        where = re.escape(str(empty))
        with pytest.raises(ValueError, match=rf"No images .*'{where}'.*supported .*{SUPPORTED}"):
            Project.create(tmp_path / "new", source_folder=empty)
        with Project.open(model_project) as project, unchanged(model_project):
            with pytest.raises(ValueError, match=rf"No images .*'{where}'.*{SUPPORTED}"):
                project.add_folder(empty)
        rc, _, err = cli(capsys, "predict", model_project, empty, tmp_path / "out")
        assert rc == 2 and f"No images matching '*' in '{empty}'" in err and ".tif" in err
        # the folder that does not exist either
        with pytest.raises(ValueError, match=r"does not exist or is not a folder"):
            Project.create(tmp_path / "new", source_folder=tmp_path / "nowhere")


# --------------------------------------------------------------------------- 2. non-images


def test_non_image_files(tmp_path, model_project, capsys):
    junk = write_folder(tmp_path / "junk", {
        "notes.txt": b"not an image", "table.csv": b"a,b\n1,2\n", ".DS_Store": b"\0\1",
        "scan.tif.bak": b"II*\0", "README": b"hello"})
    with unchanged(tmp_path):
        with pytest.raises(ValueError, match=rf"No images .*'{re.escape(str(junk))}'.*{SUPPORTED}"):
            Project.create(tmp_path / "new", source_folder=junk)
        with pytest.raises(ValueError, match=r"(?s)None of the given files could be added.*"
                                             r"notes\.txt.*unsupported file type '\.txt'.*"
                                             r"table\.csv.*" + SUPPORTED):
            Project.create(tmp_path / "new", images=[junk / "notes.txt", junk / "table.csv"])
        with Project.open(model_project) as project, unchanged(model_project):
            with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
                project.add_images([junk / "notes.txt"])
        rc, _, err = cli(capsys, "predict", model_project, junk, tmp_path / "out")
        assert rc == 2 and "No images matching" in err
    # next to real images, other files are simply not images: no error, no warning
    write_folder(junk, {"cell.tif": good_image()})
    with Project.create(tmp_path / "mixed", source_folder=junk) as project:
        assert [r.name for r in project.images()] == ["cell.tif"] and project.warnings == []


# --------------------------------------------------------------------------- 3. corrupt files


def _corrupt_files(rng) -> dict[str, bytes]:
    buf = io.BytesIO()
    tifffile.imwrite(buf, rng.integers(0, 255, (64, 64), dtype=np.uint8))
    tif = buf.getvalue()
    png = iio.imwrite("<bytes>", rng.integers(0, 255, (64, 64), dtype=np.uint8), extension=".png")
    return {
        "garbage.tif": rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "truncated.tif": tif[: len(tif) // 3],
        "truncated.png": png[: len(png) // 2],
        "text.png": b"this is not a PNG at all" * 20,
    }


def test_corrupt_tiff_and_png(tmp_path, model_project, capsys):
    bad = _corrupt_files(np.random.default_rng(0))
    folder = write_folder(tmp_path / "bad", bad)
    paths = [folder / name for name in bad]
    with unchanged(tmp_path):
        with pytest.raises(ValueError) as info:
            Project.create(tmp_path / "new", images=paths)
        message = str(info.value)
        for name in bad:  # every bad file named, with why and what is supported
            assert name in message, message
        assert "corrupt or truncated" in message and ".tif" in message
        with Project.open(model_project) as project, unchanged(model_project):
            with pytest.raises(ValueError, match=r"(?s)garbage\.tif.*corrupt or truncated"):
                project.add_images(paths, skip_unreadable=False)
            with pytest.raises(ValueError, match="None of the given files"):
                project.add_images(paths)
        rc, _, err = cli(capsys, "predict", model_project, folder, tmp_path / "out")
        assert rc == 2 and "could be predicted" in err and "garbage.tif" in err
        shutil.rmtree(tmp_path / "out")  # its predict.json lists the failures; not a project
    # one bad file in a batch does not stop the others; the warnings name it
    write_folder(folder, {"good.tif": good_image()})
    with Project.create(tmp_path / "mixed", source_folder=folder) as project:
        assert [r.name for r in project.images()] == ["good.tif"]
        assert len(project.warnings) == len(bad)
        assert all("corrupt or truncated" in w or "Cannot read" in w for w in project.warnings)


# --------------------------------------------------------------------------- 4. 0-byte file


def test_zero_byte_files(tmp_path, model_project, capsys):
    folder = write_folder(tmp_path / "zero", {"empty.tif": b"", "empty.png": b"", "empty.jpg": b""})
    paths = sorted(folder.iterdir())
    with unchanged(tmp_path):
        with pytest.raises(ValueError, match=r"(?s)empty\.jpg.*empty \(0 bytes\).*empty\.png.*"
                                             r"empty \(0 bytes\).*empty\.tif.*0 bytes"):
            Project.create(tmp_path / "new", images=paths)
        with Project.open(model_project) as project, unchanged(model_project):
            with pytest.raises(ValueError, match=r"the file is empty \(0 bytes\)"):
                project.add_images(paths)
        rc, _, err = cli(capsys, "predict", model_project, folder, tmp_path / "out")
        assert rc == 2 and "0 bytes" in err
        shutil.rmtree(tmp_path / "out")


# --------------------------------------------------------------------------- 5. huge image


def _huge_tiff(path: Path, size: int = 6000) -> Path:
    """A size x size uint8 TIFF written through a memmap (never whole in memory)."""
    mm = tifffile.memmap(path, shape=(size, size), dtype=np.uint8)
    step = 500
    for y in range(0, size, step):
        yy, xx = np.mgrid[y:min(y + step, size), :size]
        mm[y:y + step] = np.where(np.sin(yy / 37.0) * np.cos(xx / 23.0) > 0.3, 190, 40)
    mm.flush()
    del mm
    return path


def _cheap_forward(self, x):
    """Stands in for the U-Net's convolutions (the slow part on a shared CPU): logits of the
    right shape, so reading, normalising, tiling, blending and writing all run for real."""
    k = self.config.n_classes
    return x[:, :1].repeat(1, k, 1, 1) * torch.linspace(-1, 1, k).view(1, k, 1, 1)


def test_huge_image_is_tiled_in_bounded_memory(tmp_path, capsys, monkeypatch):
    """6000 x 6000 uint8 (36 Mpx): the project is created and ``activeseg predict`` tiles it;
    the process's peak resident memory grows by less than 1.5 GB."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    huge = _huge_tiff(inputs / "huge.tif")
    with PeakRSS() as create_mem, Project.create(tmp_path / "proj", images=[huge]) as project:
        assert project.images()[0].shape == (6000, 6000)
        with_model(project)
        project.set_setting("inference_config", InferenceConfig(
            tile_size=1024, overlap=32, batch_size=1).to_dict())
    monkeypatch.setattr(UNet, "forward", _cheap_forward)
    with PeakRSS() as predict_mem:
        rc, out, err = cli(capsys, "predict", tmp_path / "proj", inputs, tmp_path / "out",
                           "--device", "cpu")
    assert rc == 0, err
    labels = tifffile.imread(tmp_path / "out" / "huge_labels.tif")
    assert labels.shape == (6000, 6000) and labels.dtype == np.uint8
    assert len(np.unique(labels[::50, ::50])) == 2  # both intensities came through the tiles
    assert create_mem.delta_mb < 1536 and predict_mem.delta_mb < 1536, (
        create_mem.delta_mb, predict_mem.delta_mb)
    print(f"huge image: create +{create_mem.delta_mb:.0f} MB, "
          f"predict +{predict_mem.delta_mb:.0f} MB peak RSS")


@pytest.mark.slow
def test_huge_image_with_the_real_network(tmp_path, capsys):
    """The same 36 Mpx image through the real (tiny) U-Net: train on a reviewed corner, then
    ``activeseg predict``; peak memory still bounded. Slow on a shared CPU (about a minute)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    huge = _huge_tiff(inputs / "huge.tif")
    with Project.create(tmp_path / "proj", images=[huge]) as project:
        session = ActiveLearningSession(
            project, model_config=TINY_MODEL, train_config=TINY_TRAIN,
            inference_config=InferenceConfig(tile_size=512, overlap=32, batch_size=2))
        corner = project.load_image(1)[:256, :256]
        labels = np.zeros((6000, 6000), np.uint8)
        labels[:256, :256] = corner > 100
        reviewed = np.zeros((6000, 6000), bool)
        reviewed[:256, :256] = True
        with PeakRSS() as train_mem:
            session.submit(1, labels, reviewed)
            del labels, reviewed
            run_to_end(session.train())
    with PeakRSS() as predict_mem:
        rc, _, err = cli(capsys, "predict", tmp_path / "proj", inputs, tmp_path / "out")
    assert rc == 0, err
    assert tifffile.imread(tmp_path / "out" / "huge_labels.tif").shape == (6000, 6000)
    assert train_mem.delta_mb < 1536 and predict_mem.delta_mb < 1536


# --------------------------------------------------------------------------- 6. tiny images


@pytest.mark.parametrize("shape", [(1, 1), (5, 7)], ids=["1x1", "5x7"])
def test_images_smaller_than_the_field_of_view(tmp_path, capsys, shape):
    """A 1x1 and a 5x7 image (the depth-2 U-Net sees ~40 px): training pads and ignores the
    padding, prediction crops back; ``activeseg predict`` writes a label map of the same size."""
    rng = np.random.default_rng(1)
    folder = write_folder(tmp_path / "in", {
        "a.tif": rng.integers(0, 255, shape, dtype=np.uint8),
        "b.png": rng.integers(0, 255, shape, dtype=np.uint8)})
    with Project.create(tmp_path / "proj", source_folder=folder) as project:
        assert [r.shape for r in project.images()] == [shape, shape]
        train_and_predict(project)
        assert project.integrity_check() == []
    rc, _, err = cli(capsys, "predict", tmp_path / "proj", folder, tmp_path / "out")
    assert rc == 0, err
    for stem in ("a", "b"):
        assert tifffile.imread(tmp_path / "out" / f"{stem}_labels.tif").shape == shape


# --------------------------------------------------------------------------- 7. pixel types


def test_16bit_float_and_negative_pixels_work(tmp_path, capsys):
    """uint16, int16 with negatives, float32 with negatives, float64 and float16 images are
    normalised per image and train and predict like 8-bit ones."""
    base = good_image().astype(np.float64) / 255
    folder = write_folder(tmp_path / "in", {
        "u16.tif": (base * 60000).astype(np.uint16),
        "i16.tif": (base * 3000 - 1500).astype(np.int16),
        "f32.tif": (base * 7 - 5).astype(np.float32),
        "f64.tif": base * 1e-3 - 1e-4,
        "f16.tif": base.astype(np.float16),
        "u16.png": (base * 40000).astype(np.uint16),
    })
    with Project.create(tmp_path / "proj", source_folder=folder) as project:
        assert sorted(r.dtype for r in project.images()) == sorted(
            ["uint16", "int16", "float32", "float64", "float16", "uint16"])
        _, preds = train_and_predict(project)
        # the same picture in six encodings reaches the network alike (per-image percentiles)
        labels = [p.labels for p in preds.values()]
        assert all(np.mean(lab == labels[0]) > 0.9 for lab in labels)
    rc, out, err = cli(capsys, "predict", tmp_path / "proj", folder, tmp_path / "out")
    assert rc == 0 and "6 image(s) predicted" in out, err


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_pixels_are_refused(tmp_path, model_project, capsys, bad):
    image = good_image().astype(np.float32)
    image[3, 4] = bad
    folder = write_folder(tmp_path / "in", {"holes.tif": image})
    fix = r"1 non-finite pixel value\(s\) \(NaN or inf\).*np\.nan_to_num"
    with Project.open(model_project) as project:
        session = ActiveLearningSession(project)  # saves its settings: before the snapshot
    with unchanged(tmp_path):
        with pytest.raises(ValueError, match=rf"holes\.tif.*{fix}"):
            Project.create(tmp_path / "new", images=[folder / "holes.tif"])
        with Project.open(model_project) as project, unchanged(model_project):
            with pytest.raises(ValueError, match=fix):
                project.add_images([folder / "holes.tif"])
            with pytest.raises(ValueError, match=fix):  # a napari layer holding NaN
                project.add_arrays({"layer": image})
        with pytest.raises(ValueError, match=fix):  # predicting a layer with the model
            session.predict_array(image)
        rc, _, err = cli(capsys, "predict", model_project, folder, tmp_path / "out")
        assert rc == 2 and "non-finite" in err
        shutil.rmtree(tmp_path / "out")


# --------------------------------------------------------------------------- 8. channels


def test_rgb_and_rgba_images(tmp_path, capsys):
    """RGB PNG/TIFF and RGBA with a constant alpha (dropped) make a 3-channel project."""
    rgb = np.stack([good_image(s) for s in range(3)], axis=-1)
    rgba = np.concatenate([rgb, np.full((32, 32, 1), 255, np.uint8)], axis=-1)
    folder = write_folder(tmp_path / "in", {"rgb.png": rgb, "rgb.tif": rgb[::-1],
                                            "rgba.png": rgba[:, ::-1]})
    with Project.create(tmp_path / "proj", source_folder=folder) as project:
        assert [r.shape for r in project.images()] == [(32, 32, 3)] * 3
        session = ActiveLearningSession(project)
        assert session.model_config.in_channels == 3  # from the images, by default
        train_and_predict(project, TINY_MODEL.replace(in_channels=3))
    rc, _, err = cli(capsys, "predict", tmp_path / "proj", folder, tmp_path / "out")
    assert rc == 0, err


def test_five_channel_stack_needs_channel_axis(tmp_path, capsys):
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 4000, (5, 32, 32), dtype=np.uint16)  # (C, H, W) as microscopes save
    folder = write_folder(tmp_path / "in", {"c5.tif": stack})
    how = r"got shape \(5, 32, 32\).*pick a channel axis with channel_axis="
    with unchanged(tmp_path):
        with pytest.raises(ValueError, match=how):
            Project.create(tmp_path / "new", images=[folder / "c5.tif"])
    with Project.create(tmp_path / "proj", images=[folder / "c5.tif"], channel_axis=0) as project:
        assert project.images()[0].shape == (32, 32, 5)
        train_and_predict(project, TINY_MODEL.replace(in_channels=5))
    rc, _, err = cli(capsys, "predict", tmp_path / "proj", folder, tmp_path / "out1")
    assert rc == 2 and "channel_axis=" in err
    rc, _, err = cli(capsys, "predict", tmp_path / "proj", folder, tmp_path / "out2",
                     "--channel-axis", "0")
    assert rc == 0, err


def test_a_gray_image_joins_an_rgb_project_repeated_on_its_channels(tmp_path):
    """Gray offered to an RGB project: kept, with a note; the model sees it on 3 equal
    channels, and a round trains and predicts on the mix."""
    rgb = {f"c{i}": np.stack([good_image(i + s) for s in range(3)], -1) for i in range(2)}
    folder = write_folder(tmp_path / "in", {"gray.tif": good_image(9)})
    with Project.create(tmp_path / "proj", arrays=rgb) as project:
        with pytest.warns(UserWarning, match=r"array 'gray' has 1 channel\(s\), the project's "
                                             r"images 3: it is repeated on the 3 channels"):
            (arr,) = project.add_arrays({"gray": good_image(9)})
        with pytest.warns(UserWarning, match=r"gray\.tif' has 1 channel\(s\).*repeated"):
            (tif,) = project.add_images([folder / "gray.tif"], skip_unreadable=False)
        assert project.channels == 3 and len(project.images()) == 4
        session = ActiveLearningSession(project, model_config=TINY_MODEL.replace(in_channels=3))
        x = session.prepared(arr.id)
        assert x.shape == (3, 32, 32)
        np.testing.assert_array_equal(x[0], x[1])
        np.testing.assert_array_equal(x[0], x[2])
        assert x.std() > 0.1  # the image, not zeros
        train_and_predict(project, TINY_MODEL.replace(in_channels=3))


def test_a_channel_count_with_no_conversion_is_refused_when_added(tmp_path):
    """Gray+alpha (2 channels) offered to an RGB project: refused at add time, named, nothing
    written (before, it was accepted and every later suggest failed until it was removed)."""
    rgb = {f"c{i}": np.stack([good_image(i + s) for s in range(3)], -1) for i in range(2)}
    two = np.stack([good_image(9), good_image(10)], -1)  # a varying alpha is kept as data
    folder = write_folder(tmp_path / "in", {"two.png": two})
    with Project.create(tmp_path / "proj", arrays=rgb) as project, unchanged(project.folder):
        with pytest.raises(ValueError, match=r"array 'two' has 2 channel\(s\) but the "
                                             r"project's images have 3.*only gray <-> RGB.*"
                                             r"Convert it"):
            project.add_arrays({"two": two}, channel_axis=-1)
        with pytest.raises(ValueError, match=r"two\.png' has 2 channel\(s\) but the "
                                             r"project's images have 3"):
            project.add_images([folder / "two.png"], skip_unreadable=False)
        with pytest.raises(ValueError, match=r"(?s)None of the given files.*two\.png.*2 channel"):
            project.add_images([folder / "two.png"])  # skipped, and nothing else to add
        assert len(project.images()) == 2


@pytest.mark.parametrize("n_gray, n_rgb, expected", [(2, 1, 1), (1, 2, 3), (1, 1, 3)],
                         ids=["mostly-gray", "mostly-rgb", "tie-keeps-colour"])
def test_a_folder_mixing_gray_and_rgb_takes_the_common_count_and_converts_the_rest(
        tmp_path, n_gray, n_rgb, expected):
    """The most common channel count wins (not whichever file sorts first; a tie keeps
    colour), every image is kept, the converted ones are named, and a round trains."""
    files = {f"a_gray{i}.tif": good_image(i) for i in range(n_gray)}
    rgb = [np.stack([good_image(5 + i + s) for s in range(3)], -1) for i in range(n_rgb)]
    files.update({f"b_rgb{i}.png": im for i, im in enumerate(rgb)})
    folder = write_folder(tmp_path / "in", files)
    odd = "b_rgb" if expected == 1 else "a_gray"
    with pytest.warns(UserWarning, match=rf"{odd}0\.\w+' has {4 - expected} channel\(s\), the "
                                         rf"project's images {expected}"):
        project = Project.create(tmp_path / "proj", source_folder=folder)
    with project:
        assert sorted(r.name for r in project.images()) == sorted(files)
        assert project.channels == expected
        session = ActiveLearningSession(project)
        assert session.model_config.in_channels == expected
        for rec in project.images():
            assert session.prepared(rec.id).shape == (expected, 32, 32)
        if expected == 1:  # an RGB image becomes the mean of its normalised channels
            rec = next(r for r in project.images() if r.name == "b_rgb0.png")
            from napari_activeseg.core.imageio import normalize_image

            want = normalize_image(rgb[0]).mean(0)
            np.testing.assert_allclose(session.prepared(rec.id)[0], want, atol=1e-6)
        train_and_predict(project, TINY_MODEL.replace(in_channels=expected))
    with Project.open(tmp_path / "proj") as again:  # the count is the project's, not a guess
        assert again.channels == expected


# --------------------------------------------------------------------------- 9. 3D stack


@pytest.mark.parametrize("shape", [(12, 32, 32), (2, 3, 32, 32)], ids=["zstack", "4d"])
def test_3d_stack_is_refused_with_the_fix(tmp_path, model_project, capsys, shape):
    stack = np.random.default_rng(3).integers(0, 255, shape, dtype=np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", stack, photometric="minisblack")  # planes, not RGB
    with unchanged(tmp_path):
        with pytest.raises(ValueError, match=r"stack\.tif.*Expected a 2D image (or 2D\+channels|"
                                             r"plus one channel axis), got shape .*one plane"):
            Project.create(tmp_path / "new", images=[folder / "stack.tif"])
        with Project.open(model_project) as project, unchanged(model_project):
            with pytest.raises(ValueError, match=r"got shape .*one plane"):
                project.add_images([folder / "stack.tif"], skip_unreadable=False)
            with pytest.raises(ValueError, match=r"channel_axis=.*one plane"):
                project.add_arrays({"stack": stack})  # a napari stack layer
        rc, _, err = cli(capsys, "predict", model_project, folder, tmp_path / "out")
        assert rc == 2 and "channel_axis=" in err
        shutil.rmtree(tmp_path / "out")


# --------------------------------------------------------------------------- 10. mask values


@pytest.fixture
def session_project(tmp_path):
    project, truth = tiny_project(tmp_path / "proj", n=3)
    session = ActiveLearningSession(project)
    yield project, session, truth
    project.close()


@pytest.mark.parametrize(("values", "match"), [
    (2, r"has a value 2 but n_classes=2 allows only 0\.\.1; raise n_classes to at least 3 "
        r"or fix the mask"),
    (255, r"has a value 255 .*0/255 binary mask.*\(mask > 0\)\.astype\(np\.uint8\)"),
    (300, r"has a value 300 but n_classes=2"),
    (-1, r"negative value.*Mark unlabelled pixels with a reviewed mask"),
], ids=["2", "0-255", "300", "-1"])
def test_mask_values_beyond_the_classes(session_project, values, match):
    project, session, truth = session_project
    session.submit(1, truth[1])  # an earlier submission that must stay as it is
    labels = truth[2].astype(np.int32) * values
    session.mark_shown(2, np.zeros((32, 32), np.uint8))
    with unchanged(project.folder):
        with pytest.raises(ValueError, match=match):
            session.submit(2, labels)
    np.testing.assert_array_equal(project.load_labels(1)[0], truth[1])
    # the user fixes the mask and submits again: the time shown and the effort still count
    session.submit(2, truth[2])
    sub = project.submissions(2)[-1]
    assert sub.seconds is not None and sub.pixels_changed == int(truth[2].sum())


# --------------------------------------------------------------------------- 11. shapes


def test_labels_of_another_shape(tmp_path):
    images, truth = blob_arrays(2, (32, 40))
    with Project.create(tmp_path / "proj", arrays=images) as project:
        session = ActiveLearningSession(project, model_config=TINY_MODEL)
        good = truth["img00"]
        session.submit(1, good)
        bad = {
            "wider": (np.zeros((32, 41), np.uint8), None, r"has shape \(32, 41\) but the image "
                      r"has shape \(32, 40\); the class map must be \(32, 40\)"),
            "transposed": (good.T, None, r"Shape mismatch.*\(40, 32\).*must be \(32, 40\)"),
            "rgb mask": (np.zeros((32, 40, 3), np.uint8), None,
                         r"Expected a 2D class map.*convert an RGB mask to class indices"),
            "mask shape": (good, np.ones((40, 32), bool), r"Shape mismatch.*reviewed mask.*"
                           r"\(40, 32\).*\(32, 40\)"),
        }
        with unchanged(project.folder):
            for name, (labels, reviewed, match) in bad.items():
                with pytest.raises(ValueError, match=match):
                    session.submit(2, labels, reviewed)
                with pytest.raises(ValueError, match=match):
                    session.submit(1, labels, reviewed)  # a resubmission, too
        np.testing.assert_array_equal(project.load_labels(1)[0], good)


# --------------------------------------------------------------------------- 12. one class


@pytest.mark.parametrize("value", [0, 1], ids=["background-only", "foreground-only"])
def test_one_class_in_all_labels_trains_without_nan(tmp_path, value):
    project, _ = tiny_project(tmp_path / "proj", n=3)
    with project:
        session = ActiveLearningSession(project, train_config=TINY_TRAIN.replace(max_steps=6))
        for image_id in (1, 2):
            session.submit(image_id, np.full((32, 32), value, np.uint8))
        records = []
        summary = run_to_end(session.train(), records.append)
        assert summary.saved and len(records) == 6
        assert np.isfinite([r.loss for r in records]).all(), [r.loss for r in records]
        pred = session.predict(3)
        assert np.isfinite(pred.probs).all() and np.isfinite(pred.uncertainty["entropy"]).all()
        assert all(torch.isfinite(t).all() for t in session.model.state_dict().values()
                   if t.is_floating_point())
        assert session.suggest(1)


# --------------------------------------------------------------------------- 13. read-only


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_read_only_project_folder(tmp_path):
    """A project on a read-only share: a read-write open and a create there are refused
    clearly (suggesting read_only=True), a read-only session predicts and suggests, and
    ``activeseg predict`` works; nothing in the folder changes. Runs in a child process
    without the capabilities that let root ignore permissions."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permissions cannot be enforced")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    project, truth = tiny_project(tmp_path / "proj", n=3)
    session = ActiveLearningSession(project)
    session.submit(1, truth[1])
    run_to_end(session.train())
    project.close()
    inputs = write_folder(tmp_path / "in", {"new.tif": good_image(5)})
    ro_parent = tmp_path / "share"
    ro_parent.mkdir()
    folder = project.folder
    for sidecar in folder.glob("project.sqlite-*"):
        sidecar.unlink()
    before = snapshot(folder)
    dirs = [folder, ro_parent, *[p for p in folder.rglob("*") if p.is_dir()]]
    for path in dirs:
        path.chmod(0o555)
    try:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
        child = subprocess.run(
            [*prefix, sys.executable, str(CHILD), "read-only", str(folder), str(inputs),
             str(tmp_path / "out"), str(ro_parent)],
            capture_output=True, text=True, timeout=180, env=env)
    finally:
        for path in dirs:
            path.chmod(0o755)
    assert child.returncode == 0, child.stdout + child.stderr
    out = child.stdout
    assert "refused read-write open" in out and "read_only=True" in out
    assert "refused create" in out and "refused submit" in out and "cli predict ok" in out
    assert (tmp_path / "out" / "new_labels.tif").exists()
    after = snapshot(folder)
    assert before == after


# --------------------------------------------------------------------------- 14. disk full


class DiskFull:
    """Makes the n-th fsync of a regular file (0 = the next) fail with ENOSPC, as a full disk
    does at the latest when the data are flushed."""

    def __init__(self, monkeypatch, after: int = 0) -> None:
        import stat

        self.left = after
        real = os.fsync

        def fsync(fd):
            if stat.S_ISREG(os.fstat(fd).st_mode):
                if self.left <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.left -= 1
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


DISK_FULL = r"No space left on device.*previous labels are unchanged.*[Ff]ree .*space"


@pytest.mark.parametrize(("old_mask", "new_mask", "after"), [
    (None, None, 0),     # first submission of an image
    (None, "half", 0),   # a mask to stage: the staging write fails
    (None, "half", 1),   # the mask is staged, then the label write fails
    ("half", None, 1),   # a "no mask" marker is staged, then the label write fails
], ids=["first", "stage-fails", "labels-fail-after-mask", "labels-fail-after-marker"])
def test_disk_full_during_submit(session_project, monkeypatch, old_mask, new_mask, after):
    project, session, truth = session_project
    half = np.zeros((32, 32), bool)
    half[:16] = True
    masks = {None: None, "half": half}
    if after or old_mask:  # image 1 has labels already
        session.submit(1, truth[1], masks[old_mask])
    image_id = 2 if not (after or old_mask) else 1
    before = project.load_labels(image_id)
    session.mark_shown(image_id, np.zeros((32, 32), np.uint8))
    with unchanged(project.folder):
        full = DiskFull(monkeypatch, after)
        with pytest.raises(OSError, match=DISK_FULL) as info:
            session.submit(image_id, 1 - truth[image_id], masks[new_mask], merge=False)
        assert info.value.errno == errno.ENOSPC and full.left == 0
        monkeypatch.undo()
    after_labels = project.load_labels(image_id)
    if before is None:
        assert after_labels is None and project.get_image(image_id).status != "submitted"
    else:
        np.testing.assert_array_equal(after_labels[0], before[0])
    # space freed: the same submission goes through, with its time and effort
    session.submit(image_id, 1 - truth[image_id], masks[new_mask], merge=False)
    sub = project.submissions(image_id)[-1]
    assert sub.seconds is not None and sub.pixels_changed is not None
    assert project.integrity_check() == []


def test_disk_full_during_checkpoint_and_draft_save(session_project, monkeypatch):
    project, session, truth = session_project
    session.submit(1, truth[1])
    first = run_to_end(session.train())
    project.save_draft(2, truth[2])
    draft = project.load_draft(2)
    with unchanged(project.folder):
        DiskFull(monkeypatch)
        with pytest.raises(OSError, match=r"No space left on device.*previous models are "
                                          r"unchanged.*[Ff]ree .*space"):
            run_to_end(session.train())
        with pytest.raises(OSError, match="No space left"):
            project.save_draft(2, 1 - truth[2])
        monkeypatch.undo()
    assert session.model_version == first.model_version  # the last good model is kept
    assert [m.version for m in project.models()] == [first.model_version]
    np.testing.assert_array_equal(project.load_draft(2), draft)
    assert run_to_end(session.train()).saved  # the job lock was released
    assert project.integrity_check() == []


# --------------------------------------------------------------------------- 15. newer version


def test_project_from_a_newer_version(model_project, capsys, tmp_path):
    conn = sqlite3.connect(model_project / "project.sqlite")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    inputs = write_folder(tmp_path / "in", {"x.tif": good_image()})
    upgrade = r"(?s)created by a newer napari-activeseg.*Upgrade napari-activeseg"
    with unchanged(model_project):
        for read_only in (False, True):
            with pytest.raises(ProjectVersionError, match=upgrade):
                Project.open(model_project, read_only=read_only)
        rc, _, err = cli(capsys, "predict", model_project, inputs, tmp_path / "out")
        assert rc == 2 and "newer napari-activeseg" in err and "pip install -U" in err
        with pytest.raises(ProjectError, match="already holds a napari-activeseg project"):
            Project.create(model_project, arrays={"a": good_image()})
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 16. checkpoints


@pytest.fixture
def other_checkpoint(tmp_path):
    """A 3-class project's saved model (weights + JSON), as a colleague would hand it over."""
    cfg3 = TINY_MODEL.replace(n_classes=3)
    with Project.create(tmp_path / "other", arrays={"x": good_image()},
                        classes=("background", "nucleus", "border")) as other:
        with_model(other, cfg3)
    return tmp_path / "other" / "models" / "v0001.safetensors", cfg3


def test_checkpoint_of_another_class_count_or_architecture(session_project, other_checkpoint):
    project, session, truth = session_project
    path, cfg3 = other_checkpoint
    session.submit(1, truth[1])
    good = run_to_end(session.train()).model_version
    with unchanged(project.folder):
        with pytest.raises(ProjectError, match=r"predicts 3 classes but the project has 2.*"
                                               r"ModelConfig\(n_classes=2\)"):
            project.import_model(path)
        with pytest.raises(ProjectError, match=r"do not fit.*the weights predict 3 classes, the "
                                               r"config 2.*Use the ModelConfig the weights"):
            project.import_model(path, model_config=TINY_MODEL)
        with pytest.raises(ProjectError, match=r"do not fit.*the weights have depth 2, the "
                                               r"config 3"):
            project.import_model(path, model_config=TINY_MODEL.replace(depth=3))
        with pytest.raises(ProjectError, match=r"do not fit.*width 4, the config 8"):
            project.import_model(path, model_config=TINY_MODEL.replace(width=8))
        with pytest.raises(ValueError, match=r"warm-start weights do not fit"):
            run_to_end(Trainer(TINY_MODEL, TINY_TRAIN).fit(
                [session.prepared(1)], [truth[1]], init_state=load_state_dict(path)))
    assert session.model_version == good


def test_a_damaged_latest_checkpoint_falls_back_to_the_last_good_one(session_project,
                                                                     other_checkpoint):
    """A checkpoint whose JSON does not describe its weights (copied by hand into models/):
    loading it by name says why; by default the last good model is used, and named."""
    project, session, truth = session_project
    path, _ = other_checkpoint
    session.submit(1, truth[1])
    good = run_to_end(session.train()).model_version
    models = project.folder / "models"
    shutil.copy(path, models / "v0002.safetensors")
    doc = (models / f"{good}.json").read_text().replace(good, "v0002")
    (models / "v0002.json").write_text(doc)  # claims 2 classes; the weights have 3
    with pytest.raises(ProjectError, match=r"v0002.*(checksum|do not fit)"):
        project.load_model("v0002")
    with pytest.warns(UserWarning, match=r"v0002 could not be used, so v0001 was loaded"):
        reopened = ActiveLearningSession(project)
    assert reopened.model_version == good  # the version of the weights actually in use
    assert any("v0002" in p for p in project.integrity_check())


def test_a_foreign_latest_checkpoint_does_not_hide_the_last_good_one(session_project,
                                                                     other_checkpoint):
    project, session, truth = session_project
    path, _ = other_checkpoint
    session.submit(1, truth[1])
    good = run_to_end(session.train()).model_version
    shutil.copy(path, project.folder / "models" / "v0002.safetensors")
    shutil.copy(path.with_suffix(".json"), project.folder / "models" / "v0002.json")
    with pytest.warns(UserWarning, match=r"v0002 could not be used, so v0001 was loaded.*"
                                         r"trained for 3 classes but the project has 2"):
        reopened = ActiveLearningSession(project)
    assert reopened.model_version == good
    # asked for by name it still loads (an explicit choice), but a session would not use it
    assert project.load_model("v0002")[1].n_classes == 3


# --------------------------------------------------------------------------- 17. paths


def _deep(base: Path, length: int) -> Path:
    path, i = base, 0
    while len(str(path)) < length:
        path = path / f"level{i:02d}_{'x' * 40}"
        i += 1
    return path


@pytest.mark.parametrize("kind", ["non-ascii", "long"])
def test_non_ascii_and_very_long_paths(tmp_path, capsys, kind):
    if kind == "non-ascii":
        root = tmp_path / "données Ωμέγα" / "顕微鏡 ü"
        names = ["zelle_ß_1.tif", "细胞 2.png", "ölçüm-3.tif"]
    else:
        root = _deep(tmp_path, 260)
        names = [f"{'long_name_' * 12}{i}.tif" for i in range(3)]  # 120+ character names
    images, truth = blob_arrays(3)
    inputs = write_folder(root / "images", dict(zip(names, images.values(), strict=True)))
    folder = root / "projekt – ü" if kind == "non-ascii" else root / ("p" * 60)
    with Project.create(folder, source_folder=inputs) as project:
        session = ActiveLearningSession(project, model_config=TINY_MODEL, train_config=TINY_TRAIN,
                                        inference_config=TINY_INFER)
        pick = session.suggest(1)[0]
        name = project.get_image(pick.image_id).name
        session.submit(pick.image_id, truth[f"img{names.index(name):02d}"])
        run_to_end(session.train())
        assert session.predict(pick.image_id) is not None
        for rec in project.images():
            assert rec.key.isascii() and len(rec.key) <= 90  # label file names stay portable
    with Project.open(folder) as project:
        assert project.integrity_check() == [] and project.labelled_ids() == [pick.image_id]
    out = root / "résultats" if kind == "non-ascii" else root / "out"
    rc, _, err = cli(capsys, "predict", folder, inputs, out)
    assert rc == 0, err
    assert sorted(p.name for p in out.glob("*_labels.tif")) == sorted(
        f"{Path(n).stem}_labels.tif" for n in names)
    if kind == "long":
        assert len(str(folder)) > 300
