import threading

import numpy as np
import pytest
import torch

from napari_activeseg.core.config import ModelConfig, TrainConfig
from napari_activeseg.core.inference import predict
from napari_activeseg.core.losses import dice_score
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.model import UNet
from napari_activeseg.core.training import Trainer, TrainProgress, fit_logit_bias, shift_logits

from ..conftest import make_blobs

TINY = ModelConfig(in_channels=1, n_classes=2, depth=2, width=8, dropout=0.1)


def test_tiny_unet_overfits_one_image(blobs):
    img, lab = blobs
    cfg = TrainConfig(patch_size=64, batch_size=4, max_steps=150, time_budget_s=None, lr=1e-2,
                      intensity_jitter=0, gamma_jitter=0, seed=0)
    records = []
    result = run_to_end(Trainer(TINY, cfg).fit([img[None]], [lab]), records.append)
    assert result.steps == 150 and result.stop_reason == "budget"
    assert isinstance(records[0], TrainProgress) and records[-1].step == 150
    assert records[-1].loss < records[0].loss
    pred = predict(result.build_model(), img[None])
    assert dice_score(pred.labels, lab) > 0.95


def test_progress_records_are_complete(blob_set):
    images, labels = blob_set
    cfg = TrainConfig(patch_size=32, batch_size=2, max_steps=5, time_budget_s=None)
    recs = []
    run_to_end(Trainer(TINY, cfg).fit(images, labels), recs.append)
    assert [r.step for r in recs] == [1, 2, 3, 4, 5]
    assert recs[-1].fraction == pytest.approx(1.0)
    assert all(r.patches_per_s > 0 and r.eta_s is not None and r.epoch > 0 for r in recs)
    assert recs[2].eta_s > recs[3].eta_s >= 0


def test_stop_request_honoured_within_one_step(blob_set):
    images, labels = blob_set
    trainer = Trainer(TINY, TrainConfig(patch_size=32, batch_size=2, max_steps=10_000,
                                        time_budget_s=None))
    gen = trainer.fit(images, labels)
    steps = []
    result = None
    while True:
        try:
            rec = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        steps.append(rec.step)
        if rec.step == 3:
            # from another thread, as the GUI's Cancel button does
            t = threading.Thread(target=trainer.request_stop)
            t.start()
            t.join()
    assert steps[-1] == 3
    assert result.stop_reason == "stop_requested" and result.steps == 3
    # the calibration (on by default) is skipped: a cancelled round is not published
    assert trainer.train_config.calibrate_bias and result.logit_bias is None


@pytest.mark.parametrize("how", ["finished", "abandoned"])
def test_num_threads_holds_for_the_round_and_is_given_back(blob_set, how):
    images, labels = blob_set
    before = torch.get_num_threads()
    want = 1 if before > 1 else 2
    cfg = TrainConfig(patch_size=32, batch_size=2, max_steps=3, time_budget_s=None,
                      num_threads=want)
    gen = Trainer(TINY, cfg).fit(images, labels)
    try:
        next(gen)
        during = torch.get_num_threads()
        if how == "finished":
            run_to_end(gen)
        else:  # the caller drops the round half-way (e.g. an error in its callback)
            gen.close()
        assert during == want
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_weights_are_kept_in_the_ordinary_layout(blob_set):
    # the round trains channels-last; what it hands out must load, save and hash like any weights
    images, labels = blob_set
    cfg = TrainConfig(patch_size=32, batch_size=2, max_steps=2, time_budget_s=None)
    res = run_to_end(Trainer(TINY, cfg).fit(images, labels))
    conv = [v for v in res.state_dict.values() if v.ndim == 4 and v.shape[-1] > 1]
    assert conv and all(v.is_contiguous() for v in res.state_dict.values())


def test_deterministic_with_a_seed(blob_set):
    images, labels = blob_set
    cfg = TrainConfig(patch_size=32, batch_size=2, max_steps=6, time_budget_s=None, seed=7)
    a = run_to_end(Trainer(TINY, cfg).fit(images, labels))
    b = run_to_end(Trainer(TINY, cfg).fit(images, labels))
    c = run_to_end(Trainer(TINY, cfg.replace(seed=8)).fit(images, labels))
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k])
    assert any(not torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)


def test_warm_start_continues_from_earlier_weights(blobs):
    img, lab = blobs
    cfg = TrainConfig(patch_size=64, batch_size=4, max_steps=80, time_budget_s=None, lr=1e-2)
    first = run_to_end(Trainer(TINY, cfg).fit([img[None]], [lab]))
    short = cfg.replace(max_steps=1, lr=1e-6)
    warm = run_to_end(Trainer(TINY, short).fit([img[None]], [lab], init_state=first.state_dict))
    cold = run_to_end(Trainer(TINY, short).fit([img[None]], [lab]))
    d_warm = dice_score(predict(warm.build_model(), img[None]).labels, lab)
    d_cold = dice_score(predict(cold.build_model(), img[None]).labels, lab)
    assert d_warm > 0.9 > d_cold
    bad = TINY.replace(width=4)
    with pytest.raises(ValueError, match="warm-start weights do not fit"):
        run_to_end(Trainer(bad, short).fit([img[None]], [lab], init_state=first.state_dict))


def test_unreviewed_pixels_are_ignored():
    """Labels outside the reviewed mask are garbage; training must not learn from them."""
    img, lab = make_blobs(shape=(64, 64), seed=3)
    garbage = lab.copy()
    reviewed = np.zeros_like(lab, bool)
    reviewed[:, :32] = True
    garbage[:, 32:] = 1 - garbage[:, 32:]  # inverted truth where not reviewed
    cfg = TrainConfig(patch_size=32, batch_size=4, max_steps=150, time_budget_s=None, lr=1e-2,
                      intensity_jitter=0, gamma_jitter=0)
    res = run_to_end(Trainer(TINY, cfg).fit([img[None]], [garbage], [reviewed]))
    pred = predict(res.build_model(), img[None]).labels
    assert dice_score(pred[:, 32:], lab[:, 32:]) > 0.8


def test_validation_split_and_early_stopping(blob_set):
    images, labels = blob_set
    cfg = TrainConfig(patch_size=32, batch_size=2, max_steps=400, time_budget_s=None,
                      min_val_images=4, val_fraction=0.25, val_every=5, patience=2, lr=1e-6)
    recs = []
    res = run_to_end(Trainer(TINY, cfg).fit(images, labels), recs.append)
    assert res.n_val_images == 1 and res.n_train_images == 3
    assert any(r.val_dice is not None for r in recs)
    # lr ~ 0: validation Dice cannot improve, so patience ends the round early
    assert res.stop_reason == "early_stopping" and res.steps < 400
    assert res.best_val_dice is not None


@pytest.mark.parametrize("bad,match", [
    (lambda i, l: ([], []), "No labelled image"),
    (lambda i, l: (i, l[:1]), "label maps"),
    (lambda i, l: ([np.zeros((3, 8, 8), np.float32)], [np.zeros((8, 8), np.uint8)]), "expects"),
    (lambda i, l: (i[:1], [np.zeros((5, 5), np.uint8)]), "must match"),
    (lambda i, l: (i[:1], [np.full(l[0].shape, 7, np.uint8)]), "n_classes=2"),
])
def test_bad_training_input_raises(blob_set, bad, match):
    images, labels = bad(*blob_set)
    with pytest.raises(ValueError, match=match):
        run_to_end(Trainer(TINY, TrainConfig(max_steps=1)).fit(images, labels))


def test_nothing_reviewed_raises(blobs):
    img, lab = blobs
    with pytest.raises(ValueError, match="No reviewed pixel"):
        run_to_end(Trainer(TINY, TrainConfig(max_steps=1)).fit(
            [img[None]], [lab], [np.zeros_like(lab, bool)]))


def test_small_images_are_padded_and_time_budget_ends_round():
    img, lab = make_blobs(shape=(20, 24), n=2, radius=(2, 4))
    cfg = TrainConfig(patch_size=32, batch_size=2, max_steps=None, time_budget_s=0.5)
    res = run_to_end(Trainer(TINY, cfg).fit([img[None]], [lab]))
    assert res.stop_reason == "budget" and res.steps >= 1 and 0.4 < res.seconds < 5


def test_training_oom_halves_the_batch(blob_set, monkeypatch):
    images, labels = blob_set
    seen = []
    real = Trainer._step

    def flaky(model, opt, scaler, device, x, *rest):
        seen.append(len(x))
        if len(x) > 2:
            raise RuntimeError("CUDA out of memory")
        return real(model, opt, scaler, device, x, *rest)

    monkeypatch.setattr(Trainer, "_step", staticmethod(flaky))
    recs = []
    run_to_end(Trainer(TINY, TrainConfig(patch_size=32, batch_size=8, max_steps=3,
                                         time_budget_s=None)).fit(images, labels), recs.append)
    assert seen[:3] == [8, 4, 2] and len(recs) == 3
    assert "batch halved to 2" in recs[0].message


def _centres(focus_p, focus, n_batches=20):
    from napari_activeseg.core.training import _PatchSampler

    imgs = [np.zeros((1, 64, 64), np.float32) for _ in range(2)]
    labs = [np.zeros((64, 64), np.int64) for _ in range(2)]
    labs[0][10:20, 10:20] = 1
    sampler = _PatchSampler(imgs, labs, [None, None],
                            TrainConfig(patch_size=32, focus_p=focus_p),
                            np.random.default_rng(0), focus)
    seen = []
    real = sampler._crop
    sampler._crop = lambda i, c: seen.append((i, c)) or real(i, c)
    for _ in range(n_batches):
        sampler.batch(8)
    return seen


def test_focus_p_centres_patches_on_the_hard_pixels():
    hard = np.zeros((64, 64), bool)
    hard[50:54, 40:44] = True  # the only hard pixels: image 1, bottom right
    seen = _centres(1.0, [None, hard])
    assert {i for i, _ in seen} == {1}
    assert all(hard.flat[c] for _, c in seen)
    half = _centres(0.5, [None, hard])
    share = np.mean([i == 1 and hard.flat[c] for i, c in half])
    assert 0.35 < share < 0.65  # about half, the rest spread over both images
    off = _centres(0.0, [None, hard])  # focus_p = 0: the hard pixels are not favoured
    assert np.mean([i == 1 and hard.flat[c] for i, c in off]) < 0.05
    none = _centres(1.0, [None, None])  # no hard pixel anywhere: ordinary sampling
    assert {i for i, _ in none} == {0, 1}


def test_fit_accepts_focus_and_keeps_it_aligned_with_the_validation_split():
    pairs = [make_blobs(shape=(48, 48), seed=s, n=3) for s in range(10)]
    imgs = [p[0][None].astype(np.float32) for p in pairs]
    labs = [p[1] for p in pairs]
    focus = [p[1] > 0 for p in pairs]
    cfg = TrainConfig(patch_size=32, batch_size=2, max_steps=3, time_budget_s=None,
                      focus_p=0.5, min_val_images=5)
    result = run_to_end(Trainer(ModelConfig(in_channels=1, width=4, depth=2), cfg)
                        .fit(imgs, labs, focus=focus))
    assert result.steps == 3
    with pytest.raises(ValueError, match="10 images but 3 focus masks"):
        run_to_end(Trainer(ModelConfig(in_channels=1, width=4, depth=2), cfg)
                   .fit(imgs, labs, focus=focus[:3]))


def test_warm_lr_factor_scales_the_peak_lr_of_warm_started_rounds_only():
    image, labels = make_blobs(shape=(48, 48), seed=0, n=3)
    mcfg = ModelConfig(in_channels=1, width=4, depth=2)
    cfg = TrainConfig(patch_size=32, batch_size=2, max_steps=20, time_budget_s=None,
                      warm_lr_factor=0.25, warmup_fraction=0.0)
    cold_lrs, warm_lrs = [], []
    cold = run_to_end(Trainer(mcfg, cfg).fit([image[None]], [labels]),
                      lambda p: cold_lrs.append(p.lr))
    run_to_end(Trainer(mcfg, cfg).fit([image[None]], [labels], init_state=cold.state_dict),
               lambda p: warm_lrs.append(p.lr))
    assert max(cold_lrs) == pytest.approx(cfg.lr)  # from scratch: the full schedule
    assert max(warm_lrs) == pytest.approx(cfg.lr * 0.25)
    assert np.allclose(np.asarray(warm_lrs), np.asarray(cold_lrs) * 0.25)
    with pytest.raises(ValueError, match="warm_lr_factor"):
        TrainConfig(warm_lr_factor=0.0)


def _image_shares(area_exponent, n_batches=60):
    from napari_activeseg.core.training import _PatchSampler

    # one big image (128 x 128) and one small one (32 x 32): 16 x the area
    imgs = [np.zeros((1, 128, 128), np.float32), np.zeros((1, 32, 32), np.float32)]
    labs = [np.zeros((128, 128), np.int64), np.zeros((32, 32), np.int64)]
    sampler = _PatchSampler(imgs, labs, [None, None],
                            TrainConfig(patch_size=32, area_exponent=area_exponent),
                            np.random.default_rng(0))
    seen = []
    real = sampler._crop
    sampler._crop = lambda i, c: seen.append(i) or real(i, c)
    for _ in range(n_batches):
        sampler.batch(8)
    return np.mean(np.asarray(seen) == 1)  # the small image's share of the patches


def test_area_exponent_sets_how_images_of_different_sizes_share_the_patches():
    # 1: per pixel (the small image gets 1/17 of the patches); 0: per image (half);
    # 0.5: in proportion to the square root of the area (4 : 1, i.e. 1/5)
    assert _image_shares(1.0) == pytest.approx(1 / 17, abs=0.03)
    assert _image_shares(0.0) == pytest.approx(0.5, abs=0.07)
    assert _image_shares(0.5) == pytest.approx(0.2, abs=0.05)
    with pytest.raises(ValueError, match="area_exponent"):
        TrainConfig(area_exponent=1.5)



def _striped(h=40, w=40, rows=4):
    """A (1, H, W) image and labels: class 1 on the first ``rows`` rows (rows / H of it)."""
    lab = np.zeros((h, w), np.int64)
    lab[:rows] = 1
    return lab.astype(np.float32)[None], lab


@pytest.mark.parametrize("power, expected", [(0.5, (1.0, 3.0)), (1.0, (1.0, 9.0))])
def test_automatic_class_weights_follow_the_reviewed_class_shares(power, expected):
    img, lab = _striped()  # 10 % class 1; a patch as large as the image sees all of it
    cfg = TrainConfig(patch_size=40, batch_size=2, max_steps=1, time_budget_s=None,
                      class_weight_power=power)
    result = run_to_end(Trainer(TINY, cfg).fit([img], [lab]))
    assert result.class_weights == pytest.approx(expected)
    # off by default, and explicit weights win
    assert run_to_end(Trainer(TINY, cfg.replace(class_weight_power=0.0)).fit(
        [img], [lab])).class_weights is None
    assert run_to_end(Trainer(TINY, cfg.replace(class_weights=(1.0, 2.0))).fit(
        [img], [lab])).class_weights == (1.0, 2.0)


def test_automatic_class_weights_count_reviewed_pixels_only_and_are_capped():
    img, lab = _striped(rows=20)  # half and half ...
    reviewed = np.zeros(lab.shape, bool)
    reviewed[19:] = True  # ... but only one row of class 1 is reviewed: 1 / 21 of the pixels
    cfg = TrainConfig(patch_size=40, batch_size=2, max_steps=1, time_budget_s=None,
                      class_weight_power=1.0)
    result = run_to_end(Trainer(TINY, cfg).fit([img], [lab], [reviewed]))
    assert result.class_weights == pytest.approx((1.0, 10.0))  # 20 / 1, capped at 10
    three = ModelConfig(in_channels=1, n_classes=3, depth=2, width=8)
    result = run_to_end(Trainer(three, cfg.replace(class_weight_power=0.5)).fit([img], [lab]))
    assert result.class_weights == pytest.approx((1.0, 1.0, 1.0))  # class 2 absent: 1
    with pytest.raises(ValueError, match="class_weight_power"):
        TrainConfig(class_weight_power=1.5)


def test_fit_logit_bias_finds_the_shift_that_calls_an_under_called_class():
    rng = np.random.default_rng(0)
    target = (rng.random(20_000) < 0.1).astype(np.int64)
    # class 1's logit ranks every pixel right but stays below background's: nothing is called
    fg = np.where(target == 1, -1.0, -3.0) + rng.normal(0, 0.2, target.size)
    logits = np.stack([np.zeros(target.size), fg], axis=1)
    assert dice_score(logits.argmax(1), target) == 0.0
    shift = fit_logit_bias(logits, target)
    assert shift[0] == 0.0 and 1.0 < shift[1] < 3.0  # between the two classes' logits
    assert dice_score((logits + shift).argmax(1), target) > 0.99


def test_fit_logit_bias_leaves_a_model_that_calls_its_classes_right_alone():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, 5000)
    logits = np.eye(3)[target] * 2.0 + rng.normal(0, 0.3, (5000, 3))
    assert np.all(fit_logit_bias(logits, target) == 0.0)
    # a gain under min_gain is not taken either
    logits[:40, 1] += 5.0  # 40 pixels wrongly called 1: a shift could fix few of them
    assert np.all(fit_logit_bias(logits, target, min_gain=0.05) == 0.0)


def _crops_case(under: int, n_groups: int = 6, px: int = 1000):
    """`n_groups` crops of `px` pixels, 30 % foreground. The first `under` ones the model
    ranks right but under-calls (foreground logit -2 on nuclei, -5 elsewhere: nothing
    called); the others it calls right, with background logits spread over [-6, -1.5]
    (a shift above 1.5 invents false positives there)."""
    target = np.tile((np.arange(px) < 0.3 * px).astype(np.int64), n_groups)
    groups = np.repeat(np.arange(n_groups), px)
    fg = np.where(target == 1, 6.0, 0.0)
    bg = target == 0
    fg[bg] = np.tile(np.linspace(-6.0, -1.5, int(bg.sum()) // n_groups), n_groups)
    low = groups < under
    fg[low] = np.where(target[low] == 1, -2.0, -5.0)
    return np.stack([np.zeros(target.size), fg], axis=1), target, groups


def test_fit_logit_bias_with_groups_ignores_a_shift_only_a_few_failing_crops_want():
    # two of six crops (another stain, say) want +2.25; the four the model calls right each
    # lose to the false positives it brings. Pooled over the pixels the fit takes the shift
    # (Dice 0.80 -> 0.89, the share closer); crop by crop 2 gain and 4 lose: no shift
    logits, target, groups = _crops_case(under=2)
    pooled = fit_logit_bias(logits, target)
    assert pooled[1] > 2.0
    by_crop = fit_logit_bias(logits, target, groups=groups)
    assert np.all(by_crop == 0.0)


def test_fit_logit_bias_with_groups_mends_a_prior_wrong_on_most_crops():
    # five of six crops are under-called the same way (a thin class's prior): the shift stays
    logits, target, groups = _crops_case(under=5)
    shift = fit_logit_bias(logits, target, groups=groups)
    assert 2.0 < shift[1] <= 4.0
    low = groups < 5
    assert dice_score((logits[low] + shift).argmax(1), target[low]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="groups"):
        fit_logit_bias(logits, target, groups=groups[:10])


def test_shift_logits_moves_the_folded_class_logits_by_exactly_the_shift():
    mc = ModelConfig(in_channels=1, n_classes=3, depth=2, width=8, boundary_classes=(1,))
    model = UNet(mc).eval()
    shift = np.array([0.0, 1.5, -0.75], np.float32)
    moved = UNet(mc).eval()
    moved.load_state_dict(shift_logits(model.state_dict(), shift, mc))
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        diff = moved(x) - model(x)  # folded: class 1 = logaddexp(interior, boundary)
    assert torch.allclose(diff, torch.tensor(shift).view(1, 3, 1, 1).expand_as(diff), atol=1e-5)


def test_a_calibrated_round_differs_only_by_the_head_bias_and_calls_more_right():
    lab = np.zeros((64, 64), np.int64)
    lab[:, :6] = 1
    lab[30:34] = 1
    img = lab.astype(np.float32)[None]
    cfg = TrainConfig(patch_size=32, batch_size=2, max_steps=2, time_budget_s=None, seed=2,
                      calibrate_bias=True)  # two steps: far from fitted, class 1 over-called
    cal = run_to_end(Trainer(TINY, cfg).fit([img], [lab]))
    plain = run_to_end(Trainer(TINY, cfg.replace(calibrate_bias=False)).fit([img], [lab]))
    assert plain.logit_bias is None and cal.logit_bias[0] == 0.0 and cal.logit_bias[1] < 0
    assert cal.calibration["pred_share"][1] > cal.calibration["true_share"][1]
    for k, v in cal.state_dict.items():
        expected = plain.state_dict[k] + (torch.tensor(cal.logit_bias) if k == "head.bias" else 0)
        assert torch.allclose(v, expected, atol=1e-6), k
    d_cal = dice_score(predict(cal.build_model(), img).labels, lab)
    d_plain = dice_score(predict(plain.build_model(), img).labels, lab)
    assert d_cal >= d_plain + 0.01


def test_fit_logit_bias_does_not_call_a_class_more_often_than_it_occurs():
    # class 1 is 20 % of the pixels and called on 21 %, half of it in the wrong places: a
    # larger shift would catch the other half (Dice 0.49 -> 0.78 on these pixels), but only by
    # calling it on 31 % — fitting where the labels happen to be, not the class's prior
    target = np.zeros(10_000, np.int64)
    target[:2000] = 1
    fg = np.full(10_000, -5.0)
    fg[:1000] = 1.0  # true class 1, called
    fg[1000:2000] = -1.5  # true class 1, missed
    fg[2000:3100] = 1.0  # background called class 1
    logits = np.stack([np.zeros(10_000), fg], axis=1)
    info = {}
    assert np.all(fit_logit_bias(logits, target, info=info) == 0.0)
    assert info["pred_share"][1] == pytest.approx(0.21) and info["true_share"][1] == 0.2
    assert info["dice_after"] == info["dice_before"]


def test_fit_logit_bias_can_lower_every_foreground_class_at_once():
    # three classes, background (30 %) almost never called: its pixels go to classes 1 and 2,
    # both called too often; only lowering both together (raising background) mends it
    rng = np.random.default_rng(2)
    target = rng.choice(3, 20_000, p=[0.3, 0.35, 0.35])
    logits = np.eye(3)[target] * 1.0 + rng.normal(0, 0.1, (20_000, 3))
    logits[:, 0] -= 1.5
    info = {}
    shift = fit_logit_bias(logits, target, info=info)
    assert info["pred_share"][0] < 0.05
    assert shift[0] == 0.0 and shift[1] < 0 and shift[2] < 0
    assert dice_score((logits + shift).argmax(1), target) > 0.99
