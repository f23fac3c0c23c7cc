"""Fixtures of the reliability tests (see _util.py for the helpers they build on)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Keep CPU use modest (benchmarks may share this machine); restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
