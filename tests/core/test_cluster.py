"""Pool scoring and folder prediction on a Dask cluster (``core.cluster.map_images``): the same
scores and labels as here, every image exactly once even when a worker dies mid-run; and the
adapter's local path, its errors and the model's trip as weights."""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_activeseg.cli import main
from napari_activeseg.core.cluster import PortableModel, check_scheduler, map_images
from napari_activeseg.core.config import InferenceConfig, ModelConfig
from napari_activeseg.core.inference import predict
from napari_activeseg.core.model import UNet
from napari_activeseg.core.progress import run_to_end
from napari_activeseg.core.project import Project
from napari_activeseg.core.session import ActiveLearningSession
from napari_activeseg.core.session._scoring import CandidateTask, image_candidates

from ..conftest import make_blobs

# bottleneck element dropout: MC samples come from torch's global generator
TINY = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, dropout_bottleneck=True,
                   dropout_head=False, dropout_mode="element")
INFER = InferenceConfig(tile_size=32, overlap=8, mc_samples=4)
SHAPE = (40, 52)
N_IMAGES = 5


def _project(folder: Path) -> Project:
    """The same images and the same (untrained, seeded) model every time."""
    images = {f"img{s}": (make_blobs(shape=SHAPE, seed=s, n=4)[0] * 200).astype(np.uint8)
              for s in range(N_IMAGES)}
    project = Project.create(folder, arrays=images, classes=("background", "nucleus"))
    torch.manual_seed(0)
    project.save_model(UNet(TINY).state_dict(), TINY)
    return project


def _scores(project: Project, session: ActiveLearningSession) -> dict[str, float]:
    return {project.get_image(r.image_id).name: r.score
            for r in project.scores(session.strategy.name, session.model_version)}


def _session(project: Project, strategy: str) -> ActiveLearningSession:
    return ActiveLearningSession(project, model_config=TINY, inference_config=INFER,
                                 strategy=strategy)


# --------------------------------------------------------------------------- fast: no cluster


def test_map_images_here_runs_in_order_once_per_key():
    calls = []

    def double(item, *, factor):
        calls.append(item)
        return item * factor

    out = list(map_images(double, [3, 1, 3, 2], shared={"factor": 10}))
    assert out == [(3, 30), (1, 10), (2, 20)]
    assert calls == [3, 1, 2]


def test_scheduler_errors_say_what_to_do(monkeypatch):
    assert check_scheduler(None) is None
    assert check_scheduler(" tcp://10.0.0.5:8786 ") == "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError, match="tcp://host:8786"):
        check_scheduler("localhost")
    with pytest.raises(ValueError, match="distributed.Client"):
        check_scheduler(8786)
    # nothing listens on that port: a clear error after the timeout, not a hang
    with pytest.raises(ValueError, match="Could not reach the Dask scheduler"):
        list(map_images(abs, [1], scheduler="tcp://127.0.0.1:9", timeout_s=1))
    monkeypatch.setitem(sys.modules, "distributed", None)  # not installed
    with pytest.raises(ImportError, match=r"napari-activeseg\[cluster\]"):
        list(map_images(abs, [1], scheduler="tcp://127.0.0.1:9"))


def test_portable_model_travels_as_weights_and_predicts_the_same():
    torch.manual_seed(1)
    model = UNet(TINY).eval()
    wrapped = PortableModel(model)
    assert wrapped.get() is model  # here: the model itself
    data = pickle.dumps(wrapped)
    assert b"torch.nn" not in data and b"UNet" not in data  # config + numpy arrays only
    rebuilt = pickle.loads(data).get()
    assert rebuilt is not model
    image = make_blobs(shape=SHAPE, seed=3)[0][None]
    a = predict(model, image, mode="mc", maps=("bald",), config=INFER)
    b = predict(rebuilt, image, mode="mc", maps=("bald",), config=INFER)
    np.testing.assert_array_equal(a.probs, b.probs)
    np.testing.assert_array_equal(a.uncertainty["bald"], b.uncertainty["bald"])


def test_mc_samples_do_not_depend_on_what_ran_before():
    """Dropout outside the head draws from torch's global generator: with an mc_seed each
    image's samples are the same whatever ran before (here, or first on a fresh worker)."""
    torch.manual_seed(2)
    model = UNet(TINY).eval()
    image = make_blobs(shape=SHAPE, seed=4)[0][None]
    first = predict(model, image, mode="mc", maps=("bald",), config=INFER)
    torch.rand(1000)  # someone else used the generator
    state = torch.get_rng_state()
    again = predict(model, image, mode="mc", maps=("bald",), config=INFER)
    assert torch.equal(state, torch.get_rng_state())  # and it is left as it was
    np.testing.assert_array_equal(first.uncertainty["bald"], again.uncertainty["bald"])
    assert float(first.uncertainty["bald"].max()) > 0  # the samples do differ from each other
    fresh = predict(model, image, mode="mc", maps=("bald",),
                    config=INFER.replace(mc_seed=None))
    assert not np.array_equal(first.uncertainty["bald"], fresh.uncertainty["bald"])


def test_scheduler_setting_is_saved_in_the_project(tmp_path):
    project = _project(tmp_path / "p")
    session = _session(project, "entropy")
    assert session.scheduler is None
    session.scheduler = "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError, match="tcp://host:8786"):
        session.scheduler = "10.0.0.5"
    assert session.scheduler == "tcp://10.0.0.5:8786"
    assert _session(project, "entropy").scheduler == "tcp://10.0.0.5:8786"
    session.scheduler = None
    assert _session(project, "entropy").scheduler is None
    project.close()


# ------------------------------------------------- a LocalCluster of two worker processes (~7 s)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, env={"OMP_NUM_THREADS": "1"}) as lc, \
            distributed.Client(lc) as client:
        yield lc, client


@pytest.mark.parametrize(("strategy", "regions"), [
    ("bald", False), pytest.param("entropy", True, marks=pytest.mark.slow)])
def test_cluster_scores_equal_local_scores(cluster, tmp_path, strategy, regions):
    lc, _ = cluster
    here, there = _project(tmp_path / "here"), _project(tmp_path / "there")
    local, remote = _session(here, strategy), _session(there, strategy)
    remote.scheduler = lc.scheduler_address  # an address: this pass connects by itself
    n_local = run_to_end(local.score_pool(regions=regions, region_size=32))
    records = []
    n_remote = run_to_end(remote.score_pool(regions=regions, region_size=32), records.append)
    assert n_local == n_remote == N_IMAGES
    assert sorted(r.image_id for r in records if r.image_id is not None) == \
        sorted(r.id for r in there.images())
    a, b = _scores(here, local), _scores(there, remote)
    assert a.keys() == b.keys() and len(a) == N_IMAGES
    for name in a:
        assert b[name] == pytest.approx(a[name], abs=1e-6)
    # the same queue: the same suggestions, in the same order, with the same boxes
    picks_a = local.suggest(N_IMAGES, regions=regions)
    picks_b = remote.suggest(N_IMAGES, regions=regions)
    assert [(here.get_image(p.image_id).name, p.box) for p in picks_a] == \
        [(there.get_image(p.image_id).name, p.box) for p in picks_b]
    here.close()
    there.close()


def _candidates_or_die(item, *, task, marker):
    """The first image's first attempt kills its worker process (a node lost mid-run)."""
    if item[0] == 0 and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return image_candidates(item, task=task)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(cluster, tmp_path):
    _, client = cluster
    torch.manual_seed(0)
    model = UNet(TINY).eval()
    images = [make_blobs(shape=SHAPE, seed=s)[0][None] for s in range(6)]
    task = CandidateTask("bald", {}, PortableModel(model), (), INFER, None)
    marker = tmp_path / "died"
    out = list(map_images(_candidates_or_die, list(enumerate(images)), scheduler=client,
                          key=lambda item: item[0],
                          shared={"task": task, "marker": str(marker)}))
    assert marker.exists()  # a worker did die
    ids = [item[0] for item, _ in out]
    assert sorted(ids) == list(range(6))  # every image, exactly once
    for (i, image), cands in out:
        want = image_candidates((i, image), task=task)
        np.testing.assert_allclose(cands[0].maps["bald"], want[0].maps["bald"], atol=1e-6)


def test_predict_with_scheduler_writes_the_same_labels(cluster, tmp_path):
    lc, _ = cluster
    project = _project(tmp_path / "p")
    project.close()
    inputs = tmp_path / "in"
    inputs.mkdir()
    for s in range(4):
        tifffile.imwrite(inputs / f"new{s}.tif",
                         (make_blobs(shape=SHAPE, seed=10 + s)[0] * 200).astype(np.uint8))
    (inputs / "broken.tif").write_bytes(b"not a tiff")
    args = [str(tmp_path / "p"), str(inputs)]
    assert main(["predict", *args, str(tmp_path / "here")]) == 0
    assert main(["predict", *args, str(tmp_path / "there"), "--uncertainty",
                 "--scheduler", lc.scheduler_address]) == 0
    for s in range(4):
        a = tifffile.imread(tmp_path / "here" / f"new{s}_labels.tif")
        b = tifffile.imread(tmp_path / "there" / f"new{s}_labels.tif")
        assert a.dtype == b.dtype and np.array_equal(a, b)
        assert (tmp_path / "there" / f"new{s}_entropy.tif").exists()
    manifest = json.loads((tmp_path / "there" / "predict.json").read_text())
    assert [f["input"] for f in manifest["files"]] == \
        ["broken.tif", "new0.tif", "new1.tif", "new2.tif", "new3.tif"]
    assert manifest["n_written"] == 4 and manifest["n_failed"] == 1 and manifest["completed"]


def _slow_square(item, *, pause, folder):
    Path(folder, f"{item}.started").touch()
    time.sleep(pause)
    return item * item


def test_closing_the_run_cancels_what_is_pending(cluster, tmp_path):
    _, client = cluster
    runs = map_images(_slow_square, range(20), scheduler=client,
                      shared={"pause": 0.3, "folder": str(tmp_path)}, window=20)
    item, result = next(runs)
    assert result == item * item
    runs.close()

    def n_tasks(dask_scheduler):
        return len(dask_scheduler.tasks)

    deadline = time.monotonic() + 30
    while client.run_on_scheduler(n_tasks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run_on_scheduler(n_tasks) == 0  # nothing left running or held
    started = len(list(tmp_path.glob("*.started")))
    assert 1 <= started < 20  # the pending tasks never ran
