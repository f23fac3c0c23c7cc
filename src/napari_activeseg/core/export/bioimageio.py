"""Export of a project's model as a bioimage.io model package (rdf.yaml format 0.5).

:func:`export_bioimageio` writes one zip that bioimage.io tools (deepImageJ, Ilastik,
bioimageio.core, the model zoo) and ``activeseg predict PACKAGE.zip`` read: ``rdf.yaml``, the
weights as TorchScript and as a PyTorch state dict (architecture :func:`build_unet`, which needs
napari-activeseg installed), a test input cut from a labelled image of the project and the
output the package gives for it, a cover (the test image and its prediction) and a README.

The preprocessing is bioimage.io's standard operations where they match the project's exactly:
percentile normalisation is ``scale_range`` per channel + ``clip``, the project's polarity rule
"invert" is ``scale_linear`` (gain -1, offset 1). The softmax over the classes is the output's
postprocessing; the class map is its argmax. What they cannot say is written in the
description and README: the polarity margin (an image whose background is unmistakably of the
other kind is treated the other way in the project) -- the package applies the project's rule
to every image --, the min/max fallback of a channel whose two percentiles coincide, and the
percentiles' strided sample on images over 4 M pixels. A model of the per-image rule "auto"
(saved before one rule per project) is refused.
"""

from __future__ import annotations

import getpass
import inspect
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from torch import nn

from ... import __version__
from ..config import InferenceConfig, ModelConfig
from ..imageio import CLIP_RANGE
from ..model import UNet
from ..preprocess import prepare_image
from ..project import Project
from .bioimageio_run import _errors, apply_processing, require_spec
from .common import decided_config, opened
from .model import write_torchscript
from .package_docs import cover_image, readme_text

__all__ = ["bioimageio_preprocessing", "build_unet", "export_bioimageio"]

INPUT_ID, OUTPUT_ID = "raw", "probabilities"
UNET_DOI = "10.1007/978-3-319-24574-4_28"  # Ronneberger, Fischer, Brox: U-Net (MICCAI 2015)
SCALE_EPS = 1e-6


def build_unet(**config: Any) -> nn.Module:
    """The package's ``pytorch_state_dict`` architecture: napari-activeseg's U-Net from its
    configuration (``ModelConfig`` fields), in eval mode."""
    return UNet(ModelConfig.from_dict(config)).eval()


def bioimageio_preprocessing(cfg: ModelConfig) -> list[tuple[str, dict[str, Any]]]:
    """The input's preprocessing as bioimage.io operations ``(id, kwargs)``: the project's
    percentile normalisation and, for the rule "invert", ``1 - x``.

    Raises
    ------
    ValueError
        For the per-image rule "auto" (or "pool", still to decide), which no standard
        operation expresses.
    """
    if cfg.polarity not in ("invert", "none"):
        raise ValueError(
            f"The model's polarity rule is {cfg.polarity!r}, decided per image, which a "
            "bioimage.io package cannot express; retrain the model in a current version (one "
            "rule per project), then export it.")
    params = inspect.signature(prepare_image).parameters
    ops: list[tuple[str, dict[str, Any]]] = [
        ("scale_range", {"axes": ["y", "x"], "min_percentile": float(params["low"].default),
                         "max_percentile": float(params["high"].default), "eps": SCALE_EPS}),
        ("clip", {"min": float(CLIP_RANGE[0]), "max": float(CLIP_RANGE[1])}),
    ]
    if cfg.polarity == "invert":
        ops.append(("scale_linear", {"gain": -1.0, "offset": 1.0}))
    return ops


def _op_descr(v05: Any, op_id: str, kwargs: dict[str, Any]) -> Any:
    kinds = {"scale_range": (v05.ScaleRangeDescr, v05.ScaleRangeKwargs),
             "clip": (v05.ClipDescr, v05.ClipKwargs),
             "scale_linear": (v05.ScaleLinearDescr, v05.ScaleLinearKwargs),
             "softmax": (v05.SoftmaxDescr, v05.SoftmaxKwargs)}
    descr, kw = kinds[op_id]
    return descr(kwargs=kw(**kwargs))


def _test_crop(proj: Project, tile: int, multiple: int) -> tuple[Any, np.ndarray]:
    """A labelled image's record and a centred crop of it (channels last) of at most the tile
    size, each side a multiple of the model's size multiple."""
    for image_id in proj.labelled_ids():
        try:
            raw = proj.load_image(image_id)
        except (ValueError, OSError):
            continue
        h, w = (min(tile, s) // multiple * multiple for s in raw.shape[:2])
        if h and w:
            y0, x0 = (raw.shape[0] - h) // 2, (raw.shape[1] - w) // 2
            return proj.get_image(image_id), np.ascontiguousarray(raw[y0:y0 + h, x0:x0 + w])
    raise ValueError(f"No labelled image of the project is at least {multiple} pixels on each "
                     "side (or none can be read): the package needs one as its test input. "
                     "Submit labels for an image first.")


def _authors(v05: Any, authors: Sequence[Any] | None) -> list[Any]:
    if not authors:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no user name in some containers
            user = "napari-activeseg user"
        authors = [user]
    return [v05.Author(**a) if isinstance(a, dict) else v05.Author(name=str(a).replace("/", " "))
            for a in authors]


def _name(name: str | None, project_name: str, version: str) -> str:
    text = name or f"ActiveSeg {project_name} {version}"
    clean = re.sub(r"\s+", " ", re.sub(r"[^A-Za-z0-9_+\- ()]", " ", text)).strip()[:128]
    if len(clean) < 5:
        raise ValueError(f"The package name {text!r} needs at least 5 letters, digits, spaces or "
                         "_+-() characters; pass another name.")
    return clean


def _target(out: str | os.PathLike, proj: Project, version: str) -> Path:
    p = Path(out).expanduser()
    if p.suffix.lower() != ".zip":
        if p.exists() and not p.is_dir():
            raise ValueError(f"{str(p)!r} is a file: pass a folder or a path ending in .zip.")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", proj.folder.name) or "model"
        p = p / f"{stem}_{version}.bioimageio.zip"
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"Cannot create the folder {str(p.parent)!r}: {err}.") from err
    return p


def _training_data(proj: Project, meta: dict[str, Any]) -> dict[str, Any]:
    ids = [int(i) for i in meta.get("labelled_ids") or proj.labelled_ids()]
    records = [proj.get_image(i) for i in ids]
    return {"n_labelled_images": len(ids),
            "n_partial": sum(bool(r.partial) for r in records),
            "images": [r.name for r in records][:50],
            "shapes": sorted({"x".join(map(str, r.shape)) for r in records}),
            "dtypes": sorted({r.dtype for r in records}),
            "n_images_in_project": len(proj.images()), "round": meta.get("round"),
            "train_steps": meta.get("steps")}


def export_bioimageio(
    project: Project | str | os.PathLike,
    out_dir_or_zip: str | os.PathLike,
    *,
    version: str | None = None,
    name: str | None = None,
    authors: Sequence[str | dict[str, Any]] | None = None,
    license: str = "CC-BY-4.0",
    tags: Sequence[str] = (),
    cite_url: str | None = None,
) -> Path:
    """Write a model version as a bioimage.io model package (zip) and validate it.

    Parameters
    ----------
    project : Project or path
    out_dir_or_zip : path
        A ``.zip`` path, or a folder (``<project>_<version>.bioimageio.zip`` is written in it).
    version : str, optional
        Model version (default: the latest good one).
    name : str, optional
        The package's name (default ``ActiveSeg <project folder> <version>``).
    authors : sequence of str or dict, optional
        Names, or bioimage.io author fields (``name``, ``affiliation``, ``orcid``, ...);
        default the OS user.
    license : str
        An SPDX identifier.
    tags : sequence of str
        Added to the package's tags.
    cite_url : str, optional
        Where your work with this model can be cited; the U-Net paper is always cited.

    Returns
    -------
    path : Path
        The package. It validates with ``bioimageio.spec`` (format and files), and its test
        output is what its TorchScript weights give for its test input.

    Raises
    ------
    ImportError
        Without ``bioimageio.spec`` (the message names the ``[bioimageio]`` extra).
    ProjectError
        If the project has no usable model (or not `version`).
    ValueError
        For an argument bioimage.io refuses (name, license), a model whose polarity is decided
        per image, no labelled image to test with, or a package that does not validate.
    """
    spec = require_spec()
    from bioimageio.spec.model import v0_5

    with opened(project) as proj:
        net, meta = proj.load_unet(version, device="cpu")
        version = str(meta["version"])
        cfg = decided_config(net.config, proj)
        ops = bioimageio_preprocessing(cfg)
        saved_inf = proj.get_setting("inference_config")
        inference = InferenceConfig.from_dict(saved_inf) if saved_inf else InferenceConfig()
        classes = [str(c) for c in (meta.get("classes") or proj.classes)]
        colors = list(meta.get("colors") or proj.colors)
        record, crop = _test_crop(proj, inference.tile_size, cfg.multiple)
        target = _target(out_dir_or_zip, proj, version)
        training = _training_data(proj, meta)
        channel_names = proj.get_setting("channel_names")
        project_name = proj.folder.name
    pkg_name = _name(name, project_name, version)
    if not (isinstance(channel_names, list) and len(channel_names) == cfg.in_channels):
        channel_names = (["gray"] if cfg.in_channels == 1 else ["red", "green", "blue"]
                         if cfg.in_channels == 3 else [f"channel{i}" for i in range(cfg.in_channels)])
    with tempfile.TemporaryDirectory(prefix="activeseg-bioimageio-") as tmp:
        work = Path(tmp)
        ts_path = work / "weights.torchscript.pt"
        write_torchscript(net, cfg, ts_path, probabilities=False)
        torch.save(net.state_dict(), work / "weights.pt")
        raw = (crop[None] if crop.ndim == 2 else np.moveaxis(crop, -1, 0)).astype(np.float32)
        if raw.shape[0] != cfg.in_channels:
            raise ValueError(f"The test image {record.name!r} has {raw.shape[0]} channel(s) but "
                             f"the model takes {cfg.in_channels}.")
        x = apply_processing(raw, ops)
        scripted = torch.jit.load(str(ts_path), map_location="cpu").eval()
        with torch.inference_mode():
            probs = torch.softmax(scripted(torch.from_numpy(x[None])), dim=1).numpy()
        np.save(work / "test_input.npy", raw[None])
        np.save(work / "test_output.npy", probs)
        tifffile.imwrite(work / "sample_input.tif", crop if crop.ndim == 2 else
                         np.moveaxis(crop, -1, 0), photometric="minisblack")
        tifffile.imwrite(work / "sample_output.tif", probs[0], photometric="minisblack")
        labels = probs[0].argmax(0)
        cover_image(work / "cover.png", x, labels, colors)
        notes = _limits(cfg)
        (work / "README.md").write_text(readme_text(
            project=project_name, version=version, classes=classes, training=training,
            ops=ops, notes=notes, cfg=cfg, inference=inference, test_image=record.name,
            test_shape=list(raw.shape[1:])), encoding="utf-8")

        descr = _describe(
            v0_5, work=work, name=pkg_name, version=version, cfg=cfg,
            classes=classes, channel_names=[str(c) for c in channel_names], ops=ops,
            inference=inference, training=training, notes=notes, license=license,
            authors=_authors(v0_5, authors), tags=tags, cite_url=cite_url, colors=colors,
            project_name=project_name, test_shape=raw.shape[1:])
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial.zip")
        try:
            spec.save_bioimageio_package(descr, output_path=partial)
            check = spec.load_description(partial, perform_io_checks=True)
            if isinstance(check, spec.InvalidDescr) or check.validation_summary.status == "failed":
                raise ValueError("The bioimage.io package did not validate: "
                                 f"{_errors(check.validation_summary)}. Please report this.")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def _limits(cfg: ModelConfig) -> list[str]:
    """What the package's standard operations do not say of the project's preparation."""
    notes = [("A channel whose two percentiles coincide is scaled by its min and max in "
              "napari-activeseg; the package divides by (p_high - p_low + eps)."),
             ("napari-activeseg takes the percentiles of an image over 4 M pixels on a "
              "strided sample; the package on the whole image (the same up to sampling).")]
    if cfg.polarity_margin is not None:
        notes.insert(0, f"The project's polarity rule is {cfg.polarity!r} with a margin of "
                        f"{cfg.polarity_margin}: in napari-activeseg an image whose background "
                        "is unmistakably of the other kind is treated the other way. No "
                        "standard operation expresses that; the package applies the rule "
                        f"{cfg.polarity!r} to every image.")
    return notes


def _min_size(multiple: int, halo: int) -> int:
    """The least input side: a multiple of the model's, more than twice the halo."""
    return multiple * (2 * halo // multiple + 1)


def _describe(v05: Any, *, work: Path, name: str, version: str, cfg: ModelConfig,
              classes: list[str], channel_names: list[str], ops: list[tuple[str, dict]],
              inference: InferenceConfig, training: dict[str, Any], notes: list[str],
              license: str, authors: list[Any], tags: Sequence[str], cite_url: str | None,
              colors: list[str], project_name: str, test_shape: Sequence[int]) -> Any:
    """The ModelDescr of the files in `work`; the output's halo is half the project's tile
    overlap (less if the test input is too small for it)."""
    m = cfg.multiple
    halo, side = inference.overlap // 2, min(test_shape)
    while halo and _min_size(m, halo) > side:  # the test input must be a valid size
        halo //= 2
    size = v05.ParameterizedSize(min=_min_size(m, halo), step=m)

    def space(axis: str) -> Any:
        ref = v05.SizeReference(tensor_id=v05.TensorId(INPUT_ID), axis_id=v05.AxisId(axis))
        if halo >= 1:
            return v05.SpaceOutputAxisWithHalo(id=v05.AxisId(axis), size=ref, halo=halo)
        return v05.SpaceOutputAxis(id=v05.AxisId(axis), size=ref)

    inp = v05.InputTensorDescr(
        id=v05.TensorId(INPUT_ID),
        description="raw image, any intensity range (cast to float32)",
        axes=[v05.BatchAxis(), v05.ChannelAxis(channel_names=channel_names),
              v05.SpaceInputAxis(id=v05.AxisId("y"), size=size),
              v05.SpaceInputAxis(id=v05.AxisId("x"), size=size)],
        test_tensor=v05.FileDescr(source=work / "test_input.npy"),
        sample_tensor=v05.FileDescr(source=work / "sample_input.tif"),
        data=v05.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[_op_descr(v05, i, k) for i, k in ops])
    out = v05.OutputTensorDescr(
        id=v05.TensorId(OUTPUT_ID),
        description="class probabilities; the class map is their argmax over channels",
        axes=[v05.BatchAxis(), v05.ChannelAxis(channel_names=classes), space("y"), space("x")],
        test_tensor=v05.FileDescr(source=work / "test_output.npy"),
        sample_tensor=v05.FileDescr(source=work / "sample_output.tif"),
        data=v05.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[_op_descr(v05, "softmax", {"axis": v05.AxisId("channel")})])
    n = training["n_labelled_images"]
    description = (
        f"2D U-Net semantic segmentation of {', '.join(classes[1:]) or 'foreground'} (class 0 "
        f"= {classes[0]}), trained with napari-activeseg {__version__} by active learning on "
        f"{n} labelled image(s) ({training['n_partial']} partially) of the project "
        f"'{project_name}', model version {version}. Input: {cfg.in_channels} channel(s), "
        "percentile-normalised per channel"
        + (", inverted (1 - x)" if cfg.polarity == "invert" else "") + "."
        + (" Polarity margin not applied (see README)." if cfg.polarity_margin is not None
           else ""))
    cite = [v05.CiteEntry(text="Ronneberger O., Fischer P., Brox T. U-Net: Convolutional "
                               "Networks for Biomedical Image Segmentation. MICCAI 2015.",
                          doi=v05.Doi(UNET_DOI))]
    if cite_url:
        cite.append(v05.CiteEntry(text=f"napari-activeseg model {name}",
                                  url=v05.HttpUrl(cite_url)))
    torch_version = v05.Version(torch.__version__.split("+")[0])
    try:
        license_id = v05.LicenseId(license)
    except ValueError as err:
        raise ValueError(f"{license!r} is not an SPDX license identifier bioimage.io knows "
                         "(e.g. CC-BY-4.0, MIT, BSD-3-Clause).") from err
    return v05.ModelDescr(
        name=name, description=description[:1024], authors=authors, license=license_id,
        tags=["napari-activeseg", "active-learning", "unet", "2d", "semantic-segmentation",
              "pytorch", "torchscript", *tags],
        cite=cite, documentation=v05.FileDescr(source=work / "README.md"),
        covers=[v05.FileDescr(source=work / "cover.png")],
        inputs=[inp], outputs=[out],
        weights=v05.WeightsDescr(
            torchscript=v05.TorchscriptWeightsDescr(source=work / "weights.torchscript.pt",
                                                    pytorch_version=torch_version,
                                                    parent="pytorch_state_dict"),
            pytorch_state_dict=v05.PytorchStateDictWeightsDescr(
                source=work / "weights.pt", pytorch_version=torch_version,
                architecture=v05.ArchitectureFromLibraryDescr(
                    import_from=__name__, callable=v05.Identifier("build_unet"),
                    kwargs=cfg.to_dict()))),
        config=v05.Config(napari_activeseg={
            "napari_activeseg": __version__, "project": project_name, "model_version": version,
            "classes": classes, "colors": colors, "model_config": cfg.to_dict(),
            "polarity": {"rule": cfg.polarity, "margin": cfg.polarity_margin},
            "inference": inference.to_dict(), "training_data": training,
            "not_expressed": notes}),
    )

