"""Export of a model for use outside napari-activeseg: TorchScript, ONNX, weights, preprocessing.

:func:`export_model` writes the TorchScript model (any H, W: the padding is inside, see
:class:`PaddedSoftmax`), checked against the project model after saving; the ONNX model when the
``onnx`` package is installed (verified with ``onnxruntime`` when that is); the project's weights
and description byte for byte; and ``preprocessing.json`` (:func:`preprocessing_spec`), which
says how to feed the model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ... import __version__
from .. import _store_files as sf
from .. import serialize
from ..atomic import atomic_write_bytes
from ..config import InferenceConfig, ModelConfig
from ..imageio import CLIP_RANGE, PERCENTILE_MAX_PIXELS
from ..preprocess import (
    BRIGHT_THRESHOLD,
    DECIDE_MAX_IMAGES,
    LEVEL_SAMPLE_PIXELS,
    prepare_image,
)
from ..project import Project, ProjectError
from .common import decided_config, opened, output_folder

__all__ = [
    "CONFIG_NAME",
    "ONNX_NAME",
    "PREPROCESSING_FORMAT",
    "PREPROCESSING_NAME",
    "TORCHSCRIPT_NAME",
    "WEIGHTS_NAME",
    "PaddedSoftmax",
    "export_model",
    "preprocessing_spec",
    "write_torchscript",
]

PREPROCESSING_FORMAT = "napari-activeseg-preprocessing"
TORCHSCRIPT_NAME = "model.torchscript.pt"
ONNX_NAME = "model.onnx"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "model.json"  # next to the weights: Project.import_model finds it there
PREPROCESSING_NAME = "preprocessing.json"


class PaddedSoftmax(nn.Module):
    """Deployment wrapper: pad any (H, W) to the U-Net's size multiple, softmax, crop back.

    Padding is the U-Net's own rule (reflect at the bottom/right, replicate when the image is
    too small to reflect), written so that :func:`torch.jit.script` keeps it dynamic.
    ``core`` is the U-Net traced on a size multiple (size-generic for such inputs).
    ``probabilities=False`` returns the logits instead (the bioimage.io package applies the
    softmax as its postprocessing).
    """

    def __init__(self, core: nn.Module, multiple: int, probabilities: bool = True) -> None:
        super().__init__()
        self.core = core
        self.multiple = multiple
        self.probabilities = probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        w = x.shape[3]
        m = self.multiple
        ph = (m - h % m) % m
        pw = (m - w % m) % m
        if ph > 0 or pw > 0:
            if ph < h and pw < w:
                x = F.pad(x, [0, pw, 0, ph], mode="reflect")
            else:
                x = F.pad(x, [0, pw, 0, ph], mode="replicate")
        logits = self.core(x)[:, :, :h, :w]
        if self.probabilities:
            return torch.softmax(logits, dim=1)
        return logits


class _EagerPaddedSoftmax(nn.Module):
    """The same computation for the ONNX tracer (reflect padding, amounts traced from the shape).

    The tracer records the pad amounts from the input shape, so the ONNX graph handles any
    H, W >= the size multiple (reflect needs pad < size).
    """

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        m = self.multiple
        x = F.pad(x, [0, (m - w % m) % m, 0, (m - h % m) % m], mode="reflect")
        logits = self.net(x)
        return torch.softmax(logits[:, :, :h, :w], dim=1)


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Tracing warns about Python-side shape logic (handled here by the padding wrapper) and
    about its own deprecation; neither concerns the user of an export."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        yield


def preprocessing_spec(model_config: ModelConfig, *, classes: Sequence[str],
                       colors: Sequence[str], version: str | None = None,
                       channel_names: Sequence[str] | None = None,
                       inference: InferenceConfig | None = None) -> dict[str, Any]:
    """The ``preprocessing.json`` document: everything needed to feed the exported model.

    Numbers come from the code that prepares images (:func:`.preprocess.prepare_image`,
    :func:`.imageio.normalize_image`), so the document cannot drift from what training saw.

    Raises
    ------
    ValueError
        If the configuration's polarity is "pool" (still to decide): the document records the
        concrete rule the project decided ("invert" or "none"), which another tool applies to
        every image as it is.
    """
    if model_config.polarity == "pool":
        raise ValueError("The model's polarity is 'pool', still to decide: resolve it first "
                         "(model_config.replace(polarity=decide_project_polarity(project)) in "
                         "core.preprocess); preprocessing.json records 'invert' or 'none'.")
    params = inspect.signature(prepare_image).parameters
    low, high = float(params["low"].default), float(params["high"].default)
    multiple = model_config.multiple
    channels = list(channel_names) if channel_names else (
        ["gray"] if model_config.in_channels == 1 else
        ["red", "green", "blue"] if model_config.in_channels == 3 else
        [f"channel {i}" for i in range(model_config.in_channels)])
    inference = inference or InferenceConfig()
    return {
        "format": PREPROCESSING_FORMAT,
        "format_version": 1,
        "napari_activeseg": __version__,
        "model_version": version,
        "created_at": sf.utc_now(),
        "input": {
            "layout": "NCHW", "dtype": "float32",
            "in_channels": model_config.in_channels,
            "channel_order": channels,
            "channel_order_note": "channels in the order the image stores them, read channels-"
                                  "last ((H, W, C); RGB as R, G, B; a (C, H, W) TIFF stack with "
                                  "its channel axis moved last); a 2D image is one channel",
            "channel_matching": "after normalization, an image with another channel count is "
                                "matched to in_channels: a 1-channel image is repeated on every "
                                "channel; for in_channels = 1 a 3-channel image becomes the "
                                "mean of its channels; other counts are refused",
            "any_size": True,
            "size_multiple": multiple,
            "padding": "done inside the TorchScript model: reflect-pad bottom/right to a multiple"
                       f" of {multiple} (replicate if the image is smaller than the pad), crop "
                       "the output back",
        },
        "normalization": {
            "method": "percentile", "per_channel": True,
            "low_percentile": low, "high_percentile": high,
            "formula": "x = (raw - p_low) / (p_high - p_low), per channel, in float32 "
                       "(float64 for 32/64-bit inputs)",
            "clip": list(CLIP_RANGE),
            "percentile_method": "numpy.percentile, method='linear'",
            "percentile_subsample": "if H*W > max_pixels, percentiles are taken on "
                                    "channel[::s, ::s] with s = ceil(sqrt(H*W / max_pixels))",
            "max_pixels": PERCENTILE_MAX_PIXELS,
            "degenerate": "if p_high <= p_low use the channel's min and max; a constant channel "
                          "becomes all zeros",
        },
        "polarity": {
            "rule": model_config.polarity,
            "margin": model_config.polarity_margin,
            "rules": {"none": "no change (x stays); with a margin, an image whose "
                              "background_level is greater than threshold + margin is "
                              "inverted (x -> 1 - x, all channels)",
                      "invert": "x -> 1 - x (all channels); with a margin, an image whose "
                                "background_level is less than threshold - margin stays as "
                                "it is",
                      "auto": "per image (models saved before one rule per project; margin "
                              "ignored): invert (x -> 1 - x, all channels) when this image's "
                              "background_level is greater than threshold"},
            "decided": "'invert' and 'none' are decided once per project, from its images, and "
                       "applied as they are to every image, new ones included: never re-decide "
                       "them per image (the margin alone makes exceptions, for images whose "
                       "background is unmistakably of the other kind; margin null = none). "
                       "The decision, for a new project of your own: take up to "
                       f"{DECIDE_MAX_IMAGES} images (all, or those at indices "
                       f"round(linspace(0, n - 1, {DECIDE_MAX_IMAGES})) of the n in order), "
                       "measure each one's background_level, and choose 'invert' when the "
                       "median of these levels is greater than threshold, else 'none'",
            "background_level": "median of the channel-mean of the normalised image, sampled "
                                "as [::s, ::s] with s = max(1, int(sqrt(H*W / sample_pixels)))",
            "bright_background": "background_level greater than threshold",
            "threshold": BRIGHT_THRESHOLD, "sample_pixels": LEVEL_SAMPLE_PIXELS,
            "decision_max_images": DECIDE_MAX_IMAGES,
            "applied_after": "normalization",
        },
        "output": {
            "kind": "probabilities", "layout": "NKHW", "dtype": "float32",
            "labels": "argmax over K (axis 1); 0 = background, k = classes[k]",
            "classes": list(classes), "colors": list(colors),
            "n_classes": model_config.n_classes,
        },
        "model_config": model_config.to_dict(),
        "inference": {
            "tiling": "for large images predict overlapping tiles and blend them; the plugin "
                      "uses these settings",
            **inference.to_dict(),
        },
        "how_to_apply": [
            "1. Read the image as (H, W) or channels-last (H, W, C) in its stored dtype.",
            ("2. Per channel: p_low, p_high = percentiles (low_percentile, high_percentile); "
             "x = clip((raw - p_low) / (p_high - p_low), clip[0], clip[1]) as float32."),
            ("3. Polarity: level = background_level of x (the median of the channel-mean of "
             "x, sampled as described). rule 'invert': x = 1 - x, unless margin is set and "
             "level < threshold - margin; rule 'none': x stays, unless margin is set and "
             "level > threshold + margin (then x = 1 - x); rule 'auto' (older models): "
             "x = 1 - x when level > threshold."),
            ("4. Arrange as (1, C, H, W) float32 and run the model: "
             f"torch.jit.load('{TORCHSCRIPT_NAME}')(x) -> (1, K, H, W) probabilities (any H, W); "
             f"or the ONNX model '{ONNX_NAME}' (input 'image', output 'probabilities'; "
             f"H, W >= {multiple})."),
            "5. labels = probabilities.argmax(1): a class map, 0 = background.",
        ],
        "python_example": (
            "import numpy as np, torch, tifffile\n"
            "polarity, margin = POLARITY, MARGIN  # polarity.rule and .margin\n"
            "raw = tifffile.imread('image.tif').astype(np.float32)\n"
            "img = raw[..., None] if raw.ndim == 2 else raw\n"
            "lo, hi = np.percentile(img, [LOW, HIGH], axis=(0, 1))\n"
            "x = np.clip((img - lo) / (hi - lo), -0.5, 1.5).transpose(2, 0, 1)\n"
            "s = max(1, int(np.sqrt(x.shape[1] * x.shape[2] / SAMPLE)))\n"
            "level = np.median(x[:, ::s, ::s].mean(0))\n"
            "if polarity == 'auto':\n"
            "    invert = level > THRESHOLD\n"
            "elif margin is None:\n"
            "    invert = polarity == 'invert'\n"
            "elif polarity == 'invert':\n"
            "    invert = not level < THRESHOLD - margin\n"
            "else:\n"
            "    invert = level > THRESHOLD + margin\n"
            "if invert:\n"
            "    x = 1 - x\n"
            f"model = torch.jit.load('{TORCHSCRIPT_NAME}')\n"
            "probs = model(torch.from_numpy(x[None].astype(np.float32)))[0].numpy()\n"
            "labels = probs.argmax(0).astype(np.uint8)"
        ).replace("LOW", repr(low)).replace("HIGH", repr(high)).replace(
            "POLARITY", repr(model_config.polarity)).replace(
            "MARGIN", repr(model_config.polarity_margin)).replace(
            "THRESHOLD", repr(BRIGHT_THRESHOLD)).replace("SAMPLE", repr(LEVEL_SAMPLE_PIXELS)),
    }


def _channel_names(proj: Project, in_channels: int) -> list[str] | None:
    saved = proj.get_setting("channel_names")
    if isinstance(saved, list) and len(saved) == in_channels:
        return [str(c) for c in saved]
    return None


def _verify_sizes(multiple: int, trace_size: int) -> list[tuple[int, int]]:
    """Sizes unlike the trace example: odd, not multiples, and one too small to reflect."""
    return [(trace_size + multiple + 3, trace_size + 2 * multiple - 1), (1, multiple + 1)]


def export_model(
    project: Project | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    version: str | None = None,
    onnx: bool = True,
) -> dict[str, Any]:
    """Export a model version for use outside napari-activeseg.

    Writes into `out_dir`:

    - ``model.torchscript.pt``: ``torch.jit.load(path)(x)`` maps ``(N, C, H, W)`` float32 of any
      H, W to ``(N, K, H, W)`` probabilities (padding inside). It is checked after saving: the
      loaded file must agree with the project model on sizes unlike the trace example.
    - ``model.onnx`` (if `onnx` and the ``onnx`` package is installed; verified with
      ``onnxruntime`` when that is installed): input ``image``, output ``probabilities``,
      dynamic N, H, W (H, W at least the size multiple).
    - ``model.safetensors`` + ``model.json``: the project's weights and description, byte for
      byte (:meth:`Project.import_model` takes them back).
    - ``preprocessing.json``: see :func:`preprocessing_spec`.

    Returns
    -------
    info : dict
        ``version``, ``files`` (name -> path), ``torchscript`` (path, verified sizes and max
        difference), ``onnx`` (path or None, ``status`` ``"written"``/``"verified"``/
        ``"skipped"``/``"failed"``, ``note``), ``preprocessing``, ``weights``, ``config``.

    Raises
    ------
    ProjectError
        If the project has no usable model (or not `version`).
    RuntimeError
        If the saved TorchScript model does not reproduce the project model.
    """
    with opened(project) as proj:
        net, meta = proj.load_unet(version, device="cpu")
        version = meta["version"]
        cfg: ModelConfig = decided_config(net.config, proj)
        info = next(m for m in proj.models() if m.version == version)
        out = output_folder(out_dir)
        files: dict[str, Path] = {}

        # weights + description, verified against the checksum the store recorded
        weights = info.weights_path.read_bytes()
        doc = json.loads(info.json_path.read_text())
        if sf.sha256_bytes(weights) != doc.get("weights_sha256"):
            raise ProjectError(f"{info.weights_path.name} changed while it was being exported; "
                               "try again.")
        doc["weights"] = WEIGHTS_NAME
        # the rule the model is used with, also where it was saved with "pool" still to decide
        doc["model_config"] = cfg.to_dict()
        doc.setdefault("meta", {})["exported_from"] = {"project": str(proj.folder),
                                                       "version": version}
        atomic_write_bytes(out / WEIGHTS_NAME, weights)
        files["weights"] = out / WEIGHTS_NAME
        files["config"] = out / CONFIG_NAME
        serialize.write_json(files["config"], doc)

        saved_inf = proj.get_setting("inference_config")
        spec = preprocessing_spec(
            cfg, classes=meta.get("classes") or proj.classes,
            colors=meta.get("colors") or proj.colors, version=version,
            channel_names=_channel_names(proj, cfg.in_channels),
            inference=InferenceConfig.from_dict(saved_inf) if saved_inf else None)

        ts_info = write_torchscript(net, cfg, out / TORCHSCRIPT_NAME)
        files["torchscript"] = ts_info["path"]

        onnx_info = _export_onnx(net, cfg, out / ONNX_NAME) if onnx else {
            "path": None, "status": "skipped", "note": "not requested"}
        if onnx_info["path"] is not None:
            files["onnx"] = onnx_info["path"]
        spec["files"] = {"torchscript": TORCHSCRIPT_NAME,
                         "onnx": ONNX_NAME if onnx_info["path"] is not None else None,
                         "weights": WEIGHTS_NAME, "config": CONFIG_NAME}
        spec["onnx"] = {k: v for k, v in onnx_info.items() if k != "path"}
        files["preprocessing"] = out / PREPROCESSING_NAME
        serialize.write_json(files["preprocessing"], spec)
        return {
            "version": version, "out_dir": out, "files": files,
            "torchscript": ts_info, "onnx": onnx_info,
            "preprocessing": files["preprocessing"], "weights": files["weights"],
            "config": files["config"],
        }  # fmt: skip


def write_torchscript(net: nn.Module, cfg: ModelConfig, path: Path, *,
                      probabilities: bool = True) -> dict[str, Any]:
    """Save `net` as TorchScript (:class:`PaddedSoftmax`: any H, W) and check the saved file.

    The U-Net is traced on a size multiple inside the scripted padding wrapper; the file is
    loaded back and must agree with `net` (softmax of it if `probabilities`, else its logits)
    on sizes unlike the trace example.

    Returns
    -------
    info : dict
        ``path``, ``trace_size``, ``checks`` (size and max difference per check).

    Raises
    ------
    RuntimeError
        If the saved model does not reproduce `net` (the file is removed).
    """
    m = cfg.multiple
    trace_size = max(2 * m, 32)
    example = torch.randn(1, cfg.in_channels, trace_size, trace_size,
                          generator=torch.Generator().manual_seed(0))
    with _quiet_tracing(), torch.no_grad():
        core = torch.jit.trace(net, example)
        scripted = torch.jit.script(PaddedSoftmax(core, m, probabilities))
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        loaded = torch.jit.load(str(path), map_location="cpu")
    checks = []
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for h, w in _verify_sizes(m, trace_size):
            x = torch.rand(1, cfg.in_channels, h, w, generator=gen)
            ref = torch.softmax(net(x), dim=1) if probabilities else net(x)
            got = loaded(x)
            diff = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
            checks.append({"size": [h, w], "max_abs_diff": diff})
    worst = max(c["max_abs_diff"] for c in checks)
    tolerance = 1e-4 if probabilities else 1e-3
    if not worst <= tolerance:
        path.unlink(missing_ok=True)
        raise RuntimeError(
            f"The exported TorchScript model differs from the project model by {worst:.3g} "
            f"on sizes {[c['size'] for c in checks]}; it was not kept. Please report this."
        )
    return {"path": path, "trace_size": [trace_size, trace_size], "checks": checks}


def _export_onnx(net: nn.Module, cfg: ModelConfig, path: Path) -> dict[str, Any]:
    """ONNX via torch's TorchScript-based exporter; skipped (with a note) without ``onnx``."""
    if importlib.util.find_spec("onnx") is None:
        return {"path": None, "status": "skipped",
                "note": "ONNX export needs the 'onnx' package, which is not installed "
                        "(pip install onnx, optionally onnxruntime to verify); the TorchScript "
                        "model was written."}
    m = cfg.multiple
    size = 2 * m + 1  # not a multiple: the pad amounts are traced from the shape
    example = torch.rand(1, cfg.in_channels, size, size + 2,
                         generator=torch.Generator().manual_seed(0))
    wrapper = _EagerPaddedSoftmax(net, m).eval()
    kwargs: dict[str, Any] = {
        "input_names": ["image"], "output_names": ["probabilities"], "opset_version": 17,
        "dynamic_axes": {"image": {0: "batch", 2: "height", 3: "width"},
                         "probabilities": {0: "batch", 2: "height", 3: "width"}},
    }
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    buffer = io.BytesIO()
    try:
        with _quiet_tracing(), torch.no_grad():
            torch.onnx.export(wrapper, (example,), buffer, **kwargs)
    except Exception as err:  # noqa: BLE001 - ONNX is optional; TorchScript stays the format
        return {"path": None, "status": "failed",
                "note": f"torch could not export this model to ONNX ({type(err).__name__}: "
                        f"{str(err)[:300]}); use the TorchScript model."}
    atomic_write_bytes(path, buffer.getvalue())
    result: dict[str, Any] = {"path": path, "status": "written",
                              "note": f"inputs need H, W >= {m} (reflect padding)."}
    if importlib.util.find_spec("onnxruntime") is None:
        result["note"] += " Not verified: onnxruntime is not installed."
        return result
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = torch.rand(1, cfg.in_channels, 3 * m + 5, 2 * m + 3,
                       generator=torch.Generator().manual_seed(2))
        got = session.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            ref = torch.softmax(net(x), dim=1).numpy()
        diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
    except Exception as err:  # noqa: BLE001
        result["note"] += f" Verification with onnxruntime failed: {err}"
        return result
    result["max_abs_diff"] = diff
    if diff <= 1e-4:
        result["status"] = "verified"
    else:
        path.unlink(missing_ok=True)
        result.update(path=None, status="failed",
                      note=f"the ONNX model differs from the project model by {diff:.3g}; it "
                           "was not kept. Use the TorchScript model.")
    return result
