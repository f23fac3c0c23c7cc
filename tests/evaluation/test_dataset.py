"""Tests of evaluation.dataset: folder loading, its error messages, the split and mean Dice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from imageio import v3 as iio

from napari_activeseg.evaluation.dataset import (
    SegDataset,
    load_dataset,
    mean_dice,
    split_dataset,
)

NUCLEI = Path("/work/shared/data/dsb2018_nuclei")


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array)
    else:
        iio.imwrite(path, array)


def _gray(rng, shape=(32, 40), dtype=np.uint8):
    top = np.iinfo(dtype).max
    return rng.integers(0, top, size=shape, dtype=dtype)


@pytest.fixture
def gray_folder(tmp_path):
    """Two gray images: a PNG with a 0/255 mask and a 16-bit TIFF with a 0/1/2 mask."""
    rng = np.random.default_rng(0)
    _write(tmp_path / "images" / "a.png", _gray(rng))
    binary = np.zeros((32, 40), np.uint8)
    binary[5:15, 5:20] = 255
    _write(tmp_path / "masks" / "a.png", binary)
    _write(tmp_path / "images" / "b.tif", _gray(rng, dtype=np.uint16))
    classes = np.zeros((32, 40), np.uint8)
    classes[:10] = 1
    classes[20:] = 2
    _write(tmp_path / "masks" / "b.tif", classes)
    return tmp_path


def test_load_gray_pngs_and_tiffs(gray_folder):
    ds = load_dataset(gray_folder)
    assert isinstance(ds, SegDataset)
    assert ds.names == ["a.png", "b.tif"]
    assert len(ds) == 2
    assert ds.in_channels == 1
    assert ds.n_classes == 3
    for image, mask in zip(ds.images, ds.masks):
        assert image.shape == (1, 32, 40)
        assert image.dtype == np.float32
        assert mask.shape == (32, 40)
        assert mask.dtype == np.uint8
    # 0/255 is a binary mask: mapped to 0/1
    assert set(np.unique(ds.masks[0])) == {0, 1}
    assert ds.masks[0][5:15, 5:20].all() and ds.masks[0].sum() == 10 * 15
    assert set(np.unique(ds.masks[1])) == {0, 1, 2}


def test_load_rgb_binary_only(tmp_path):
    rng = np.random.default_rng(1)
    for i, shape in enumerate([(24, 30), (40, 20)]):
        _write(tmp_path / "images" / f"im{i}.png", _gray(rng, shape + (3,)))
        mask = np.zeros(shape, np.uint8)
        mask[: shape[0] // 2] = 255
        _write(tmp_path / "masks" / f"im{i}.png", mask)
    # hidden files and non-image files are skipped
    (tmp_path / "images" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "masks" / "notes.txt").write_text("not a mask")
    ds = load_dataset(tmp_path)
    assert ds.in_channels == 3
    assert ds.n_classes == 2
    assert [im.shape for im in ds.images] == [(3, 24, 30), (3, 40, 20)]
    assert [m.max() for m in ds.masks] == [1, 1]


def test_empty_masks_give_two_classes(tmp_path):
    rng = np.random.default_rng(2)
    _write(tmp_path / "images" / "x.png", _gray(rng))
    _write(tmp_path / "masks" / "x.png", np.zeros((32, 40), np.uint8))
    assert load_dataset(tmp_path).n_classes == 2


def test_max_images_and_subset(gray_folder):
    ds = load_dataset(gray_folder, max_images=1)
    assert ds.names == ["a.png"] and len(ds.images) == len(ds.masks) == 1
    full = load_dataset(gray_folder)
    sub = full.subset([1])
    assert sub.names == ["b.tif"] and sub.n_classes == 3 and sub.images[0] is full.images[1]
    with pytest.raises(ValueError, match="out of range"):
        full.subset([5])
    with pytest.raises(ValueError, match="max_images"):
        load_dataset(gray_folder, max_images=0)


# ---------------------------------------------------------------- malformed layouts
def test_missing_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match=r"'masks/'"):
        load_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"'images/' and no 'masks/'"):
        load_dataset(tmp_path / "nowhere")


def test_no_images(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="No image in"):
        load_dataset(tmp_path)


def test_unmatched_names_are_listed(gray_folder):
    rng = np.random.default_rng(3)
    _write(gray_folder / "images" / "lonely_image.png", _gray(rng))
    _write(gray_folder / "masks" / "lonely_mask.png", np.zeros((32, 40), np.uint8))
    with pytest.raises(ValueError) as info:
        load_dataset(gray_folder)
    msg = str(info.value)
    assert "without a mask" in msg and "'lonely_image.png'" in msg
    assert "without an image" in msg and "'lonely_mask.png'" in msg


def test_unmatched_lists_at_most_ten(gray_folder):
    for i in range(13):
        _write(gray_folder / "masks" / f"m{i:02d}.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError) as info:
        load_dataset(gray_folder)
    msg = str(info.value)
    assert "13 mask(s) without an image" in msg
    assert "'m09.png'" in msg and "'m10.png'" not in msg and "and 3 more" in msg


def test_suffix_must_match(tmp_path):
    rng = np.random.default_rng(4)
    _write(tmp_path / "images" / "a.tif", _gray(rng))
    _write(tmp_path / "masks" / "a.png", np.zeros((32, 40), np.uint8))
    with pytest.raises(ValueError, match=r"'a\.tif'.*'a\.png'|suffix"):
        load_dataset(tmp_path)


def test_shape_mismatch_names_file_and_shapes(gray_folder):
    _write(gray_folder / "masks" / "b.tif", np.zeros((30, 40), np.uint8))
    with pytest.raises(ValueError) as info:
        load_dataset(gray_folder)
    msg = str(info.value)
    assert "'b.tif'" in msg and "(32, 40)" in msg and "(30, 40)" in msg


def test_an_rgb_image_among_gray_ones_becomes_gray(gray_folder):
    """Two gray images and one RGB: the dataset is gray, the RGB image the mean of its
    normalised channels (what the plugin's projects do too)."""
    from napari_activeseg.core.imageio import normalize_image

    rgb = _gray(np.random.default_rng(5), (32, 40, 3))
    _write(gray_folder / "images" / "c_rgb.png", rgb)
    _write(gray_folder / "masks" / "c_rgb.png", np.zeros((32, 40), np.uint8))
    ds = load_dataset(gray_folder)
    assert ds.in_channels == 1 and [im.shape for im in ds.images] == [(1, 32, 40)] * 3
    np.testing.assert_allclose(ds.images[ds.names.index("c_rgb.png")][0],
                               normalize_image(rgb).mean(0), atol=1e-6)


def test_a_channel_count_with_no_conversion_names_the_file(gray_folder):
    two = _gray(np.random.default_rng(5), (32, 40, 2))  # gray + a varying alpha
    _write(gray_folder / "images" / "c_two.png", two)
    _write(gray_folder / "masks" / "c_two.png", np.zeros((32, 40), np.uint8))
    with pytest.raises(ValueError) as info:
        load_dataset(gray_folder)
    msg = str(info.value)
    assert "1 channel" in msg and "'c_two.png (2)'" in msg and "gray <-> RGB" in msg


def test_non_integer_mask(gray_folder):
    tifffile.imwrite(gray_folder / "masks" / "b.tif", np.full((32, 40), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"'b\.tif'.*non-integer"):
        load_dataset(gray_folder)


# ---------------------------------------------------------------- split
def test_split_nuclei_sizes():
    pool, test = split_dataset(200, seed=0)
    assert (len(pool), len(test)) == (140, 60)


@pytest.mark.parametrize("n", [2, 7, 50, 200])
def test_split_deterministic_disjoint_covering(n):
    pool, test = split_dataset(n, seed=3, test_fraction=0.3)
    assert (pool, test) == split_dataset(n, seed=3, test_fraction=0.3)
    assert pool == sorted(pool) and test == sorted(test)
    assert not set(pool) & set(test)
    assert sorted(pool + test) == list(range(n))
    assert pool and test


def test_split_differs_across_seeds():
    assert split_dataset(200, seed=0) != split_dataset(200, seed=1)


@pytest.mark.parametrize("kwargs", [dict(n=1), dict(n=10, test_fraction=0.0), dict(n=10, test_fraction=1.0)])
def test_split_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        split_dataset(**kwargs, seed=0)


# ---------------------------------------------------------------- mean Dice
def test_mean_dice():
    true = np.zeros((4, 4), np.uint8)
    true[:2] = 1
    half = np.zeros((4, 4), np.uint8)
    half[:1] = 1  # 4 of 8 true pixels found, nothing extra: Dice 2*4/(4+8)
    empty = np.zeros((4, 4), np.uint8)
    assert mean_dice([true], [true], 2) == pytest.approx(1.0)
    assert mean_dice([half], [true], 2) == pytest.approx(2 / 3)
    assert mean_dice([half, empty], [true, empty], 2) == pytest.approx((2 / 3 + 1) / 2)
    with pytest.raises(ValueError, match="2 predictions for 1 masks"):
        mean_dice([true, true], [true], 2)
    with pytest.raises(ValueError, match="n_classes"):
        mean_dice([true + 1], [true], 2)


# ---------------------------------------------------------------- real data
@pytest.mark.skipif(not (NUCLEI / "images").is_dir(), reason="nuclei data set not present")
def test_load_five_real_nuclei_images(tmp_path):
    names = sorted(p.name for p in (NUCLEI / "images").iterdir())[:5]
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        for name in names:
            (tmp_path / sub / name).symlink_to(NUCLEI / sub / name)
    ds = load_dataset(tmp_path)
    assert ds.names == names
    assert ds.in_channels == 3 and ds.n_classes == 2
    for image, mask in zip(ds.images, ds.masks):
        assert image.ndim == 3 and image.shape[0] == 3 and image.dtype == np.float32
        assert mask.shape == image.shape[1:] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1} and mask.any()
        assert np.isfinite(image).all()


def test_instances_are_loaded_by_stem(gray_folder):
    assert load_dataset(gray_folder).instances is None
    labels = np.zeros((32, 40), np.uint16)
    labels[5:15, 5:10], labels[5:15, 10:20] = 1, 300
    _write(gray_folder / "instances" / "a.png", labels)
    _write(gray_folder / "instances" / "b.png", np.zeros((32, 40), np.uint8))
    ds = load_dataset(gray_folder)
    assert [i.dtype for i in ds.instances] == [np.uint16, np.uint16]
    assert np.array_equal(ds.instances[0], labels)
    assert ds.subset([1]).instances[0].max() == 0


def test_instances_missing_for_an_image_is_refused(gray_folder):
    _write(gray_folder / "instances" / "a.png", np.zeros((32, 40), np.uint16))
    with pytest.raises(ValueError, match="b.*no label image|no label image.*b"):
        load_dataset(gray_folder)


def test_instances_of_the_wrong_shape_are_refused(gray_folder):
    _write(gray_folder / "instances" / "a.png", np.zeros((32, 41), np.uint16))
    _write(gray_folder / "instances" / "b.png", np.zeros((32, 40), np.uint16))
    with pytest.raises(ValueError, match="mask's shape"):
        load_dataset(gray_folder)


def test_nuclei_instances_agree_with_the_masks():
    ds = load_dataset(NUCLEI, max_images=2)
    for inst, mask in zip(ds.instances, ds.masks):
        assert np.array_equal(inst > 0, mask > 0)
