"""Sample data for napari's File > Open Sample menu: CC0 nuclei images bundled in the package."""

from __future__ import annotations

from pathlib import Path

SAMPLE_DIR = Path(__file__).parent / "sample_data"


def sample_paths() -> list[Path]:
    """Paths of the bundled sample images (their masks are in ``sample_data/masks``)."""
    return sorted((SAMPLE_DIR / "images").glob("*.png"))


def nuclei_samples() -> list[tuple]:
    """The bundled nuclei images as napari image layers (RGB, one layer per image)."""
    from .core.imageio import read_image

    layers = []
    for path in sample_paths():
        data = read_image(path)
        layers.append((data, {"name": path.stem, "rgb": data.ndim == 3}, "image"))
    return layers


def nuclei_with_masks() -> list[tuple]:
    """One sample image with its ground-truth mask as a Labels layer."""
    from .core.imageio import read_image

    path = sample_paths()[0]
    image = read_image(path)
    mask = read_image(SAMPLE_DIR / "masks" / path.name)
    if mask.ndim == 3:
        mask = mask[..., 0]
    mask = (mask > 0).astype("uint8")
    return [
        (image, {"name": path.stem, "rgb": image.ndim == 3}, "image"),
        (mask, {"name": "ground truth", "opacity": 0.5}, "labels"),
    ]
