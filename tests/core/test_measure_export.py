"""The measurements of a project (``activeseg measure``, ``export --measurements``): the CSVs
read back against ``regionprops`` run directly, on a tiny project made here."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
import torch
from skimage.measure import label, regionprops

from napari_activeseg.cli import main
from napari_activeseg.core import export as ex
from napari_activeseg.core.config import ModelConfig
from napari_activeseg.core.model import UNet
from napari_activeseg.core.project import Project

from ..conftest import make_blobs

TINY = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4)
SHAPE = (40, 52)


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def project_folder(tmp_path):
    """Three images, two of them labelled (the second only in its top half), and an untrained
    model."""
    pairs = [make_blobs(shape=SHAPE, seed=s, n=4) for s in range(3)]
    images = {f"img{s}": (p[0] * 200).astype(np.uint8) for s, p in enumerate(pairs)}
    folder = tmp_path / "proj"
    with Project.create(folder, arrays=images, classes=("background", "nucleus")) as project:
        recs = project.images()
        project.submit(recs[0].id, pairs[0][1])
        reviewed = np.zeros(SHAPE, bool)
        reviewed[:20] = True
        project.submit(recs[1].id, pairs[1][1], reviewed)
        torch.manual_seed(0)
        project.save_model(UNet(TINY).state_dict(), TINY)
    return folder


def test_cli_measure_labels_round_trip(project_folder, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["measure", str(project_folder), str(out), "--pixel-size", "0.5"]) == 0
    assert "object(s) in 2 image(s)" in capsys.readouterr().out
    objects, images = _read(out / "objects.csv"), _read(out / "images.csv")
    with Project.open(project_folder, read_only=True) as project:
        for rec in project.images()[:2]:
            labels, reviewed = project.load_labels(rec.id)
            if reviewed is not None:
                labels = np.where(reviewed, labels, 0)
            raw = project.load_image(rec.id)
            want = regionprops(label(labels, connectivity=2), intensity_image=raw)
            got = [r for r in objects if int(r["image_id"]) == rec.id]
            assert len(got) == len(want) > 0
            for row, region in zip(got, want):
                assert row["image"] == rec.name and row["source"] == "labels"
                assert row["class"] == "nucleus"
                assert float(row["area_um2"]) == pytest.approx(region.area * 0.25)
                assert float(row["centroid_y_px"]) == pytest.approx(region.centroid[0])
                assert int(row["bbox_x1_px"]) == region.bbox[3]
                assert float(row["mean_intensity_c0"]) == pytest.approx(region.intensity_mean)
                assert float(row["perimeter_um"]) == pytest.approx(region.perimeter * 0.5)
            summary = next(r for r in images if int(r["image_id"]) == rec.id)
            assert int(summary["objects"]) == int(summary["count_nucleus"]) == len(want)
            assert float(summary["median_area_um2"]) == pytest.approx(
                np.median([r.area for r in want]) * 0.25)
            assert float(summary["reviewed_fraction"]) == (1.0 if reviewed is None else 0.5)


def test_cli_measure_predictions_matches_the_exported_prediction(project_folder, tmp_path):
    out = tmp_path / "m"
    assert main(["measure", str(project_folder), str(out), "--source", "both",
                 "--device", "cpu"]) == 0
    images = _read(out / "images.csv")
    assert sorted(r["source"] for r in images) == ["labels"] * 2 + ["predictions"] * 3
    assert "area_px" in _read(out / "objects.csv")[0]  # no pixel size: pixels
    result = ex.export_predictions(project_folder, tmp_path / "p", maps=(), device="cpu")
    for key, (path, *_rest) in result.written.items():
        n = len(regionprops(label(tifffile.imread(path), connectivity=2)))
        row = next(r for r in images if r["source"] == "predictions" and r["image"] == key)
        assert int(row["objects"]) == n


def test_nothing_to_measure_is_a_clear_message_and_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "proj"
    image = (make_blobs(shape=SHAPE)[0] * 200).astype(np.uint8)
    Project.create(folder, arrays={"a": image}).close()
    for source, why in (("labels", "no submitted labels"), ("predictions", "no trained model"),
                        ("both", "no submitted labels")):
        assert main(["measure", str(folder), str(tmp_path / "out"), "--source", source]) == 2
        assert why in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_cancelled_measurement_writes_no_csv(project_folder, tmp_path):
    gen = ex.measure_project_iter(project_folder, tmp_path / "m")
    first = next(gen)
    assert (first.done, first.total) == (1, 2)
    gen.close()
    assert not (tmp_path / "m" / "objects.csv").exists()


def test_export_writes_the_measurements_of_the_labels(project_folder, tmp_path, capsys):
    assert main(["export", str(project_folder), str(tmp_path / "e"), "--measurements"]) == 0
    assert "measurements:" in capsys.readouterr().out
    rows = _read(tmp_path / "e" / "measurements" / "images.csv")
    assert [r["source"] for r in rows] == ["labels", "labels"]


def test_objects_submitted_as_instances_are_measured_as_they_were_painted(tmp_path):
    """Two touching nuclei painted as two objects stay two; a cell measured as area is one."""
    folder = tmp_path / "proj"
    image = (make_blobs(shape=SHAPE)[0] * 200).astype(np.uint8)
    with Project.create(folder, arrays={"a": image},
                        classes=("background", "nucleus", "cell")) as project:
        project.set_class_modes({"nucleus": "objects"})
        instances = np.zeros(SHAPE, np.uint16)
        instances[5:10, 5:10] = 1
        instances[5:10, 10:14] = 2                     # touches object 1
        labels = np.zeros(SHAPE, np.uint8)
        labels[20:30, 30:40] = 2                       # a cell, no id
        project.submit_instances(project.images()[0].id, instances, labels=labels,
                                 object_class="nucleus")
    result = ex.measure_project(folder, tmp_path / "m")
    got = sorted((r["class"], r["area_px"]) for r in result.objects)
    assert got == [("cell", 100.0), ("nucleus", 20.0), ("nucleus", 25.0)]
    assert result.images[0]["count_nucleus"] == 2


def test_predicted_objects_are_the_models_post_processed_instances(tmp_path):
    from napari_activeseg.core.config import InferenceConfig
    from napari_activeseg.core.export.predicting import prepared
    from napari_activeseg.core.instances import predict_instances

    folder = tmp_path / "proj"
    pairs = [make_blobs(shape=SHAPE, seed=s, n=5) for s in range(2)]
    cfg = ModelConfig(in_channels=1, n_classes=2, depth=2, width=4, boundary_classes=(1,),
                      polarity="none")
    with Project.create(folder, arrays={f"i{s}": (p[0] * 200).astype(np.uint8)
                                        for s, p in enumerate(pairs)}) as project:
        project.set_class_modes({project.classes[1]: "objects"})
        torch.manual_seed(1)
        project.save_model(UNet(cfg).state_dict(), cfg)
        result = ex.measure_project(project, tmp_path / "m", source="predictions",
                                    device="cpu")
        model, _ = project.load_unet()
        for rec in project.images():
            pred = predict_instances(model, prepared(project.load_image(rec.id), cfg),
                                     object_classes=(1,),
                                     config=InferenceConfig().replace(device="cpu"))
            row = next(r for r in result.images if r["image_id"] == rec.id)
            assert row["objects"] == pred.count
            ids = sorted(r["object_id"] for r in result.objects if r["image_id"] == rec.id)
            assert ids == list(range(1, pred.count + 1))
        assert result.objects  # the untrained model finds some
