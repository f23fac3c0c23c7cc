"""A second process for the fault-injection tests: it is SIGKILLed at a chosen moment.

Usage (it imports nothing from the tests package, so it runs as a script)::

    python _child.py stall FOLDER labels|weights|json
    python _child.py train FOLDER
    python _child.py loop FOLDER LOG SEED
    python _child.py read-only FOLDER INPUT_DIR OUT_DIR RO_PARENT

``stall`` makes the next atomic write of a label file / model weights / model JSON stop half
way (half of the bytes in the temporary file, fsync'ed), prints ``stalled`` and sleeps: the
parent then kills it in the middle of that write. ``labels`` stalls inside
``session.submit`` (after the reviewed mask was staged), ``weights`` and ``json`` inside the
checkpoint save at the end of ``session.train``.

``train`` trains (practically) forever, printing ``step N`` after every optimiser step.

``loop`` runs suggest -> submit, and trains every second submission, forever. Before each
submit it logs ``begin <image_id> <hash>``, after it ``done <submission_id> <image_id> <hash>``;
after a training round ``saved <version>``; each line flushed and fsync'ed, so the parent knows
what had returned before the kill. Each returned submit is also announced on stdout (``done
<submission_id>``), so the parent can let the loop get going before its random kill.

``read-only`` runs without write permission on FOLDER and RO_PARENT (see the test): a
read-write open and a create must fail clearly, while a read-only session and ``activeseg
predict`` must work. Prints one line per check; exit status 0 = all good.
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


def _session(folder: str):
    from napari_activeseg.core.project import Project
    from napari_activeseg.core.session import ActiveLearningSession

    project = Project.open(folder)
    return project, ActiveLearningSession(project)  # configs: the project's saved settings


def stall(folder: str, what: str) -> None:
    import tempfile
    from pathlib import Path

    from napari_activeseg.core import atomic
    from napari_activeseg.core.progress import run_to_end

    real = atomic.atomic_write_bytes

    def target(path: Path) -> bool:
        if what == "labels":
            return path.parent.name == "labels" and path.suffix == ".tif"
        return path.parent.name == "models" and path.suffix == (
            ".safetensors" if what == "weights" else ".json")

    def stalling(path, data):
        path = Path(path)
        if not target(path):
            return real(path, data)
        # the temporary name a real write leaves (atomic.is_temp_name matches it)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        with open(tmp, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.fsync(fh.fileno())
        print("stalled", flush=True)
        while True:
            time.sleep(1)

    atomic.atomic_write_bytes = stalling
    project, session = _session(folder)
    if what == "labels":
        image_id = project.labelled_ids()[0]
        h, w = project.get_image(image_id).shape[:2]
        reviewed = np.zeros((h, w), bool)
        reviewed[: h // 2] = True
        session.submit(image_id, np.ones((h, w), np.uint8), reviewed, merge=False)
    else:
        run_to_end(session.train())
    raise SystemExit("the write never stalled")


def train(folder: str) -> None:
    project, session = _session(folder)
    gen = session.train(train_config=session.train_config.replace(max_steps=1_000_000))
    for rec in gen:
        print("step", rec.step, flush=True)


def loop(folder: str, log_path: str, seed: int) -> None:
    from napari_activeseg.core.progress import run_to_end

    rng = np.random.default_rng(seed)
    project, session = _session(folder)
    n_classes = project.n_classes
    with open(log_path, "a") as log:
        print("ready", os.getpid(), flush=True)
        n = 0
        while True:
            picks = session.suggest(1)
            image_id = picks[0].image_id if picks else int(rng.choice(
                [r.id for r in project.images()]))
            h, w = project.get_image(image_id).shape[:2]
            session.mark_shown(image_id, None, picks[0].suggestion_id if picks else None)
            labels = rng.integers(0, n_classes, (h, w), dtype=np.uint8)
            reviewed = None
            if rng.random() < 0.5:
                reviewed = np.zeros((h, w), bool)
                reviewed[: h // 2, : w // 2] = True
            digest = content_hash(labels, reviewed)
            _log(log, f"begin {image_id} {digest}")
            # merge=False: each submission replaces the last, so what returned is what is
            # stored (merging is tested in tests/core/test_regions_loop.py)
            sub = session.submit(image_id, labels, reviewed, merge=False)
            _log(log, f"done {sub} {image_id} {digest}")
            print("done", sub, flush=True)  # the parent times its kill from here
            n += 1
            if n % 2 == 0:
                summary = run_to_end(session.train())
                _log(log, f"saved {summary.model_version}")


def read_only(folder: str, input_dir: str, out_dir: str, ro_parent: str) -> None:
    from pathlib import Path

    from napari_activeseg.cli import main
    from napari_activeseg.core.project import Project, ProjectError
    from napari_activeseg.core.session import ActiveLearningSession

    try:
        Project.open(folder)
    except ProjectError as err:
        assert "read_only=True" in str(err), err
        print("refused read-write open:", err)
    else:
        raise SystemExit("opened a read-only folder read-write")
    try:
        Project.create(Path(ro_parent) / "new-project", arrays={"a": np.zeros((8, 8))})
    except ProjectError as err:
        assert "new-project" in str(err), err
        print("refused create:", err)
    else:
        raise SystemExit("created a project in a read-only folder")
    assert not (Path(ro_parent) / "new-project").exists()
    with Project.open(folder, read_only=True) as project:
        session = ActiveLearningSession(project)
        assert session.model is not None, "the saved model was not loaded"
        image_id = project.images()[0].id
        pred = session.predict(image_id)
        assert pred.labels.shape == project.get_image(image_id).shape[:2]
        assert session.suggest(1), "a read-only session must still suggest"
        try:
            session.submit(image_id, pred.labels)
        except ProjectError as err:
            assert "read-only" in str(err), err
            print("refused submit:", err)
        else:
            raise SystemExit("submitted to a read-only project")
        assert project.integrity_check() == [], project.integrity_check()
    print("read-only session ok")
    rc = main(["predict", folder, input_dir, out_dir, "--device", "cpu"])
    assert rc == 0, rc
    print("cli predict ok")
    print("ok")


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "stall":
        stall(*args)
    elif mode == "train":
        train(*args)
    elif mode == "loop":
        loop(args[0], args[1], int(args[2]))
    elif mode == "read-only":
        read_only(*args)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
