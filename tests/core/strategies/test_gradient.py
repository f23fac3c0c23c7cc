"""Gradient embeddings (checked against autograd), descriptors, BADGE and ALGES."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_activeseg.core.strategies import (
    Candidate,
    get_strategy,
    gradient_embedding,
    image_descriptor,
)
from napari_activeseg.core.strategies.gradient import per_class_aggregate


def test_gradient_embedding_equals_autograd_of_the_head(tiny_model, tiny_images):
    image = tiny_images[0][0]  # (1, 32, 32)
    emb, norm = gradient_embedding(tiny_model, image)
    k, width = tiny_model.config.n_classes, tiny_model.config.width
    assert emb.shape == (k * width,) and norm.shape == (32, 32)
    assert emb.dtype == np.float32 and norm.dtype == np.float32

    model = tiny_model.eval()
    x = torch.from_numpy(image)[None]
    logits = model(x)
    target = logits.argmax(1).detach()
    model.zero_grad()
    F.cross_entropy(logits, target).backward()  # mean over pixels
    expected = model.head.weight.grad.reshape(k, width).numpy().ravel()
    np.testing.assert_allclose(emb, expected, rtol=1e-4, atol=1e-6)

    with torch.no_grad():
        lg, feats = model.forward_with_features(x)
        p = torch.softmax(lg, 1)[0]
        r = p - F.one_hot(p.argmax(0), k).permute(2, 0, 1)
        expected_norm = (r.norm(dim=0) * feats[0].norm(dim=0)).numpy()
    np.testing.assert_allclose(norm, expected_norm, rtol=1e-4, atol=1e-6)
    assert not model.training  # the mode is restored


def test_tiling_keeps_embedding_close_and_restores_training_mode(tiny_model, tiny_images):
    image = tiny_images[0][1]
    full, norm_full = gradient_embedding(tiny_model, image)
    tiny_model.train()
    tiled, norm_tiled = gradient_embedding(tiny_model, image, tile_size=16, halo=16)
    assert tiny_model.training
    tiny_model.eval()
    np.testing.assert_allclose(tiled, full, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(norm_tiled, norm_full, rtol=1e-3, atol=1e-5)


def test_image_descriptor_shape_and_tiling(tiny_model, tiny_images):
    image = tiny_images[0][2]
    d = image_descriptor(tiny_model, image)
    assert d.shape == (tiny_model.config.width * 2 ** tiny_model.config.depth,)
    with torch.inference_mode():
        expected = tiny_model.features(torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(d, expected, rtol=1e-5)
    assert image_descriptor(tiny_model, image, tile_size=16).shape == d.shape
    with pytest.raises(ValueError, match="channel"):
        image_descriptor(tiny_model, np.zeros((3, 8, 8), np.float32))


def _emb(key, vec):
    return Candidate(key=key, image_id=key, embedding=np.asarray(vec, float))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_badge_batch_has_no_near_duplicates(seed):
    rng = np.random.default_rng(seed)
    dupes = [_emb(f"dup{i}", np.array([3.0, 0, 0, 0]) + 1e-3 * rng.normal(size=4))
             for i in range(5)]
    distinct = _emb("distinct", [0, 1.0, 0, 0])  # smaller gradient, other direction
    s = get_strategy("badge", seed=seed)
    one = s.select(dupes + [distinct], k=1)
    assert one[0].key.startswith("dup")  # the largest gradient first
    picks = s.select(dupes + [distinct], k=2)
    assert "distinct" in [p.key for p in picks]
    assert "k-means++" in picks[1].reason


def _grad_cand(key, norm_bg, norm_fg):
    """Left half predicted background, right half foreground; a constant norm per class."""
    fg = np.zeros((8, 8), bool)
    fg[:, 4:] = True
    p1 = np.where(fg, 0.8, 0.2)
    gn = np.where(fg, norm_fg, norm_bg)
    return Candidate(key=key, image_id=key, probs=np.stack([1 - p1, p1]), maps={"grad_norm": gn})


def test_per_class_aggregate():
    c = _grad_cand("x", 1.0, 3.0)
    np.testing.assert_allclose(per_class_aggregate(c.maps["grad_norm"], c.probs), [1.0, 3.0])
    only_bg = np.stack([np.ones((2, 2)), np.zeros((2, 2))])
    np.testing.assert_allclose(per_class_aggregate(np.ones((2, 2)), only_bg), [1.0, 0.0])


def test_alges_ranks_by_gradient_norm_and_centers_the_batch():
    same = [_grad_cand(f"same{i}", 2.0, 2.0 + 0.01 * i) for i in range(3)]
    other = _grad_cand("other", 0.2, 1.8)  # less uncertain overall, different class profile
    low = _grad_cand("low", 0.1, 0.1)
    cands = same + [other, low]
    s = get_strategy("alges", aggregation="mean")
    assert s.select(cands, k=1)[0].key == "same2"
    keys = [p.key for p in s.select(cands, k=2)]
    assert keys == ["same2", "other"]
    assert "center finding" in s.select(cands, k=2)[1].reason
    # labelled images seed the centers: a labelled twin of "same" pushes the pick away
    twin = _grad_cand("twin", 2.0, 2.02)
    twin.labelled = True
    wide = get_strategy("alges", aggregation="mean", diversity_pool=5)
    assert wide.select(cands + [twin], k=1)[0].key == "other"
    assert s.select(cands + [twin], k=1)[0].key.startswith("same")  # "other" is not in the top 3
