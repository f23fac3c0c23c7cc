"""The soak (issue 8, item 3): 50 suggest -> submit -> train rounds in one process.

A tiny synthetic project (55 blob images of 32 x 32, the tiny U-Net, 2 optimiser steps a round)
runs the whole loop the GUI runs -- suggest (which scores the pool with the current model),
show, submit, train -- 50 times after one warm-up round. Resident memory and open file
descriptors are measured after the warm-up and at the end and may grow only a little (nothing
accumulates per round: caches, models, file handles, SQLite connections); at the end the project
passes its integrity check and holds every submission, model and round, byte for byte.
"""

from __future__ import annotations

import gc
import sys
import time

import numpy as np
import psutil
import pytest

from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession

from ._child import content_hash
from ._util import tiny_project

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::napari_activeseg.core.project.ProjectWarning"),
]

ROUNDS = 50
MAX_RSS_GROWTH_MB = 150
MAX_FD_GROWTH = 10


def _usage(proc: psutil.Process) -> tuple[float, int]:
    gc.collect()
    fds = proc.num_fds() if sys.platform != "win32" else proc.num_handles()
    return proc.memory_info().rss / 2**20, fds


def test_soak_50_rounds(tmp_path):
    proc = psutil.Process()
    project, truth = tiny_project(tmp_path / "proj", n=ROUNDS + 5)
    session = ActiveLearningSession(project)
    submitted: dict[int, str] = {}
    versions: list[str] = []

    def one_round() -> None:
        pick = session.suggest(1)[0]
        assert pick.image_id not in submitted
        pre = session.predict(pick.image_id)
        session.mark_shown(pick.image_id, None if pre is None else pre.labels,
                           pick.suggestion_id)
        session.submit(pick.image_id, truth[pick.image_id])
        submitted[pick.image_id] = content_hash(truth[pick.image_id], None)
        summary = run_to_end(session.train())
        assert summary.saved
        versions.append(summary.model_version)

    one_round()  # warm-up: imports, first model, allocator pools
    rss0, fds0 = _usage(proc)
    t0 = time.perf_counter()
    for _ in range(ROUNDS):
        one_round()
    seconds = time.perf_counter() - t0
    rss1, fds1 = _usage(proc)
    print(f"soak: {ROUNDS} rounds in {seconds:.0f} s; RSS {rss0:.0f} -> {rss1:.0f} MB "
          f"({rss1 - rss0:+.0f}), fds {fds0} -> {fds1} ({fds1 - fds0:+d})")
    assert rss1 - rss0 < MAX_RSS_GROWTH_MB, (rss0, rss1)
    assert fds1 - fds0 < MAX_FD_GROWTH, (fds0, fds1)

    project.close()
    with Project.open(tmp_path / "proj") as reopened:
        assert reopened.integrity_check() == []
        assert reopened.labelled_ids() == sorted(submitted)
        for image_id, digest in submitted.items():
            assert content_hash(*reopened.load_labels(image_id)) == digest
        subs = reopened.submissions()
        assert len(subs) == ROUNDS + 1 and not any(s.recovered for s in subs)
        assert all(s.seconds is not None for s in subs)
        assert [m.version for m in reopened.models()] == versions
        assert len(reopened.rounds()) == ROUNDS + 1
        history = reopened.query_history()
        acted = [h for h in history if h["action"] == "submitted"]
        assert len(acted) == ROUNDS + 1 and all(h["submission_id"] for h in acted)
        assert np.isfinite([r.metrics["final_loss"] for r in reopened.rounds()]).all()
        assert ActiveLearningSession(reopened).model_version == versions[-1]
