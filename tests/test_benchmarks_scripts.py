"""The benchmark scripts run and write their keys (tiny configurations; numbers not checked)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEED_KEYS = {
    "predict_512_ms", "mc8_cost_ratio", "mc8_naive_ratio", "score_pool_images_per_s",
    "train_patches_per_s", "predict_4096_peak_mb", "cpu_efficiency",
}


def test_speed_script_writes_its_keys(tmp_path, monkeypatch):
    out = tmp_path / "speed.json"
    monkeypatch.setattr(sys, "argv", ["speed.py", "--tiny", "--json", str(out)])
    try:
        runpy.run_path(str(ROOT / "benchmarks" / "speed.py"), run_name="__main__")
    except SystemExit as exc:
        assert exc.code == 0
    data = json.loads(out.read_text())
    assert SPEED_KEYS <= set(data)
    assert data["predict_512_ms"] > 0 and data["mc8_cost_ratio"] > 0
    assert 0 < data["cpu_efficiency"] < 5
