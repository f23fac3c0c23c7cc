"""The benchmark scripts run and write their keys (tiny configurations; numbers not checked)."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEED_KEYS = {
    "predict_512_ms", "mc8_cost_ratio", "mc8_naive_ratio", "score_pool_images_per_s",
    "train_patches_per_s", "predict_4096_peak_mb", "cpu_efficiency", "round_s",
    "round_rescore_s", "mc_rank_spearman", "mc_rank_spearman_mask_sets", "gui_max_stall_ms",
    "submit_to_next_ms", "model_lag_s", "device",
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
    timings = ("predict_512_ms", "mc8_cost_ratio", "cpu_efficiency", "round_s",
               "round_rescore_s")
    assert all(isinstance(data[k], (int, float)) and math.isfinite(data[k]) for k in timings)
    # the round it timed is the one it describes: 5 labelled images, trained to its step cap,
    # then every other image of the project re-scored
    detail = data["round_detail"]
    assert detail["labelled"] == 5 and detail["stop_reason"] == "budget"
    assert detail["rescored_images"] > 0
    assert set(data["mc_rank_spearman"]) == {"bald", "variance"}
    # fast and naive MC compute the same samples (same masks): the same ranking
    assert all(v > 0.99 for v in data["mc_rank_spearman"].values()), data["mc_rank_spearman"]
    # the GUI probe ran a real viewer in a subprocess (pytest-xvfb gives it a display)
    assert data["gui_max_stall_ms"] is not None, data.get("gui_note")
    assert [r["finished"] for r in data["gui_detail"]] == [True]  # --tiny: one run
    assert data["gui_max_stall_runs_ms"] == [data["gui_max_stall_ms"]]
    assert "gui_idle_max_stall_ms" in data["gui_detail"][0]
    # with continuous training: the submission made during the first round was learnt by a
    # published model, and its wait is the figure
    assert data["model_lag_s"] == data["model_lag_runs_s"][0] > 0
    assert len(data["gui_detail"][0]["rounds"]) >= 2
    # the device and the settings the figures were taken with (this machine: a CPU)
    dev = data["device"]
    assert (dev["device"], dev["amp"], dev["batch_size"], dev["width"]) == ("cpu", False, 16, 8)
    assert data["model"]["width"] == dev["width"]
    # Submit -> next suggestion was measured in a real viewer, on the one tiny pool
    assert data["submit_to_next_ms"] is not None, data.get("submit_to_next_note")
    assert set(data["submit_to_next_ms"]) == {"tiny"}
    tiny_run = data["submit_to_next_detail"]["tiny"]
    assert tiny_run["finished"] and len(tiny_run["submit_to_next_ms"]) == 2


def test_vessel_width_measures_bars_and_bins_them():
    import numpy as np

    ns = runpy.run_path(str(ROOT / "benchmarks" / "vessel_width.py"))
    mask = np.zeros((40, 60), np.uint8)
    mask[5, 5:55] = 1  # a line 1 px thick
    mask[20:27, 5:55] = 1  # a bar 7 px thick
    width = ns["local_width"](mask)
    assert width[5, 30] == 1.0
    assert (width[20:27, 30] == 7.0).all()  # every pixel across the bar: its width
    assert width[5, 30] < 3 <= 6 <= width[23, 30]
    assert (width[mask == 0] == 0).all()
    middle = slice(10, 50)  # away from the ends, where a skeleton stops short
    line = ns["width_bin"](width[5, middle], [3, 6])
    bar = ns["width_bin"](width[20:27, middle], [3, 6])
    assert (line == 0).all()  # thin
    assert (bar == 2).mean() > 0.95  # thick (a skeleton's spur may give a pixel less)
