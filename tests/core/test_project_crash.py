"""Crash safety of the project store: SIGKILL a process that submits labels in a loop.

After every kill the project must open, pass its integrity check, and hold every submission that
returned before the kill, byte for byte (the submission interrupted by the kill may be there or
not, but never half). Small 64x64 labels and short random delays keep the whole test to seconds.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_activeseg.core.project import Project

from ._project_child import content_hash

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.filterwarnings("ignore::napari_activeseg.core.project.ProjectWarning"),
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
]

CHILD = Path(__file__).with_name("_project_child.py")
N_KILLS = 24


def _start(args: list[str], stderr_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    with open(stderr_path, "ab") as err:
        return subprocess.Popen(
            [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=err, env=env
        )


def _wait_ready(proc: subprocess.Popen, stderr_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline().decode()
            if line.startswith("ready"):
                return
        if proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"child never became ready:\n{stderr_path.read_text()}")


def _read_log(path: Path) -> tuple[list[tuple[int, int, str]], tuple[int, str] | None]:
    """(done submissions in order, the submission in flight at the kill or None)."""
    done, in_flight = [], None
    if not path.exists():
        return done, in_flight
    text = path.read_text()
    lines = text.split("\n")[:-1]  # a line cut by the kill has no newline: ignore it
    for line in lines:
        parts = line.split()
        if parts[0] == "begin":
            in_flight = (int(parts[1]), parts[2])
        elif parts[0] == "done":
            done.append((int(parts[1]), int(parts[2]), parts[3]))
            in_flight = None
    return done, in_flight


def _loaded_hash(project: Project, image_id: int) -> str | None:
    loaded = project.load_labels(image_id)
    return None if loaded is None else content_hash(*loaded)


def test_sigkill_during_submissions_never_loses_a_returned_submission(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "project"
    arrays = {f"img{i}": rng.integers(0, 255, (64, 64), dtype=np.uint8) for i in range(6)}
    Project.create(folder, arrays=arrays, classes=("background", "nucleus", "border")).close()
    stderr_path = tmp_path / "child-stderr.txt"

    expected: dict[int, str | None] = {}  # image id -> hash of its labels on disk
    returned_ids: dict[int, int] = {}  # every submission that returned -> image id
    n_done = n_repaired = 0
    for run in range(N_KILLS):
        log = tmp_path / f"run{run}.log"
        proc = _start(["submit-loop", str(folder), str(log), str(run)], stderr_path)
        _wait_ready(proc, stderr_path)
        time.sleep(float(rng.uniform(0.0, 0.25)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL, stderr_path.read_text()

        done, in_flight = _read_log(log)
        n_done += len(done)
        for submission_id, image_id, digest in done:
            returned_ids[submission_id] = image_id
            expected[image_id] = digest
        with Project.open(folder) as project:
            n_repaired += bool(project.repairs)
            assert project.integrity_check() == [], f"run {run}"
            rows = {s.id: s.image_id for s in project.submissions()}
            # every submission that returned, in this run or before, is recorded ...
            lost = {s: i for s, i in returned_ids.items() if rows.get(s) != i}
            assert not lost, f"run {run}: returned submissions missing from the catalog: {lost}"
            # ... and the labels on disk are the last returned ones, byte for byte, except for
            # the image whose submission the kill interrupted: old or new, never a mix.
            for image in project.images():
                actual = _loaded_hash(project, image.id)
                if in_flight is not None and image.id == in_flight[0]:
                    assert actual in (expected.get(image.id), in_flight[1]), f"run {run}"
                    expected[image.id] = actual
                else:
                    assert actual == expected.get(image.id), f"run {run}, image {image.id}"
    assert n_done > N_KILLS, "the children hardly submitted anything; the test proves nothing"
    print(f"{N_KILLS} kills, {n_done} returned submissions, {n_repaired} reopen(s) with repairs")
