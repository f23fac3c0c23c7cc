"""Speed of the core: prediction, MC-dropout cost, pool scoring, training throughput, memory.

Medians of repeated runs (the machines are shared and noisy). Writes a JSON with the keys:

- ``predict_512_ms``: one 512x512 image, one deterministic pass (tiled predict, default model);
- ``mc8_cost_ratio``: T = 8 MC-dropout uncertainty (BALD) / one pass, default dropout placement;
- ``mc8_naive_ratio``: the same with T independent full passes (the textbook way), for reference;
- ``score_pool_images_per_s``: 512x512 images scored per second (entropy, and BALD with T = 8);
- ``train_patches_per_s``: 256x256 patches per second in training at batch 8;
- ``train_default_steps_per_s``: optimiser steps per second with the default training config;
- ``predict_4096_peak_mb``: peak resident-memory increase while predicting a 4096x4096 image;
- ``cpu_efficiency``: achieved forward GFLOP/s of the U-Net / torch float32 matmul GFLOP/s
  measured in the same run.

Usage::

    python benchmarks/speed.py --json bench_out/speed.json [--repeats 5] [--tiny]

``--tiny`` runs a very small configuration in seconds (used by the test that checks the script
runs and writes its keys); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch

from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.inference import predict
from napari_activeseg.core.model import UNet, unet_gflops
from napari_activeseg.core.training import Trainer


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_gflops(n: int, repeats: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = _median_time(lambda: a @ b, repeats)
    return 2 * n**3 / t / 1e9


def peak_rss_increase_mb(fn) -> float:
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return (peak[0] - base) / 2**20


def train_throughput(mcfg: ModelConfig, tcfg: TrainConfig, images, labels, steps: int) -> float:
    """Optimiser steps per second over ``steps`` steps (after 2 warm-up steps)."""
    trainer = Trainer(mcfg, tcfg.replace(max_steps=steps + 2, time_budget_s=None))
    gen = trainer.fit(images, labels)
    t_start = None
    for rec in gen:
        if rec.step == 2:
            t_start = time.perf_counter()
    return steps / (time.perf_counter() - t_start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke configuration")
    args = p.parse_args(argv)
    tiny = args.tiny
    reps = 1 if tiny else args.repeats
    size = 64 if tiny else 512
    big = 256 if tiny else 4096
    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    mcfg = ModelConfig(in_channels=3)
    model = UNet(mcfg).eval()
    img = rng.random((3, size, size), dtype=np.float32)
    icfg = InferenceConfig()
    out: dict = {
        "machine": f"{platform.node()}, {platform.machine()}, {torch.get_num_threads()} torch "
                   f"threads, torch {torch.__version__}, device cpu",
        "model": mcfg.to_dict(),
        "tiny": tiny,
    }

    one = _median_time(lambda: predict(model, img, config=icfg), reps)
    out["predict_512_ms"] = round(one * 1e3, 1)
    mc = _median_time(lambda: predict(model, img, mode="mc", maps=("bald",), config=icfg), reps)
    out["mc8_cost_ratio"] = round(mc / one, 2)

    def naive_mc():
        model.mc_dropout = True
        try:
            with torch.inference_mode():
                x = torch.from_numpy(img)[None]
                torch.stack([torch.softmax(model(x), 1) for _ in range(icfg.mc_samples)])
        finally:
            model.mc_dropout = False

    out["mc8_naive_ratio"] = round(_median_time(naive_mc, reps) / one, 2)

    n_pool = 2 if tiny else 8
    pool = [rng.random((3, size, size), dtype=np.float32) for _ in range(n_pool)]
    ent = _median_time(lambda: [predict(model, im, config=icfg) for im in pool], max(1, reps // 2))
    bald = _median_time(lambda: [predict(model, im, mode="mc", maps=("bald", "entropy"),
                                         config=icfg) for im in pool], max(1, reps // 2))
    out["score_pool_images_per_s"] = {"entropy": round(n_pool / ent, 2),
                                      "bald": round(n_pool / bald, 2)}

    # training throughput on synthetic data: 256x256 patches at batch 8, and the default config
    timgs = [rng.random((3, 300, 300), dtype=np.float32) for _ in range(4)]
    tlabs = [(rng.random((300, 300)) > 0.8).astype(np.uint8) for _ in range(4)]
    steps = 2 if tiny else 10
    sps = train_throughput(mcfg, TrainConfig(patch_size=256, batch_size=8), timgs, tlabs, steps)
    out["train_patches_per_s"] = round(sps * 8, 2)
    default = TrainConfig()
    sps_d = train_throughput(mcfg, default, timgs, tlabs, steps * 3)
    out["train_default_steps_per_s"] = round(sps_d, 2)
    out["train_default_patches256_per_s"] = round(
        sps_d * default.batch_size * (default.patch_size / 256) ** 2, 2)

    big_img = rng.random((3, big, big), dtype=np.float32)
    out["predict_4096_peak_mb"] = round(
        peak_rss_increase_mb(lambda: predict(model, big_img, maps=("entropy",), config=icfg)), 1)
    out["predict_4096_image_input_mb"] = round(big_img.nbytes / 2**20, 1)

    gflop = unet_gflops(mcfg, size, size)
    with torch.inference_mode():
        x = torch.from_numpy(img)[None]
        fwd = _median_time(lambda: model(x), reps)
    achieved = gflop / fwd
    peak = matmul_gflops(256 if tiny else 1024, reps)
    out["forward_gflops"] = round(achieved, 2)
    out["matmul_gflops"] = round(peak, 2)
    out["cpu_efficiency"] = round(achieved / peak, 3)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
