"""A second process for the project tests (lock contention, crash safety, read-only folder).

Usage::

    python _project_child.py hold FOLDER               # open read-write, print "ready", wait
    python _project_child.py submit-loop FOLDER LOG SEED
    python _project_child.py read-only-folder FOLDER   # expects a folder it cannot write

``submit-loop`` submits random labels forever. Before each submit it appends
``begin <image_id> <hash>`` to LOG, after ``submit`` returns ``done <submission_id> <image_id>
<hash>``, each line flushed and fsync'ed, so the parent knows which submissions returned before
it killed this process. ``<hash>`` is :func:`content_hash` of what was submitted.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

import numpy as np


def content_hash(labels: np.ndarray, reviewed: np.ndarray | None) -> str:
    """Hash of a submission's pixels, as submitted and as loaded back (all-True mask = None)."""
    if reviewed is not None and reviewed.all():
        reviewed = None
    if reviewed is not None:  # stored as 0 outside the reviewed pixels
        labels = np.where(np.asarray(reviewed, bool), labels, 0)
    digest = hashlib.sha256(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    digest.update(b"none" if reviewed is None else np.asarray(reviewed, bool).tobytes())
    return digest.hexdigest()


def _log(fh, text: str) -> None:
    fh.write(text + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def hold(folder: str) -> None:
    from napari_activeseg.core.project import Project

    project = Project.open(folder)
    print("ready", os.getpid(), flush=True)
    while True:
        time.sleep(1)
        project.images()


def submit_loop(folder: str, log_path: str, seed: int) -> None:
    from napari_activeseg.core.project import Project

    rng = np.random.default_rng(seed)
    project = Project.open(folder)
    ids = [record.id for record in project.images()]
    shapes = {record.id: record.shape[:2] for record in project.images()}
    n_classes = project.n_classes
    with open(log_path, "a") as log:
        print("ready", os.getpid(), flush=True)
        while True:
            image_id = int(rng.choice(ids))
            h, w = shapes[image_id]
            labels = rng.integers(0, n_classes, (h, w), dtype=np.uint8)
            reviewed = None
            if rng.random() < 0.5:  # alternate masks and whole-image submissions
                reviewed = np.zeros((h, w), bool)
                y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
                reviewed[y : y + h // 2, x : x + w // 2] = True
            digest = content_hash(labels, reviewed)
            _log(log, f"begin {image_id} {digest}")
            submission = project.submit(image_id, labels, reviewed, seconds=float(rng.random()),
                                        merge=False)  # stored = submitted (no union)
            _log(log, f"done {submission} {image_id} {digest}")


def read_only_folder(folder: str) -> None:
    """Run without write permission on FOLDER: a read-write open must fail clearly, a read-only
    open must work and refuse writes. Prints one line per check; exit status 0 = all good."""
    from napari_activeseg.core.project import Project, ProjectError

    try:
        Project.open(folder)
    except ProjectError as err:
        assert "read_only=True" in str(err), err
        print("refused read-write:", err)
    else:
        raise SystemExit("opened a read-only folder read-write")
    with Project.open(folder, read_only=True) as project:
        ids = project.labelled_ids()
        assert ids, "expected labelled images"
        labels, _ = project.load_labels(ids[0])
        project.load_image(ids[0])
        assert project.integrity_check() == [], project.integrity_check()
        try:
            project.submit(ids[0], labels)
        except ProjectError as err:
            assert "read-only" in str(err), err
            print("refused submit:", err)
        else:
            raise SystemExit("submitted to a read-only project")
    print("ok")


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "hold":
        hold(args[0])
    elif mode == "submit-loop":
        submit_loop(args[0], args[1], int(args[2]))
    elif mode == "read-only-folder":
        read_only_folder(args[0])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
