"""Packaging: the manifest is found and valid, its python_names import, imports stay light."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_distribution("napari-activeseg")


def test_installed_package_finds_the_manifest():
    mf = _manifest()
    assert mf.name == "napari-activeseg"
    # the packaged manifest is the repository's top-level napari.yaml, not a copy that drifts
    import napari_activeseg

    packaged = Path(napari_activeseg.__file__).parent / "napari.yaml"
    assert packaged.read_text() == (ROOT / "napari.yaml").read_text()


def test_every_python_name_in_the_manifest_imports():
    mf = _manifest()
    names = [c.python_name for c in mf.contributions.commands or []]
    assert names, "the manifest contributes no command"
    for name in names:
        module, _, attr = name.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), name


def _loaded_after(statement: str) -> dict:
    code = (
        f"import sys, json\n{statement}\n"
        "mods = ('torch', 'napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'magicgui')\n"
        "print(json.dumps({m: m in sys.modules for m in mods}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_package_loads_no_torch_qt_or_napari():
    loaded = _loaded_after("import napari_activeseg")
    assert not any(loaded.values()), loaded


@pytest.mark.parametrize("module", [
    "napari_activeseg.core.model",
    "napari_activeseg.core.training",
    "napari_activeseg.core.inference",
    "napari_activeseg.core.uncertainty",
    "napari_activeseg.core.imageio",
])
def test_core_modules_load_no_qt_or_napari(module):
    loaded = _loaded_after(f"import {module}")
    assert not any(v for k, v in loaded.items() if k != "torch"), loaded


def test_sample_data_is_bundled_and_cited():
    from napari_activeseg._sample_data import SAMPLE_DIR, nuclei_samples, nuclei_with_masks

    layers = nuclei_samples()
    assert len(layers) >= 5
    for data, kwargs, kind in layers:
        assert kind == "image" and data.ndim == 3 and data.shape[-1] == 3
    image, mask = nuclei_with_masks()
    assert mask[2] == "labels" and set(map(int, set(mask[0].ravel()))) <= {0, 1}
    assert mask[0].any()
    assert "CC0" in (SAMPLE_DIR / "README.md").read_text()
    size = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file())
    assert size < 3_000_000


def test_cli_info_runs():
    out = subprocess.run([sys.executable, "-m", "napari_activeseg.cli", "info"],
                         capture_output=True, text=True, check=True)
    assert "napari-activeseg" in out.stdout and "device" in out.stdout
    # the defaults a new project gets on this machine's device (a CPU here: its own)
    assert "U-Net width 8, batch 16" in out.stdout and "mixed precision off" in out.stdout
