"""Tests for napari_activeseg.core.imageio: round trips, clear errors, atomic writes."""

import re
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_activeseg.core import imageio as aio
from napari_activeseg.core.imageio import (
    SUPPORTED_SUFFIXES,
    list_images,
    normalize_image,
    read_image,
    read_labels,
    write_labels,
    write_tiff,
)

DSB_IMAGES = Path("/work/shared/data/dsb2018_nuclei/images")


@pytest.fixture
def rng():
    return np.random.default_rng(42)


def _random(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


# --------------------------------------------------------------------------- reading TIFF


@pytest.mark.parametrize(
    "dtype",
    [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.float16, np.float32, np.float64],
)
@pytest.mark.parametrize("suffix", [".tif", ".TIFF"])
def test_tiff_round_trip(tmp_path, rng, dtype, suffix):
    image = _random(rng, (17, 23), dtype)
    path = tmp_path / f"img{suffix}"
    write_tiff(path, image)
    out = read_image(path)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_write_tiff_compression(tmp_path, rng, compression):
    image = _random(rng, (8, 9), np.uint16)
    path = write_tiff(tmp_path / "a.tif", image, compression=compression)
    np.testing.assert_array_equal(read_image(path), image)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("n_channels", [2, 3, 5])
def test_multichannel_tiff_channel_axis(tmp_path, rng, dtype, n_channels):
    stack = _random(rng, (n_channels, 16, 20), dtype)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    with pytest.raises(ValueError, match="stack.tif.*channel_axis="):
        read_image(path)
    out = read_image(path, channel_axis=0)
    assert out.shape == (16, 20, n_channels)
    np.testing.assert_array_equal(out, np.moveaxis(stack, 0, -1))


@pytest.mark.parametrize("planarconfig", ["contig", "separate"])
def test_rgb_tiff_needs_no_channel_axis(tmp_path, rng, planarconfig):
    rgb = _random(rng, (16, 20, 3), np.uint8)
    data = rgb if planarconfig == "contig" else np.moveaxis(rgb, -1, 0)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig=planarconfig)
    np.testing.assert_array_equal(read_image(path), rgb)


def test_rgba_tiff_constant_alpha_dropped(tmp_path, rng):
    rgba = _random(rng, (10, 12, 4), np.uint8)
    rgba[..., 3] = 255
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb")
    np.testing.assert_array_equal(read_image(path), rgba[..., :3])


def test_tiff_4d_stack_rejected(tmp_path):
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, np.zeros((3, 5, 16, 16), dtype=np.uint8), photometric="minisblack")
    match = r"got shape \(3, 5, 16, 16\) for '.*hyper\.tif'; pick a channel axis"
    with pytest.raises(ValueError, match=match):
        read_image(path)
    with pytest.raises(ValueError, match=r"hyper\.tif.*take one plane"):
        read_image(path, channel_axis=0)


def test_tiff_too_many_channels(tmp_path):
    path = tmp_path / "many.tif"
    tifffile.imwrite(path, np.zeros((100, 8, 8), dtype=np.uint8), photometric="minisblack")
    match = r"100 channels.*many\.tif.*channel axis is probably wrong"
    with pytest.raises(ValueError, match=match):
        read_image(path, channel_axis=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_tiff_non_finite(tmp_path, bad):
    image = np.zeros((8, 8), dtype=np.float32)
    image[2, 3] = bad
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, image)
    with pytest.raises(ValueError, match=r"nan\.tif.*1 non-finite.*nan_to_num"):
        read_image(path)


# --------------------------------------------------------------------------- reading PNG / JPEG


@pytest.mark.parametrize(
    ("shape", "dtype"), [((15, 21), np.uint8), ((15, 21), np.uint16), ((15, 21, 3), np.uint8)]
)
def test_png_round_trip(tmp_path, rng, shape, dtype):
    image = _random(rng, shape, dtype)
    path = tmp_path / "img.png"
    iio.imwrite(path, image)
    out = read_image(path)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, image)


def test_png_rgba_constant_alpha_dropped(tmp_path, rng):
    rgba = _random(rng, (15, 21, 4), np.uint8)
    rgba[..., 3] = 255
    path = tmp_path / "rgba.png"
    iio.imwrite(path, rgba)
    np.testing.assert_array_equal(read_image(path), rgba[..., :3])


def test_png_rgba_varying_alpha_kept(tmp_path, rng):
    rgba = _random(rng, (15, 21, 4), np.uint8)
    path = tmp_path / "rgba.png"
    iio.imwrite(path, rgba)
    np.testing.assert_array_equal(read_image(path), rgba)


def test_png_gray_alpha(tmp_path, rng):
    la = _random(rng, (15, 21, 2), np.uint8)
    path = tmp_path / "la.png"
    iio.imwrite(path, la)
    np.testing.assert_array_equal(read_image(path), la)
    la[..., 1] = 255
    iio.imwrite(path, la)
    np.testing.assert_array_equal(read_image(path), la[..., 0])


def test_png_gray_as_rgb_keeps_three_channels(tmp_path, rng):
    gray = _random(rng, (15, 21), np.uint8)
    path = tmp_path / "gray_rgb.png"
    iio.imwrite(path, np.stack([gray] * 3, axis=-1))
    assert read_image(path).shape == (15, 21, 3)


def test_png_ignores_channel_axis(tmp_path, rng):
    gray = _random(rng, (15, 21), np.uint8)
    iio.imwrite(tmp_path / "g.png", gray)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png", channel_axis=0), gray)


def test_animated_png_rejected(tmp_path):
    path = tmp_path / "anim.png"
    iio.imwrite(path, np.zeros((3, 10, 12, 3), dtype=np.uint8), plugin="pillow")
    with pytest.raises(ValueError, match=r"anim\.png.*3 frames"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".JPG"])
def test_jpeg_round_trip(tmp_path, suffix):
    yy, xx = np.mgrid[0:32, 0:48]
    # Smooth gradients: JPEG reproduces them closely.
    image = np.stack([yy * 4, xx * 4, (yy + xx) * 2], axis=-1).astype(np.uint8)
    path = tmp_path / f"img{suffix}"
    iio.imwrite(path, image, plugin="pillow", extension=".jpg", quality=95)
    out = read_image(path)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() < 3


@pytest.mark.skipif(not DSB_IMAGES.is_dir(), reason="dsb2018_nuclei not available")
def test_real_dsb_png():
    path = sorted(DSB_IMAGES.glob("*.png"))[0]
    image = read_image(path)
    assert image.ndim == 3 and image.shape[-1] == 3
    assert image.dtype == np.uint8
    assert image.shape[0] > 0 and image.shape[1] > 0


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("suffix", [".tif", ".png", ".jpg"])
def test_corrupt_file(tmp_path, rng, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(rng.bytes(1000))
    match = rf"corrupt\{suffix}.*corrupt or truncated.*supported: \.tif"
    with pytest.raises(ValueError, match=match):
        read_image(path)


def test_truncated_png(tmp_path, rng):
    path = tmp_path / "trunc.png"
    iio.imwrite(path, _random(rng, (64, 64), np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"trunc\.png"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"zero{suffix}"
    path.touch()
    with pytest.raises(ValueError, match=r"zero\.\w+.*empty \(0 bytes\)"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.tif.*not found"):
        read_image(tmp_path / "nope.tif")


def test_directory_with_image_suffix(tmp_path):
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(ValueError, match=r"dir\.tif.*not a file"):
        read_image(tmp_path / "dir.tif")


@pytest.mark.parametrize("name", ["img.bmp", "img.npy", "img"])
def test_unsupported_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"x")
    match = rf"{name}.*unsupported file type.*\.tif, \.tiff, \.png, \.jpg, \.jpeg"
    with pytest.raises(ValueError, match=match):
        read_image(path)


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(("high", "dtype"), [(1, np.uint8), (255, np.uint8), (300, np.uint16)])
def test_labels_round_trip(tmp_path, rng, high, dtype):
    labels = rng.integers(0, high, size=(20, 30), endpoint=True)
    path = write_labels(tmp_path / "lab.tif", labels)
    out = read_labels(path)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, labels)


def test_read_labels_png_mask(tmp_path):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:5, 3:6] = 1
    iio.imwrite(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(read_labels(tmp_path / "m.png", n_classes=2), mask)


def test_read_labels_rejects_rgb(tmp_path, rng):
    iio.imwrite(tmp_path / "rgb.png", _random(rng, (8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"rgb\.png"):
        read_labels(tmp_path / "rgb.png")


def test_write_labels_invalid_writes_nothing(tmp_path):
    path = tmp_path / "lab.tif"
    with pytest.raises(ValueError, match="negative"):
        write_labels(path, np.full((4, 4), -1))
    with pytest.raises(ValueError, match="n_classes=2"):
        write_labels(path, np.full((4, 4), 2), n_classes=2)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- atomic write


def test_write_tiff_replaces_existing(tmp_path):
    path = tmp_path / "a.tif"
    write_tiff(path, np.zeros((4, 4), dtype=np.uint8))
    write_tiff(path, np.ones((4, 4), dtype=np.uint8))
    np.testing.assert_array_equal(read_image(path), 1)
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_write_tiff_failure_keeps_previous_file(tmp_path, monkeypatch, error):
    path = tmp_path / "labels.tif"
    write_tiff(path, np.arange(16, dtype=np.uint8).reshape(4, 4))
    before = path.read_bytes()

    def failing_imwrite(fh, *args, **kwargs):
        fh.write(b"II*\x00partial")  # fail mid-write, after some bytes went out
        raise error

    monkeypatch.setattr(tifffile, "imwrite", failing_imwrite)
    with pytest.raises(type(error)):
        write_tiff(path, np.zeros((4, 4), dtype=np.uint8))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]


def test_write_tiff_failure_without_previous_file(tmp_path, monkeypatch):
    def failing_imwrite(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_tiff(tmp_path / "new.tif", np.zeros((4, 4), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "array", "kwargs", "match"),
    [
        ("a.png", np.zeros((2, 2)), {}, r"a\.png.*\.tif or \.tiff"),
        ("missing/a.tif", np.zeros((2, 2)), {}, "does not exist; create it first"),
        ("a.tif", np.zeros((0, 2)), {}, "non-empty numeric"),
        ("a.tif", np.array([["x"]]), {}, "non-empty numeric"),
        ("a.tif", np.zeros((2, 2)), {"compression": "jpeg"}, "compression='jpeg'.*'zlib'"),
    ],
)
def test_write_tiff_bad_input(tmp_path, name, array, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_tiff(tmp_path / name, array, **kwargs)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- normalize_image


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_normalize_maps_percentiles(rng, dtype):
    image = _random(rng, (64, 80), dtype)
    out = normalize_image(image, low=2.0, high=98.0)
    assert out.dtype == np.float32
    assert out.shape == (1, 64, 80)
    lo, hi = np.percentile(out, [2.0, 98.0])
    assert abs(lo) < 1e-3
    assert abs(hi - 1) < 1e-3
    assert out.min() >= -0.5 and out.max() <= 1.5


def test_normalize_channels_independently(rng):
    image = np.stack([rng.random((32, 32)) * 10, rng.random((32, 32)) * 1000 + 500], axis=-1)
    out = normalize_image(image, low=0, high=100, channel_axis=-1)
    assert out.shape == (2, 32, 32)
    for c in range(2):
        assert out[c].min() == pytest.approx(0, abs=1e-6)
        assert out[c].max() == pytest.approx(1, abs=1e-6)


def test_normalize_channel_axis(rng):
    stack = rng.random((3, 16, 20))
    out = normalize_image(stack, channel_axis=0)
    assert out.shape == (3, 16, 20)
    np.testing.assert_allclose(out, normalize_image(np.moveaxis(stack, 0, -1)), atol=1e-6)


def test_normalize_clips_outliers():
    image = np.zeros((100, 100), dtype=np.float32)
    image[50:] = 1.0
    image[0, 0] = -1000.0
    image[-1, -1] = 1000.0
    out = normalize_image(image)
    assert out.min() == -0.5 and out.max() == 1.5


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, bool])
@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 3)])
def test_normalize_constant_image_is_zeros(dtype, shape):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_image(np.full(shape, 7, dtype=dtype))
    assert np.all(out == 0)
    assert out.dtype == np.float32


def test_normalize_sparse_spots_fall_back_to_min_max():
    image = np.zeros((100, 100), dtype=np.uint16)
    image[10, 10] = 500  # one spot: the 99.8th percentile is still 0
    out = normalize_image(image)
    assert out[0, 10, 10] == 1.0
    assert out.sum() == 1.0


@pytest.mark.parametrize(("low", "high"), [(50, 50), (60, 40), (-1, 50), (1, 101), ("1", 99)])
def test_normalize_bad_percentiles(low, high):
    with pytest.raises(ValueError, match="low|high"):
        normalize_image(np.zeros((4, 4)), low=low, high=high)


def test_normalize_rejects_bad_image():
    with pytest.raises(ValueError, match="channel_axis="):
        normalize_image(np.zeros((3, 5, 16, 16)))


def test_normalize_huge_image_subsamples(rng, monkeypatch):
    image = rng.integers(0, 4096, size=(3000, 3000), dtype=np.uint16)
    sizes = []
    percentile = np.percentile

    def spy(a, *args, **kwargs):
        sizes.append(np.asarray(a).size)
        return percentile(a, *args, **kwargs)

    monkeypatch.setattr(aio.np, "percentile", spy)
    out = normalize_image(image)
    assert out.shape == (1, 3000, 3000) and out.dtype == np.float32
    assert sizes and max(sizes) <= aio.PERCENTILE_MAX_PIXELS
    # The subsample's percentiles are close to the full image's.
    lo, hi = percentile(out[0, ::7, ::7], [1.0, 99.8])
    assert abs(lo) < 0.01 and abs(hi - 1) < 0.01


# --------------------------------------------------------------------------- list_images


def test_list_images(tmp_path):
    for name in ["b.png", "a.TIF", "c.jpeg", "notes.txt", ".hidden.png", "d.tiff"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.png").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "f.png").write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()

    assert [p.name for p in list_images(tmp_path)] == ["a.TIF", "b.png", "c.jpeg", "d.tiff"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == [
        "a.TIF", "b.png", "c.jpeg", "d.tiff", "sub/e.png",
    ]
    assert [p.name for p in list_images(tmp_path, pattern="*.png")] == ["b.png"]


def test_list_images_empty(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    match = rf"No images matching '\*' in '{re.escape(str(tmp_path))}'.*\.tif, \.tiff, \.png"
    with pytest.raises(ValueError, match=match):
        list_images(tmp_path)


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=r"'.*nowhere' does not exist.*\.png"):
        list_images(tmp_path / "nowhere")


@pytest.mark.skipif(not DSB_IMAGES.is_dir(), reason="dsb2018_nuclei not available")
def test_list_images_real_dataset():
    paths = list_images(DSB_IMAGES)
    assert len(paths) == 200
    assert all(p.suffix in SUPPORTED_SUFFIXES for p in paths)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "jpeg"])
def test_compressed_tiffs_as_microscopes_write_them_are_read(tmp_path, compression):
    # 16-bit LZW / Deflate, 8-bit JPEG: what acquisition software and Fiji exports write
    dtype = np.uint8 if compression == "jpeg" else np.uint16
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200 if dtype == np.uint8 else 60000, (64, 80)).astype(dtype)
    path = tmp_path / f"img_{compression}.tif"
    tifffile.imwrite(path, image, compression=compression)
    got = read_image(path)
    assert got.shape == image.shape and got.dtype == dtype
    if compression != "jpeg":  # lossless
        assert np.array_equal(got, image)


def test_a_missing_codec_is_named_not_blamed_on_the_file(tmp_path, monkeypatch):
    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16), compression="lzw")

    def no_codec(*args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_codec)
    with pytest.raises(ValueError, match=r"pip install imagecodecs") as info:
        read_image(path)
    assert "corrupt" not in str(info.value)
