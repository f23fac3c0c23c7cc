"""Tests for napari_activeseg.core.validation: every bad input gives a ValueError that helps."""

import numpy as np
import pytest

from napari_activeseg.core.validation import (
    MAX_CHANNELS,
    check_choice,
    check_image,
    check_labels,
    check_mask,
    check_positive,
)

IMAGE_DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float16, np.float32, np.float64]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --------------------------------------------------------------------------- check_image


@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
@pytest.mark.parametrize("shape", [(7, 9), (7, 9, 3), (7, 9, 4)])
def test_check_image_accepts_2d_and_rgb(rng, dtype, shape):
    image = (rng.random(shape) * 100).astype(dtype)
    out = check_image(image)
    assert out.shape == shape
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, image)


def test_check_image_bool_becomes_uint8():
    out = check_image(np.eye(4, dtype=bool))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.eye(4))


def test_check_image_accepts_lists():
    assert check_image([[1, 2], [3, 4]]).shape == (2, 2)


@pytest.mark.parametrize(
    ("shape", "axis", "expected"),
    [
        ((2, 7, 9), 0, (7, 9, 2)),
        ((7, 2, 9), 1, (7, 9, 2)),
        ((7, 9, 5), -1, (7, 9, 5)),
        ((5, 7, 9), -3, (7, 9, 5)),
        ((1, 7, 9), 0, (7, 9, 1)),
    ],
)
def test_check_image_channel_axis_moved_last(rng, shape, axis, expected):
    image = rng.random(shape)
    out = check_image(image, channel_axis=axis)
    assert out.shape == expected
    np.testing.assert_array_equal(out, np.moveaxis(image, axis, -1))


@pytest.mark.parametrize(
    "shape", [(3, 7, 9), (7, 9, 5), (7, 9, 1), (3, 5, 16, 16), (2, 2, 2, 2, 2)]
)
def test_check_image_ambiguous_shape_needs_channel_axis(shape):
    match = r"got shape .* for 'img'; pick a channel axis with channel_axis="
    with pytest.raises(ValueError, match=match):
        check_image(np.zeros(shape), name="img")


def test_check_image_message_names_shape():
    with pytest.raises(ValueError, match=r"\(3, 5, 512, 512\)"):
        check_image(np.zeros((3, 5, 512, 512), dtype=np.uint8))


def test_check_image_channel_axis_leaving_a_stack():
    with pytest.raises(ValueError, match="take one plane"):
        check_image(np.zeros((3, 5, 8, 8)), channel_axis=0)


def test_check_image_channel_axis_on_2d():
    with pytest.raises(ValueError, match="channel_axis=None"):
        check_image(np.zeros((8, 8)), channel_axis=0)


@pytest.mark.parametrize("axis", [3, -4, 1.0, "0"])
def test_check_image_bad_channel_axis(axis):
    with pytest.raises(ValueError, match="channel_axis"):
        check_image(np.zeros((3, 8, 8)), channel_axis=axis)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 5, 3), (2, 0, 5)])
def test_check_image_empty(shape):
    with pytest.raises(ValueError, match=r"empty image of shape \("):
        check_image(np.zeros(shape), channel_axis=None if len(shape) == 2 or shape[-1] == 3 else 0)


@pytest.mark.parametrize("shape", [(), (5,)])
def test_check_image_too_few_dims(shape):
    with pytest.raises(ValueError, match="Expected a 2D image"):
        check_image(np.zeros(shape))


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 4), dtype=object),
        np.array([["a", "b"], ["c", "d"]]),
        np.zeros((4, 4), dtype=np.complex64),
    ],
)
def test_check_image_non_numeric(image):
    with pytest.raises(ValueError, match=f"dtype {image.dtype}"):
        check_image(image)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_check_image_non_finite(bad, dtype):
    image = np.zeros((6, 6), dtype=dtype)
    image[1, 2] = bad
    image[3, 4] = bad
    with pytest.raises(ValueError, match=r"2 non-finite .*np\.nan_to_num"):
        check_image(image)


def test_check_image_too_many_channels():
    match = f"65 channels .* at most {MAX_CHANNELS}.*channel axis is probably wrong"
    with pytest.raises(ValueError, match=match):
        check_image(np.zeros((65, 8, 8), dtype=np.uint8), channel_axis=0)
    assert check_image(np.zeros((64, 8, 8)), channel_axis=0).shape == (8, 8, 64)


# --------------------------------------------------------------------------- check_labels


@pytest.mark.parametrize(
    "dtype",
    [bool, np.uint8, np.int8, np.uint16, np.int32, np.int64, np.uint64, np.float32, np.float64],
)
def test_check_labels_dtypes_become_uint8(dtype):
    labels = (np.arange(20).reshape(4, 5) % 2).astype(dtype)
    out = check_labels(labels)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels.astype(np.int64))


@pytest.mark.parametrize(("high", "dtype"), [(255, np.uint8), (256, np.uint16), (65535, np.uint16)])
def test_check_labels_promotion(high, dtype):
    labels = np.zeros((3, 3), dtype=np.int64)
    labels[0, 0] = high
    out = check_labels(labels)
    assert out.dtype == dtype
    assert out[0, 0] == high


def test_check_labels_too_large():
    with pytest.raises(ValueError, match="65536.*instance label"):
        check_labels(np.full((2, 2), 65536, dtype=np.int64))


def test_check_labels_float_integral():
    out = check_labels(np.array([[0.0, 1.0], [2.0, 0.0]], dtype=np.float32))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[0, 1], [2, 0]])


def test_check_labels_float_fractional():
    with pytest.raises(ValueError, match=r"1 non-integer value.*np\.rint"):
        check_labels(np.array([[0.0, 0.5], [1.0, 0.0]]))


def test_check_labels_float_nan():
    with pytest.raises(ValueError, match="NaN"):
        check_labels(np.array([[0.0, np.nan], [1.0, 0.0]]))


def test_check_labels_negative():
    with pytest.raises(ValueError, match=r"2 negative value\(s\) \(min -1\)"):
        check_labels(np.array([[0, -1], [-1, 1]]))


@pytest.mark.parametrize("image_shape", [(4, 5), (4, 5, 3)])
def test_check_labels_shape_ok(image_shape):
    assert check_labels(np.zeros((4, 5), dtype=int), image_shape=image_shape).shape == (4, 5)


def test_check_labels_shape_mismatch():
    match = r"'mask' has shape \(4, 6\) but the image has shape \(4, 5, 3\)"
    with pytest.raises(ValueError, match=match):
        check_labels(np.zeros((4, 6), dtype=int), image_shape=(4, 5, 3), name="mask")


def test_check_labels_n_classes():
    labels = np.array([[0, 1], [2, 1]])
    assert check_labels(labels, n_classes=3).max() == 2
    match = r"value 2 but n_classes=2 .*raise n_classes to at least 3 or fix the mask"
    with pytest.raises(ValueError, match=match):
        check_labels(labels, n_classes=2)


@pytest.mark.parametrize("n_classes", [0, -1, 2.5, "3"])
def test_check_labels_bad_n_classes(n_classes):
    with pytest.raises(ValueError, match="n_classes"):
        check_labels(np.zeros((2, 2), dtype=int), n_classes=n_classes)


@pytest.mark.parametrize("shape", [(4,), (4, 4, 3), (0, 4)])
def test_check_labels_bad_shape(shape):
    with pytest.raises(ValueError, match=r"shape \("):
        check_labels(np.zeros(shape, dtype=np.uint8))


def test_check_labels_non_integer_dtype():
    with pytest.raises(ValueError, match="integer class map"):
        check_labels(np.zeros((2, 2), dtype=np.complex64))


# --------------------------------------------------------------------------- check_mask


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int32, np.float32])
def test_check_mask(dtype):
    mask = np.array([[0, 1], [255 if dtype is np.uint8 else 1, 0]], dtype=dtype)
    out = check_mask(mask, shape=(2, 2, 3))
    assert out.dtype == bool
    np.testing.assert_array_equal(out, [[False, True], [True, False]])


def test_check_mask_shape_mismatch():
    with pytest.raises(ValueError, match=r"'reviewed' has shape \(2, 3\) but must be \(2, 2\)"):
        check_mask(np.ones((2, 3), dtype=bool), shape=(2, 2))


def test_check_mask_nan():
    with pytest.raises(ValueError, match="NaN"):
        check_mask(np.full((2, 2), np.nan), shape=(2, 2))


# --------------------------------------------------------------------------- check_choice


def test_check_choice():
    assert check_choice("entropy", {"entropy", "random"}, name="strategy") == "entropy"
    assert check_choice(None, (None, "zlib"), name="compression") is None


def test_check_choice_lists_sorted_choices():
    match = (
        r"Unknown strategy='entropi'; valid choices are: 'bald', 'entropy', 'random'\. "
        r"Did you mean 'entropy'\?"
    )
    with pytest.raises(ValueError, match=match):
        check_choice("entropi", ["random", "entropy", "bald"], name="strategy")


def test_check_choice_unhashable():
    with pytest.raises(ValueError, match="valid choices"):
        check_choice([1], {1, 2}, name="x")


# --------------------------------------------------------------------------- check_positive


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (3, {}, 3),
        (0.5, {}, 0.5),
        (np.float32(2.0), {}, 2.0),
        (0, {"allow_zero": True}, 0),
        (4.0, {"integer": True}, 4),
        (np.int64(7), {"integer": True}, 7),
    ],
)
def test_check_positive_ok(value, kwargs, expected):
    out = check_positive(value, name="x", **kwargs)
    assert out == expected
    assert type(out) is type(expected)


@pytest.mark.parametrize(
    ("value", "kwargs", "match"),
    [
        (0, {}, "x must be > 0, got 0"),
        (-1, {"allow_zero": True}, "x must be >= 0, got -1"),
        (2.5, {"integer": True}, "x must be an integer, got 2.5"),
        (True, {}, "x must be a number"),
        ("3", {}, "x must be a number, got '3'"),
        (None, {"integer": True}, "x must be an integer, got None"),
        (float("nan"), {}, "x must be finite"),
        (float("inf"), {}, "x must be finite"),
    ],
)
def test_check_positive_bad(value, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_positive(value, name="x", **kwargs)
