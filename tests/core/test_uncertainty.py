"""Known-answer tests for the per-pixel uncertainty maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_activeseg.core import uncertainty as U

ONE_PASS_FUNCS = {
    "entropy": U.entropy,
    "margin": U.margin,
    "raw_margin": U.raw_margin,
    "least_confidence": U.least_confidence,
}
SAMPLE_FUNCS = {
    "bald": U.bald,
    "variance": U.variance,
    "expected_entropy": U.expected_entropy,
    "ensemble_disagreement": U.ensemble_disagreement,
    "tta_disagreement": U.tta_disagreement,
}


def uniform(c: int, h: int = 4, w: int = 5) -> np.ndarray:
    return np.full((c, h, w), 1.0 / c, dtype=np.float32)


def one_hot(c: int, h: int = 4, w: int = 5, seed: int = 0) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, c, size=(h, w))
    return np.eye(c, dtype=np.float32)[labels].transpose(2, 0, 1)


def dirichlet(shape_tchw: tuple[int, int, int, int], seed: int = 0, alpha: float = 1.0):
    t, c, h, w = shape_tchw
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(c, alpha), size=(t, h, w))  # (T, H, W, C)
    return p.transpose(0, 3, 1, 2).astype(np.float32)


# ------------------------------------------------------------------------------ one-pass maps


@pytest.mark.parametrize("c", [2, 3, 5])
def test_uniform_probs_known_values(c):
    p = uniform(c)
    np.testing.assert_allclose(U.entropy(p), math.log(c), rtol=1e-6)
    np.testing.assert_allclose(U.margin(p), 1.0, atol=1e-6)
    np.testing.assert_allclose(U.raw_margin(p), 0.0, atol=1e-6)
    np.testing.assert_allclose(U.least_confidence(p), 1.0 - 1.0 / c, atol=1e-6)


@pytest.mark.parametrize("c", [2, 3, 5])
def test_one_hot_probs_give_zero(c):
    p = one_hot(c)
    for name, fn in ONE_PASS_FUNCS.items():
        expected = 1.0 if name == "raw_margin" else 0.0
        np.testing.assert_allclose(fn(p), expected, atol=1e-6, err_msg=name)


def test_margin_known_value():
    # p = (0.6, 0.3, 0.1): raw margin 0.3, margin 0.7, least confidence 0.4
    p = np.array([0.6, 0.3, 0.1], dtype=np.float32)[:, None, None]
    assert U.raw_margin(p)[0, 0] == pytest.approx(0.3, abs=1e-6)
    assert U.margin(p)[0, 0] == pytest.approx(0.7, abs=1e-6)
    assert U.least_confidence(p)[0, 0] == pytest.approx(0.4, abs=1e-6)
    expected_h = -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1))
    assert U.entropy(p)[0, 0] == pytest.approx(expected_h, rel=1e-6)


@pytest.mark.parametrize("name", list(ONE_PASS_FUNCS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_pass_dtype_shape_and_torch_input(name, dtype):
    fn = ONE_PASS_FUNCS[name]
    p = dirichlet((1, 3, 6, 7), seed=1)[0].astype(dtype)
    out = fn(p)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == (6, 7)
    np.testing.assert_allclose(fn(torch.as_tensor(p)), out, rtol=1e-6, atol=1e-7)
    # a tensor that requires grad is fine too
    np.testing.assert_allclose(
        fn(torch.as_tensor(p).requires_grad_(True)), out, rtol=1e-6, atol=1e-7
    )


def test_zero_probability_gives_finite_entropy():
    p = np.array([1.0, 0.0], dtype=np.float32)[:, None, None]
    assert np.isfinite(U.entropy(p)).all()


# --------------------------------------------------------------------------- sample-based maps


@pytest.mark.parametrize("c", [2, 3])
def test_identical_samples_give_zero_bald_and_variance(c):
    p = dirichlet((1, c, 4, 5), seed=2)[0]
    samples = np.stack([p] * 6)
    np.testing.assert_allclose(U.bald(samples), 0.0, atol=1e-6)
    np.testing.assert_allclose(U.variance(samples), 0.0, atol=1e-7)
    np.testing.assert_allclose(U.expected_entropy(samples), U.entropy(p), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(U.ensemble_disagreement(samples), 0.0, atol=1e-6)


@pytest.mark.parametrize("c", [2, 4])
def test_two_opposite_one_hot_samples(c):
    a = np.zeros((c, 2, 3), dtype=np.float32)
    b = np.zeros((c, 2, 3), dtype=np.float32)
    a[0] = 1.0
    b[1] = 1.0
    samples = np.stack([a, b])
    np.testing.assert_allclose(U.bald(samples), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(U.ensemble_disagreement(samples), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(U.expected_entropy(samples), 0.0, atol=1e-6)
    # two classes with values {1, 0} -> population variance 0.25 each; mean over C classes
    np.testing.assert_allclose(U.variance(samples), 0.5 / c, rtol=1e-6)


def test_bald_ranks_disagreement_above_consistent_uniform():
    """Pixel 0: confident samples that disagree; pixel 1: every sample uniform; pixel 2: all
    samples agree and are confident. Entropy of the mean ties pixels 0 and 1 (both means are
    uniform); BALD must single out pixel 0, where a label would actually teach the model."""
    s1 = np.array([[0.95, 0.5, 0.9], [0.05, 0.5, 0.1]], dtype=np.float32)  # (C=2, W=3)
    s2 = np.array([[0.05, 0.5, 0.9], [0.95, 0.5, 0.1]], dtype=np.float32)
    samples = np.stack([s1, s2])[:, :, None, :]  # (T=2, C=2, H=1, W=3)

    h = U.entropy(samples.mean(0))[0]
    b = U.bald(samples)[0]
    assert h[0] == pytest.approx(h[1], abs=1e-6)  # entropy cannot tell them apart
    assert h[0] == pytest.approx(math.log(2), rel=1e-6)
    assert int(np.argmax(b)) == 0
    h_sample = -(0.95 * math.log(0.95) + 0.05 * math.log(0.05))
    assert b[0] == pytest.approx(math.log(2) - h_sample, rel=1e-5)  # ~0.495
    assert b[1] == pytest.approx(0.0, abs=1e-6)
    assert b[2] == pytest.approx(0.0, abs=1e-6)
    assert list(np.argsort(-b, kind="stable")) == [0, 1, 2]
    # the variance agrees with BALD on the top pixel
    assert int(np.argmax(U.variance(samples)[0])) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("c", [2, 3, 5])
def test_ensemble_disagreement_equals_bald(seed, c):
    samples = dirichlet((7, c, 8, 9), seed=seed)
    b = U.bald(samples)
    kl = U.ensemble_disagreement(samples)
    np.testing.assert_allclose(kl, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(U.tta_disagreement(samples), kl, rtol=0, atol=0)
    assert (b >= 0).all()
    assert (b <= math.log(c) + 1e-6).all()
    # BALD = H(mean) - E[H]
    np.testing.assert_allclose(
        b, U.entropy(samples.mean(0)) - U.expected_entropy(samples), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("name", list(SAMPLE_FUNCS))
def test_sample_maps_dtype_shape_and_torch_input(name):
    fn = SAMPLE_FUNCS[name]
    samples = dirichlet((4, 3, 5, 6), seed=3).astype(np.float64)
    out = fn(samples)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == (5, 6)
    np.testing.assert_allclose(fn(torch.as_tensor(samples)), out, rtol=1e-6, atol=1e-7)


def test_t_variants_batched_leading_dims():
    samples = torch.as_tensor(dirichlet((5, 3, 4, 4), seed=4))
    batched = torch.stack([samples, samples.flip(-1)], dim=1)  # (T, B=2, C, H, W)
    out = U.bald_t(batched)
    assert out.shape == (2, 4, 4)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), U.bald(samples), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[1].numpy(), U.bald(samples.flip(-1)), rtol=1e-6, atol=1e-7)
    assert U.entropy_t(batched).shape == (5, 2, 4, 4)
    # half precision in, float32 out
    assert U.entropy_t(batched.half()).dtype == torch.float32


# ----------------------------------------------------------------------------------- compute_maps


def test_compute_maps_matches_individual_functions():
    t, b, c, h, w = 4, 3, 3, 5, 6
    rng = np.random.default_rng(5)
    samples = np.stack([dirichlet((t, c, h, w), seed=int(s)) for s in rng.integers(0, 99, b)], 1)
    samples_t = torch.as_tensor(samples)  # (T, B, C, H, W)
    maps = U.compute_maps(samples_t, U.MAP_NAMES)
    assert list(maps) == list(U.MAP_NAMES)
    for name, m in maps.items():
        assert m.shape == (b, h, w), name
        assert m.dtype == torch.float32, name
    for i in range(b):
        mean = samples[:, i].mean(0)
        for name in ("entropy", "margin", "raw_margin", "least_confidence"):
            np.testing.assert_allclose(
                maps[name][i].numpy(), ONE_PASS_FUNCS[name](mean), rtol=1e-5, atol=1e-6,
                err_msg=name,
            )
        for name, fn in SAMPLE_FUNCS.items():
            np.testing.assert_allclose(
                maps[name][i].numpy(), fn(samples[:, i]), rtol=1e-4, atol=1e-6, err_msg=name
            )


def test_compute_maps_subset_and_single_sample():
    samples = torch.as_tensor(dirichlet((1, 2, 3, 3), seed=6))[:, None]  # (T=1, B=1, ...)
    maps = U.compute_maps(samples, ["margin", "bald"])
    assert set(maps) == {"margin", "bald"}
    torch.testing.assert_close(maps["bald"], torch.zeros(1, 3, 3))
    np.testing.assert_allclose(maps["margin"][0].numpy(), U.margin(samples[0, 0]), atol=1e-6)


def test_compute_maps_unknown_name_lists_valid_names():
    samples = torch.as_tensor(dirichlet((2, 2, 3, 3)))[:, None]
    with pytest.raises(ValueError, match="entropy") as info:
        U.compute_maps(samples, ["entropy", "bold"])
    assert "bold" in str(info.value)
    assert "bald" in str(info.value)


def test_compute_maps_wrong_ndim():
    with pytest.raises(ValueError, match=r"\(T, B, C, H, W\)"):
        U.compute_maps(torch.rand(2, 3, 4, 4), ["entropy"])


def test_name_tuples():
    assert U.MAPS_ONE_PASS == ("entropy", "margin", "least_confidence")
    assert U.MAPS_FROM_SAMPLES == ("bald", "variance", "expected_entropy")
    assert set(U.MAPS_ONE_PASS + U.MAPS_FROM_SAMPLES) <= set(U.MAP_NAMES)


# --------------------------------------------------------------------------------- validation


def test_wrong_ndim_raises():
    with pytest.raises(ValueError, match=r"\(C, H, W\).*\(4, 5\)"):
        U.entropy(np.full((4, 5), 0.5))
    with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
        U.bald(uniform(3))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        U.margin(np.stack([uniform(2)] * 2))


def test_not_probabilities_raises():
    logits = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="softmax"):
        U.entropy(logits)
    with pytest.raises(ValueError, match="sums over classes"):
        U.least_confidence(np.full((2, 3, 3), 0.6, dtype=np.float32))
    bad = dirichlet((3, 3, 4, 4))
    bad[1, 0] += 0.01
    with pytest.raises(ValueError, match="softmax"):
        U.bald(bad)
    with pytest.raises(ValueError, match="NaN"):
        U.entropy(np.full((2, 2, 2), np.nan))


def test_sum_tolerance_accepts_small_rounding():
    p = uniform(3) * (1 + 5e-4)
    np.testing.assert_allclose(U.entropy(p), math.log(3), rtol=1e-3)


def test_single_class_raises_with_hint():
    with pytest.raises(ValueError, match="at least 2 classes"):
        U.entropy(np.ones((1, 3, 3), dtype=np.float32))
