"""Large images in bounded memory: read lazily, scored tile by tile, only per-window scores
and a display-resolution overview kept; the same scores as the in-memory path."""

from __future__ import annotations

import itertools

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch

from napari_activeseg.core.config import InferenceConfig, ModelConfig
from napari_activeseg.core.inference import RowBand, predict, predict_rows
from napari_activeseg.core.largeimage import (
    LARGE_SETTING,
    LazyPrepared,
    Overview,
    display_levels,
    open_lazy,
)
from napari_activeseg.core.model import UNet
from napari_activeseg.core.preprocess import prepare_image
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession
from napari_activeseg.core.strategies import build_candidates, get_strategy
from napari_activeseg.core.strategies.candidates import stream_candidates
from napari_activeseg.core.strategies.regions import region_boxes

TINY = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, polarity="none")
INFER = InferenceConfig(tile_size=128, overlap=16, mc_samples=3, batch_size=3)


def _raw(shape=(300, 420), seed=0):
    rng = np.random.default_rng(seed)
    img = (rng.random(shape) * 60).astype(np.uint8)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for _ in range(12):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 15 ** 2] = 200
    return img


def _model(in_channels=1):
    torch.manual_seed(0)
    return UNet(TINY.replace(in_channels=in_channels))


@pytest.mark.parametrize("polarity, margin", [("none", None), ("invert", 0.25), ("auto", None)])
@pytest.mark.parametrize("channels", [1, 3])
def test_lazy_rows_equal_prepare_image(polarity, margin, channels):
    raw = _raw((333, 257))
    if channels == 3:  # an RGB image for a gray model (channel mean)
        raw = np.stack([raw, raw[::-1], 255 - raw], axis=-1)
    want = prepare_image(raw, polarity=polarity, polarity_margin=margin,
                         channel_axis=-1 if raw.ndim == 3 else None, channels=1)
    src = LazyPrepared(da.from_array(raw, chunks=(64, 64) + raw.shape[2:]),
                       polarity=polarity, polarity_margin=margin, channels=1)
    assert src.shape == want.shape
    np.testing.assert_array_equal(src.rows(0, 333), want)
    np.testing.assert_array_equal(src.rows(100, 200, 30, 90), want[:, 100:200, 30:90])


def test_predict_rows_equals_predict_band_by_band():
    raw = _raw()
    img = prepare_image(raw, polarity="none", channels=1)
    model = _model()
    want = predict(model, img, mode="mc", maps=("bald",), config=INFER)
    src = LazyPrepared(raw, polarity="none", channels=1)
    bands = _collect(predict_rows(model, src, mode="mc", maps=("bald",), config=INFER))
    assert bands[0].y0 == 0 and bands[-1].y1 == raw.shape[0]
    assert all(a.y1 == b.y0 for a, b in itertools.pairwise(bands))
    np.testing.assert_array_equal(np.concatenate([b.probs for b in bands], axis=1), want.probs)
    np.testing.assert_array_equal(np.concatenate([b.maps["bald"] for b in bands]),
                                  want.uncertainty["bald"])
    # never more than a strip of tiles at once
    assert max(b.y1 - b.y0 for b in bands) <= INFER.tile_size


def _collect(gen):
    out = []
    while True:
        try:
            item = next(gen)
        except StopIteration:
            return out
        if isinstance(item, RowBand):
            out.append(item)


@pytest.mark.parametrize("name, options, size", [
    ("entropy", {}, 96), ("bald", {}, 96),
    ("margin", {"cost_aware": True, "foreground_only": True}, 96), ("coreset", {}, 96),
    ("entropy", {}, 112),  # windows ending where the rows of a tile strip do
])
def test_streamed_window_scores_equal_the_in_memory_ones(name, options, size):
    raw = _raw()
    model = _model()
    strategy = get_strategy(name, **options)
    img = prepare_image(raw, polarity="none", channels=1)
    want = build_candidates(strategy, "7", img, model, inference_config=INFER, region_size=size)
    src = LazyPrepared(da.from_array(raw, chunks=(50, 50)), polarity="none", channels=1)
    got, overview = run_to_end(stream_candidates(strategy, "7", src, model,
                                                 inference_config=INFER, region_size=size))
    assert [c.box for c in got] == region_boxes(raw.shape, size=size)  # the whole image
    assert all(c.probs is None and not c.maps for c in got)  # no arrays kept
    a, b = strategy.rank(want), strategy.rank(got)
    assert [(p.key, p.score) for p in a] == [(p.key, p.score) for p in b]
    unc, labels = overview.result()
    assert unc.shape == labels.shape == raw.shape  # factor 1 for a small image


def test_overview_block_means():
    ov = Overview((5, 7), n_classes=2, max_side=3)  # factor 3: 2 x 3 blocks
    probs = np.zeros((2, 5, 7), np.float32)
    probs[1, :, 4:] = 1.0
    probs[0] = 1 - probs[1]
    unc = np.arange(35, dtype=np.float32).reshape(5, 7)
    ov.add(0, probs[:, :2], unc[:2])
    ov.add(2, probs[:, 2:], unc[2:])
    means, labels = ov.result()
    assert ov.factor == 3 and means.shape == (2, 3)
    assert means[0, 0] == pytest.approx(unc[:3, :3].mean())
    assert means[1, 2] == pytest.approx(unc[3:, 6:].mean())
    np.testing.assert_array_equal(labels, [[0, 1, 1], [0, 1, 1]])


def test_display_levels_are_the_files_own_or_strided(tmp_path):
    raw = _raw((2500, 2100))
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, raw, tile=(256, 256), compression="zlib")
    levels = display_levels(flat)
    assert [lv.shape for lv in levels] == [(2500, 2100), (1250, 1050)]
    np.testing.assert_array_equal(np.asarray(levels[1][:10, :10]), raw[::2, ::2][:10, :10])
    pyr = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(pyr) as w:
        w.write(raw, subifds=1, tile=(256, 256), metadata={"axes": "YX"})
        w.write(raw[::4, ::4], subfiletype=1, tile=(256, 256))
    assert [lv.shape for lv in display_levels(pyr)] == [(2500, 2100), (625, 525)]
    assert open_lazy(pyr).shape == (2500, 2100)


def _session(project):
    s = ActiveLearningSession(project, model_config=TINY, inference_config=INFER,
                              strategy="entropy")
    s.adopt_model(_model().state_dict())
    return s


def _ranking(s, image_id, n):
    """Every window of the image in queue order, with its score."""
    picks = s.suggest(1, regions=True, region_size=96, boxes_per_image=n)
    assert {p.image_id for p in picks} == {image_id}
    return [(p.box, p.score) for p in picks]


def test_a_small_image_scores_the_same_lazily_as_in_memory(tmp_path):
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, _raw(), tile=(64, 64))
    with Project.create(tmp_path / "p", images=[path], classes=("bg", "fg")) as project:
        i = project.images()[0].id
        n = len(region_boxes((300, 420), size=96))
        s = _session(project)
        in_memory = _ranking(s, i, n)
        assert {h["kind"] for h in s.cache_holdings()} >= {"prediction"}  # under the threshold
        project.set_setting(LARGE_SETTING, 1000)
        lazy = _session(project)
        assert _ranking(lazy, i, n) == in_memory
        assert {h["kind"] for h in lazy.cache_holdings()} == {"overview"}


def test_a_big_tiff_is_read_lazily_and_scored_without_full_probability_maps(tmp_path):
    raw = np.tile(_raw((500, 500), seed=3), (5, 5))  # 2500 x 2500 uint8, threshold 1024^2
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, raw, tile=(512, 512), compression="zlib")
    with Project.create(tmp_path / "p", classes=("bg", "fg"),
                        settings={LARGE_SETTING: 1024 * 1024}) as project:
        project.add_images([path])
        (rec,) = project.images()
        assert rec.shape == (2500, 2500)
        s = ActiveLearningSession(project, model_config=TINY, strategy="entropy",
                                  inference_config=InferenceConfig(tile_size=512, overlap=16))
        s.adopt_model(_model().state_dict())
        run_to_end(s.score_pool(regions=True, region_size=500))
        picks = s.suggest(1, regions=True, region_size=500, boxes_per_image=25)
        assert sorted(p.box for p in picks) == sorted(region_boxes((2500, 2500), size=500))
        held = s.cache_holdings()  # no prepared image, no prediction: the overview alone
        assert [h["kind"] for h in held] == ["overview"]
        assert held[0]["shapes"] == [(1250, 1250), (1250, 1250)]
        assert held[0]["nbytes"] < 2500 * 2500 * 4 / 2  # < half of one full float32 map
        factor, unc, labels = s.overview(rec.id)
        assert factor == 2 and unc.dtype == np.float32 and labels.dtype == np.uint8
        with pytest.raises(ValueError, match="large_image_pixels"):
            s.predict(rec.id)


def test_a_strategy_that_needs_images_ranks_the_most_uncertain_windows_of_a_large_image(
        tmp_path, monkeypatch):
    from napari_activeseg.core.strategies import candidates

    monkeypatch.setattr(candidates, "STREAM_KEEP", 3)  # windows that keep their arrays
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, _raw(), tile=(64, 64))
    with Project.create(tmp_path / "p", classes=("bg", "fg"),
                        settings={LARGE_SETTING: 1000}) as project:
        project.add_images([path])
        s = ActiveLearningSession(project, model_config=TINY, inference_config=INFER,
                                  strategy="task_similarity")
        s.adopt_model(_model().state_dict())
        n = len(region_boxes((300, 420), size=96))
        picks = s.suggest(1, regions=True, region_size=96, boxes_per_image=n)
        assert len(picks) == n  # every window is in the queue
        assert all("not kept for the strategy" in p.reason for p in picks[3:])
        assert not any("not kept" in p.reason for p in picks[:3])
        with pytest.raises(ValueError, match="Suggest boxes"):
            s.suggest(1)  # whole images: it would need the whole image


def test_the_project_polarity_is_decided_from_a_large_image_without_reading_it_whole(tmp_path):
    from napari_activeseg.core.imageio import normalize_image
    from napari_activeseg.core.preprocess import background_level, decide_project_polarity

    raw = 255 - np.tile(_raw((250, 250)), (3, 4))  # a bright background: 750 x 1000
    assert background_level(LazyPrepared(raw, polarity="none").level_sample) == \
        background_level(normalize_image(raw))
    path = tmp_path / "bright.tif"
    tifffile.imwrite(path, raw, tile=(256, 256))
    with Project.create(tmp_path / "p", classes=("bg", "fg"),
                        settings={LARGE_SETTING: 1000}) as project:
        project.add_images([path])
        assert decide_project_polarity(project) == "invert"
