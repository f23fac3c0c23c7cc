"""The ilastik-style baseline: a random forest on multiscale pixel features.

Each pixel is described by Gaussian-smoothed intensity, gradient magnitude and Hessian
eigenvalues at scales ``sigma_min`` .. ``sigma_max`` (powers of two) for every channel
(``skimage.feature.multiscale_basic_features``); a scikit-learn random forest classifies it.
scikit-learn and scikit-image are imported inside the methods, so this module imports without
them.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

__all__ = ["RandomForestSegmenter"]

# Feature memory per chunk: big images are featurised a band of rows at a time.
_CHUNK_BYTES = 256 * 2**20


def _check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3:
        hint = " add a channel axis with image[None]" if image.ndim == 2 else ""
        raise ValueError(
            f"Expected {what} of shape (C, H, W), got shape {image.shape};{hint or ' reshape it'}"
            " (channels first)."
        )
    return image


class RandomForestSegmenter:
    """Pixel classifier: random forest on multiscale intensity, edge and texture features.

    Parameters
    ----------
    n_estimators : int, default 50
        Number of trees.
    sigma_min, sigma_max : float, default 1 and 16
        Smallest and largest Gaussian scale in pixels; the scales are powers of two between them.
    max_samples_per_image : int, default 20000
        Training pixels drawn per image (half from the foreground when it has any).
    seed : int, default 0
        Seed of the pixel sampling and of the forest.
    n_jobs : int, default 2
        Threads for feature computation and for the forest.

    Attributes
    ----------
    n_classes : int
        Number of classes K seen by ``fit`` (including background); ``None`` before fitting.
    in_channels : int
        Channel count C of the training images; ``None`` before fitting.
    """

    def __init__(
        self,
        *,
        n_estimators: int = 50,
        sigma_min: float = 1,
        sigma_max: float = 16,
        max_samples_per_image: int = 20000,
        seed: int = 0,
        n_jobs: int = 2,
    ):
        if int(n_estimators) < 1:
            raise ValueError(f"n_estimators must be at least 1, got {n_estimators!r}.")
        if not 0 < float(sigma_min) <= float(sigma_max):
            raise ValueError(
                f"Need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min!r}, "
                f"sigma_max={sigma_max!r}."
            )
        if int(max_samples_per_image) < 2:
            raise ValueError(
                f"max_samples_per_image must be at least 2, got {max_samples_per_image!r}."
            )
        self.n_estimators = int(n_estimators)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.max_samples_per_image = int(max_samples_per_image)
        self.seed = seed
        self.n_jobs = n_jobs
        self.n_classes: int | None = None
        self.in_channels: int | None = None
        self._forest = None

    def __repr__(self) -> str:
        return (
            f"RandomForestSegmenter(n_estimators={self.n_estimators}, sigma_min={self.sigma_min}, "
            f"sigma_max={self.sigma_max}, max_samples_per_image={self.max_samples_per_image}, "
            f"seed={self.seed}, n_jobs={self.n_jobs})"
        )

    # ------------------------------------------------------------------ features
    @property
    def _halo(self) -> int:
        # Gaussian support (truncate=4) plus the reach of Sobel and of the double np.gradient.
        return int(4 * self.sigma_max + 0.5) + 4

    def features(self, image: np.ndarray) -> np.ndarray:
        """Multiscale features of every pixel.

        Parameters
        ----------
        image : (C, H, W) float ndarray
            A normalised image.

        Returns
        -------
        features : (H, W, F) float32 ndarray
            F = 4 features (smoothed intensity, edge magnitude, two Hessian eigenvalues) per
            scale and channel.
        """
        from skimage.feature import multiscale_basic_features

        image = _check_image(image)
        image = np.ascontiguousarray(image, dtype=np.float32)
        kwargs = dict(
            intensity=True,
            edges=True,
            texture=True,
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
            workers=self.n_jobs,
        )
        if image.shape[0] == 1:
            feats = multiscale_basic_features(image[0], channel_axis=None, **kwargs)
        else:
            feats = multiscale_basic_features(image, channel_axis=0, **kwargs)
        return np.asarray(feats, dtype=np.float32)

    def _n_features(self, channels: int) -> int:
        n_sigma = int(np.log2(self.sigma_max) - np.log2(self.sigma_min) + 1)
        return 4 * n_sigma * channels

    def _feature_bands(self, image: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(r0, r1, features of rows r0:r1)`` in bands that bound the memory.

        Each band is featurised with ``_halo`` extra rows on both sides, so its features equal
        those of the whole image.
        """
        c, h, w = image.shape
        row_bytes = w * self._n_features(c) * 4
        if h * row_bytes <= _CHUNK_BYTES:
            yield 0, h, self.features(image)
            return
        halo = self._halo
        band = max(32, _CHUNK_BYTES // row_bytes - 2 * halo)
        for r0 in range(0, h, band):
            r1 = min(h, r0 + band)
            a, b = max(0, r0 - halo), min(h, r1 + halo)
            feats = self.features(image[:, a:b])
            yield r0, r1, feats[r0 - a : r0 - a + (r1 - r0)]

    # ------------------------------------------------------------------ training
    def _sample(
        self, mask: np.ndarray, valid: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Flat indices of training pixels: up to half foreground, the rest background."""
        flat_valid = valid.ravel()
        flat_mask = mask.ravel()
        fg = np.flatnonzero(flat_valid & (flat_mask > 0))
        bg = np.flatnonzero(flat_valid & (flat_mask == 0))
        n = min(self.max_samples_per_image, fg.size + bg.size)
        n_fg = min(fg.size, n // 2)
        n_bg = min(bg.size, n - n_fg)
        n_fg = min(fg.size, n - n_bg)  # too little background: give its share to foreground
        picked = np.concatenate(
            [rng.choice(fg, n_fg, replace=False), rng.choice(bg, n_bg, replace=False)]
        )
        return np.sort(picked)

    def fit(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        reviewed: Sequence[np.ndarray | None] | None = None,
        *,
        n_classes: int | None = None,
    ) -> "RandomForestSegmenter":
        """Train the forest on labelled pixels.

        Parameters
        ----------
        images : sequence of (C, H, W) float ndarray
            Normalised images, all with the same C.
        masks : sequence of (H, W) int ndarray
            Class maps (0 = background, k = class k).
        reviewed : sequence of (H, W) bool ndarray or None, optional
            Per image, the pixels whose label is ground truth; the others are ignored. ``None``
            (for the list or for one image) means the whole image is reviewed.
        n_classes : int, optional
            Number of classes K including background; default ``max(mask) + 1`` (at least 2).
            Classes absent from the training pixels get probability 0.

        Returns
        -------
        RandomForestSegmenter
            ``self``, fitted.

        Raises
        ------
        ValueError
            On mismatched lengths or shapes, or when no pixel of any image is reviewed.
        """
        from sklearn.ensemble import RandomForestClassifier

        images, masks = list(images), list(masks)
        if not images:
            raise ValueError("No training images; pass at least one image and its mask.")
        if len(images) != len(masks):
            raise ValueError(
                f"Got {len(images)} images and {len(masks)} masks; pass one mask per image."
            )
        if reviewed is None:
            reviewed = [None] * len(images)
        reviewed = list(reviewed)
        if len(reviewed) != len(images):
            raise ValueError(
                f"Got {len(reviewed)} reviewed masks for {len(images)} images; pass one per "
                "image (None for a fully reviewed image)."
            )
        channels = None
        for i, (image, mask, rev) in enumerate(zip(images, masks, reviewed)):
            image = _check_image(image, f"training image {i}")
            if channels is None:
                channels = image.shape[0]
            elif image.shape[0] != channels:
                raise ValueError(
                    f"Training image {i} has {image.shape[0]} channels but image 0 has "
                    f"{channels}; all images must have the same channel count."
                )
            if np.shape(mask) != image.shape[1:]:
                raise ValueError(
                    f"Mask {i} has shape {np.shape(mask)} but image {i} has height x width "
                    f"{image.shape[1:]}; the mask must match the image."
                )
            if rev is not None and np.shape(rev) != image.shape[1:]:
                raise ValueError(
                    f"Reviewed mask {i} has shape {np.shape(rev)} but image {i} has height x "
                    f"width {image.shape[1:]}; the reviewed mask must match the image."
                )
            if np.size(mask) and np.min(mask) < 0:
                raise ValueError(f"Mask {i} has negative values; classes must be 0..K-1.")

        max_label = max(int(np.max(m)) if np.size(m) else 0 for m in masks)
        k = max(2, max_label + 1) if n_classes is None else int(n_classes)
        if k <= max_label:
            raise ValueError(
                f"n_classes={n_classes} but the masks hold class {max_label}; pass "
                f"n_classes >= {max_label + 1}."
            )

        rng = np.random.default_rng(self.seed)
        xs, ys = [], []
        for image, mask, rev in zip(images, masks, reviewed):
            mask = np.asarray(mask)
            valid = np.ones(mask.shape, bool) if rev is None else np.asarray(rev, bool)
            if not valid.any():
                continue
            idx = self._sample(mask, valid, rng)
            w = mask.shape[1]
            rows = idx // w
            for r0, r1, feats in self._feature_bands(np.asarray(image, np.float32)):
                sel = idx[(rows >= r0) & (rows < r1)]
                xs.append(feats.reshape(-1, feats.shape[-1])[sel - r0 * w])
                ys.append(mask.ravel()[sel])
        if not xs:
            raise ValueError(
                f"No reviewed pixel in any of the {len(images)} training images; nothing to "
                "train on. Mark at least one region as reviewed (reviewed=None means the whole "
                "image is reviewed)."
            )
        x = np.concatenate(xs)
        y = np.concatenate(ys).astype(np.int64)
        forest = RandomForestClassifier(
            n_estimators=self.n_estimators, n_jobs=self.n_jobs, random_state=self.seed
        )
        forest.fit(x, y)
        self._forest = forest
        self.n_classes = k
        self.in_channels = channels
        return self

    # ---------------------------------------------------------------- prediction
    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities of every pixel.

        Parameters
        ----------
        image : (C, H, W) float ndarray
            A normalised image with the training images' channel count.

        Returns
        -------
        proba : (K, H, W) float32 ndarray
            Probabilities summing to 1 over K = ``n_classes``; classes never seen in training
            have probability 0.
        """
        if self._forest is None:
            raise RuntimeError("RandomForestSegmenter is not fitted; call fit(images, masks) first.")
        image = _check_image(image)
        if image.shape[0] != self.in_channels:
            raise ValueError(
                f"Image has {image.shape[0]} channels but the forest was trained on "
                f"{self.in_channels}; pass an image with {self.in_channels} channel(s)."
            )
        _, h, w = image.shape
        out = np.zeros((self.n_classes, h, w), np.float32)
        cols = self._forest.classes_.astype(np.int64)
        for r0, r1, feats in self._feature_bands(np.asarray(image, np.float32)):
            p = self._forest.predict_proba(feats.reshape(-1, feats.shape[-1]))
            out[cols, r0:r1] = p.T.reshape(len(cols), r1 - r0, w)
        return out

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Most probable class of every pixel.

        Parameters
        ----------
        image : (C, H, W) float ndarray
            A normalised image.

        Returns
        -------
        labels : (H, W) uint8 ndarray
            Class map (uint16 if K > 256).
        """
        proba = self.predict_proba(image)
        dtype = np.uint8 if proba.shape[0] <= 256 else np.uint16
        return np.argmax(proba, axis=0).astype(dtype)
