"""Task-dependent similarity (Grüning et al. 2020): matrix completion, subset choice, cost."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.core.strategies import Candidate, estimate_cost, get_strategy
from napari_activeseg.core.strategies.task_similarity import similarity_matrix

from ...conftest import make_blobs


def test_similarity_matrix_follows_the_paper():
    measured = np.zeros((4, 4))
    measured[0] = [1.0, 0.8, 0.2, 0.4]  # probe 0
    measured[2] = [0.3, 0.1, 1.0, 0.6]  # probe 2
    d = similarity_matrix(measured, [0, 2])
    np.testing.assert_allclose(np.diag(d), 1.0)
    np.testing.assert_allclose(d[0], measured[0])
    np.testing.assert_allclose(d[2], measured[2])
    assert d[1, 0] == pytest.approx(0.8) and d[3, 2] == pytest.approx(0.6)  # one-sided -> copied
    # two non-probes: max over probes of (d(1, p) + d(p, 3)) / 2
    assert d[1, 3] == pytest.approx(max((0.8 + 0.4) / 2, (0.1 + 0.6) / 2))
    assert d[3, 1] == pytest.approx(max((0.4 + 0.8) / 2, (0.6 + 0.1) / 2))


def test_estimate_cost_grows_with_the_work():
    base = estimate_cost(10)
    assert base > 0
    assert estimate_cost(20) > base
    assert estimate_cost(10, n_probes=8) > base
    assert estimate_cost(10, pixels_per_image=512 * 512) > base
    assert estimate_cost(3, n_probes=8) == pytest.approx(estimate_cost(3, n_probes=3))
    s = get_strategy("task_similarity", n_probes=4)
    assert s.estimate_cost(10) == pytest.approx(estimate_cost(10, n_probes=4))


def _group_image(key, seed, inverted):
    """Bright blobs on dark (group A) or the same look inverted (group B); labels = blobs."""
    image, labels = make_blobs(shape=(32, 32), n=3, radius=(4, 7), seed=seed, noise=0.02)
    if inverted:
        image = 1.0 - image
    p1 = np.where(labels > 0, 0.95, 0.05).astype(np.float32)
    return Candidate(key=key, image_id=key, probs=np.stack([1 - p1, p1]),
                     image=image[None].astype(np.float32))


def test_task_similarity_picks_one_image_from_each_look_alike_group():
    cands = [_group_image("A1", 1, False), _group_image("B1", 2, True),
             _group_image("A2", 3, False), _group_image("B2", 4, True)]
    s = get_strategy("task_similarity", n_probes=4, probe_steps=30, probe_patch=32)
    picks = s.select(cands, k=2)
    groups = sorted(p.key[0] for p in picks)
    assert groups == ["A", "B"], [p.reason for p in picks]
    assert "probe nets" in picks[0].reason and "est." in picks[0].reason
    assert "expects Dice >=" in picks[0].reason


def test_task_similarity_needs_images():
    c = Candidate(key="x", image_id="x", probs=np.full((2, 4, 4), 0.5))
    with pytest.raises(ValueError, match="Candidate.image"):
        get_strategy("task_similarity").select([c], k=1)
