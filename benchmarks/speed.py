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
  measured in the same run;
- ``round_s``: wall time of one default training round after a submission (warm start from the
  previous round's model, default ``TrainConfig``), on a project of real images (``--data``,
  the DSB 2018 nuclei beside the checkout by default; synthetic blobs without it), with
  ``round_rescore_s`` (re-scoring the rest of the pool with the default strategy afterwards:
  the user's whole wait for the next suggestion);
- ``mc_rank_spearman``: Spearman rank correlation over that project's unlabelled images between
  the image scores from the fast MC dropout (deterministic part once, T samples folded into the
  head) and from T naive full stochastic passes with the same dropout masks, for BALD and
  variance, with the model trained for ``round_s``; ``mc_rank_spearman_mask_sets`` compares
  the fast scores of two different sets of T masks (how much the ranking depends on the draw),
  and ``..._t32`` the same with T = 32;
- ``device``: the device the figures were taken on and the settings it gets by default
  (``core.device.device_plan``: name, AMP on/off, training batch, U-Net width, tile batch,
  pinned copies, free memory on CUDA); the model and batches measured here use them;
- ``gui_max_stall_ms``: the longest gap of a 10 ms QTimer in a real napari viewer with
  continuous training on: the dock trains by itself, re-scores the pool for each published
  model in the background, and a submission made during the first round is learnt by the next
  (``benchmarks/gui_stall.py`` in a subprocess; under ``xvfb-run`` when there is no display);
  ``model_lag_s`` from the same runs: that submission -> the first published model trained on
  it (``ContinuousTrainer.model_lag_s``; the rounds' budget is in ``gui_detail``). Skipped
  with ``--no-gui``; ``gui_max_stall_after_first_view_ms``: the same after the first image
  the dock shows has been drawn (its layers are added then, a one-off cost of napari);
- ``submit_to_next_ms``: Submit pressed -> the next suggestion's layers on screen in a real
  viewer, on pools of 40 and 500 images of 256x256 (median and max over 5 submissions each;
  ``benchmarks/submit_next.py`` in a subprocess, the default strategy in box mode; one small
  pool with ``--tiny``). Skipped with ``--no-gui``;
- ``rescore_500_s``: re-scoring 500 images of 256x256 with the default strategy after a new
  model, on the CPU, in box mode (whole images in ``rescore_detail``), with the cost it
  stated before it ran (not with ``--tiny``).

Usage::

    python benchmarks/speed.py --json bench_out/speed.json [--repeats 5] [--tiny]
        [--data DIR] [--no-gui]

``--tiny`` runs a very small configuration in seconds (used by the test that checks the script
runs and writes its keys); its numbers mean nothing. Run it on an idle machine: the timings of
a loaded machine measure the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.device import device_plan
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


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from submit_next import blobs  # the synthetic images the GUI probe uses too

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dsb2018_nuclei"


class NaiveMC(torch.nn.Module):
    """The textbook MC dropout: T full stochastic forward passes (for comparison only).

    Given the fast path's masks (``head_masks``), pass t runs the whole network and applies
    mask t before the head, so both compute the same T samples the two ways.
    """

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net, self.config = net, net.config

    def forward(self, x):
        return self.net(x)

    def head_masks(self, samples: int, seed: int | None = 0):
        return self.net.head_masks(samples, seed)

    def mc_forward(self, x, samples: int, *, masks=None):
        if masks is None:
            prev = self.net.mc_dropout
            self.net.mc_dropout = True
            try:
                return torch.stack([self.net(x) for _ in range(samples)])
            finally:
                self.net.mc_dropout = prev
        p, head, out = self.net.config.dropout, self.net.head, []
        for t in range(samples):
            _, feats = self.net.forward_with_features(x)  # a whole pass, every time
            keep = masks[t].to(feats.dtype)[None, :, None, None] / (1 - p)
            out.append(torch.nn.functional.conv2d(feats * keep, head.weight, head.bias))
        return torch.stack(out)


def _round_project(data: Path | None, tiny: bool, folder: Path):
    """A project of ``n`` images with their ground truth: real ones from ``data`` if given."""
    from napari_activeseg.core.project import Project

    if data is not None:
        from napari_activeseg.evaluation.dataset import load_dataset

        ds = load_dataset(data, max_images=12 if tiny else 40)
        project = Project.create(folder, images=[ds.root / "images" / n for n in ds.names])
        by_name = dict(zip(ds.names, ds.masks, strict=True))
        truth = {r.id: by_name[r.name] for r in project.images()}
        return project, truth, f"{len(ds)} images of {ds.root.name}"
    size = 64 if tiny else 384
    arrays, masks = blobs(12 if tiny else 40, size, disks=6 if tiny else 30)
    project = Project.create(folder, arrays=arrays)
    return project, {r.id: masks[r.name] for r in project.images()}, \
        f"{len(arrays)} synthetic {size}x{size} blob images"


def round_and_ranking(data: Path | None, tiny: bool) -> dict:
    """``round_s`` (+ re-scoring) after a submission, then MC ranking: fast vs naive."""
    from scipy.stats import spearmanr

    from napari_activeseg.core.progress import run_to_end
    from napari_activeseg.core.session import ActiveLearningSession
    from napari_activeseg.core.strategies import StrategyContext, build_candidates, get_strategy

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="activeseg-speed-") as tmp:
        project, truth, what = _round_project(data, tiny, Path(tmp) / "p")
        with project:
            kw = {}
            if tiny:
                kw = dict(model_config=ModelConfig(in_channels=project.images()[0].shape[-1]
                                                   if len(project.images()[0].shape) == 3
                                                   else 1, width=4, depth=2),
                          train_config=TrainConfig(patch_size=32, batch_size=2, max_steps=3,
                                                   time_budget_s=None))
            session = ActiveLearningSession(project, **kw)
            ids = [r.id for r in project.images()]
            for i in ids[:4]:
                session.submit(i, truth[i])
            first = session.train_config.replace(max_steps=2 if tiny else 80, time_budget_s=None)
            run_to_end(session.train(train_config=first))  # the previous round (not timed)
            pick = session.suggest(1)[0].image_id  # the default strategy's next suggestion
            session.submit(pick, truth[pick])
            t0 = time.perf_counter()
            summary = run_to_end(session.train())  # one default round, warm start
            out["round_s"] = round(time.perf_counter() - t0, 3)
            t1 = time.perf_counter()
            n_scored = run_to_end(session.score_pool())
            out["round_rescore_s"] = round(time.perf_counter() - t1, 3)
            out["round_detail"] = {
                "project": what, "labelled": 5, "steps": summary.result.steps,
                "stop_reason": summary.result.stop_reason, "rescored_images": n_scored,
                "train_config": "TrainConfig() defaults" if not tiny else "tiny",
                "strategy": session.strategy.name}

            model = session.model
            pool = [i for i in ids if i not in project.labelled_ids()]
            rho, noise, noise32 = {}, {}, {}
            icfg = session.inference_config
            for name in ("bald", "variance"):
                strategy = get_strategy(name)

                def scores(net, seed, samples=icfg.mc_samples, strategy=strategy):
                    cfg = icfg.replace(mc_seed=seed, mc_samples=samples)
                    cands = [c for i in pool for c in build_candidates(
                        strategy, str(i), session.prepared(i), net, inference_config=cfg)]
                    return strategy.score(cands, StrategyContext(round=1))

                fast, naive = scores(model, 0), scores(NaiveMC(model), 0)
                rho[name] = round(float(spearmanr(fast, naive).statistic), 3)
                # how much the ranking depends on which T masks were drawn
                noise[name] = round(float(spearmanr(fast, scores(model, 1)).statistic), 3)
                noise32[name] = round(float(spearmanr(scores(model, 0, 32),
                                                      scores(model, 1, 32)).statistic), 3)
            out["mc_rank_spearman"] = rho
            out["mc_rank_spearman_mask_sets"] = noise
            out["mc_rank_spearman_mask_sets_t32"] = noise32
            out["mc_rank_detail"] = {
                "images": len(pool), "samples": icfg.mc_samples,
                "dropout": f"{model.config.dropout_mode} dropout p={model.config.dropout}, "
                           f"head={model.config.dropout_head}, decoder stages="
                           f"{model.config.dropout_decoder}"}
    return out


def _gui_script(name: str, args: list[str]) -> tuple[dict | None, str]:
    """Run a GUI probe of benchmarks/ in a subprocess (under xvfb-run when there is no
    display); its last JSON line, or None and why not."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / name), *args]
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        if shutil.which("xvfb-run") is None:
            return None, "no display and no xvfb-run"
        cmd = ["xvfb-run", "-a", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return None, f"{name} failed ({proc.returncode}): {proc.stderr[-500:]}"
    return json.loads(lines[-1]), ""


def gui_stall(tiny: bool, repeats: int = 3) -> dict:
    """Run benchmarks/gui_stall.py in subprocesses (xvfb-run when there is no display).

    ``gui_max_stall_ms`` is the median over ``repeats`` runs (one when tiny) of each run's
    longest stall while the workers run; ``gui_detail`` keeps every run's figures, including
    ``gui_idle_max_stall_ms`` (the viewer with no worker, after the widget opened).
    """
    runs = []
    for _ in range(1 if tiny else repeats):
        run, note = _gui_script("gui_stall.py", ["--tiny"] if tiny else [])
        if run is None:
            return {"gui_max_stall_ms": None, "model_lag_s": None, "gui_note": note}
        runs.append(run)
    stalls = [r["gui_max_stall_ms"] for r in runs]
    steady = [r["gui_max_stall_after_first_view_ms"] for r in runs
              if r.get("gui_max_stall_after_first_view_ms") is not None]
    lags = [lag for r in runs for lag in r["model_lag_s"]]
    return {"gui_max_stall_ms": statistics.median(stalls), "gui_max_stall_runs_ms": stalls,
            "gui_max_stall_after_first_view_ms": statistics.median(steady) if steady else None,
            "model_lag_s": statistics.median(lags) if lags else None, "model_lag_runs_s": lags,
            "gui_detail": runs}


def submit_to_next(tiny: bool, pools=(40, 500), submissions: int = 5) -> dict:
    """``submit_to_next_ms``: Submit pressed -> the next suggestion's layers on screen, in a
    real viewer (benchmarks/submit_next.py), median and max over ``submissions`` per pool
    size (one small pool when tiny); ``submit_to_next_detail`` keeps each run."""
    out, detail = {}, {}
    for n in (["tiny"] if tiny else pools):
        args = ["--tiny"] if tiny else ["--images", str(n), "--submissions", str(submissions)]
        run, note = _gui_script("submit_next.py", args)
        if run is None:
            return {"submit_to_next_ms": None, "submit_to_next_note": note}
        out[str(n)] = {"median": run["median_ms"], "max": run["max_ms"]}
        detail[str(n)] = run
    return {"submit_to_next_ms": out, "submit_to_next_detail": detail}


def rescore_500(n: int = 500) -> dict:
    """``rescore_500_s``: a CPU re-score of ``n`` 256x256 images with the default strategy
    after a new model (the default model trained one short round), in the dock's default box
    mode; ``rescore_detail`` has the cost the scoring stated before it ran and the same for
    whole images (``whole_s``; predictions dropped in between, so both predict the pool)."""
    from napari_activeseg.core.progress import run_to_end
    from napari_activeseg.core.project import Project
    from napari_activeseg.core.session import ActiveLearningSession

    arrays, masks = blobs(n, 256)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="activeseg-rescore-") as tmp, \
            Project.create(Path(tmp) / "p", arrays=arrays) as project:
        session = ActiveLearningSession(project, train_config=TrainConfig(
            max_steps=30, time_budget_s=None))
        ids = [r.id for r in project.images()]
        for i in ids[:3]:
            session.submit(i, masks[project.get_image(i).name])
        run_to_end(session.train())
        for what, regions in (("boxes", True), ("whole", False)):
            session.configure(inference_config=session.inference_config)  # drop predictions
            records: list = []
            t0 = time.perf_counter()
            scored = run_to_end(session.score_pool(regions=regions), records.append)
            out[what] = {"seconds": round(time.perf_counter() - t0, 1), "images": scored,
                         "stated": records[0].message if records else ""}
        size = session.region_size
    return {"rescore_500_s": out["boxes"]["seconds"],
            "rescore_detail": {**out, "strategy": session.strategy.name,
                               "region_size": size,
                               "budget_s": session.scoring_budget_s}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke configuration")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                   help="benchmark folder (images/ + masks/) for round_s and the MC ranking")
    p.add_argument("--no-gui", action="store_true", help="skip gui_max_stall_ms")
    args = p.parse_args(argv)
    tiny = args.tiny
    reps = 1 if tiny else args.repeats
    size = 64 if tiny else 512
    big = 256 if tiny else 4096
    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    plan = device_plan()  # what a new project gets here: the CPU's defaults, or a GPU's
    mcfg = ModelConfig(in_channels=3, width=plan.width)
    model = UNet(mcfg).eval()
    img = rng.random((3, size, size), dtype=np.float32)
    icfg = InferenceConfig(batch_size=plan.tile_batch)
    out: dict = {
        "machine": f"{platform.node()}, {platform.machine()}, {torch.get_num_threads()} torch "
                   f"threads, torch {torch.__version__}, device {plan.device}",
        "device": {**plan.to_dict(), "amp": plan.amp and TrainConfig().amp},
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
                x = torch.from_numpy(img)[None].to(next(model.parameters()).device)
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
    default = TrainConfig(batch_size=plan.batch_size)
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
        x = torch.from_numpy(img)[None].to(next(model.parameters()).device)
        fwd = _median_time(lambda: model(x), reps)
    achieved = gflop / fwd
    peak = matmul_gflops(256 if tiny else 1024, reps)
    out["forward_gflops"] = round(achieved, 2)
    out["matmul_gflops"] = round(peak, 2)
    out["cpu_efficiency"] = round(achieved / peak, 3)

    out.update(round_and_ranking(args.data, tiny))
    if not tiny:
        out.update(rescore_500())
    if not args.no_gui:
        out.update(gui_stall(tiny))
        out.update(submit_to_next(tiny))

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
