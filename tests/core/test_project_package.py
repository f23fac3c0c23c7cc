"""The shape of the project package: a facade over small stores, loaded lazily.

Behaviour is tested in test_project.py through :class:`Project`; these tests keep the facade
honest (each public method is a store's, with its docstring) and the package cheap to import.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

import napari_activeseg.core.project as project_package
from napari_activeseg.core.project import Project


def test_importing_the_palette_opens_no_store():
    code = (
        "import sys, json\n"
        "from napari_activeseg.core.project import DEFAULT_COLORS, default_colors\n"
        "assert default_colors(3)[:2] == list(DEFAULT_COLORS[:2])\n"
        "mods = ('tifffile', 'sqlite3', 'napari_activeseg.core.project._store',\n"
        "        'napari_activeseg.core.project._project')\n"
        "print(json.dumps([m for m in mods if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("name", project_package.__all__)
def test_every_exported_name_resolves(name):
    assert getattr(project_package, name) is not None


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        project_package.nope  # noqa: B018


def _public(cls) -> list[str]:
    return [n for n in vars(cls) if not n.startswith("_")]


def test_each_forwarded_method_keeps_its_store_signature_and_docstring():
    forwarded = [n for n in _public(Project) if hasattr(getattr(Project, n), "__wrapped__")]
    assert len(forwarded) >= 40
    for name in forwarded:
        method = getattr(Project, name)
        store_method = method.__wrapped__
        assert store_method.__name__ == name
        assert method.__doc__ and method.__doc__ == store_method.__doc__, name
        assert inspect.signature(method) == inspect.signature(store_method), name


def test_properties_are_documented():
    for name in ("classes", "n_classes", "colors", "channels"):
        assert isinstance(vars(Project)[name], property)
        assert vars(Project)[name].__doc__, name
