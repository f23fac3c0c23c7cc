import numpy as np
import pytest
import torch

from napari_activeseg.core.config import InferenceConfig, ModelConfig
from napari_activeseg.core.inference import (
    blend_weights,
    predict,
    predict_iter,
    tile_starts,
)
from napari_activeseg.core.model import UNet


@pytest.fixture
def model():
    torch.manual_seed(0)
    return UNet(ModelConfig(in_channels=1, n_classes=3, depth=2, width=4)).eval()


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 8), (32, 32, 8), (20, 32, 8), (513, 128, 16)])
def test_tiles_cover_the_axis(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    t = min(tile, size)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s:s + t] = True
        assert 0 <= s <= size - t
    assert covered.all()
    if len(starts) > 1:
        assert all(b - a <= t - overlap for a, b in zip(starts, starts[1:]))


def test_blend_weights_positive_with_ramp():
    w = blend_weights(32, 40, 8)
    assert w.shape == (32, 40) and w.min() > 0 and w.max() == 1
    assert w[0, 20] < w[8, 20]


def test_single_tile_equals_whole_image_forward(model):
    img = np.random.default_rng(0).random((1, 60, 90), dtype=np.float32)
    pred = predict(model, img, config=InferenceConfig(tile_size=128, overlap=16))
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(img)[None]), 1)[0].numpy()
    assert pred.probs.shape == (3, 60, 90) and pred.probs.dtype == np.float32
    np.testing.assert_allclose(pred.probs, ref, atol=1e-4)
    assert np.array_equal(pred.labels, ref.argmax(0))
    assert pred.labels.dtype == np.uint8


def test_tiled_prediction_close_to_whole_image():
    """Overlapping tiles give nearly the whole-image answer (context differs only at seams).

    A BatchNorm model, whose output at a pixel depends only on its receptive field: this
    checks the tiling and blending. (A GroupNorm model also normalises each tile by its own
    statistics; what that does to real images is measured in the README, "Training defaults".)
    """
    torch.manual_seed(0)
    model = UNet(ModelConfig(in_channels=1, n_classes=3, depth=2, width=4, norm="batch")).eval()
    img = np.random.default_rng(1).random((1, 160, 200), dtype=np.float32)
    whole = predict(model, img, config=InferenceConfig(tile_size=256, overlap=0))
    tiled = predict(model, img, config=InferenceConfig(tile_size=64, overlap=24, batch_size=3))
    assert tiled.probs.shape == whole.probs.shape
    np.testing.assert_allclose(tiled.probs.sum(0), 1.0, atol=1e-5)
    assert np.abs(tiled.probs - whole.probs).mean() < 0.02
    assert (tiled.labels == whole.labels).mean() > 0.95


def test_uncertainty_maps_per_mode(model):
    img = np.random.default_rng(2).random((1, 48, 48), dtype=np.float32)
    cfg = InferenceConfig(tile_size=32, overlap=8, mc_samples=4)
    single = predict(model, img, maps=("entropy", "margin"), config=cfg)
    assert set(single.uncertainty) == {"entropy", "margin"}
    assert single.uncertainty["entropy"].shape == (48, 48)
    assert (single.uncertainty["entropy"] <= np.log(3) + 1e-5).all()
    tta = predict(model, img, mode="tta", maps=("tta", "entropy"), config=cfg)
    assert tta.uncertainty["tta"].min() >= 0 and tta.uncertainty["tta"].max() > 0
    ens = predict([model, UNet(model.config).eval()], img, mode="ensemble",
                  maps=("ensemble",), config=cfg)
    assert ens.uncertainty["ensemble"].max() > 0


def test_mc_mode_gives_bald(model):
    m = UNet(ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, dropout=0.5)).eval()
    img = np.random.default_rng(3).random((1, 40, 40), dtype=np.float32)
    pred = predict(m, img, mode="mc", maps=("bald", "variance", "entropy"),
                   config=InferenceConfig(mc_samples=6))
    assert pred.uncertainty["bald"].max() > 0
    assert (pred.uncertainty["bald"] >= 0).all()


def test_bad_requests_raise(model):
    img = np.zeros((1, 16, 16), np.float32)
    with pytest.raises(ValueError, match="need several samples"):
        predict(model, img, maps=("bald",))
    with pytest.raises(ValueError, match="Unknown uncertainty map"):
        predict(model, img, maps=("nonsense",))
    with pytest.raises(ValueError, match="expects 1 channel"):
        predict(model, np.zeros((3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="Unknown prediction mode"):
        predict(model, img, mode="magic")


def test_progress_and_stop(model):
    img = np.zeros((1, 100, 100), np.float32)
    gen = predict_iter(model, img, config=InferenceConfig(tile_size=32, overlap=8, batch_size=1))
    first = next(gen)
    assert first.done == 1 and first.total > 4
    calls = iter([False, True])
    gen = predict_iter(model, img, config=InferenceConfig(tile_size=32, overlap=8, batch_size=1),
                       stop=lambda: next(calls))
    with pytest.raises(StopIteration) as stop:
        while True:
            next(gen)
    assert stop.value.value is None


def test_out_of_memory_halves_the_batch(model, monkeypatch):
    """A simulated OOM on the first big batch: the batch halves and the work completes."""
    real = model.forward
    state = {"raised": False}

    def flaky(x):
        if x.shape[0] > 1 and not state["raised"]:
            state["raised"] = True
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(x)

    monkeypatch.setattr(model, "forward", flaky)
    img = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
    pred = predict(model, img, config=InferenceConfig(tile_size=32, overlap=8, batch_size=4))
    assert state["raised"]
    assert any("halved" in n for n in pred.notes)
    assert pred.probs.shape == (3, 64, 64)


def test_mc_uncertainty_is_reproducible_for_a_seed():
    torch.manual_seed(0)
    model = UNet(ModelConfig(in_channels=1, width=4, depth=2, dropout=0.5)).eval()
    img = np.random.default_rng(0).random((1, 96, 80), dtype=np.float32)
    cfg = InferenceConfig(tile_size=48, overlap=8, mc_samples=4)
    a = predict(model, img, mode="mc", maps=("bald",), config=cfg)
    b = predict(model, img, mode="mc", maps=("bald",), config=cfg)
    np.testing.assert_array_equal(a.uncertainty["bald"], b.uncertainty["bald"])
    # the draw depends on the seed only, not on the image: a seed change changes the map
    other = predict(model, img, mode="mc", maps=("bald",), config=cfg.replace(mc_seed=1))
    assert not np.allclose(other.uncertainty["bald"], a.uncertainty["bald"])
    fresh = predict(model, img, mode="mc", maps=("bald",), config=cfg.replace(mc_seed=None))
    assert not np.allclose(fresh.uncertainty["bald"], a.uncertainty["bald"])
