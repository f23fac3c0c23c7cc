"""Polarity decided once per project, known answers; the per-image "auto" rule of older models
unchanged; the concrete rule recorded in the configuration and the exported preprocessing."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from napari_activeseg.core import export as ex
from napari_activeseg.core.config import InferenceConfig, ModelConfig, TrainConfig
from napari_activeseg.core.preprocess import (
    apply_polarity,
    background_level,
    decide_polarity,
    decide_project_polarity,
    is_bright_background,
    polarity_sample,
    prepare_image,
    resolve_polarity,
)
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession
from napari_activeseg.core.training import _PatchSampler

from ..conftest import make_blobs


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _level_image(level: float, shape=(20, 24), seed=0) -> np.ndarray:
    """A normalised (1, H, W) image whose background level is ``level`` (a few dark objects)."""
    rng = np.random.default_rng(seed)
    img = np.full((1, *shape), level, np.float32) + rng.normal(0, 0.01, (1, *shape)) \
        .astype(np.float32)
    img[:, 2:5, 2:5] = 0.0 if level > 0.5 else 1.0  # objects of the other polarity
    return img


def _brightfield(seed: int, shape=(40, 48)) -> tuple[np.ndarray, np.ndarray]:
    """Dark disks on a bright background (uint8), like a brightfield image, and its labels."""
    image, labels = make_blobs(shape=shape, seed=seed, n=4)
    return ((1.0 - image) * 200).clip(0, 255).astype(np.uint8), labels


# ------------------------------------------------------------------ the decision


def _near_threshold(shape=(40, 48)) -> np.ndarray:
    """A raw uint8 image whose normalised background level is about 0.4 (EM-like)."""
    ramp = np.linspace(0.0, 1.0, shape[0] * shape[1]) ** 1.3
    return (np.random.default_rng(0).permutation(ramp).reshape(shape) * 255).astype(np.uint8)


@pytest.mark.parametrize("odd_level", [0.2, 0.35])
def test_mostly_bright_pool_inverts_every_image_the_dark_one_too(odd_level):
    levels = [0.8, 0.75, 0.9, 0.7, 0.85, odd_level]  # five bright backgrounds, one dark
    pool = [_level_image(v, seed=i) for i, v in enumerate(levels)]
    assert [is_bright_background(im) for im in pool] == [True] * 5 + [False]
    rule = decide_polarity(pool)
    assert rule == "invert"
    for im in pool:  # one fixed rule: every image, the odd dark one included, becomes 1 - x
        np.testing.assert_allclose(apply_polarity(im, rule), 1.0 - im, atol=1e-7)
    # the per-image rule would have left the odd one alone
    assert apply_polarity(pool[-1], "auto") is pool[-1]


def test_with_a_margin_only_an_unmistakable_odd_image_is_an_exception():
    near, far = _level_image(0.35), _level_image(0.1)  # in an inverted project
    np.testing.assert_allclose(apply_polarity(near, "invert", margin=0.25), 1.0 - near,
                               atol=1e-7)  # near the threshold: follows the project
    assert apply_polarity(far, "invert", margin=0.25) is far  # clearly dark: left as it is
    near, far = _level_image(0.65), _level_image(0.9)  # in a project that is not inverted
    assert apply_polarity(near, "none", margin=0.25) is near
    np.testing.assert_allclose(apply_polarity(far, "none", margin=0.25), 1.0 - far, atol=1e-7)
    assert apply_polarity(far, "none") is far  # no margin: no exception


def test_mostly_dark_pool_inverts_no_image_the_bright_one_neither():
    pool = [_level_image(v, seed=i) for i, v in enumerate([0.1, 0.3, 0.05, 0.55, 0.2])]
    assert decide_polarity(pool) == "none"
    assert all(apply_polarity(im, "none") is im for im in pool)
    assert is_bright_background(pool[3])  # near the threshold: "auto" alone would invert it


def test_an_even_split_is_decided_by_the_median_level_not_by_a_coin():
    # two dark (0.1, 0.2), two bright (0.9, 0.95): median level 0.55 -> invert
    assert decide_polarity([_level_image(v) for v in (0.1, 0.2, 0.9, 0.95)]) == "invert"
    # two dark (0.1, 0.2), two barely bright (0.6, 0.65): median 0.4 -> none
    assert decide_polarity([_level_image(v) for v in (0.1, 0.2, 0.6, 0.65)]) == "none"


def test_an_empty_pool_is_not_inverted():
    assert decide_polarity([]) == "none"


def test_background_level_is_the_median_of_the_channel_mean():
    img = np.stack([np.full((10, 10), 0.2, np.float32), np.full((10, 10), 0.6, np.float32)])
    assert background_level(img) == pytest.approx(0.4)


class _Recording(Sequence):
    """A lazy pool that records which images were read."""

    def __init__(self, images):
        self.images, self.read = images, []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.read.append(i)
        return self.images[i]


def test_a_large_pool_is_decided_from_an_evenly_spaced_sample():
    assert polarity_sample(5, 32) == [0, 1, 2, 3, 4]
    idx = polarity_sample(1000, 32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 999 and idx == sorted(idx)
    assert polarity_sample(1000, 32) == idx  # deterministic: no seed decides it
    pool = _Recording([_level_image(0.8)] * 1000)
    assert decide_polarity(pool) == "invert"
    assert sorted(pool.read) == idx


def test_resolve_decides_only_pool_and_keeps_every_fixed_rule():
    bright = [_level_image(0.9)]
    assert resolve_polarity("pool", bright) == "invert"
    for rule in ("invert", "none", "auto"):
        assert resolve_polarity(rule, bright) == rule
    with pytest.raises(ValueError, match="polarity"):
        resolve_polarity("bright", bright)


def test_pool_is_never_applied_to_one_image():
    with pytest.raises(ValueError, match="decide_polarity"):
        apply_polarity(_level_image(0.9), "pool")


# ------------------------------------------------------------------ older "auto" models


def test_auto_keeps_the_per_image_rule_of_older_models():
    bright, dark = _level_image(0.8), _level_image(0.2)
    np.testing.assert_array_equal(apply_polarity(bright, "auto"), 1.0 - bright)
    assert apply_polarity(dark, "auto") is dark
    raw_bright, _ = _brightfield(1)
    raw_dark = (make_blobs(shape=(40, 48), seed=1, n=4)[0] * 200).astype(np.uint8)
    norm = prepare_image(raw_bright, polarity="none")
    np.testing.assert_array_equal(prepare_image(raw_bright, polarity="auto"), 1.0 - norm)
    np.testing.assert_array_equal(prepare_image(raw_dark, polarity="auto"),
                                  prepare_image(raw_dark, polarity="none"))


def test_saved_configs_keep_their_rule():
    old = ModelConfig(in_channels=1, polarity="auto").to_dict()
    assert ModelConfig.from_dict(old).polarity == "auto"
    # a configuration written without the field (by hand, or by another tool) is per-image,
    # as it was when "auto" was the only rule that inverted
    del old["polarity"]
    assert ModelConfig.from_dict(old).polarity == "auto"


def test_a_session_on_an_auto_model_prepares_each_image_by_itself(tmp_path):
    bright, _ = _brightfield(0)
    dark = (make_blobs(shape=(40, 48), seed=2, n=4)[0] * 200).astype(np.uint8)
    with Project.create(tmp_path / "p", arrays={"b": bright, "d": dark},
                        classes=("background", "cell")) as project:
        cfg = ModelConfig(in_channels=1, depth=2, width=4, polarity="auto")
        session = ActiveLearningSession(project, model_config=cfg)
        ids = {r.name: r.id for r in project.images()}
        assert session.model_config.polarity == "auto"
        np.testing.assert_array_equal(session.prepared(ids["b"]),
                                      prepare_image(bright, polarity="invert"))
        np.testing.assert_array_equal(session.prepared(ids["d"]),
                                      prepare_image(dark, polarity="none"))


# ------------------------------------------------------------------ the project's rule


def test_a_new_project_records_the_rule_its_images_decide(tmp_path):
    arrays = {f"bf{i}": _brightfield(i)[0] for i in range(4)}
    arrays["odd"] = _near_threshold()
    arrays["fluo"] = (make_blobs(shape=(40, 48), seed=9, n=4)[0] * 200).astype(np.uint8)
    with Project.create(tmp_path / "p", arrays=arrays,
                        classes=("background", "cell")) as project:
        assert decide_project_polarity(project) == "invert"
        session = ActiveLearningSession(project)
        assert (session.model_config.polarity, session.model_config.polarity_margin) == \
            ("invert", 0.25)
        saved = project.get_setting("model_config")
        assert (saved["polarity"], saved["polarity_margin"]) == ("invert", 0.25)
        for rec in project.images():
            raw = project.load_image(rec.id)
            plain = prepare_image(raw, polarity="none")
            if rec.name == "fluo":  # unmistakably dark background: the one exception
                np.testing.assert_array_equal(session.prepared(rec.id), plain)
            else:  # the near-threshold image is inverted like the brightfield ones
                if rec.name == "odd":
                    assert 0.3 < background_level(plain) < 0.5
                np.testing.assert_array_equal(session.prepared(rec.id), 1.0 - plain)


def test_a_config_given_with_pool_is_decided_before_the_first_image(tmp_path):
    arrays = {f"bf{i}": _brightfield(i)[0] for i in range(3)}
    with Project.create(tmp_path / "p", arrays=arrays,
                        classes=("background", "cell")) as project:
        session = ActiveLearningSession(
            project, model_config=ModelConfig(in_channels=1, depth=2, width=4))
        assert ModelConfig().polarity == "pool"
        first = project.images()[0]
        session.prepared(first.id)
        assert session.model_config.polarity == "invert"


@pytest.mark.parametrize("rule", ["invert", "none"])
@pytest.mark.parametrize("margin", [0.25, None])
def test_fixed_rules_round_trip_through_the_config(rule, margin):
    cfg = ModelConfig(in_channels=3, depth=2, width=4, polarity=rule, polarity_margin=margin)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    back = ModelConfig.from_json(cfg.to_json())
    assert (back.polarity, back.polarity_margin) == (rule, margin)


def test_a_config_saved_before_the_margin_keeps_its_rule_without_exceptions():
    data = ModelConfig(polarity="none").to_dict()
    del data["polarity_margin"]
    assert ModelConfig.from_dict(data).polarity_margin is None


@pytest.mark.parametrize("bad", [0.0, 0.5, -0.1])
def test_the_margin_is_validated(bad):
    with pytest.raises(ValueError, match=r"polarity_margin must be in \(0, 0.5\) or None"):
        ModelConfig(polarity_margin=bad)


def test_an_unknown_polarity_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"polarity must be one of \['pool', 'invert', 'none', "
                                         r"'auto'\], got 'bright'"):
        ModelConfig(polarity="bright")


def _apply_spec(raw: np.ndarray, spec: dict) -> np.ndarray:
    """preprocessing.json applied by hand, without napari-activeseg code."""
    norm, pol = spec["normalization"], spec["polarity"]
    img = raw[..., None] if raw.ndim == 2 else raw
    h, w, c = img.shape
    out = np.zeros((c, h, w), np.float32)
    for k in range(c):
        ch = img[..., k]
        lo, hi = np.percentile(ch, [norm["low_percentile"], norm["high_percentile"]])
        lo, hi = np.float32(lo), np.float32(hi)
        out[k] = np.clip((ch.astype(np.float32) - lo) / (hi - lo), *norm["clip"])
    s = max(1, int(np.sqrt(h * w / pol["sample_pixels"])))
    level = float(np.median(out[:, ::s, ::s].mean(axis=0)))
    t, m = pol["threshold"], pol["margin"]
    if pol["rule"] == "auto":
        invert = level > t
    elif pol["rule"] == "invert":
        invert = m is None or not level < t - m
    else:
        invert = m is not None and level > t + m
    return 1.0 - out if invert else out


@pytest.mark.parametrize("rule", ["invert", "none", "auto"])
@pytest.mark.parametrize("margin", [0.25, None])
def test_preprocessing_json_records_and_reproduces_the_rule(rule, margin):
    cfg = ModelConfig(in_channels=1, depth=2, width=4, polarity=rule, polarity_margin=margin)
    spec = json.loads(json.dumps(ex.preprocessing_spec(
        cfg, classes=["background", "cell"], colors=["#000000", "#ff0000"])))
    assert spec["polarity"]["rule"] == rule and rule in spec["polarity"]["rules"]
    assert spec["polarity"]["margin"] == margin
    assert ModelConfig.from_dict(spec["model_config"]) == cfg
    assert f"polarity, margin = {rule!r}, {margin!r}" in spec["python_example"]
    bright, _ = _brightfield(3)
    dark = (make_blobs(shape=(40, 48), seed=3, n=4)[0] * 200).astype(np.uint8)
    for raw in (bright, dark, _near_threshold()):
        np.testing.assert_allclose(
            _apply_spec(raw, spec), prepare_image(raw, polarity=rule, polarity_margin=margin),
            atol=1e-6)


def test_preprocessing_json_refuses_an_undecided_rule():
    with pytest.raises(ValueError, match="'invert' or 'none'"):
        ex.preprocessing_spec(ModelConfig(), classes=["background", "cell"],
                              colors=["#000000", "#ff0000"])


def test_exported_model_carries_the_projects_rule(tmp_path):
    arrays, truth = {}, {}
    for i in range(3):
        arrays[f"bf{i}"], truth[f"bf{i}"] = _brightfield(i)
    with Project.create(tmp_path / "p", arrays=arrays,
                        classes=("background", "cell")) as project:
        session = ActiveLearningSession(
            project, model_config=ModelConfig(in_channels=1, depth=2, width=4),
            train_config=TrainConfig(max_steps=3, time_budget_s=None, patch_size=32,
                                     batch_size=2),
            inference_config=InferenceConfig(tile_size=64, overlap=8))
        for rec in project.images()[:2]:
            session.submit(rec.id, truth[rec.name])
        assert run_to_end(session.train()) is not None
        _, saved_cfg, _ = project.load_model()
        assert saved_cfg.polarity == "invert"  # the decision, not "pool", is saved
        ex.export_model(project, tmp_path / "model", onnx=False)
    spec = json.loads((tmp_path / "model" / ex.PREPROCESSING_NAME).read_text())
    doc = json.loads((tmp_path / "model" / ex.CONFIG_NAME).read_text())
    assert spec["polarity"]["rule"] == "invert"
    assert spec["model_config"]["polarity"] == doc["model_config"]["polarity"] == "invert"


# ------------------------------------------------------------------ inversion as augmentation


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_invert_p_is_validated(bad):
    with pytest.raises(ValueError, match=r"invert_p must be in \[0, 1\]"):
        TrainConfig(invert_p=bad)


@pytest.mark.parametrize("p, inverted", [(1.0, True), (0.0, False)])
def test_invert_p_inverts_the_training_patch(p, inverted):
    img = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(1, 32, 32)
    lab = np.zeros((32, 32), np.int64)
    cfg = TrainConfig(patch_size=32, flips=False, rot90=False, intensity_jitter=0.0,
                      gamma_jitter=0.0, invert_p=p)
    sampler = _PatchSampler([img], [lab], [None], cfg, np.random.default_rng(0))
    x, _, _ = sampler.batch(4)
    expected = 1.0 - img if inverted else img
    for b in range(4):
        np.testing.assert_allclose(x[b], expected, atol=1e-7)
