"""Consistency regularisation on unlabelled pixels (core.consistency): the loss, the view
pairs, off-by-default training, and a session round that learns from unlabelled pixels
without writing any of them."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.consistency import (
    ConsistencyTerm,
    UnlabelledSampler,
    consistency_loss,
    dihedral,
    rampup,
    weak_strong_views,
)
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession
from napari_activeseg.core.session._training import unlabelled_pixels
from napari_activeseg.core.training import Trainer

from ..conftest import make_blobs

TINY_MODEL = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, polarity="none")
TINY_TRAIN = TrainConfig(patch_size=32, batch_size=4, max_steps=6, time_budget_s=None, lr=1e-2)


def _confident(classes: torch.Tensor, k: int = 2, margin: float = 20.0) -> torch.Tensor:
    """Logits (N, K, H, W) that put ``margin`` on the given (N, H, W) classes."""
    return torch.nn.functional.one_hot(classes, k).permute(0, 3, 1, 2).float() * margin


def test_loss_is_zero_where_the_teacher_is_unconfident():
    student = torch.randn(2, 3, 8, 8)
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    unsure = torch.zeros(2, 3, 8, 8)  # softmax 1/3 everywhere
    assert float(consistency_loss(student, unsure, valid, 0.9)) == 0.0
    # confident on the left half only: the loss is the CE there, over all valid pixels
    teacher = unsure.clone()
    teacher[:, 1, :, :4] = 20.0
    ce = torch.nn.functional.cross_entropy(student, torch.ones(2, 8, 8, dtype=torch.long),
                                           reduction="none")
    want = float(ce[..., :4].sum() / valid.sum())
    assert float(consistency_loss(student, teacher, valid, 0.9)) == pytest.approx(want, rel=1e-5)
    # and nothing where the pixel is not eligible (padding, cutout, reviewed)
    assert float(consistency_loss(student, teacher, valid & False, 0.9)) == 0.0


def test_identical_views_give_no_loss_for_a_confident_teacher():
    classes = torch.randint(0, 2, (3, 16, 16))
    logits = _confident(classes)
    valid = torch.ones(3, 16, 16, dtype=torch.bool)
    assert float(consistency_loss(logits, logits, valid, 0.95)) < 1e-6
    # while a student that disagrees pays for it
    assert float(consistency_loss(_confident(1 - classes), logits, valid, 0.95)) > 10


def test_dihedral_known_answer():
    x = np.arange(4).reshape(2, 2)
    assert dihedral(x, 1, False).tolist() == [[1, 3], [0, 2]]
    assert dihedral(x, 0, True).tolist() == [[1, 0], [3, 2]]
    assert dihedral(x, 2, True).tolist() == [[2, 3], [0, 1]]


def test_the_views_share_one_geometry_exactly():
    crop = np.arange(3 * 16 * 16, dtype=np.float32).reshape(3, 16, 16) / (3 * 16 * 16)
    mask = np.zeros((16, 16), bool)
    mask[:5, :9] = True  # asymmetric: a wrong pairing of mask and view shows
    cfg = TrainConfig()
    seen = set()
    for seed in range(40):
        weak, strong, valid = weak_strong_views(crop, mask, np.random.default_rng(seed), cfg)
        match = [(k, f) for k in range(4) for f in (False, True)
                 if np.array_equal(weak, dihedral(crop, k, f))]
        assert len(match) == 1
        k, f = match[0]
        seen.add(match[0])
        # the mask went through the same transform; the strong view only loses the cutout
        assert not (valid & ~dihedral(mask, k, f)).any()
        assert strong.shape == weak.shape and not np.array_equal(strong, weak)
    assert len(seen) == 8  # every rotation and flip occurs


def test_sampler_crops_are_windows_of_the_image_and_skip_reviewed_pixels():
    h, w, ps = 40, 56, 16
    img = (np.arange(h * w, dtype=np.float32).reshape(1, h, w)) / (h * w)
    eligible = np.zeros((h, w), bool)
    eligible[20:, 30:] = True
    sampler = UnlabelledSampler([img], [eligible], TrainConfig(patch_size=ps),
                                np.random.default_rng(0))
    weak, _, valid = sampler.batch(12)
    for b in range(12):
        found = False
        for k in range(4):
            for f in (False, True):
                # undo the transform: rot90 by -k after undoing the flip
                v = weak[b, 0][:, ::-1] if f else weak[b, 0]
                back = np.rot90(v, -k)
                y0, x0 = divmod(round(float(back[0, 0]) * h * w), w)
                if np.array_equal(back, img[0, y0:y0 + ps, x0:x0 + ps]):
                    found = True
        assert found
        assert valid[b].any()  # centred on an eligible pixel
    # a smaller-than-patch image: padding is never eligible
    small = UnlabelledSampler([img[:, :10, :12]], [None], TrainConfig(patch_size=ps),
                              np.random.default_rng(1))
    _, _, v = small.batch(4)
    assert all(v[b].sum() <= 10 * 12 for b in range(4))


def test_rampup_shape():
    assert rampup(0.0, 0.3) == pytest.approx(np.exp(-5))
    assert rampup(0.15, 0.3) == pytest.approx(np.exp(-5 * 0.25))
    assert rampup(0.3, 0.3) == rampup(0.9, 0.3) == rampup(0.0, 0.0) == 1.0


def test_off_by_default_training_is_bit_for_bit_unchanged(blob_set):
    images, labels = blob_set
    assert TrainConfig().consistency_weight == 0.0
    unlabelled = [(images[0], None), (images[1], labels[1] > 0)]
    plain = run_to_end(Trainer(TINY_MODEL, TINY_TRAIN).fit(images[2:], labels[2:]))
    given = run_to_end(Trainer(TINY_MODEL, TINY_TRAIN).fit(images[2:], labels[2:],
                                                           unlabelled=unlabelled))
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in given.history]
    for key, value in plain.state_dict.items():
        assert torch.equal(value, given.state_dict[key]), key
    # on, the same seed trains differently (the term is really added)
    on = run_to_end(Trainer(TINY_MODEL, TINY_TRAIN.replace(consistency_weight=1.0,
                                                           consistency_rampup=0.0,
                                                           consistency_threshold=0.5))
                    .fit(images[2:], labels[2:], unlabelled=unlabelled))
    assert [h["loss"] for h in on.history] != [h["loss"] for h in plain.history]


def test_config_round_trip_and_bad_values():
    cfg = TrainConfig(consistency_weight=0.5, consistency_threshold=0.9, consistency_images=4)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    # a configuration saved before the fields existed reads as off
    old = {k: v for k, v in TrainConfig().to_dict().items() if not k.startswith("consistency")}
    assert TrainConfig.from_dict(old).consistency_weight == 0.0
    with pytest.raises(ValueError, match="consistency_weight"):
        TrainConfig(consistency_weight=-1)
    with pytest.raises(ValueError, match="consistency_threshold"):
        TrainConfig(consistency_threshold=0.0)
    with pytest.raises(ValueError, match="expects"):
        ConsistencyTerm.build([(np.zeros((3, 8, 8), np.float32), None)],
                              cfg, 1, torch.device("cpu"))


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_round_with_consistency_learns_from_the_pool_and_writes_no_label(tmp_path):
    pairs = [make_blobs(shape=(48, 64), seed=s, n=4) for s in range(4)]
    arrays = {f"img{s}": (p[0] * 200).astype(np.uint8) for s, p in enumerate(pairs)}
    with Project.create(tmp_path / "proj", arrays=arrays,
                        classes=("background", "nucleus")) as project:
        cfg = TINY_TRAIN.replace(consistency_weight=1.0, consistency_images=2)
        s = ActiveLearningSession(project, model_config=TINY_MODEL, train_config=cfg,
                                  inference_config=InferenceConfig(tile_size=64, overlap=8,
                                                                   mc_samples=2),
                                  strategy="random")
        ids = [r.id for r in project.images()]
        box = np.zeros((48, 64), bool)
        box[:24, :32] = True
        s.submit(ids[0], pairs[0][1], box)
        labels_dir = project.folder / "labels"
        before = _digest(labels_dir)
        # what the round learns from: the unreviewed part of the boxed image, two pool images
        labelled = [(ids[0], pairs[0][1], box)]
        got = unlabelled_pixels(project, labelled, [s.prepared(ids[0])], [box], s.prepared,
                                cfg, 0)
        assert np.array_equal(got[0][1], ~box) and len(got) == 3
        assert all(m is None for _, m in got[1:])
        assert unlabelled_pixels(project, labelled, [s.prepared(ids[0])], [box], s.prepared,
                                 TINY_TRAIN, 0) is None  # off: nothing is gathered
        summary = run_to_end(s.train())
        assert summary is not None and summary.result.steps == cfg.max_steps
        assert _digest(labels_dir) == before
        assert project.labelled_ids() == [ids[0]]
        stored, rev = project.load_labels(ids[0])
        assert np.array_equal(rev, box) and not stored[~box].any()
        # the setting is saved with the project and read back
        assert project.get_setting("train_config")["consistency_weight"] == 1.0
