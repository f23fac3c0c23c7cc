"""What each device gets by default, decided without a GPU: the CUDA plan is a function of the
free memory, the CPU keeps the configurations' own defaults and copies nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_activeseg.core import device as dev
from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.device import (
    DevicePlan,
    device_plan,
    pin_memory,
    plan_for_memory,
    to_device,
    train_bytes,
)
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession

GIB = 2**30


def test_cpu_plan_is_the_configurations_defaults():
    plan = device_plan("cpu")
    assert (plan.device, plan.amp, plan.pin_memory) == ("cpu", False, False)
    assert plan.width == ModelConfig().width == 8
    assert plan.batch_size == TrainConfig().batch_size == 16
    assert plan.tile_batch == InferenceConfig().batch_size == 4
    assert "CPU" in plan.name and plan.free_mb is None


@pytest.mark.parametrize(("free_gib", "width", "batch", "tiles"), [
    (0.5, 8, 8, 4),     # 256 MiB budget: batch 16 of width 8 (~403 MB) does not fit
    (1, 8, 16, 4),
    (2, 16, 16, 4),     # width 16 from 2 GiB; batch 32 (~1.6 GB) is over half of it
    (4, 32, 16, 8),
    (8, 32, 32, 16),
    (16, 32, 64, 16),
    (139, 32, 64, 16),  # capped: an H200 gets the same as a 16 GiB card
])
def test_cuda_plan_grows_with_the_free_memory(free_gib, width, batch, tiles):
    plan = plan_for_memory(int(free_gib * GIB), name="test GPU")
    assert (plan.width, plan.batch_size, plan.tile_batch) == (width, batch, tiles)
    assert plan.amp and plan.pin_memory and plan.device == "cuda"
    assert plan.free_mb == int(free_gib * 1024)
    # the batch's estimated step takes at most half the free memory, and twice it would not
    assert train_bytes(width, batch) <= free_gib * GIB / 2
    assert batch == 64 or train_bytes(width, 2 * batch) > free_gib * GIB / 2


def test_train_bytes_is_linear_in_width_batch_and_pixels():
    base = train_bytes(8, 16, 128)
    assert train_bytes(16, 16, 128) == 2 * base
    assert train_bytes(8, 32, 128) == 2 * base
    assert train_bytes(8, 16, 256) == 4 * base


def test_cpu_copies_nothing_and_pins_nothing():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = to_device(x, torch.device("cpu"))
    assert t.data_ptr() == x.__array_interface__["data"][0]  # the array itself
    assert to_device(t, torch.device("cpu")) is t
    assert not pin_memory(torch.device("cpu"))
    assert pin_memory(torch.device("cuda"))  # a decision on the device type, no GPU needed


def _project(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"img{i}": (rng.random((32, 32)) * 255).astype(np.uint8) for i in range(2)}
    return Project.create(tmp_path / "p", arrays=arrays)


def test_a_new_session_on_a_cpu_keeps_the_defaults(tmp_path):
    with _project(tmp_path) as project:
        s = ActiveLearningSession(project)
        assert s.model_config.width == ModelConfig().width
        assert s.train_config == TrainConfig()
        assert s.inference_config == InferenceConfig()


def test_a_new_session_on_a_gpu_takes_the_plan_and_saves_it(tmp_path, monkeypatch):
    gpu = DevicePlan("cuda", "test GPU", width=32, batch_size=64, tile_batch=16, amp=True,
                     pin_memory=True, free_mb=16384)
    monkeypatch.setattr(dev, "device_plan", lambda device="auto": gpu)
    with _project(tmp_path) as project:
        s = ActiveLearningSession(project)
        assert (s.model_config.width, s.train_config.batch_size,
                s.inference_config.batch_size) == (32, 64, 16)
        assert s.train_config.amp and s.inference_config.amp
    with Project.open(tmp_path / "p") as project:  # saved: the project keeps its network
        monkeypatch.setattr(dev, "device_plan", lambda device="auto": device_plan("cpu"))
        assert ActiveLearningSession(project).model_config.width == 32
