"""The human side of a bioimage.io package: its cover image and its README.

:func:`cover_image` draws the test image beside its prediction (the classes in the project's
colours over the image) as a PNG, with scikit-image; :func:`readme_text` writes the package's
documentation: what the model segments, what it was trained on, how an image is prepared and
what the package's standard operations leave out, and how it was validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import InferenceConfig, ModelConfig

__all__ = ["cover_image", "readme_text"]

_ALPHA = 0.45


def _rgb(color: str) -> np.ndarray:
    c = color.lstrip("#")
    return np.array([int(c[i:i + 2], 16) for i in (0, 2, 4)], np.float32)


def cover_image(path: Path, image: np.ndarray, labels: np.ndarray,
                colors: Sequence[str], *, min_height: int = 256) -> Path:
    """Write `image` ((C, H, W), normalised) and the same with `labels` coloured over it,
    side by side (2:1), enlarged by whole pixels to at least `min_height` rows if small."""
    from skimage.io import imsave

    gray = np.clip(np.asarray(image, np.float32).mean(axis=0), 0.0, 1.0) * 255.0
    base = np.repeat(gray[..., None], 3, axis=-1)
    palette = np.stack([_rgb(colors[k % len(colors)]) for k in range(int(labels.max()) + 1)])
    overlay = base.copy()
    fg = labels > 0
    overlay[fg] = (1 - _ALPHA) * base[fg] + _ALPHA * palette[labels[fg]]
    both = np.concatenate([base, overlay], axis=1)
    factor = int(np.clip(min_height // max(1, both.shape[0]), 1, 8))
    both = np.repeat(np.repeat(both, factor, axis=0), factor, axis=1)
    imsave(str(path), np.round(both).astype(np.uint8), check_contrast=False)
    return path


def _ops_lines(ops: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for op_id, kw in ops:
        args = ", ".join(f"{k}={v}" for k, v in kw.items())
        lines.append(f"{len(lines) + 1}. `{op_id}` ({args})")
    return lines


def readme_text(*, project: str, version: str, classes: Sequence[str],
                training: dict[str, Any], ops: Sequence[tuple[str, dict[str, Any]]],
                notes: Sequence[str], cfg: ModelConfig, inference: InferenceConfig,
                test_image: str, test_shape: Sequence[int]) -> str:
    """The package's README.md (it has the '## Validation' section bioimage.io asks for)."""
    class_lines = [f"- {k}: {name}" for k, name in enumerate(classes)]
    shapes = ", ".join(training["shapes"])
    return "\n".join([
        f"# {project} {version}: a napari-activeseg U-Net",
        "",
        (f"A 2D U-Net (depth {cfg.depth}, width {cfg.width}, {cfg.in_channels} input "
         f"channel(s)) for semantic segmentation, trained by active learning in napari-activeseg "
         f"(project '{project}', model version {version}, round {training.get('round')})."),
        "",
        "## Classes",
        "",
        ("The output holds one probability per class and pixel; the class map is the argmax "
         "over the channel axis."),
        "",
        *class_lines,
        "",
        "## Training data",
        "",
        (f"{training['n_labelled_images']} labelled image(s) of the project's "
         f"{training['n_images_in_project']} ({training['n_partial']} labelled in part: boxes or "
         f"scribbles), shapes {shapes}, dtypes {', '.join(training['dtypes'])}; "
         f"{training.get('train_steps')} training steps in the last round."),
        "",
        "## Preprocessing",
        "",
        ("Per image, per channel (the package's input preprocessing, bioimage.io's standard "
         "operations):"),
        "",
        *_ops_lines(ops),
        "",
        "What these do not express of napari-activeseg's own preparation:",
        "",
        *[f"- {n}" for n in notes],
        "",
        "## Postprocessing",
        "",
        "A softmax over the channel axis gives the class probabilities.",
        "",
        "## Use",
        "",
        (f"Any size: the network pads to a multiple of {cfg.multiple} inside. Large images: "
         f"tiles of {inference.tile_size} pixels overlapping by {inference.overlap} (the halo "
         "of the output axes is half of that), blended. `activeseg predict PACKAGE.zip "
         "INPUT_DIR OUT_DIR` runs this package on a folder. The `pytorch_state_dict` weights "
         "need napari-activeseg installed (architecture "
         "`napari_activeseg.core.export.bioimageio.build_unet`); the TorchScript weights need "
         "PyTorch alone."),
        "",
        "## Validation",
        "",
        (f"The test input is a {test_shape[0]} x {test_shape[1]} crop of the labelled image "
         f"'{test_image}'; the test output is what this package computes for it. The model was "
         "checked by its annotator while labelling (the project's review loop); measure it on "
         "images of your own with labels before relying on it."),
        "",
    ])
