"""A box of a large image in a real viewer: the image as a multiscale layer of lazy levels, the
annotation layer of the box's size only, on the box."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_activeseg._widgets._common import ANNOTATION, REGIONS, UNCERTAINTY
from napari_activeseg._widgets._layers import show_region_view
from napari_activeseg.core.config import InferenceConfig, ModelConfig
from napari_activeseg.core.largeimage import LARGE_SETTING
from napari_activeseg.core.model import UNet
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession

pytestmark = pytest.mark.gui

TINY = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, polarity="none")


def test_a_suggested_box_of_a_large_image_opens_as_multiscale_and_box_labels(
        make_napari_viewer, tmp_path):
    rng = np.random.default_rng(0)
    raw = (rng.random((2200, 2100)) * 200).astype(np.uint8)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, raw, tile=(256, 256), compression="zlib")
    with Project.create(tmp_path / "p", classes=("bg", "cell"),
                        settings={LARGE_SETTING: 1000 * 1000}) as project:
        project.add_images([path])
        (rec,) = project.images()
        s = ActiveLearningSession(project, model_config=TINY, strategy="entropy",
                                  inference_config=InferenceConfig(tile_size=256, overlap=16))
        torch.manual_seed(0)
        s.adopt_model(UNet(TINY).state_dict())
        run_to_end(s.score_pool(regions=True, region_size=512))
        (pick,) = s.suggest(1, regions=True, region_size=512)
        view = s.region_view(rec.id, pick.box)
        viewer = make_napari_viewer()
        show_region_view(viewer, view, project.colors)
        image = viewer.layers["image"]
        assert image.multiscale and image.data[0].shape == (2200, 2100)
        assert [lv.shape for lv in image.data] == [(2200, 2100), (1100, 1050)]
        np.testing.assert_array_equal(np.asarray(image.data[1][:4, :4]), raw[::2, ::2][:4, :4])
        y0, x0, y1, x1 = pick.box
        ann = viewer.layers[ANNOTATION]
        assert ann.data.shape == (y1 - y0, x1 - x0)  # the box only, not 2200 x 2100
        assert tuple(ann.translate) == (y0, x0)
        assert ann.mode == "paint"
        # the box's labels are where the box is: world (y0, x0) is the layer's first pixel
        assert tuple(ann.world_to_data((y0, x0))) == (0, 0)
        assert viewer.layers[UNCERTAINTY].data.shape == (1100, 1050)  # the overview
        assert tuple(viewer.layers[UNCERTAINTY].scale) == (2, 2)
        assert viewer.layers[REGIONS].nshapes == 1
        # a second box replaces the layers rather than stacking them
        show_region_view(viewer, s.region_view(rec.id, (0, 0, 100, 200)), project.colors)
        assert viewer.layers[ANNOTATION].data.shape == (100, 200)
        assert [ly.name for ly in viewer.layers].count(ANNOTATION) == 1
