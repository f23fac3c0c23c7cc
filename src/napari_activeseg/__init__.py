"""napari-activeseg: active-learning segmentation for napari.

Importing the package loads neither torch, Qt nor napari: the heavy modules are imported only
where they are used, so that napari starts fast and the core can be used from plain scripts.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
