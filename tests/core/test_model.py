import numpy as np
import pytest
import torch

from napari_activeseg.core.config import ModelConfig
from napari_activeseg.core.model import UNet, count_parameters, norm_layer, unet_gflops


@pytest.mark.parametrize("shape", [(37, 50), (64, 64), (8, 8), (3, 130)])
def test_any_input_size_is_padded_and_cropped_back(shape):
    model = UNet(ModelConfig(in_channels=2, n_classes=3, depth=3, width=4)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, *shape))
    assert out.shape == (2, 3, *shape)


@pytest.mark.parametrize("depth,width", [(2, 4), (3, 8), (4, 16)])
def test_width_and_depth_change_the_network(depth, width):
    cfg = ModelConfig(in_channels=1, depth=depth, width=width)
    n = count_parameters(UNet(cfg))
    bigger = count_parameters(UNet(cfg.replace(width=width * 2)))
    assert bigger > 3 * n  # conv weights scale with width**2
    assert unet_gflops(cfg.replace(width=width * 2), 64, 64) > 3 * unet_gflops(cfg, 64, 64)


def _model(**kw):
    torch.manual_seed(0)
    kw = {"norm": "batch", **kw}
    cfg = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, dropout=0.5, **kw)
    model = UNet(cfg).eval()
    # give BatchNorm non-trivial running statistics so eval/train mode differ visibly (the
    # MC paths must be right for either normalisation; BatchNorm is the one with a mode)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 1, 32, 32) * 3 + 1)
    return model.eval()


def test_eval_forward_is_deterministic_and_mc_samples_differ():
    model = _model()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a, b = model(x), model(x)
        s = model.mc_forward(x, 4)
    assert torch.equal(a, b)
    assert s.shape == (4, 1, 2, 32, 32)
    assert not torch.allclose(s[0], s[1])
    assert model.mc_dropout is False  # switched off again after sampling


@pytest.mark.parametrize("placement", [
    {"dropout_head": True},
    {"dropout_head": False, "dropout_decoder": 1},
    {"dropout_head": False, "dropout_bottleneck": True},
    {"dropout_head": True, "dropout_decoder": 2, "dropout_bottleneck": True},
])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_mc_forward_matches_naive_sampling_in_distribution(placement, norm):
    """The shared-encoder MC path samples the same distribution as T naive passes.

    With the same dropout masks the two paths must agree exactly; we check this by making the
    only stochastic layer see a fixed seed in both paths, sample by sample.
    """
    model = _model(norm=norm, **placement)
    x = torch.randn(2, 1, 24, 40)
    t = 3
    with torch.no_grad():
        torch.manual_seed(123)
        fast = model.mc_forward(x, t)
        # naive: whole network per sample with dropout active and BatchNorm in eval mode
        model.mc_dropout = True
        naive_mean = torch.stack([model(x) for _ in range(200)]).softmax(2).mean(0)
        model.mc_dropout = False
        fast_many = model.mc_forward(x, 200).softmax(2).mean(0)
    assert fast.shape == (t, 2, 2, 24, 40)
    # two Monte-Carlo estimates of the same predictive mean
    assert torch.allclose(naive_mean, fast_many, atol=0.08)


def test_batchnorm_stays_in_eval_mode_during_mc_sampling():
    model = _model(dropout_head=True)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    before = bn.running_mean.clone()
    with torch.no_grad():
        model.mc_forward(torch.randn(1, 1, 32, 32) * 10, 4)
    assert torch.equal(bn.running_mean, before)


def test_without_dropout_mc_samples_are_identical():
    model = UNet(ModelConfig(in_channels=1, depth=2, width=4, dropout=0.0)).eval()
    with torch.no_grad():
        s = model.mc_forward(torch.randn(1, 1, 16, 16), 5)
    assert torch.equal(s[0], s[4])


def test_features_shape():
    model = UNet(ModelConfig(in_channels=3, depth=3, width=4)).eval()
    with torch.no_grad():
        f = model.features(torch.randn(5, 3, 40, 40))
    assert f.shape == (5, 32)


def test_config_validation_and_json_round_trip():
    cfg = ModelConfig(in_channels=1, n_classes=4, depth=2, width=6, dropout_decoder=1)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="n_classes"):
        ModelConfig(n_classes=1)
    with pytest.raises(ValueError, match="Unknown model field"):
        ModelConfig.from_dict({"widht": 3})
    assert np.isfinite(unet_gflops(cfg, 100, 100))


def test_forward_with_features_matches_forward_and_head():
    model = _model()
    x = torch.randn(2, 1, 30, 34)
    with torch.no_grad():
        logits, feats = model.forward_with_features(x)
        assert torch.allclose(logits, model(x), atol=1e-6)
        assert feats.shape == (2, 4, 30, 34)
        assert torch.allclose(model.head(feats), logits, atol=1e-6)


def test_folded_channel_dropout_head_is_exact():
    """Each fast MC sample equals the head applied to channel-dropped features for one of the
    2**C possible masks (head-only channel dropout folds into one convolution)."""
    import itertools

    model = _model(dropout_head=True, dropout_mode="channel")
    x = torch.randn(2, 1, 20, 24)
    with torch.no_grad():
        _, feats = model.forward_with_features(x)
        fast = model.mc_forward(x, 6)  # (T, N, K, H, W)
        p = model.config.dropout
        c = feats.shape[1]
        options = [model.head(feats * torch.tensor(m, dtype=feats.dtype)[None, :, None, None]
                              / (1 - p)) for m in itertools.product([0, 1], repeat=c)]
    for t in range(6):
        for n in range(2):
            assert any(torch.allclose(fast[t, n], o[n], atol=1e-5) for o in options)


def test_element_dropout_mode_still_samples():
    model = _model(dropout_head=True, dropout_mode="element")
    with torch.no_grad():
        s = model.mc_forward(torch.randn(1, 1, 16, 16), 3)
    assert s.shape == (3, 1, 2, 16, 16) and not torch.allclose(s[0], s[1])


def test_shared_head_masks_apply_the_same_draw_to_every_image():
    model = _model(dropout_head=True, dropout_mode="channel")
    masks = model.head_masks(5, seed=3)
    assert masks.shape == (5, 4) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masks, model.head_masks(5, seed=3))  # reproducible for a seed
    assert not torch.equal(masks, model.head_masks(5, seed=4))
    x = torch.randn(2, 1, 20, 24)
    with torch.no_grad():
        _, feats = model.forward_with_features(x)
        fast = model.mc_forward(x, 5, masks=masks)
        p = model.config.dropout
        for t in range(5):
            ref = model.head(feats * masks[t][None, :, None, None] / (1 - p))
            assert torch.allclose(fast[t], ref, atol=1e-5)  # both images, mask t
    with pytest.raises(ValueError, match=r"masks must have shape \(5, 4\)"):
        model.mc_forward(x, 5, masks=masks[:3])
    # dropout elsewhere: no shared masks (each call draws its own)
    assert _model(dropout_head=False, dropout_decoder=1).head_masks(5) is None
    assert _model(dropout_head=True, dropout_mode="element").head_masks(5) is None


def test_groupnorm_is_the_default_and_has_no_batch_statistics():
    model = UNet(ModelConfig(in_channels=1, depth=2, width=8, dropout=0.0))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any("running" in k for k in model.state_dict())
    # groups of 4 channels: 8 -> 2 groups, 16 -> 4, 32 -> 8
    assert sorted({(m.num_channels, m.num_groups) for m in norms}) == [(8, 2), (16, 4), (32, 8)]
    # an image's output does not depend on the other images of the batch, in train mode too
    # (BatchNorm's would: it normalises by the batch)
    x = torch.randn(3, 1, 32, 32)
    model.train()
    with torch.no_grad():
        together = model(x)
        alone = model(x[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("channels,groups", [(4, 1), (5, 1), (6, 1), (8, 2), (12, 3), (20, 5),
                                             (24, 6), (10, 2), (2, 1)])
def test_norm_layer_groups_divide_the_channels(channels, groups):
    layer = norm_layer("group", channels)
    assert (layer.num_channels, layer.num_groups) == (channels, groups)
    assert isinstance(norm_layer("batch", channels), torch.nn.BatchNorm2d)
    with pytest.raises(ValueError, match="norm must be"):
        norm_layer("instance", channels)


def test_a_config_saved_before_the_norm_option_is_a_batchnorm_model():
    old = {k: v for k, v in ModelConfig(in_channels=1, depth=2, width=4).to_dict().items()
           if k != "norm"}
    cfg = ModelConfig.from_dict(old)
    assert cfg.norm == "batch"
    legacy = UNet(cfg)
    assert any("running_mean" in k for k in legacy.state_dict())
    # and a new config round-trips as it is
    assert ModelConfig.from_json(ModelConfig().to_json()) == ModelConfig()
    assert ModelConfig.from_json(ModelConfig().to_json()).norm == "group"
    with pytest.raises(ValueError, match="norm must be"):
        ModelConfig(norm="layer")
