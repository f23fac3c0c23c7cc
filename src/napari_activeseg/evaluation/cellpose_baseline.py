"""The ``cellpose`` baseline: Cellpose 3 trained from scratch on the same labelled images.

Asked for with ``--baselines ...,cellpose`` on a dataset with ``instances/`` and one
foreground class, when the optional ``cellpose`` package (``pip install
'napari-activeseg[cellpose]'``, Cellpose 3) is installed; otherwise skipped with a note in
``results.json``. Nothing is downloaded: the network is Cellpose's default ``CPnet``
built with ``pretrained_model=None`` and ``model_type=None`` (random weights; Cellpose logs
"no model weights loaded").

What it sees, round by round
    The same labelled images as the ``rf`` baseline (the ``random`` strategy's picks when
    ``random`` runs, else the seed's own random draws: :func:`.baselines.rf_sets`), with
    their *instance* labels (in region mode, the reviewed boxes cut out). Images go in as
    the U-Net sees them (percentile-normalised, the polarity rule applied), as one gray
    channel (the mean of the channels); Cellpose normalises them again by its own
    percentiles. Images without any object are left out (Cellpose cannot size them).
The same step budget
    Like the U-Net, round 0 starts from random weights and every later round warm-starts
    from the previous round's network and trains ``steps`` optimiser steps. Cellpose counts
    epochs: ``train_seg`` runs ``ceil(nimg_per_epoch / batch_size)`` steps per epoch, so
    ``nimg_per_epoch = batch_size`` makes one epoch one step and ``n_epochs = steps``.
    The batch holds ``CELLPOSE_BATCH`` 224 x 224 patches (Cellpose's patch size), about the
    pixels of the U-Net's default batch (16 x 128 x 128); fewer labelled images than that
    are repeated in the list so every step has a full batch. The rest is Cellpose's own
    recipe (AdamW, lr 0.005 with its warm-up and final halvings, weight decay 1e-5, random
    rotation/flip/rescale to its mean diameter of 30 px).
Prediction
    ``CellposeModel.eval`` at the mean object diameter of the training labels (the one
    Cellpose measured while training), flow threshold 0.4, cell-probability threshold 0.
    Dice is scored on its foreground (``masks > 0``), the objects as ``inst_*`` columns
    (``inst_method = "cellpose"``).
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any

import numpy as np

from ..core.review import box_mask
from .baselines import rf_sets
from .experiment import Experiment
from .progress import ROUND_OVERHEAD, Tracker
from .resume import STATE_NAME, RunState, utc_now

__all__ = ["CELLPOSE_BATCH", "cellpose_skip_reason", "run_cellpose"]

#: 224 x 224 patches per optimiser step (~ the pixels of 16 U-Net patches of 128 x 128).
CELLPOSE_BATCH = 5


def cellpose_skip_reason(exp: Experiment) -> str | None:
    """Why the cellpose baseline cannot run on this benchmark (None: it can)."""
    if exp.ds.instances is None:
        return (f"cellpose baseline skipped: {exp.ds.root.name} has no instances/ folder "
                "(Cellpose learns objects, not class maps)")
    if exp.ds.n_classes != 2:
        return (f"cellpose baseline skipped: {exp.ds.root.name} has {exp.ds.n_classes - 1} "
                "foreground classes; Cellpose finds objects of one class")
    if importlib.util.find_spec("cellpose") is None:
        return ("cellpose baseline skipped: the cellpose package is not installed "
                "(pip install 'napari-activeseg[cellpose]')")
    return None


def _gray(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) float32, the mean of the channels."""
    return np.ascontiguousarray(np.asarray(image, np.float32).mean(axis=0))


def _new_model(exp: Experiment, path=None):
    """A Cellpose 3 model: random weights, or a round's weights saved by this baseline."""
    import torch
    from cellpose import models

    gpu = exp.cfg.device in ("auto", "cuda") and torch.cuda.is_available()
    model = models.CellposeModel(gpu=gpu, pretrained_model=None if path is None else str(path),
                                 model_type=None, nchan=2)
    # Cellpose runs its CPU network through MKL-DNN, which cannot train (PyTorch refuses
    # MKL-DNN weights in backward); plain CPU tensors train and predict alike
    model.mkldnn = model.net.mkldnn = False
    if path is not None:
        model.diam_labels = float(model.net.diam_labels.item())
    return model


def _training_set(exp: Experiment, chosen) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Gray images and instance labels of the labelled set (boxes cut out in region mode)."""
    from ..core.preprocess import apply_polarity

    pol, margin = exp.model_config.polarity, exp.model_config.polarity_margin
    imgs, labs = [], []
    for name, boxes in chosen:
        i = exp.index[name]
        gray = _gray(apply_polarity(exp.ds.images[i], pol, margin=margin))
        inst = exp.ds.instances[i]
        crops = [(slice(None), slice(None))] if not boxes else \
            [(slice(int(b[0]), int(b[2])), slice(int(b[1]), int(b[3]))) for b in boxes]
        for crop in crops:
            if inst[crop].any():
                imgs.append(gray[crop])
                labs.append(inst[crop].astype(np.int32))
    return imgs, labs


def _train(exp: Experiment, model, imgs, labs, seed: int, rnd: int, folder) -> None:
    """``steps`` optimiser steps of Cellpose's ``train_seg`` on the labelled set."""
    import torch
    from cellpose import train

    reps = math.ceil(CELLPOSE_BATCH / len(imgs))
    torch.manual_seed(seed * 1000 + rnd)
    train.train_seg(model.net, train_data=imgs * reps, train_labels=labs * reps,
                    channels=[0, 0], normalize=True, n_epochs=int(exp.cfg.steps),
                    batch_size=CELLPOSE_BATCH, nimg_per_epoch=CELLPOSE_BATCH,
                    min_train_masks=0, save_path=str(folder), save_every=10 ** 9,
                    model_name=f"round{rnd}")
    model.diam_labels = float(model.net.diam_labels.item())


def run_cellpose(exp: Experiment, seed: int, track: Tracker):
    """The ``cellpose`` baseline of a seed, round by round; yields progress."""
    cfg = exp.cfg
    run = f"cellpose s{seed}"
    n_rounds = cfg.rounds + 1
    work = cfg.steps + ROUND_OVERHEAD
    reason = cellpose_skip_reason(exp)
    if reason is not None:
        exp.notes.append(reason)
        track.advance(n_rounds * work, fresh=False)
        yield track.record(run, None, "skip", reason, event="note")
        return
    folder = exp.run_dir("cellpose", seed)
    state = RunState(folder / STATE_NAME, "baseline", "cellpose", seed)
    sets = rf_sets(exp, seed)
    done_rounds = min(len(state.rounds), n_rounds)
    track.advance(done_rounds * work, fresh=False)
    if done_rounds >= len(sets):
        track.advance((n_rounds - done_rounds) * work, fresh=False)
        return
    folder.mkdir(parents=True, exist_ok=True)
    last = folder / "models" / f"round{done_rounds - 1}"
    model = _new_model(exp, last if done_rounds and last.is_file() else None)
    images, masks = exp.test_inputs(seed)
    for rnd in range(done_rounds, len(sets)):
        t0 = time.perf_counter()
        chosen = sets[rnd]
        imgs, labs = _training_set(exp, chosen)
        if not imgs:
            note = f"{run} round {rnd}: no labelled image holds an object; nothing to train"
            exp.notes.append(note)
            yield track.record(run, rnd, "skip", note, event="note")
            continue
        yield track.record(run, rnd, "train", f"Cellpose, {cfg.steps} steps on {len(imgs)} "
                           "images")
        _train(exp, model, imgs, labs, seed, rnd, folder)
        fit_s = time.perf_counter() - t0
        yield track.record(run, rnd, "evaluate", f"{len(images)} test images", cfg.steps)
        preds = [np.asarray(model.eval(_gray(img), channels=[0, 0], diameter=None)[0])
                 for img in images]
        dice, extra = exp.scores([(p > 0).astype(np.uint8) for p in preds], masks)
        extra.update(exp.objects(seed, instances=preds, method="cellpose"))
        new = chosen[len(sets[rnd - 1]):] if rnd else chosen
        picks = []
        for name, boxes in new:
            px, obj = exp.scratch(name, boxes)
            shape = exp.ds.masks[exp.index[name]].shape
            reviewed = box_mask(shape, boxes, clip=True).sum() if boxes else np.prod(shape)
            picks.append({"image": name, "boxes": boxes, "pixels_reviewed": int(reviewed),
                          "pixels_changed": px, "objects_added": obj, "objects_removed": 0,
                          "pixels_from_scratch": px, "objects_from_scratch": obj,
                          **exp.pick_objects(name, None, boxes)})
        row: dict[str, Any] = exp.effort_row("cellpose", seed, rnd, picks, state.rounds, dice)
        row.update(extra)
        secs = time.perf_counter() - t0
        prev = state.rounds[-1] if state.rounds else {}
        row.update(n_labelled=len({name for name, _ in chosen}), train_steps=int(cfg.steps),
                   train_s=round(fit_s, 2), query_s=0.0, eval_s=round(secs - fit_s, 2),
                   seconds=round(secs, 2), finished_at=utc_now(),
                   picks=[{"image": p["image"], "boxes": p["boxes"]} for p in picks],
                   source="random" if "random" in cfg.strategies else "own draw",
                   cum_steps=int(prev.get("cum_steps", 0)) + int(cfg.steps),
                   diameter=round(float(model.diam_labels), 2))
        state.rounds.append(row)
        state.save()
        track.advance(work)
        yield track.record(run, rnd, "done", exp.round_message(row), event="round")
    track.advance((n_rounds - len(sets)) * work, fresh=False)
