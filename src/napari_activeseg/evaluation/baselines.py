"""The baselines, as extra "strategies" in the outputs: ``rf`` and ``full``.

``rf``
    The ilastik-style random forest (:class:`.rf.RandomForestSegmenter`), one per round, trained
    from scratch on *the same labelled images (and reviewed regions) as the ``random``
    strategy's run of that seed* when ``random`` is among the strategies; otherwise on its own
    random draws with the same counts (the initial images, then the seed's permutation of the
    pool; one random box per image in region mode). It sees the normalised images without the
    polarity rule, as ilastik would. Its effort columns are the from-scratch counts.
``full``
    The U-Net trained on the whole pool: the ceiling. One row per seed. With ``full_rounds = 1``
    one round of ``full_steps`` steps (validation-based best-weight selection kept, early
    stopping off). With ``full_rounds > 1`` it is trained *to a plateau*: rounds of
    ``full_steps`` steps, each a warm start from the last (a full warm-up + cosine cycle, so
    every measurement is taken at a low learning rate), the test Dice measured after each; it
    stops after the first round that does not beat the best so far by more than
    ``full_min_delta``, or after ``full_rounds`` rounds (the cap). The row reports the best
    round's Dice and its cumulative steps; ``results.json`` keeps every round
    (``full_plateau``). Stopping on the test Dice makes the ceiling, if anything, optimistic,
    which only makes fractions of it harder to reach.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..core.progress import relay
from ..core.review import box_mask
from .config import BenchmarkConfig
from .experiment import Experiment
from .object_columns import OBJECT_COLUMNS
from .progress import RF_ROUND, ROUND_OVERHEAD, Tracker, task_work
from .resume import STATE_NAME, RunState, utc_now

__all__ = ["RF_PER_IMAGE", "plateau_stop", "rf_sets", "run_full", "run_rf"]

#: RandomForestSegmenter's default ``max_samples_per_image``.
RF_PER_IMAGE = 20_000


def rf_sets(exp: Experiment, seed: int) -> list[list[tuple[str, Any]]] | None:
    """Per round, the cumulative (name, boxes) the forest trains on."""
    cfg = exp.cfg
    if "random" in cfg.strategies:
        st = RunState(exp.run_dir("random", seed) / STATE_NAME, "strategy", "random", seed)
        sets, acc = [], []
        for r in st.rounds[: cfg.rounds + 1]:
            acc = acc + [(p["image"], p["boxes"]) for p in r["picks"]]
            sets.append(list(acc))
        return sets
    order = exp.order(seed)
    first = exp.initial_picks(seed)
    rng = np.random.default_rng([seed, 2])
    rest = []
    for i in order[cfg.initial:]:
        boxes = None
        if cfg.regions:
            from ..core.strategies import region_boxes

            cands = region_boxes(exp.ds.masks[i].shape, size=cfg.region_size)
            boxes = [tuple(int(v) for v in cands[int(rng.integers(len(cands)))])]
        rest.append((exp.ds.names[i], boxes))
    sets = []
    for r in range(cfg.rounds + 1):
        n = r * cfg.step
        if r > 0 and n > len(rest):
            break
        sets.append(first + rest[:n])
    return sets


def run_rf(exp: Experiment, seed: int, track: Tracker):
    """The ``rf`` baseline of a seed, round by round; yields progress."""
    from .rf import RandomForestSegmenter

    cfg = exp.cfg
    run = f"rf s{seed}"
    folder = exp.run_dir("rf", seed)
    state = RunState(folder / STATE_NAME, "baseline", "rf", seed)
    sets = rf_sets(exp, seed)
    n_rounds = cfg.rounds + 1
    done_rounds = min(len(state.rounds), n_rounds)
    track.advance(done_rounds * RF_ROUND, fresh=False)
    if done_rounds >= len(sets):
        track.advance((n_rounds - done_rounds) * RF_ROUND, fresh=False)
        if done_rounds < n_rounds:
            yield track.record(run, None, "done", "no further labelled sets to train on")
        return
    folder.mkdir(parents=True, exist_ok=True)
    _, test = exp.splits[seed]
    masks = [exp.ds.masks[i] for i in test]
    for rnd in range(done_rounds, len(sets)):
        t0 = time.perf_counter()
        chosen = sets[rnd]
        yield track.record(run, rnd, "fit", f"random forest on {len(chosen)} images")
        imgs, labs, revs = [], [], []
        for name, boxes in chosen:
            i = exp.index[name]
            rev = None if not boxes else box_mask(exp.ds.masks[i].shape, boxes, clip=True)
            imgs.append(exp.ds.images[i])
            labs.append(exp.ds.masks[i] if rev is None else
                        np.where(rev, exp.ds.masks[i], 0).astype(exp.ds.masks[i].dtype))
            revs.append(rev)
        options = {"seed": seed, **cfg.rf}
        if cfg.rf_samples is not None:
            per_image = options.get("max_samples_per_image", RF_PER_IMAGE)
            options["max_samples_per_image"] = max(1, min(per_image,
                                                          cfg.rf_samples // len(chosen)))
        forest = RandomForestSegmenter(**options).fit(
            imgs, labs, revs, n_classes=exp.ds.n_classes)
        fit_s = time.perf_counter() - t0
        preds = []
        for n, i in enumerate(test):
            preds.append(forest.predict(exp.ds.images[i]))
            if n % 5 == 4:
                yield track.record(run, rnd, "evaluate", f"{n + 1}/{len(test)} test images",
                                   RF_ROUND * (0.3 + 0.7 * (n + 1) / len(test)))
        dice, per_class = exp.scores(preds, masks)
        per_class.update(exp.objects(seed, semantic=preds))
        new = chosen[len(sets[rnd - 1]):] if rnd else chosen
        picks = []
        for name, boxes in new:
            px, obj = exp.scratch(name, boxes)
            shape = exp.ds.masks[exp.index[name]].shape
            picks.append({"image": name, "boxes": boxes,
                          "pixels_reviewed": int(box_mask(shape, boxes, clip=True).sum()) if boxes
                          else int(np.prod(shape)),
                          "pixels_changed": px, "objects_added": obj, "objects_removed": 0,
                          "pixels_from_scratch": px, "objects_from_scratch": obj,
                          **exp.pick_objects(name, None, boxes)})
        row = exp.effort_row("rf", seed, rnd, picks, state.rounds, dice)
        row.update(per_class)
        secs = time.perf_counter() - t0
        # distinct images, as the U-Net rows count them (in region mode one image may
        # come with several submissions, each with its own boxes)
        row.update(n_labelled=len({name for name, _ in chosen}), train_steps=None,
                   train_s=round(fit_s, 2),
                   query_s=0.0, eval_s=round(secs - fit_s, 2), seconds=round(secs, 2),
                   finished_at=utc_now(),
                   picks=[{"image": p["image"], "boxes": p["boxes"]} for p in picks],
                   source="random" if "random" in cfg.strategies else "own draw",
                   rf_samples_per_image=options.get("max_samples_per_image", RF_PER_IMAGE))
        state.rounds.append(row)
        state.save()
        track.advance(RF_ROUND)
        yield track.record(run, rnd, "done", exp.round_message(row), event="round")
    track.advance((n_rounds - len(sets)) * RF_ROUND, fresh=False)


def run_full(exp: Experiment, seed: int, track: Tracker):
    """The ``full`` baseline (the ceiling) of a seed; yields progress."""
    from ..core.session import ActiveLearningSession

    cfg = exp.cfg
    run = f"full s{seed}"
    folder = exp.run_dir("full", seed)
    state = RunState(folder / STATE_NAME, "baseline", "full", seed)
    work = task_work("full", cfg)
    per_round = cfg.full_steps + ROUND_OVERHEAD
    if state.rounds:
        track.advance(work, fresh=False)
        yield track.record(run, None, "done", "already computed")
        return
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    project = exp.open_project(folder, seed)
    try:
        # the ceiling: long rounds, no early stopping inside a round (best validation
        # weights kept); with full_rounds > 1 further rounds until the test Dice plateaus
        tcfg = exp.train_config.replace(
            seed=seed, max_steps=cfg.full_steps,
            patience=max(exp.train_config.patience,
                         cfg.full_steps // max(1, exp.train_config.val_every) + 1))
        session = ActiveLearningSession(
            project, model_config=exp.model_config, train_config=tcfg,
            inference_config=exp.inference_config, strategy="random",
            strategy_options={"seed": seed}, seed=seed)
        done = set(project.labelled_ids())
        todo = [r for r in project.images() if r.id not in done]
        for n, rec in enumerate(todo):
            inst = exp.submitted_instances(rec.name, None)
            session.submit(rec.id, None if inst is not None else
                           exp.ds.masks[exp.index[rec.name]], instances=inst)
            if n % 10 == 9:
                yield track.record(run, 0, "annotate", f"{n + 1}/{len(todo)} pool images")
        labelled = sorted(project.labelled_ids())
        plateau: list[dict[str, Any]] = state.data.setdefault("plateau", [])
        track.advance(len(plateau) * per_round, fresh=False)
        while plateau_stop(plateau, cfg) is None:
            k = len(plateau)
            rounds = project.rounds()
            t1 = time.perf_counter()
            if len(rounds) > k and sorted(rounds[-1].labelled_ids) == labelled and \
                    session.model is not None:  # trained before a crash, not yet measured
                steps = int(rounds[-1].metrics.get("steps") or 0)
            else:
                summary = yield from relay(session.train(), lambda p, k=k: track.record(
                    run, k, "train", f"step {p.step}/{cfg.full_steps} "
                    f"loss {p.loss_smooth:.3f}", min(p.fraction, 1.0) * cfg.full_steps)
                    if p.step % 10 == 0 or p.val_dice is not None else None)
                if summary is None or not summary.saved:
                    raise RuntimeError(f"Training of {run} was cancelled.")
                steps = int(summary.result.steps)
            train_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            dice, per_class = yield from exp.evaluate(session.model, seed, track, run, k,
                                                      cfg.full_steps)
            plateau.append({
                "round": k, "steps": steps,
                "cum_steps": steps + (plateau[-1]["cum_steps"] if plateau else 0),
                "dice": float(dice), **per_class, "train_s": round(train_s, 2),
                "eval_s": round(time.perf_counter() - t2, 2),
                "model_version": session.model_version, "finished_at": utc_now()})
            state.save()
            track.advance(per_round)
            if cfg.full_rounds > 1:
                yield track.record(run, k, "plateau",
                                   f"round {k}: Dice {dice:.3f} after "
                                   f"{plateau[-1]['cum_steps']} steps", event="note")
        best = max(plateau, key=lambda r: r["dice"])  # the first of equal bests
        pool, _ = exp.splits[seed]
        px = sum(exp.scratch(exp.ds.names[i], None)[0] for i in pool)
        obj = sum(exp.scratch(exp.ds.names[i], None)[1] for i in pool)
        n_px = int(sum(exp.ds.masks[i].size for i in pool))
        row = {"strategy": "full", "seed": seed, "round": 0, "n_picked": len(pool),
               "n_labelled": len(labelled), "pixels_reviewed": n_px,
               "dice": float(best["dice"]),
               **{c: v for c, v in best.items() if c.startswith("dice_")
                  or c in OBJECT_COLUMNS},
               "pixels_corrected": px, "objects_corrected": obj, "objects_added": obj,
               "objects_removed": 0, "pixels_scratch": px, "objects_scratch": obj,
               "total_pixels_corrected": px, "total_objects_corrected": obj,
               "total_pixels_scratch": px, "total_objects_scratch": obj,
               "train_steps": int(best["cum_steps"]),
               "train_s": round(sum(r["train_s"] for r in plateau), 2), "query_s": 0.0,
               "eval_s": round(sum(r["eval_s"] for r in plateau), 2),
               "seconds": round(time.perf_counter() - t0, 2),
               "full_rounds_run": len(plateau),
               "steps_total": int(plateau[-1]["cum_steps"]),
               "stop_reason": plateau_stop(plateau, cfg),
               "model_version": best["model_version"], "finished_at": utc_now(),
               "picks": []}
        state.rounds.append(row)
        state.save()
    finally:
        project.close()
    track.advance(max(0.0, work - len(plateau) * per_round), fresh=False)
    yield track.record(run, 0, "done", exp.round_message(row), event="round")


def plateau_stop(plateau: list[dict[str, Any]], cfg: BenchmarkConfig) -> str | None:
    """Why the ``full`` baseline stops after these rounds (None = train another one).

    ``"single"`` (one round asked for), ``"plateau"`` (the last round did not beat the
    best before it by more than ``full_min_delta``) or ``"cap"`` (``full_rounds`` done).
    """
    if not plateau:
        return None
    if cfg.full_rounds == 1:
        return "single"
    if len(plateau) >= 2:
        before = max(r["dice"] for r in plateau[:-1])
        if plateau[-1]["dice"] <= before + cfg.full_min_delta:
            return "plateau"
    if len(plateau) >= cfg.full_rounds:
        return "cap"
    return None
