"""Every strategy, end to end on a tiny real (untrained) U-Net: images -> candidates -> picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_activeseg.core.config import InferenceConfig
from napari_activeseg.core.model import UNet
from napari_activeseg.core.strategies import (
    Pick,
    StrategyContext,
    available_strategies,
    build_candidates,
    get_strategy,
)

from .conftest import TINY

CFG = InferenceConfig(mc_samples=4, device="cpu", amp=False)
# keep the expensive one tiny: 2 probes of 5 steps
OPTIONS = {"task_similarity": {"n_probes": 2, "probe_steps": 5, "probe_patch": 32}}


@pytest.fixture
def committee():
    torch.manual_seed(1)
    return [UNet(TINY).eval(), UNet(TINY).eval()]


@pytest.mark.parametrize("name", available_strategies())
def test_strategy_end_to_end_on_a_tiny_model(name, tiny_model, tiny_images, committee):
    images, labels = tiny_images
    strategy = get_strategy(name, **OPTIONS.get(name, {}))
    cands = []
    for i, img in enumerate(images):
        labelled = i == 0  # image 0 is labelled: context for coreset / alges / task_similarity
        cands += build_candidates(strategy, f"img{i}", img, tiny_model, committee=committee,
                                  inference_config=CFG, labelled=labelled,
                                  labels=labels[0] if labelled else None)
    for c in cands:
        assert c.probs.shape == (2, 32, 32)
        for m in strategy.required_maps:
            assert c.maps[m].shape == (32, 32)
    picks = strategy.select(cands, k=2, context=StrategyContext(round=1))
    assert len(picks) == 2 and all(isinstance(p, Pick) for p in picks)
    assert [p.rank for p in picks] == [1, 2]
    assert len({p.key for p in picks}) == 2
    assert all(p.key in {"img1", "img2", "img3"} for p in picks)  # never the labelled one
    assert all(isinstance(p.reason, str) and p.reason and "\n" not in p.reason for p in picks)
    assert all(np.isfinite(p.score) for p in picks)


@pytest.mark.parametrize("name", ["entropy", "badge", "alges", "coreset"])
def test_region_candidates_end_to_end(name, tiny_model, tiny_images):
    image = np.concatenate(tiny_images[0][:2], axis=-1)  # (1, 32, 64): two 32x32 windows
    strategy = get_strategy(name, cost_aware=True)
    cands = build_candidates(strategy, "wide", image, tiny_model, inference_config=CFG,
                             region_size=32, min_region_size=16)
    assert [c.box for c in cands] == [(0, 0, 32, 32), (0, 32, 32, 64)]
    if strategy.needs_labelled_set:
        lab = build_candidates(strategy, "lab", tiny_images[0][2], tiny_model,
                               inference_config=CFG, labelled=True)
        cands += lab
    picks = strategy.select(cands, k=2)
    assert {p.box for p in picks} == {(0, 0, 32, 32), (0, 32, 32, 64)}
    assert all(p.image_id == "wide" for p in picks)
