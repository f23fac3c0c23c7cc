"""The self-supervised warm-up (core.pretrain): masked blocks, what it learns, what it leaves
alone, and the session's first round starting from it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_activeseg.core.config import ModelConfig, TrainConfig
from napari_activeseg.core.model import UNet
from napari_activeseg.core.pretrain import mask_blocks, pretrain
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession

CFG = ModelConfig(in_channels=1, n_classes=2, width=4, depth=2)


def _stripes(n: int, shape=(64, 72), seed=0) -> list[np.ndarray]:
    """Smooth oriented stripes: a masked block is predictable from its neighbours."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    out = []
    for _ in range(n):
        a, f, p = rng.uniform(0, np.pi), rng.uniform(0.1, 0.3), rng.uniform(0, 6.3)
        img = 0.5 + 0.4 * np.sin(f * (np.cos(a) * yy + np.sin(a) * xx) + p)
        out.append(img[None].astype(np.float32))
    return out


def test_masked_blocks_are_whole_blocks_at_the_asked_share():
    m = mask_blocks((70, 50), np.random.default_rng(0), block=8, ratio=0.5)
    assert m.shape == (70, 50) and m.dtype == bool
    for y in range(0, 70, 8):  # each block is all masked or all kept
        for x in range(0, 50, 8):
            blk = m[y:y + 8, x:x + 8]
            assert blk.all() or not blk.any()
    big = mask_blocks((800, 800), np.random.default_rng(1), block=8, ratio=0.3)
    assert abs(big.mean() - 0.3) < 0.03
    assert not mask_blocks((16, 16), np.random.default_rng(0), ratio=0.0).any()


def test_the_warm_up_learns_to_fill_blocks_and_leaves_the_class_head_alone():
    images = _stripes(6)
    cfg = CFG.replace(width=8)
    res = pretrain(cfg, images, steps=150, patch_size=32, batch_size=8, seed=3, num_threads=1)
    assert res.steps == 150 and len(res.history) == 150
    # the masked-pixel error (in units of each crop's variance) falls below guessing the
    # crop's mean, which scores 1 (0.52 here)
    assert np.mean(res.history[-10:]) < 0.8 < 1.0 < np.mean(res.history[:3])
    torch.manual_seed(3)
    fresh = UNet(cfg).state_dict()
    for name, value in res.state_dict.items():
        same = torch.equal(value, fresh[name])
        assert same == name.startswith("head."), name  # only the class head is untouched
    UNet(cfg).load_state_dict(res.state_dict)  # a U-Net of the config takes the weights


def test_a_stopped_warm_up_returns_the_initial_weights_and_bad_input_is_refused():
    stop = threading.Event()
    stop.set()
    res = pretrain(CFG, _stripes(2), steps=50, patch_size=32, stop=stop, seed=0)
    assert res.steps == 0 and res.history == []
    torch.manual_seed(0)
    fresh = UNet(CFG).state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in res.state_dict.items())
    with pytest.raises(ValueError, match="no image"):
        pretrain(CFG, [])
    with pytest.raises(ValueError, match="C = 1"):
        pretrain(CFG, [np.zeros((3, 32, 32), np.float32)])


def test_the_first_round_starts_from_the_warm_up(tmp_path):
    arrays = {f"img{i}": im[0] for i, im in enumerate(_stripes(3))}
    labels = (arrays["img0"] > 0.5).astype(np.uint8)
    with Project.create(tmp_path / "p", arrays=arrays,
                        classes=["background", "stripe"]) as project:
        train = TrainConfig(max_steps=1, batch_size=2, patch_size=32, num_threads=1,
                            calibrate_bias=False)
        session = ActiveLearningSession(project, model_config=CFG, train_config=train)
        warm = session.pretrain(steps=20)
        assert warm.steps == 20
        session.submit(min(r.id for r in project.images()), labels)
        # a learning rate too small to move the weights: the model is the warm-up's
        run_to_end(session.train(train_config=train.replace(lr=1e-12)))
        trained = session.model.state_dict()
        moved = [k for k, v in warm.state_dict.items()
                 if k.endswith("weight") and not torch.allclose(trained[k], v, atol=1e-6)]
        assert moved == []
        # a project without the warm-up starts elsewhere
        torch.manual_seed(0)
        fresh = UNet(CFG).state_dict()
        assert not torch.allclose(trained["encoders.0.0.weight"], fresh["encoders.0.0.weight"])
