"""The active-learning loop of one query strategy on one seed, on the real product.

A :class:`~napari_activeseg.core.project.Project` under ``OUT/runs/<strategy>_s<seed>/`` (images
referenced by path, not copied) is driven by an
:class:`~napari_activeseg.core.session.ActiveLearningSession`. Round 0 labels the seed's initial
images; every round ``r`` (0..rounds) then

1. (r >= 1) asks ``session.suggest(step)`` for the next images (or regions), shows the
   simulated annotator the model's prediction as the pre-annotation, and submits its correction
   (the ground truth, inside the reviewed box in region mode) with ``session.submit``; the
   effort is :func:`~napari_activeseg.core.effort.correction_effort` of the pre-annotation;
2. trains with ``session.train()``: a warm start from the previous round's model, for a fixed
   number of optimiser steps (``steps``), so results do not depend on the machine's load
   (round 0 may adopt the seed's shared model instead, :class:`.resume.Round0Cache`);
3. measures the mean per-image foreground Dice on the test images
   (:meth:`.experiment.Experiment.evaluate`).

Every submission and every finished round is written to the run's state file at once
(:class:`.resume.RunState`), so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

import numpy as np

from ..core.progress import relay
from .experiment import Experiment
from .progress import BenchmarkProgress, Tracker
from .resume import STATE_NAME, Round0Cache, RunState, utc_now

__all__ = ["StrategyRun"]


class StrategyRun:
    """One strategy on one seed: its project, session and state file, round after round."""

    def __init__(self, exp: Experiment, name: str, seed: int, track: Tracker) -> None:
        self.exp = exp
        self.cfg = exp.cfg
        self.name = name
        self.seed = seed
        self.track = track
        self.run = f"{name} s{seed}"
        self.folder = exp.run_dir(name, seed)
        self.state = RunState(self.folder / STATE_NAME, "strategy", name, seed)
        self.round0 = Round0Cache(exp.runs_dir, exp.model_config, exp.train_config)

    def rounds(self) -> Generator[BenchmarkProgress, None, None]:
        """Run (or finish) every round of this strategy and seed; yields progress."""
        from ..core.session import ActiveLearningSession

        exp, track, state, seed = self.exp, self.track, self.state, self.seed
        n_rounds = self.cfg.rounds + 1
        done_rounds = min(len(state.rounds), n_rounds)
        track.advance(done_rounds * exp.unet_round_work(), fresh=False)
        if done_rounds >= n_rounds or state.data.get("exhausted"):
            track.advance((n_rounds - done_rounds) * exp.unet_round_work(), fresh=False)
            yield track.record(self.run, None, "done", f"{done_rounds} round(s) already computed")
            return
        if done_rounds:
            yield track.record(self.run, done_rounds, "resume",
                               f"resuming after {done_rounds} finished round(s)", event="note")
        self.folder.mkdir(parents=True, exist_ok=True)
        project = exp.open_project(self.folder, seed)
        try:
            session = ActiveLearningSession(
                project, model_config=exp.model_config,
                train_config=exp.train_config.replace(seed=seed),
                inference_config=exp.inference_config, strategy=self.name,
                strategy_options={"seed": seed}, seed=seed)
            for rnd in range(done_rounds, n_rounds):
                row = yield from self._round(session, rnd)
                if row is None:  # the pool ran out
                    track.advance((n_rounds - rnd) * exp.unet_round_work(), fresh=False)
                    break
        finally:
            project.close()

    def _recover_unlogged(self, session) -> None:
        """Submissions in the project that the state missed (a crash between the two writes)."""
        exp, state = self.exp, self.state
        project = session.project
        logged = {p["image"] for r in state.rounds for p in r["picks"]}
        logged |= {p["image"] for p in state.pending}
        by_id = {r.id: r.name for r in project.images()}
        for image_id in project.labelled_ids():
            name = by_id[image_id]
            if name in logged:
                continue
            sub = project.submissions(image_id)[-1]
            loaded = project.load_labels(image_id)
            rev = None if loaded is None else loaded[1]
            boxes = None
            if rev is not None:
                ys, xs = np.nonzero(rev)
                boxes = [(int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)]
            px, obj = exp.scratch(name, boxes)
            state.pending.append({
                "image": name, "boxes": boxes, "score": None, "reason": "recovered",
                "pixels_reviewed": int(rev.sum()) if rev is not None else
                int(exp.ds.masks[exp.index[name]].size),
                "pixels_changed": sub.pixels_changed if sub.pixels_changed is not None else px,
                "objects_added": sub.objects_added if sub.objects_added is not None else obj,
                "objects_removed": sub.objects_removed or 0,
                "pixels_from_scratch": px, "objects_from_scratch": obj})
            state.data["notes"].append(f"recovered the submission of {name} from the project")
            state.save()

    def _annotate(self, session, rnd: int, base: float):
        """Fill the round's picks (resuming a half-done round); returns how many were added.

        Picks count images, or boxes in region mode (several boxes of one image are one
        submission with their union as the reviewed mask).
        """
        exp, cfg, state = self.exp, self.cfg, self.state
        project = session.project
        ids = {r.name: r.id for r in project.images()}
        want = cfg.initial if rnd == 0 else cfg.step
        self._recover_unlogged(session)

        def n_picks() -> int:
            return sum(len(p["boxes"]) if p["boxes"] else 1 for p in state.pending)

        added = 0
        while n_picks() < want:
            need = want - n_picks()
            if rnd == 0:
                done = {p["image"] for p in state.pending}
                batch = [(ids[n], boxes, None) for n, boxes in exp.initial_picks(self.seed)
                         if n not in done][:need]
            else:
                yield self.track.record(self.run, rnd, "query",
                                        f"scoring the pool for {need} pick(s)", base)
                sugg = session.suggest(need, regions=cfg.regions, region_size=cfg.region_size)
                grouped: dict[int, list] = {}
                for s in sugg:
                    grouped.setdefault(s.image_id, []).append(s)
                batch = [(i, [tuple(s.box) for s in g] if cfg.regions and g[0].box is not None
                          else None, g) for i, g in grouped.items()]
            if not batch:  # the pool is used up
                break
            for image_id, boxes, group in batch:
                rec = project.get_image(image_id)
                truth = exp.ds.masks[exp.index[rec.name]]
                pred = session.predict(image_id) if session.model is not None else None
                pre = None if pred is None else pred.labels
                ann = exp.annotator.annotate(truth, pre, boxes)
                sid = group[0].suggestion_id if group else None
                session.mark_shown(image_id, pre, sid)
                inst = exp.submitted_instances(rec.name, ann.reviewed)
                session.submit(image_id, None if inst is not None else ann.labels,
                               ann.reviewed, instances=inst)
                state.pending.append({
                    "image": rec.name,
                    "boxes": None if boxes is None else [list(b) for b in boxes],
                    "score": None if not group else float(group[0].score),
                    "reason": "initial draw" if not group else group[0].reason,
                    "pixels_reviewed": ann.pixels_reviewed,
                    **ann.effort.to_dict(),
                    **exp.pick_objects(rec.name, pre, boxes)})
                state.save()
                added += 1
        return added

    def _train(self, session, rnd: int, labelled: list[int]):
        """Train the round's model (unless a crash came after it was saved); (steps, seconds)."""
        cfg, track, run = self.cfg, self.track, self.run
        project = session.project
        rounds = project.rounds()
        if rounds and sorted(rounds[-1].labelled_ids) == labelled and session.model is not None \
                and len(rounds) > len(self.state.rounds):
            return (int(rounds[-1].metrics.get("steps") or 0),
                    float(rounds[-1].wall_times.get("train_s") or 0.0))
        if rnd == 0 and (shared := self.round0.adopt(session, self.seed, labelled)) is not None:
            yield track.record(run, rnd, "train", "reusing the round-0 model of this seed "
                               "(same images, same training seed)", cfg.steps)
            return shared
        summary = yield from relay(session.train(), lambda p: track.record(
            run, rnd, "train", f"step {p.step}/{cfg.steps} loss {p.loss_smooth:.3f}",
            min(p.fraction, 1.0) * cfg.steps) if p.step % 5 == 0 or p.val_dice is not None
            else None)
        if summary is None or not summary.saved:
            raise RuntimeError(f"Training of {run} round {rnd} was cancelled.")
        steps, train_s = int(summary.result.steps), float(summary.result.seconds)
        if rnd == 0:
            self.round0.save(session, self.seed, labelled, steps, train_s)
        return steps, train_s

    def _round(self, session, rnd: int):
        """One round: annotate, train, evaluate; returns its row (None: the pool ran out)."""
        exp, cfg, state, track, run = self.exp, self.cfg, self.state, self.track, self.run
        project = session.project
        work = exp.unet_round_work()
        t0 = time.perf_counter()
        yield from self._annotate(session, rnd, 0.0)
        if not state.pending:
            state.data["exhausted"] = True
            note = f"the pool is exhausted after round {rnd - 1}; {run} stops there"
            state.data["notes"].append(note)
            exp.notes.append(note)
            state.save()
            yield track.record(run, rnd, "stop", note, event="note")
            return None
        query_s = time.perf_counter() - t0

        labelled = sorted(project.labelled_ids())
        t1 = time.perf_counter()
        steps, train_s = yield from self._train(session, rnd, labelled)
        train_wall = time.perf_counter() - t1

        t2 = time.perf_counter()
        dice, per_class = yield from exp.evaluate(session.model, self.seed, track, run, rnd,
                                                  cfg.steps)
        eval_s = time.perf_counter() - t2

        picks = list(state.pending)
        row: dict[str, Any] = exp.effort_row(self.name, self.seed, rnd, picks, state.rounds,
                                             dice)
        row.update(per_class)
        row.update(n_labelled=len(labelled), train_steps=steps, train_s=round(train_s, 2),
                   query_s=round(query_s, 2), eval_s=round(eval_s, 2),
                   seconds=round(query_s + train_wall + eval_s, 2),
                   model_version=session.model_version, finished_at=utc_now(), picks=picks)
        state.rounds.append(row)
        state.data["pending"] = []
        state.save()
        track.advance(work)
        yield track.record(run, rnd, "done", exp.round_message(row), event="round")
        return row
