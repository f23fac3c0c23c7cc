"""Running a bioimage.io model package back: its rdf.yaml read, its TorchScript applied.

:func:`open_package` reads a package (a ``.zip``, an ``rdf.yaml``/``*.bioimage.io.yaml`` or a
folder holding one) with ``bioimageio.spec`` (the ``[bioimageio]`` extra) and returns a
:class:`PackageModel`: the TorchScript weights loaded, the input's preprocessing and the output's
postprocessing as the rdf describes them. :func:`apply_processing` implements bioimage.io's
standard operations on a ``(C, H, W)`` sample (``ensure_dtype``, ``scale_range``, ``clip``,
``scale_linear``, ``zero_mean_unit_variance``, ``fixed_zero_mean_unit_variance``, ``sigmoid``);
:meth:`PackageModel.prepare` prepares one image with them; it is then predicted tile by tile
like with a project's model (:func:`.predicting.predict_prepared`), the package's ``softmax``
postprocessing being the softmax every prediction takes. ``activeseg predict PACKAGE.zip ...``
(:func:`.folder.predict_folder_iter`) runs it on a folder.

Supported: one 2D input ``(batch, channel, y, x)`` and one output of the same axes, TorchScript
weights, and a ``softmax`` over the channel axis as the postprocessing (or none, for a model
that returns probabilities). Other packages are refused with a message that says why.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import InferenceConfig
from ..preprocess import match_channels

__all__ = [
    "BIOIMAGEIO_EXTRA_MESSAGE",
    "PackageModel",
    "apply_processing",
    "is_bioimageio_source",
    "open_package",
    "require_spec",
]

BIOIMAGEIO_EXTRA_MESSAGE = (
    "bioimage.io packages need the 'bioimageio.spec' package: install the [bioimageio] extra "
    "(pip install 'napari-activeseg[bioimageio]', or pip install 'bioimageio.spec>=0.5.14').")
_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_AXES = ("batch", "channel", "y", "x")


def require_spec() -> Any:
    """``bioimageio.spec``, or an ImportError that names the extra to install."""
    try:
        from bioimageio import spec
    except ImportError as err:
        raise ImportError(BIOIMAGEIO_EXTRA_MESSAGE) from err
    return spec


def is_bioimageio_source(path: Any) -> bool:
    """Whether `path` names a bioimage.io package rather than a project folder: a zip file,
    a ``*.yaml`` file, or a folder with an ``rdf.yaml`` and no project catalog."""
    if not isinstance(path, str | os.PathLike):
        return False
    p = Path(path).expanduser()
    if p.is_file():
        return p.suffix.lower() in (".zip", ".yaml", ".yml")
    return p.is_dir() and not (p / "project.sqlite").exists() and any(
        (p / n).is_file() for n in _RDF_NAMES)


def _kwargs(op: Any) -> dict[str, Any]:
    kw = op.kwargs
    return dict(kw.model_dump(mode="json")) if hasattr(kw, "model_dump") else dict(kw or {})


def _reduce_axes(kwargs: Mapping[str, Any]) -> tuple[int, ...] | None:
    """Sample axes (C, H, W) an op reduces over; None = all of them (the batch is one)."""
    axes = kwargs.get("axes")
    if axes is None:
        return None
    index = {"channel": 0, "y": 1, "x": 2}
    return tuple(index[a] for a in axes if a != "batch")


def _along(values: Any, kwargs: Mapping[str, Any], channels: int, what: str) -> np.ndarray:
    """A scalar, or a per-channel list shaped to broadcast over (C, H, W)."""
    if not isinstance(values, list):
        return np.float32(values)
    if kwargs.get("axis") != "channel" or len(values) != channels:
        raise ValueError(f"The package's {what} has values along axis {kwargs.get('axis')!r} "
                         f"({len(values)}) that do not fit this image's {channels} channel(s).")
    return np.asarray(values, np.float32)[:, None, None]


def apply_processing(x: np.ndarray, ops: Sequence[tuple[str, dict[str, Any]]]) -> np.ndarray:
    """bioimage.io's standard operations, in order, on one ``(C, H, W)`` sample.

    ``ops`` are ``(id, kwargs)`` pairs as in an rdf.yaml. Statistics (percentiles, mean,
    std) are the sample's own, over the kwargs' ``axes`` (all axes when none are given).

    Raises
    ------
    ValueError
        For an operation this runner does not implement (``binarize`` and the ones that need
        dataset statistics or another tensor), naming it.
    """
    x = np.asarray(x)
    for op_id, kw in ops:
        axes = _reduce_axes(kw)
        if op_id == "ensure_dtype":
            x = x.astype(kw["dtype"], copy=False)
        elif op_id in ("scale_range", "clip") and kw.get("reference_tensor"):
            raise ValueError(f"The package's {op_id} uses the statistics of another tensor "
                             f"({kw['reference_tensor']!r}); activeseg predict runs one input.")
        elif op_id == "scale_range":
            lo, hi = np.percentile(x, [kw.get("min_percentile", 0.0),
                                       kw.get("max_percentile", 100.0)], axis=axes,
                                   keepdims=True)
            x = ((x - lo) / (hi - lo + kw.get("eps", 1e-6))).astype(np.float32)
        elif op_id == "clip":
            lo = kw.get("min")
            hi = kw.get("max")
            if kw.get("min_percentile") is not None:
                lo = np.percentile(x, kw["min_percentile"], axis=axes, keepdims=True)
            if kw.get("max_percentile") is not None:
                hi = np.percentile(x, kw["max_percentile"], axis=axes, keepdims=True)
            x = np.clip(x, lo, hi).astype(x.dtype, copy=False)
        elif op_id == "scale_linear":
            c = x.shape[0]
            x = (x * _along(kw.get("gain", 1.0), kw, c, "scale_linear gain")
                 + _along(kw.get("offset", 0.0), kw, c, "scale_linear offset")).astype(np.float32)
        elif op_id == "zero_mean_unit_variance":
            mean = x.mean(axis=axes, keepdims=True)
            x = ((x - mean) / (x.std(axis=axes, keepdims=True) + kw.get("eps", 1e-6)))
            x = x.astype(np.float32)
        elif op_id == "fixed_zero_mean_unit_variance":
            c = x.shape[0]
            mean = _along(kw["mean"], kw, c, "mean")
            std = _along(kw["std"], kw, c, "std")
            x = ((x - mean) / (std + kw.get("eps", 1e-6))).astype(np.float32)
        elif op_id == "sigmoid":
            x = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
        else:
            raise ValueError(f"The package uses the operation {op_id!r}, which activeseg predict "
                             "does not implement; run it with bioimageio.core instead.")
    return x


class _LogOf(nn.Module):
    """A model that returns probabilities, as logits (its softmax is the probabilities)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.model(x).clamp_min(1e-30))


@dataclass
class PackageModel:
    """A bioimage.io model package ready to predict (see :func:`open_package`)."""

    source: Path
    name: str
    version: str | None
    channels: int
    classes: list[str]
    preprocessing: list[tuple[str, dict[str, Any]]]
    model: nn.Module
    inference: InferenceConfig
    config: dict[str, Any] = field(default_factory=dict)

    def prepare(self, raw: np.ndarray) -> np.ndarray:
        """A raw image ((H, W) or channels-last) -> the network input (C, H, W) float32:
        the package's preprocessing, then the channel count matched as a project does."""
        img = raw[None] if raw.ndim == 2 else np.moveaxis(raw, -1, 0)
        x = apply_processing(img.astype(np.float32), self.preprocessing)
        return match_channels(np.asarray(x, np.float32), self.channels)


def _rdf_source(path: Path) -> Path:
    if path.is_dir():
        return next(path / n for n in _RDF_NAMES if (path / n).is_file())
    if path.suffix.lower() == ".zip" and not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is not a zip file; pass a bioimage.io package (.zip), "
                         "its rdf.yaml, or a project folder.")
    return path


def _check_axes(tensor: Any, what: str) -> None:
    ids = [str(a.id) for a in tensor.axes]
    types = [a.type for a in tensor.axes]
    if types != ["batch", "channel", "space", "space"] or ids != list(_AXES):
        raise ValueError(f"The package's {what} has axes {ids}; activeseg predict runs 2D "
                         f"models with axes {list(_AXES)}.")


def open_package(path: str | os.PathLike, *, device: str = "auto") -> PackageModel:
    """Read a bioimage.io model package and load its TorchScript weights (on the CPU).

    Raises
    ------
    ImportError
        Without ``bioimageio.spec`` (the message names the extra).
    ValueError
        If the package does not load or validate, or is not a model this runner supports
        (one 2D input and output, TorchScript weights, softmax or no postprocessing).
    """
    spec = require_spec()
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise ValueError(f"No bioimage.io package at {str(p)!r}.")
    descr = spec.load_description(_rdf_source(p), format_version="latest",
                                  perform_io_checks=False)
    if isinstance(descr, spec.InvalidDescr) or descr.type != "model":
        raise ValueError(f"{str(p)!r} is not a valid bioimage.io model package: "
                         f"{_errors(descr.validation_summary)}")
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise ValueError(f"The package has {len(descr.inputs)} inputs and {len(descr.outputs)} "
                         "outputs; activeseg predict runs models with one of each.")
    inp, out = descr.inputs[0], descr.outputs[0]
    _check_axes(inp, "input")
    _check_axes(out, "output")
    post = [(op.id, _kwargs(op)) for op in out.postprocessing if op.id != "ensure_dtype"]
    if post and (len(post) > 1 or post[0][0] != "softmax"
                 or post[0][1].get("axis", "channel") != "channel"):
        raise ValueError(f"The package's postprocessing {[o for o, _ in post]} is not a softmax "
                         "over the channels; activeseg predict runs segmentation models whose "
                         "output is class scores.")
    if descr.weights.torchscript is None:
        raise ValueError("The package has no TorchScript weights, which activeseg predict "
                         "runs; export TorchScript weights or use bioimageio.core.")
    data = descr.weights.torchscript.get_reader().read()
    with warnings.catch_warnings():  # torch >= 2.9 calls jit.load deprecated; it is the format
        warnings.simplefilter("ignore", DeprecationWarning)
        model: nn.Module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    if not post:  # the model already returns probabilities
        model = _LogOf(model)
    config = dict((descr.config.model_extra or {}).get("napari_activeseg") or {})
    saved = config.get("inference")
    inference = InferenceConfig.from_dict(saved) if isinstance(saved, dict) else InferenceConfig()
    return PackageModel(
        source=p, name=descr.name, version=config.get("model_version"),
        channels=len(inp.axes[1].channel_names),
        classes=[str(c) for c in out.axes[1].channel_names],
        preprocessing=[(op.id, _kwargs(op)) for op in inp.preprocessing],
        model=model, inference=inference.replace(device=device), config=config)


def _errors(summary: Any) -> str:
    """The first errors of a validation summary, one line."""
    errors = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for d in summary.details
              for e in d.errors]
    return "; ".join(errors[:3]) or summary.status
