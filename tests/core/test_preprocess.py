"""Matching an image's channels to the model's (gray <-> RGB), known answers."""

import numpy as np
import pytest

from napari_activeseg.core.preprocess import (
    channels_convertible,
    common_channel_count,
    match_channels,
    prepare_image,
)


@pytest.mark.parametrize("counts, expected", [
    ([1, 1, 3], 1), ([1, 3, 3], 3), ([1, 3], 3), ([3, 1], 3), ([5], 5), ([], None),
])
def test_common_channel_count_is_the_most_common_and_a_tie_keeps_colour(counts, expected):
    assert common_channel_count(counts) == expected


def test_gray_is_repeated_on_every_channel():
    gray = np.arange(6, dtype=np.float32).reshape(1, 2, 3) / 6
    out = match_channels(gray, 3)
    assert out.shape == (3, 2, 3) and out.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(out[c], gray[0])
    out[0, 0, 0] = 9.0  # a real array, not a view of the input
    assert gray[0, 0, 0] == 0.0


def test_rgb_becomes_the_mean_of_its_channels_for_a_gray_model():
    rgb = np.stack([np.full((2, 2), v, np.float32) for v in (0.0, 0.3, 0.9)])
    out = match_channels(rgb, 1)
    assert out.shape == (1, 2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.4, atol=1e-7)


def test_same_count_is_returned_untouched():
    img = np.zeros((3, 4, 4), np.float32)
    assert match_channels(img, 3) is img


@pytest.mark.parametrize("n, channels", [(2, 3), (4, 1), (3, 5), (5, 3)])
def test_other_mismatches_are_refused_with_both_counts(n, channels):
    assert not channels_convertible(n, channels)
    with pytest.raises(ValueError, match=rf"has {n} channel\(s\) but the model takes {channels}; "
                                         r"only gray <-> RGB"):
        match_channels(np.zeros((n, 4, 4), np.float32), channels)


def test_prepare_image_matches_channels_before_polarity():
    dark = np.zeros((8, 8), np.uint8)
    dark[2:5, 2:5] = 200  # bright object on a dark background: not inverted
    out = prepare_image(dark, channels=3)
    assert out.shape == (3, 8, 8)
    np.testing.assert_array_equal(out[0], prepare_image(dark)[0])
    bright = 255 - dark  # a bright background is inverted on every channel alike
    inv = prepare_image(bright, channels=3)
    np.testing.assert_allclose(inv, out, atol=1e-6)
