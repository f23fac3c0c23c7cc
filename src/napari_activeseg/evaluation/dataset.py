"""Benchmark datasets: a folder of images and masks with matching file names.

The layout is the one of the benchmark contract (see ``DESIGN.md``)::

    root/
      images/   a.png  b.tif  ...   gray, RGB or multichannel, any size, 8/16-bit or float
      masks/    a.png  b.tif  ...   class maps of the same height and width: 0 = background
      instances/ a.png b.png ...    optional: label images, 0 = background, one id per object;
                                    matched to the images by file stem (a.tif <-> a.png)

Binary masks saved as 0/255 (what most tools export) are mapped to 0/1; any other mask is
taken as a class map as it is, and the number of classes is the largest value plus one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["SegDataset", "load_dataset", "read_mask", "split_dataset", "mean_dice",
           "class_dice", "IMAGE_SUFFIXES"]

#: File suffixes (lower case) taken as images or masks; anything else in the folders is skipped.
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")

_MAX_LISTED = 10


@dataclass
class SegDataset:
    """Images and masks of a benchmark folder, loaded and normalised.

    Attributes
    ----------
    root : Path
        The folder holding ``images/`` and ``masks/``.
    names : list of str
        File names, sorted; ``images/<name>`` and ``masks/<name>`` for each.
    images : list of (C, H, W) float32 ndarray
        Images normalised per image by percentiles (``core.imageio.normalize_image``).
    masks : list of (H, W) uint8 ndarray
        Class maps: 0 = background, k = class k (uint16 if a class exceeds 255).
    n_classes : int
        Number of classes including background (at least 2).
    in_channels : int
        Channel count C, the same for every image.
    instances : list of (H, W) uint16 ndarray or None
        One instance label image per image (0 = background, one id per object) when the
        folder has ``instances/``; None otherwise.
    """

    root: Path
    names: list[str]
    images: list[np.ndarray] = field(repr=False)
    masks: list[np.ndarray] = field(repr=False)
    n_classes: int
    in_channels: int
    instances: list[np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int]) -> "SegDataset":
        """Return a dataset with the given images only (arrays shared, not copied).

        Parameters
        ----------
        indices : sequence of int
            Positions in ``names``.

        Returns
        -------
        SegDataset
            Same ``root``, ``n_classes`` and ``in_channels``.
        """
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not -len(self) <= i < len(self)]
        if bad:
            raise ValueError(
                f"Indices {bad[:_MAX_LISTED]} are out of range for a dataset of {len(self)} "
                f"images; use indices in 0..{len(self) - 1}."
            )
        return SegDataset(
            root=self.root,
            names=[self.names[i] for i in idx],
            images=[self.images[i] for i in idx],
            masks=[self.masks[i] for i in idx],
            n_classes=self.n_classes,
            in_channels=self.in_channels,
            instances=None if self.instances is None else [self.instances[i] for i in idx],
        )


def _list_images(folder: Path) -> dict[str, Path]:
    """Image files of a folder by file name, hidden files and other suffixes skipped."""
    return {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    }


def _listing(names: Sequence[str]) -> str:
    """``'a.png', 'b.png' and 3 more`` for error messages."""
    names = sorted(names)
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f" and {len(names) - _MAX_LISTED} more"
    return shown


def read_mask(path: Path) -> np.ndarray:
    """Read a mask file as an (H, W) integer class map (0/255 binary mapped to 0/1).

    Parameters
    ----------
    path : Path
        A mask file.

    Returns
    -------
    mask : (H, W) uint8 or uint16 ndarray
    """
    from ..core.imageio import read_image

    mask = np.asarray(read_image(path))
    if mask.ndim == 3:
        # Some tools save class maps as RGB with R = G = B; anything else is not a class map.
        if not all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, mask.shape[-1])):
            raise ValueError(
                f"Mask {path.name!r} has {mask.shape[-1]} different channels (shape "
                f"{mask.shape}); save it as a single-channel class map (0 = background, "
                "k = class k)."
            )
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(
            f"Mask {path.name!r} has shape {mask.shape}; expected a 2D (H, W) class map."
        )
    if mask.dtype.kind == "b":
        mask = mask.astype(np.uint8)
    if mask.dtype.kind == "f":
        if not np.all(np.isfinite(mask)) or not np.array_equal(mask, np.round(mask)):
            raise ValueError(
                f"Mask {path.name!r} has non-integer values (dtype {mask.dtype}); a mask must "
                "hold integer class indices (0 = background, k = class k)."
            )
    if mask.dtype.kind not in "uif":
        raise ValueError(
            f"Mask {path.name!r} has dtype {mask.dtype}; expected integer class indices."
        )
    lo, hi = (mask.min(), mask.max()) if mask.size else (0, 0)
    if lo < 0:
        raise ValueError(
            f"Mask {path.name!r} has negative values (min {lo}); classes must be 0 "
            "(background) or positive."
        )
    values = np.unique(mask)
    if hi == 255 and set(values.tolist()) <= {0, 255}:
        return (mask == 255).astype(np.uint8)
    if hi > np.iinfo(np.uint16).max:
        raise ValueError(
            f"Mask {path.name!r} has class {hi}; at most 65535 classes are supported."
        )
    return mask.astype(np.uint8 if hi <= 255 else np.uint16)


def load_dataset(root: str | Path, *, max_images: int | None = None) -> SegDataset:
    """Load a benchmark folder with ``images/`` and ``masks/`` of matching file names.

    Parameters
    ----------
    root : str or Path
        Folder holding ``images/`` and ``masks/``. Files are matched by their full name,
        suffix included (``images/a.png`` goes with ``masks/a.png``).
    max_images : int, optional
        Load only the first ``max_images`` pairs in sorted name order (the pairing of the
        whole folder is still checked).

    Returns
    -------
    SegDataset
        Images normalised to (C, H, W) float32, masks as (H, W) class maps.

    Raises
    ------
    ValueError
        If a folder is missing, holds no image, an image has no mask or a mask no image, an
        image and its mask differ in height and width, an image's channel count differs from
        the most common one other than gray <-> RGB (converted), or a mask is not a class map.
        The message names the files.
    """
    from ..core.imageio import normalize_image, read_image
    from ..core.preprocess import channels_convertible, common_channel_count, match_channels

    root = Path(root)
    image_dir, mask_dir = root / "images", root / "masks"
    missing = [d for d in (image_dir, mask_dir) if not d.is_dir()]
    if missing:
        raise ValueError(
            f"Dataset folder {str(root)!r} has no {' and no '.join(repr(d.name + '/') for d in missing)} "
            "folder; expected images/ and masks/ holding files of the same names."
        )
    image_files, mask_files = _list_images(image_dir), _list_images(mask_dir)
    if not image_files:
        raise ValueError(
            f"No image in {str(image_dir)!r}; expected files ending in "
            f"{', '.join(IMAGE_SUFFIXES)}."
        )
    no_mask = sorted(set(image_files) - set(mask_files))
    no_image = sorted(set(mask_files) - set(image_files))
    if no_mask or no_image:
        parts = []
        if no_mask:
            parts.append(f"{len(no_mask)} image(s) without a mask in masks/: {_listing(no_mask)}")
        if no_image:
            parts.append(
                f"{len(no_image)} mask(s) without an image in images/: {_listing(no_image)}"
            )
        raise ValueError(
            f"Images and masks of {str(root)!r} do not match: {'; '.join(parts)}. Every image "
            "needs a mask with exactly the same file name (suffix included), and vice versa."
        )
    names = sorted(image_files)
    if max_images is not None:
        if int(max_images) < 1:
            raise ValueError(f"max_images must be at least 1, got {max_images!r}.")
        names = names[: int(max_images)]

    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for name in names:
        image = np.asarray(read_image(image_files[name]))
        mask = read_mask(mask_files[name])
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"Image {name!r} has height x width {image.shape[:2]} (shape {image.shape}) but "
                f"its mask has {mask.shape}; the mask must have the image's height and width."
            )
        norm = normalize_image(image, channel_axis=-1 if image.ndim == 3 else None)
        images.append(np.ascontiguousarray(norm, dtype=np.float32))
        masks.append(mask)
    # one model takes one channel count: the most common one; gray <-> RGB is converted
    in_channels = common_channel_count([im.shape[0] for im in images])
    bad = [f"{name} ({im.shape[0]})" for name, im in zip(names, images, strict=True)
           if not channels_convertible(im.shape[0], in_channels)]
    if bad:
        raise ValueError(
            f"Most images have {in_channels} channel(s) but {len(bad)} have a count that is not "
            f"converted automatically (only gray <-> RGB is): {_listing(bad)}; convert them to "
            f"{in_channels} channel(s)."
        )
    images = [match_channels(im, in_channels) for im in images]

    n_classes = max(2, max(int(m.max()) if m.size else 0 for m in masks) + 1)
    return SegDataset(
        root=root,
        names=list(names),
        images=images,
        masks=masks,
        n_classes=n_classes,
        in_channels=in_channels,
        instances=_read_instances(root / "instances", names, masks),
    )


def _read_instances(
    folder: Path, names: Sequence[str], masks: Sequence[np.ndarray]
) -> list[np.ndarray] | None:
    """The ``instances/`` label images of ``names`` (matched by stem), or None without it."""
    from ..core.imageio import read_image

    if not folder.is_dir():
        return None
    by_stem: dict[str, list[Path]] = {}
    for path in _list_images(folder).values():
        by_stem.setdefault(path.stem, []).append(path)
    stems = [Path(n).stem for n in names]
    missing = [s for s in stems if s not in by_stem]
    twice = [s for s in stems if len(by_stem.get(s, ())) > 1]
    if missing or twice:
        what = (f"{len(missing)} image(s) have no label image: {_listing(missing)}" if missing
                else f"several files share the stem of {_listing(twice)}")
        raise ValueError(
            f"{str(folder)!r}: {what}. instances/ must hold exactly one label image per image, "
            "of the same file stem (a.tif <-> a.png), or be removed."
        )
    out = []
    for name, stem, mask in zip(names, stems, masks, strict=True):
        path = by_stem[stem][0]
        labels = np.asarray(read_image(path))
        if labels.shape != mask.shape or labels.dtype.kind not in "ub":
            raise ValueError(
                f"Instance labels {path.name!r} have shape {labels.shape} and dtype "
                f"{labels.dtype}; expected an unsigned integer (H, W) label image of its "
                f"mask's shape {mask.shape} (image {name!r})."
            )
        if labels.size and int(labels.max()) > np.iinfo(np.uint16).max:
            raise ValueError(
                f"Instance labels {path.name!r} hold id {int(labels.max())}; at most 65535 "
                "objects per image are supported (relabel them 1..N)."
            )
        out.append(labels.astype(np.uint16))
    return out


def split_dataset(
    n: int, *, seed: int, test_fraction: float = 0.3
) -> tuple[list[int], list[int]]:
    """Split ``n`` images into a pool and a test set, deterministically per seed.

    The first ``round(n * test_fraction)`` entries of ``default_rng(seed).permutation(n)`` are
    the test set, the rest the pool.

    Parameters
    ----------
    n : int
        Number of images (at least 2).
    seed : int
        Seed of the permutation; the same seed gives the same split.
    test_fraction : float, default 0.3
        Fraction of images in the test set, in (0, 1); at least one image goes to each side.

    Returns
    -------
    pool : list of int
        Sorted indices of the pool (the images the annotator may label).
    test : list of int
        Sorted indices of the test set.
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"Need at least 2 images to split into pool and test, got n={n}.")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}; "
            "e.g. 0.3 keeps 30% of the images for testing."
        )
    n_test = min(n - 1, max(1, int(round(n * float(test_fraction)))))
    perm = np.random.default_rng(seed).permutation(n)
    test = sorted(int(i) for i in perm[:n_test])
    pool = sorted(int(i) for i in perm[n_test:])
    return pool, test


def mean_dice(
    preds: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_classes: int
) -> float:
    """Mean over images of the per-image foreground Dice.

    Parameters
    ----------
    preds : sequence of (H, W) int ndarray
        Predicted class maps.
    masks : sequence of (H, W) int ndarray
        True class maps, one per prediction, each of its prediction's shape.
    n_classes : int
        Number of classes K including background; labels must lie in 0..K-1.

    Returns
    -------
    float
        Mean over images of the Dice averaged over the foreground classes present in the
        prediction or the truth of that image (``core.losses.dice_score``); an image where both
        are empty scores 1.
    """
    from ..core.losses import dice_score

    preds, masks = list(preds), list(masks)
    if len(preds) != len(masks):
        raise ValueError(
            f"Got {len(preds)} predictions for {len(masks)} masks; pass one prediction per mask."
        )
    if not preds:
        raise ValueError("No predictions to score; pass at least one (prediction, mask) pair.")
    if int(n_classes) < 2:
        raise ValueError(f"n_classes must be at least 2 (background + 1), got {n_classes!r}.")
    scores = []
    for i, (pred, true) in enumerate(zip(preds, masks)):
        if np.shape(pred) != np.shape(true):
            raise ValueError(
                f"Prediction {i} has shape {np.shape(pred)} but its mask has {np.shape(true)}; "
                "predict at the mask's resolution."
            )
        for what, labels in (("Prediction", pred), ("Mask", true)):
            top = int(np.max(labels)) if np.size(labels) else 0
            if top >= int(n_classes):
                raise ValueError(
                    f"{what} {i} holds class {top} but n_classes={n_classes}; pass the "
                    f"dataset's n_classes (at least {top + 1})."
                )
        # Classes absent from both maps are skipped rather than scored 1, so a multi-class
        # image is judged on the classes it has.
        scores.append(float(dice_score(np.asarray(pred), np.asarray(true))))
    return float(np.mean(scores))


def class_dice(
    preds: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_classes: int
) -> dict[int, float]:
    """Dice of each foreground class, averaged over the images where that class occurs.

    :func:`mean_dice` averages, per image, over the classes present in that image, so a
    class that is often missed while another is found well is hidden in the mean; this one
    keeps them apart (what multi-class sets report per class).

    Parameters
    ----------
    preds : sequence of (H, W) int ndarray
        Predicted class maps.
    masks : sequence of (H, W) int ndarray
        True class maps, one per prediction, each of its prediction's shape.
    n_classes : int
        Number of classes K including background.

    Returns
    -------
    dict of int -> float
        ``{k: mean Dice of class k}`` for k = 1..K-1, over the images where class k is in
        the prediction or the truth; NaN for a class that occurs in none of them.
    """
    from ..core.losses import per_class_dice

    preds, masks = list(preds), list(masks)
    if len(preds) != len(masks):
        raise ValueError(
            f"Got {len(preds)} predictions for {len(masks)} masks; pass one prediction per mask."
        )
    if int(n_classes) < 2:
        raise ValueError(f"n_classes must be at least 2 (background + 1), got {n_classes!r}.")
    per: dict[int, list[float]] = {k: [] for k in range(1, int(n_classes))}
    for i, (pred, true) in enumerate(zip(preds, masks)):
        if np.shape(pred) != np.shape(true):
            raise ValueError(
                f"Prediction {i} has shape {np.shape(pred)} but its mask has {np.shape(true)}; "
                "predict at the mask's resolution."
            )
        # default classes = those present in either map: absent-from-both is not scored
        for k, d in per_class_dice(np.asarray(pred), np.asarray(true)).items():
            if k not in per:
                raise ValueError(
                    f"Image {i} holds class {k} but n_classes={n_classes}; pass the dataset's "
                    f"n_classes (at least {k + 1})."
                )
            per[k].append(float(d))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in per.items()}
