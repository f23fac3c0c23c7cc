"""Axes of the user's files: ImageJ hyperstacks, OME-TIFF series and pyramids, OME-Zarr, the
user's axes string over the metadata, and any channel count through train and predict."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_activeseg.core.axes import check_axes
from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.imageio import image_sources, list_images, read_image
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project, pool_items
from napari_activeseg.core.session import ActiveLearningSession

RNG = np.random.default_rng(0)


def _u16(*shape):
    return RNG.integers(0, 4000, shape, dtype=np.uint16)


def _by_name(project):
    return {r.name: project.load_image(r.id) for r in project.images()}


def test_imagej_hyperstack_becomes_one_item_per_z_with_its_channels(tmp_path):
    stack = _u16(3, 2, 40, 48)  # Z, C, Y, X
    tifffile.imwrite(tmp_path / "cells.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    with Project.create(tmp_path / "p", images=[tmp_path / "cells.tif"]) as project:
        items = _by_name(project)
        assert sorted(items) == ["cells_z0000", "cells_z0001", "cells_z0002"]
        for z in range(3):  # channels last, the known pixels
            np.testing.assert_array_equal(items[f"cells_z{z:04d}"], np.moveaxis(stack[z], 0, -1))
        assert project.channels == 2


def test_imagej_channels_only_file_is_read_with_its_channel_axis(tmp_path):
    image = _u16(3, 32, 30)
    tifffile.imwrite(tmp_path / "c.tif", image, imagej=True, metadata={"axes": "CYX"})
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), np.moveaxis(image, 0, -1))
    with pytest.raises(ValueError, match="planes"):  # a Z stack is no single image
        tifffile.imwrite(tmp_path / "z.tif", image, imagej=True, metadata={"axes": "ZYX"})
        read_image(tmp_path / "z.tif")


def test_ome_tiff_with_two_series_gives_two_items(tmp_path):
    a, b = _u16(2, 32, 30), _u16(2, 32, 30)
    with tifffile.TiffWriter(tmp_path / "two.ome.tif", ome=True) as tif:
        tif.write(a, metadata={"axes": "CYX"})
        tif.write(b, metadata={"axes": "CYX"})
    with Project.create(tmp_path / "p", images=[tmp_path / "two.ome.tif"]) as project:
        items = _by_name(project)
        assert sorted(items) == ["two_s0", "two_s1"]
        np.testing.assert_array_equal(items["two_s1"], np.moveaxis(b, 0, -1))


def test_pyramidal_ome_tiff_is_one_item_at_full_resolution(tmp_path):
    full = _u16(2, 64, 60)
    with tifffile.TiffWriter(tmp_path / "pyr.ome.tif", ome=True) as tif:
        tif.write(full, subifds=2, metadata={"axes": "CYX"})
        tif.write(full[:, ::2, ::2], subfiletype=1)
        tif.write(full[:, ::4, ::4], subfiletype=1)
    assert len(image_sources(tmp_path / "pyr.ome.tif")) == 1
    with Project.create(tmp_path / "p", images=[tmp_path / "pyr.ome.tif"]) as project:
        (image,) = _by_name(project).values()
        np.testing.assert_array_equal(image, np.moveaxis(full, 0, -1))


def test_ome_zarr_round_trip_lazily_one_item_per_z(tmp_path):
    zarr = pytest.importorskip("zarr")
    writer = pytest.importorskip("ome_zarr.writer")
    data = _u16(2, 3, 64, 48)  # C, Z, Y, X
    writer.write_image(data, zarr.open_group(str(tmp_path / "src" / "vol.zarr"), mode="w"),
                       axes="czyx")
    assert [p.name for p in list_images(tmp_path / "src")] == ["vol.zarr"]  # not its chunks
    with Project.create(tmp_path / "p", source_folder=tmp_path / "src") as project:
        items = _by_name(project)
        assert sorted(items) == ["vol_z0000", "vol_z0001", "vol_z0002"]
        np.testing.assert_array_equal(items["vol_z0002"], np.moveaxis(data[:, 2], 0, -1))


def test_user_axes_override_the_metadata_and_are_saved(tmp_path):
    stack = _u16(4, 32, 30)
    tifffile.imwrite(tmp_path / "a.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    with Project.create(tmp_path / "p", images=[tmp_path / "a.tif"], axes="CYX") as project:
        (image,) = _by_name(project).values()  # one 4-channel image, not 4 planes
        np.testing.assert_array_equal(image, np.moveaxis(stack, 0, -1))
    tifffile.imwrite(tmp_path / "b.tif", _u16(4, 32, 30), imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "flat.tif", _u16(32, 30))
    with Project.open(tmp_path / "p") as project:
        assert project.get_setting("axes") == "CYX"
        with pytest.warns(UserWarning, match="axes 'CYX'"):  # the 2D file disagrees
            added = project.add_images([tmp_path / "b.tif", tmp_path / "flat.tif"])
        assert [r.name for r in added] == ["b.tif"] and project.load_image(added[0].id).ndim == 3


def test_user_axes_split_a_plain_stack_into_planes(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", _u16(3, 32, 30), photometric="minisblack")  # "QYX"
    with Project.create(tmp_path / "p", images=[tmp_path / "t.tif"], axes="tyx") as project:
        assert sorted(_by_name(project)) == ["t_t0000", "t_t0001", "t_t0002"]


@pytest.mark.parametrize("bad", ["CYY", "CY", "ZQYX", "CSYX", 3])
def test_a_bad_axes_string_is_refused_and_nothing_is_made(tmp_path, bad):
    tifffile.imwrite(tmp_path / "a.tif", _u16(32, 30))
    with pytest.raises(ValueError, match="axes"):
        Project.create(tmp_path / "p", images=[tmp_path / "a.tif"], axes=bad)
    assert not (tmp_path / "p" / "project.sqlite").exists()
    assert check_axes("auto") is None and check_axes(" yxc ") == "YXC"


def test_a_stack_layer_is_channels_when_the_user_says_so():
    stack = _u16(5, 20, 24)
    assert sorted(pool_items("s", stack)) == [f"s_{i:04d}" for i in range(5)]
    (item,) = pool_items("s", stack, channels=True).values()
    np.testing.assert_array_equal(item, np.moveaxis(stack, 0, -1))


def test_a_five_channel_project_trains_and_predicts(tmp_path):
    images = {f"img{i}": RNG.integers(0, 255, (48, 56, 5), dtype=np.uint8) for i in range(3)}
    with Project.create(tmp_path / "p", arrays=images, channel_axis=-1) as project:
        assert project.channels == 5
        session = ActiveLearningSession(
            project, model_config=ModelConfig(in_channels=5, n_classes=2, depth=2, width=4),
            train_config=TrainConfig(patch_size=32, batch_size=2, max_steps=2,
                                     time_budget_s=None),
            inference_config=InferenceConfig(tile_size=64, overlap=8, mc_samples=2))
        first = project.images()[0].id
        truth = (project.load_image(first)[..., 0] > 127).astype(np.uint8)
        session.submit(first, truth)
        summary = run_to_end(session.train())
        assert summary.saved
        pred = session.predict(project.images()[1].id)
        assert pred.labels.shape == (48, 56)
