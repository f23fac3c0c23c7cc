"""Tests of evaluation.rf: the random-forest pixel classifier baseline on synthetic disks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.evaluation import rf as rf_module
from napari_activeseg.evaluation.rf import RandomForestSegmenter


def disks(seed: int, shape=(96, 96), n=8, noise=0.25, channels=1):
    """Bright disks on a dark noisy background: ((C, H, W) float32 image, (H, W) uint8 mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, np.uint8)
    for _ in range(n):
        r = rng.uniform(5, 9)
        cy, cx = rng.uniform(r, shape[0] - r), rng.uniform(r, shape[1] - r)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = 1
    image = mask[None].astype(np.float32) + rng.normal(0, noise, (channels,) + shape)
    return image.astype(np.float32), mask


def dice(pred, true):
    inter = np.logical_and(pred == 1, true == 1).sum()
    return 2 * inter / ((pred == 1).sum() + (true == 1).sum())


def small_forest(**kw):
    kw = dict(n_estimators=20, sigma_max=8, max_samples_per_image=4000, seed=0) | kw
    return RandomForestSegmenter(**kw)


def test_fit_one_predict_another():
    (x0, y0), (x1, y1) = disks(0), disks(1)
    seg = small_forest().fit([x0], [y0])
    pred = seg.predict(x1)
    assert pred.shape == y1.shape and pred.dtype == np.uint8
    assert dice(pred, y1) > 0.9


def test_probabilities_sum_to_one_with_unseen_class():
    x, y = disks(2)
    seg = small_forest().fit([x], [y], n_classes=3)
    proba = seg.predict_proba(disks(3)[0])
    assert proba.shape == (3, 96, 96) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=0), 1.0, atol=1e-5)
    assert (proba >= 0).all()
    assert not proba[2].any()  # class 2 never seen in training
    assert seg.n_classes == 3


def test_single_class_training_still_gives_all_classes():
    x, _ = disks(4)
    seg = small_forest().fit([x], [np.zeros(x.shape[1:], np.uint8)])
    proba = seg.predict_proba(x)
    assert proba.shape == (2, 96, 96)
    np.testing.assert_allclose(proba[0], 1.0)
    assert not seg.predict(x).any()


def test_reviewed_mask_excludes_wrong_labels():
    """Labels outside the reviewed region are garbage; training must ignore them."""
    (x0, y0), (x1, y1) = disks(5, n=14), disks(6)
    corrupted = y0.copy()
    corrupted[48:] = 1 - corrupted[48:]  # invert the bottom half
    reviewed = np.zeros_like(y0, bool)
    reviewed[:48] = True
    good = small_forest().fit([x0], [corrupted], reviewed=[reviewed]).predict(x1)
    assert dice(good, y1) > 0.9
    bad = small_forest().fit([x0], [corrupted]).predict(x1)
    assert dice(bad, y1) < dice(good, y1)


def test_reviewed_none_per_image_and_empty_images_skipped():
    (x0, y0), (x1, y1) = disks(7), disks(8)
    seg = small_forest().fit(
        [x0, x1], [y0, y1], reviewed=[None, np.zeros_like(y1, bool)]
    )
    assert dice(seg.predict(x1), y1) > 0.9


def test_no_reviewed_pixel_raises():
    x, y = disks(9)
    with pytest.raises(ValueError, match="No reviewed pixel"):
        small_forest().fit([x], [y], reviewed=[np.zeros_like(y, bool)])


def test_sampling_is_class_balanced_and_bounded():
    seg = small_forest(max_samples_per_image=1000)
    mask = np.zeros((100, 100), np.uint8)
    mask[:10, :10] = 1  # 100 foreground pixels, 1 %
    idx = seg._sample(mask, np.ones_like(mask, bool), np.random.default_rng(0))
    assert idx.size == 1000 and np.unique(idx).size == 1000
    assert mask.ravel()[idx].sum() == 100  # all foreground (less than half available)
    mask[:] = 1  # no background: everything from the foreground
    idx = seg._sample(mask, np.ones_like(mask, bool), np.random.default_rng(0))
    assert idx.size == 1000


def test_multichannel_features_shape():
    seg = RandomForestSegmenter(sigma_min=1, sigma_max=16)
    x, _ = disks(10, shape=(40, 48), channels=2)
    feats = seg.features(x)
    # 5 scales (1, 2, 4, 8, 16) x 4 features (intensity, edges, 2 eigenvalues) x 2 channels
    assert feats.shape == (40, 48, 40) and feats.dtype == np.float32
    assert seg.features(x[:1]).shape == (40, 48, 20)


def test_banded_features_equal_whole_image(monkeypatch):
    seg = small_forest(sigma_max=4)
    x, y = disks(11, shape=(300, 64))
    whole = seg.features(x)
    monkeypatch.setattr(rf_module, "_CHUNK_BYTES", 64 * 12 * 4 * 80)  # bands of ~40 rows
    bands = list(seg._feature_bands(x))
    assert len(bands) > 3
    assert [b[0] for b in bands[1:]] == [b[1] for b in bands[:-1]]
    assert bands[0][0] == 0 and bands[-1][1] == 300
    np.testing.assert_allclose(np.concatenate([b[2] for b in bands]), whole, atol=1e-5)
    # banded training and prediction agree with the whole-image path
    seg.fit([x], [y])
    banded = seg.predict_proba(x)
    monkeypatch.setattr(rf_module, "_CHUNK_BYTES", 2**40)
    np.testing.assert_allclose(banded, seg.predict_proba(x), atol=1e-5)


def test_errors():
    x, y = disks(12)
    seg = small_forest()
    with pytest.raises(RuntimeError, match="not fitted"):
        seg.predict(x)
    with pytest.raises(ValueError, match=r"image\[None\]"):
        seg.fit([x[0]], [y])
    with pytest.raises(ValueError, match="2 images and 1 masks"):
        seg.fit([x, x], [y])
    with pytest.raises(ValueError, match="Mask 0 has shape"):
        seg.fit([x], [y[:50]])
    with pytest.raises(ValueError, match="n_classes"):
        seg.fit([x], [y * 2], n_classes=2)
    seg.fit([x], [y])
    with pytest.raises(ValueError, match="trained on 1"):
        seg.predict(np.concatenate([x, x]))
    with pytest.raises(ValueError, match="sigma_min"):
        RandomForestSegmenter(sigma_min=4, sigma_max=2)
