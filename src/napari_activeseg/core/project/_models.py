"""Model checkpoints of a project: safetensors weights + a JSON description, never pickles.

A version ``vNNNN`` exists when ``models/vNNNN.json`` exists and parses and
``models/vNNNN.safetensors`` has a safetensors header; its checksum (in the JSON) is verified
when it is loaded. Weights are written first and the JSON last, each atomically, so an
interrupted save leaves at most weights without a JSON, which are not a version (and are
removed by the integrity check).

Nothing here ever calls ``torch.load`` or ``pickle``: a file is read as bytes, its framing is
checked (:func:`~napari_activeseg.core._store_files.sniff_safetensors`), and only then is it
parsed by safetensors, which holds plain tensors and no code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _store_files as sf
from .. import atomic
from ..config import ModelConfig
from ._records import ModelInfo, ProjectError, UnsafeCheckpointError, jsonable
from ._store import MODELS_DIR

if TYPE_CHECKING:  # pragma: no cover
    from ._settings import Settings
    from ._store import _Store

__all__ = ["ModelStore", "check_state_dict", "load_state_dict"]

_MODEL_FORMAT = "napari-activeseg-model"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
#: meta keys the store sets in what :meth:`ModelStore.load_model` returns (ignored on save).
_RESERVED_META = ("version", "created_at", "classes", "colors")


# --------------------------------------------------------------------------- checkpoints


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.safetensors`` file into a state dict of CPU tensors, refusing anything else.

    Nothing is ever unpickled: ``.pt`` / ``.pth`` / ``.ckpt`` / ``.pkl`` files (and a pickle or
    torch.save archive renamed to ``.safetensors``) are refused by name and by content.

    Raises
    ------
    UnsafeCheckpointError
        If the file is, or looks like, a pickle-based checkpoint.
    ProjectError
        If it is missing or a corrupt safetensors file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in sf.PICKLE_SUFFIXES:
        raise UnsafeCheckpointError(
            f"Refusing to load {str(path)!r}: {suffix} checkpoints are Python pickles, and "
            "unpickling runs whatever code the file's author put in it. Only .safetensors "
            "weights are loaded. If you trust the file, convert it yourself in a separate, "
            "trusted environment: safetensors.torch.save_file(torch.load(path, "
            "weights_only=True), 'model.safetensors')."
        )
    if suffix != ".safetensors":
        raise UnsafeCheckpointError(
            f"Refusing to load {str(path)!r}: only .safetensors weight files are accepted, got "
            f"{suffix or 'no suffix'!r}."
        )
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ProjectError(f"Cannot read checkpoint {str(path)!r}: {err}.") from err
    return _tensors_from_bytes(data, str(path))


def _tensors_from_bytes(data: bytes, name: str) -> dict[str, Any]:
    problem = sf.sniff_safetensors(data, repr(name))
    if problem is not None:
        raise UnsafeCheckpointError(
            f"Refusing to load {problem}. It was not opened; only genuine safetensors files "
            "(which hold plain tensors, no code) are loaded."
        )
    from safetensors.torch import load as st_load

    try:
        return dict(st_load(data))
    except Exception as err:  # the Rust parser's errors are not a stable type
        raise ProjectError(f"Checkpoint {name} is a corrupt safetensors file: {err}.") from err


def check_state_dict(state_dict: Mapping[str, Any], config: ModelConfig) -> None:
    """Check that a state dict fits ``UNet(config)``: same keys, same shapes.

    Raises
    ------
    ProjectError
        Naming the missing/unexpected keys and mismatched shapes, and what they imply (class
        count, input channels, width, depth), so the fix is obvious.
    """
    import torch

    from ..model import UNet

    if not isinstance(config, ModelConfig):
        raise ProjectError(f"Expected a ModelConfig, got {type(config).__name__}.")
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        expected = {k: tuple(v.shape) for k, v in UNet(config).state_dict().items()}
    got = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise ProjectError(
                f"State dict entry {k!r} is a {type(v).__name__}, not a tensor; pass "
                "model.state_dict()."
            )
        got[k] = tuple(v.shape)
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    mismatched = [(k, got[k], expected[k]) for k in sorted(set(got) & set(expected))
                  if got[k] != expected[k]]  # fmt: skip
    if not (missing or unexpected or mismatched):
        return
    hints = []
    head = got.get("head.weight")
    if head is not None and len(head) == 4 and head[0] != config.n_classes:
        hints.append(f"the weights predict {head[0]} classes, the config {config.n_classes}")
    first = got.get("encoders.0.0.weight")
    if first is not None and len(first) == 4:
        if first[1] != config.in_channels:
            hints.append(
                f"the weights take {first[1]} input channels, the config {config.in_channels}"
            )
        if first[0] != config.width:
            hints.append(f"the weights have width {first[0]}, the config {config.width}")
    depth = len({k.split(".")[1] for k in got if k.startswith("encoders.")})
    if depth and depth != config.depth:
        hints.append(f"the weights have depth {depth}, the config {config.depth}")
    batch_stats = any(k.endswith("running_mean") for k in got)
    if got and batch_stats != (config.norm == "batch"):
        hints.append(f"the weights are a {'BatchNorm' if batch_stats else 'GroupNorm'} network, "
                     f"the config says norm={config.norm!r}")
    parts = []
    if mismatched:
        shown = ", ".join(f"{k}: weights {a} vs model {b}" for k, a, b in mismatched[:4])
        parts.append(f"{len(mismatched)} shape mismatch(es) ({shown})")
    if missing:
        parts.append(f"{len(missing)} missing key(s) (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[:3]})")
    raise ProjectError(
        "These weights do not fit the model configuration: " + "; ".join(parts) + "."
        + (f" In short: {'; '.join(hints)}." if hints else "")
        + " Use the ModelConfig the weights were trained with (stored in the model's .json), "
        "or train a new model for this class list."
    )


# --------------------------------------------------------------------------- the store


class ModelStore:
    """The model versions under ``models/`` of one project (see the module docstring).

    It takes the class list and colours a version is saved with from the project's
    :class:`~._settings.Settings`.
    """

    def __init__(self, store: _Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        #: ``object_floor(image_ids)``: the object floor the labelled images decide (the
        #: project's :meth:`~._instances.InstanceStore.object_floor`), given to a model
        #: saved before the floor was kept with it
        self.object_floor: Callable[[Any], float | None] | None = None

    def _model_files(self) -> dict[str, dict[str, Path]]:
        """``{version: {"json": path, "weights": path}}`` of every version-named file."""
        found: dict[str, dict[str, Path]] = {}
        for path in (self._store.folder / MODELS_DIR).glob("v*.*"):
            kind = {".json": "json", ".safetensors": "weights"}.get(path.suffix)
            if kind and _VERSION_RE.match(path.stem):
                found.setdefault(path.stem, {})[kind] = path
        return dict(sorted(found.items(), key=lambda kv: int(kv[0][1:])))

    def save_model(
        self,
        state_dict: Mapping[str, Any],
        model_config: ModelConfig,
        meta: Mapping[str, Any] | None = None,
    ) -> str:
        """Save weights as a new model version; returns its name (``"v0001"``, ...).

        Writes ``models/<version>.safetensors`` then ``models/<version>.json`` (the config,
        classes, colours, weights checksum and `meta`: training history, metrics, ...), each
        atomically; a version exists only once its JSON is there. Keys ``version``,
        ``created_at``, ``classes`` and ``colors`` of `meta` are set by the store.

        Raises
        ------
        ProjectError
            If the weights do not fit ``UNet(model_config)``, the config's class count differs
            from the project's, or `meta` is not JSON; nothing is written then.
        """
        self._store.check_writable()
        import torch
        from safetensors.torch import save as st_save

        if isinstance(model_config, Mapping):
            model_config = ModelConfig.from_dict(dict(model_config))
        if not isinstance(model_config, ModelConfig):
            raise ProjectError(f"model_config must be a ModelConfig, got {model_config!r}.")
        classes = self._settings.classes
        if model_config.n_classes != len(classes):
            raise ProjectError(
                f"The model predicts {model_config.n_classes} classes but the project has "
                f"{len(classes)} ({', '.join(classes)}); use ModelConfig(n_classes="
                f"{len(classes)})."
            )
        check_state_dict(state_dict, model_config)
        meta_doc = {k: v for k, v in dict(meta or {}).items() if k not in _RESERVED_META}
        meta_doc = jsonable(meta_doc, "meta")
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
        n_params = int(sum(v.numel() for v in tensors.values() if torch.is_floating_point(v)))
        with self._store.lock:
            files = self._model_files()
            number = max((int(v[1:]) for v in files), default=0) + 1
            version = f"v{number:04d}"
            data = st_save(tensors, metadata={"format": _MODEL_FORMAT, "version": version})
            weights = self._store.folder / MODELS_DIR / f"{version}.safetensors"
            doc = {
                "format": _MODEL_FORMAT,
                "format_version": 1,
                "version": version,
                "created_at": sf.utc_now(),
                "model_config": model_config.to_dict(),
                "classes": self._settings.classes,
                "colors": self._settings.colors,
                "weights": weights.name,
                "weights_sha256": sf.sha256_bytes(data),
                "n_parameters": n_params,
                "meta": meta_doc,
            }
            try:
                atomic.atomic_write_bytes(weights, data)
                try:
                    atomic.atomic_write_bytes(
                        weights.with_suffix(".json"),
                        json.dumps(doc, indent=1, allow_nan=False).encode(),
                    )
                except BaseException:
                    weights.unlink(missing_ok=True)
                    raise
            except OSError as err:  # e.g. a full disk: no version was made
                raise type(err)(err.errno, (
                    f"Could not save model {version} in {str(self._store.folder)!r}: "
                    f"{err.strerror or err}. No new model version was saved and the previous "
                    "models are unchanged; free some disk space (or check that the project "
                    "folder is writable) and try again."
                )) from err
            return version

    def import_model(
        self,
        path: str | os.PathLike,
        model_config: ModelConfig | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> str:
        """Import weights from a ``.safetensors`` file (e.g. another project's model).

        The config comes from `model_config`, or from the sibling ``.json`` written by
        :meth:`save_model`. Pickle-based files are refused (:func:`load_state_dict`).
        """
        self._store.check_writable()
        tensors = load_state_dict(path)
        doc: dict[str, Any] = {}
        sidecar = Path(path).with_suffix(".json")
        if sidecar.is_file():
            with contextlib.suppress(ValueError, OSError):
                doc = json.loads(sidecar.read_text())
        if model_config is None:
            if not isinstance(doc.get("model_config"), dict):
                raise ProjectError(
                    f"No model configuration for {str(path)!r}: pass model_config=ModelConfig("
                    "...) matching the weights (or keep the .json written next to them)."
                )
            model_config = ModelConfig.from_dict(doc["model_config"])
        merged = dict(doc.get("meta") or {})
        merged.update(meta or {})
        merged.setdefault("imported_from", str(Path(path).resolve()))
        return self.save_model(tensors, model_config, merged)

    def _read_model_doc(self, version: str, files: Mapping[str, Path]) -> dict[str, Any]:
        if "json" not in files:
            raise ProjectError(f"model {version} has no {version}.json (an interrupted save)")
        if "weights" not in files:
            raise ProjectError(f"model {version} has no {version}.safetensors")
        try:
            doc = json.loads(files["json"].read_text())
        except (ValueError, OSError) as err:
            raise ProjectError(f"{files['json'].name} is not valid JSON ({err})") from err
        if not isinstance(doc, dict) or doc.get("format") != _MODEL_FORMAT:
            raise ProjectError(f"{files['json'].name} is not a napari-activeseg model description")
        try:
            doc["model_config_obj"] = ModelConfig.from_dict(doc["model_config"])
        except (KeyError, TypeError, ValueError) as err:
            raise ProjectError(f"{files['json'].name} holds no valid model config ({err})") from err
        return doc

    def models(self) -> list[ModelInfo]:
        """The complete model versions, oldest first (JSON parses, weights have a safetensors
        header; checksums are verified by :meth:`load_model`)."""
        out = []
        with self._store.lock:
            for version, files in self._model_files().items():
                try:
                    doc = self._read_model_doc(version, files)
                    with open(files["weights"], "rb") as fh:
                        head = fh.read(8)
                        n = int.from_bytes(head, "little") if len(head) == 8 else 0
                        data = head + fh.read(min(n, 100 * 1024 * 1024))
                    if sf.sniff_safetensors(data + b"  ", "weights") is not None:
                        continue
                except (ProjectError, OSError):
                    continue
                out.append(ModelInfo(version, doc.get("created_at", ""),
                                     doc["model_config_obj"], list(doc.get("classes", [])),
                                     dict(doc.get("meta") or {}), files["weights"],
                                     files["json"]))  # fmt: skip
        return out

    def load_model(
        self, version: str | None = None, *,
        fits: Callable[[ModelConfig], str | None] | None = None,
    ) -> tuple[dict[str, Any], ModelConfig, dict]:
        """Load a model version: ``(state_dict, model_config, meta)``.

        Parameters
        ----------
        version : str, optional
            Default: the latest *good* version. If the latest is damaged (missing file, bad
            JSON, checksum mismatch, not safetensors) or does not fit the project (another
            class count, e.g. a checkpoint copied in by hand, or rejected by `fits`), the newest
            one that does is loaded and a :class:`ProjectWarning` says why.
        fits : callable, optional
            ``fits(model_config)`` returns None for a usable model, or why it is not (only
            used when choosing the default version).

        Returns
        -------
        state_dict : dict of str to tensor (CPU)
            Checked to fit ``UNet(model_config)``.
        model_config : ModelConfig
            As saved; one saved without ``min_object_area`` gets the floor its labelled images
            decide (:meth:`_with_floor`).
        meta : dict
            The meta saved with it, plus ``version``, ``created_at``, ``classes``, ``colors``.

        Raises
        ------
        UnsafeCheckpointError
            If the requested version's weights are not safetensors (never unpickled).
        ProjectError
            If the requested version (or, by default, every version) is unusable, or there is
            no model yet.
        """
        with self._store.lock:
            files = self._model_files()
            if version is not None:
                if version not in files:
                    raise ProjectError(
                        f"No model version {version!r} in the project; saved versions: "
                        f"{', '.join(files) or 'none yet'}."
                    )
                return self._with_floor(self._load_version(version, files[version]))
            if not files:
                raise ProjectError(
                    f"Project {str(self._store.folder)!r} has no saved model yet; train one first."
                )
            failures = []
            for candidate in reversed(list(files)):
                try:
                    loaded = self._load_version(candidate, files[candidate])
                except ProjectError as err:
                    failures.append(f"{candidate}: {err}")
                    continue
                config, n_classes = loaded[1], self._settings.n_classes
                why = (f"it was trained for {config.n_classes} classes but the project has "
                       f"{n_classes}" if config.n_classes != n_classes
                       else fits(config) if fits is not None else None)
                if why:
                    failures.append(f"{candidate}: {why}.")
                    continue
                if failures:
                    self._store.note([
                        f"Model {' / '.join(f.split(':')[0] for f in failures)} could not be "
                        f"used, so {candidate} was loaded instead. " + " ".join(failures)
                    ])  # fmt: skip
                return self._with_floor(loaded)
        raise ProjectError("No usable model in the project: " + " ".join(failures))

    def _with_floor(self, loaded: tuple[dict[str, Any], ModelConfig, dict]
                    ) -> tuple[dict[str, Any], ModelConfig, dict]:
        """A model saved without an object floor (before it was kept with the model) gets the
        one its labelled images decide now, as training would have: the images its meta lists
        that are still labelled, else every labelled image. Nothing is written."""
        state, config, meta = loaded
        if config.min_object_area is not None or self.object_floor is None:
            return loaded
        floor = self.object_floor(meta.get("labelled_ids") or None)
        return state, config.replace(min_object_area=floor), meta

    def load_unet(self, version: str | None = None, *, device: Any = "cpu") -> tuple[Any, dict]:
        """A ready :class:`~napari_activeseg.core.model.UNet` (eval mode) and its meta.

        Same choice of version (and fallback) as :meth:`load_model`; the weights are loaded
        strictly, after :func:`check_state_dict` has explained any mismatch.
        """
        from ..model import UNet

        state, config, meta = self.load_model(version)
        net = UNet(config)
        net.load_state_dict(state, strict=True)
        return net.to(device).eval(), meta

    def _load_version(
        self, version: str, files: Mapping[str, Path]
    ) -> tuple[dict[str, Any], ModelConfig, dict]:
        doc = self._read_model_doc(version, files)
        try:
            data = files["weights"].read_bytes()
        except OSError as err:
            raise ProjectError(f"cannot read {files['weights'].name}: {err}") from err
        problem = sf.sniff_safetensors(data, files["weights"].name)
        if problem is not None:
            raise UnsafeCheckpointError(
                f"Refusing to load model {version}: {problem}. It was not opened; only "
                "genuine safetensors weights are loaded."
            )
        if sf.sha256_bytes(data) != doc.get("weights_sha256"):
            raise ProjectError(
                f"{files['weights'].name} does not match the checksum in {files['json'].name} "
                "(damaged or replaced)"
            )
        tensors = _tensors_from_bytes(data, files["weights"].name)
        config = doc["model_config_obj"]
        check_state_dict(tensors, config)
        meta = dict(doc.get("meta") or {})
        meta.update(version=version, created_at=doc.get("created_at"),
                    classes=doc.get("classes"), colors=doc.get("colors"))  # fmt: skip
        return tensors, config, meta

    def check_models(self) -> list[str]:
        """Problems of the model files (an interrupted save's weights are removed, read-write)."""
        problems = []
        for version, files in self._model_files().items():
            if "json" not in files and not self._store.read_only:
                files["weights"].unlink(missing_ok=True)
                self._store.repairs.append(f"Removed models/{files['weights'].name}: an "
                                           "interrupted save (no JSON was written).")  # fmt: skip
                continue
            try:
                self._load_version(version, files)
            except ProjectError as err:
                problems.append(f"model {version}: {err}")
        models_dir = self._store.folder / MODELS_DIR
        for path in models_dir.iterdir() if models_dir.is_dir() else ():
            if path.suffix.lower() in sf.PICKLE_SUFFIXES:
                problems.append(
                    f"models/{path.name} is a pickle-based checkpoint; it is never loaded "
                    "(only .safetensors are). Delete it, or convert it in a trusted environment."
                )
        return problems
