"""Known answers of the measurement table on hand-made label images."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from napari_activeseg.core import serialize
from napari_activeseg.core.measure import (
    image_columns,
    measure_image,
    object_columns,
    objects_of,
    summarize,
)

CLASSES = ("background", "nucleus", "cell")


def two_squares():
    """Object 1: rows 2-5, cols 3-6 (4x4, value 5); object 2: rows 10-12, cols 10-14 (3x5,
    values 0..14)."""
    labels = np.zeros((16, 20), np.uint16)
    image = np.zeros((16, 20), np.float32)
    labels[2:6, 3:7] = 1
    image[2:6, 3:7] = 5
    labels[10:13, 10:15] = 2
    image[10:13, 10:15] = np.arange(15).reshape(3, 5)
    return image, labels


def test_two_squares_known_areas_centroids_bboxes_intensities():
    image, labels = two_squares()
    rows, ids = measure_image(image, instances=labels, name="img")
    assert [r["object_id"] for r in rows] == [1, 2]
    np.testing.assert_array_equal(ids, labels)
    a, b = rows
    assert (a["area_px"], b["area_px"]) == (16, 15)
    assert (a["centroid_y_px"], a["centroid_x_px"]) == (3.5, 4.5)
    assert (b["centroid_y_px"], b["centroid_x_px"]) == (11.0, 12.0)
    assert [a[f"bbox_{s}_px"] for s in ("y0", "x0", "y1", "x1")] == [2, 3, 6, 7]
    assert [b[f"bbox_{s}_px"] for s in ("y0", "x0", "y1", "x1")] == [10, 10, 13, 15]
    assert (a["mean_intensity_c0"], a["min_intensity_c0"], a["max_intensity_c0"]) == (5, 5, 5)
    assert (b["mean_intensity_c0"], b["min_intensity_c0"], b["max_intensity_c0"]) == (7, 0, 14)
    assert a["solidity"] == pytest.approx(1.0) and a["eccentricity"] == pytest.approx(0.0)
    assert a["equivalent_diameter_px"] == pytest.approx(math.sqrt(4 * 16 / math.pi))
    assert b["major_axis_px"] > b["minor_axis_px"]
    assert abs(b["orientation_rad"]) == pytest.approx(math.pi / 2)  # long side along x
    assert a["class"] == "class_1" and a["image"] == "img"
    assert list(a) == object_columns(1)


def test_pixel_size_scales_sizes_and_names_the_unit():
    image, labels = two_squares()
    px, _ = measure_image(image, instances=labels)
    um, _ = measure_image(image, instances=labels, pixel_size=0.5, unit="um")
    assert list(um[0]) == object_columns(1, "um")
    assert um[0]["area_um2"] == pytest.approx(16 * 0.25)
    assert um[1]["perimeter_um"] == pytest.approx(px[1]["perimeter_px"] * 0.5)
    assert um[1]["centroid_x_px"] == px[1]["centroid_x_px"]  # positions stay in pixels
    with pytest.raises(ValueError, match="positive"):
        measure_image(image, instances=labels, pixel_size=0)


def test_empty_image_has_no_rows_and_a_header_only_csv(tmp_path):
    rows, _ = measure_image(np.ones((8, 8)), class_map=np.zeros((8, 8), np.uint8))
    assert rows == []
    serialize.write_csv(tmp_path / "objects.csv", object_columns(1), rows)
    with open(tmp_path / "objects.csv", newline="") as f:
        content = list(csv.reader(f))
    assert content == [object_columns(1)]
    summary = summarize(rows, CLASSES)
    assert summary["objects"] == 0 and summary["count_nucleus"] == 0
    assert summary["mean_area_px"] is None
    assert list(summary) == image_columns(CLASSES)


def test_multichannel_image_is_measured_per_channel():
    image, labels = two_squares()
    stack = np.stack([image, 2 * image + 1], axis=-1)
    rows, _ = measure_image(stack, instances=labels)
    assert list(rows[0]) == object_columns(2)
    assert rows[1]["mean_intensity_c1"] == pytest.approx(2 * 7 + 1)
    assert rows[1]["max_intensity_c1"] == pytest.approx(2 * 14 + 1)
    assert rows[1]["min_intensity_c0"] == 0


def test_class_map_blobs_of_one_class_are_separate_objects():
    class_map = np.zeros((12, 12), np.uint8)
    class_map[1:3, 1:3] = 1          # nucleus, 4 px
    class_map[8:11, 8:11] = 1        # nucleus, 9 px, not connected to the first
    class_map[1:4, 8:10] = 2         # cell, 6 px
    class_map[4, 10] = 2             # touches the cell diagonally: same object (8-connected)
    rows, ids = measure_image(np.ones((12, 12)), class_map=class_map, classes=CLASSES)
    assert [(r["class"], r["area_px"]) for r in rows] == [
        ("nucleus", 4), ("nucleus", 9), ("cell", 7)]
    assert ids.max() == 3 and set(np.unique(ids[class_map == 1])) == {1, 2}
    summary = summarize(rows, CLASSES, name="x")
    assert (summary["objects"], summary["count_nucleus"], summary["count_cell"]) == (3, 2, 1)
    assert summary["mean_area_px"] == pytest.approx(20 / 3) and summary["median_area_px"] == 7


def test_instances_take_the_majority_class_of_the_class_map():
    instances = np.zeros((6, 6), np.uint16)
    instances[0:2, 0:3] = 4  # gaps in ids are kept as they are
    instances[3:6, 3:6] = 9
    class_map = np.zeros((6, 6), np.uint8)
    class_map[0:2, 0:2] = 2   # 4 of its 6 px are "cell"
    class_map[0:2, 2] = 1
    class_map[3:6, 3:6] = 1
    ids, class_of = objects_of(class_map, instances)
    assert class_of == {4: 2, 9: 1}
    np.testing.assert_array_equal(ids, instances)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"class_map": np.zeros((4, 5), np.uint8)}, "does not match"),
    ({"class_map": np.zeros((4, 4), np.float32)}, "integer"),
    ({"instances": -np.ones((4, 4), np.int32)}, "negative"),
    ({}, "class map, an instance image"),
])
def test_bad_input_says_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_image(np.zeros((4, 4)), **kwargs)


def test_class_pixels_outside_every_instance_become_objects_after_the_ids():
    instances = np.zeros((8, 8), np.uint16)
    instances[0:2, 0:2] = 5                 # a nucleus, painted as an object
    class_map = np.zeros((8, 8), np.uint8)
    class_map[0:2, 0:2] = 1
    class_map[5:7, 5:8] = 2                 # a "cell" measured as area: no instance id
    rows, ids = measure_image(np.ones((8, 8)), class_map=class_map, instances=instances,
                              classes=CLASSES)
    assert [(r["object_id"], r["class"], r["area_px"]) for r in rows] == [
        (5, "nucleus", 4), (6, "cell", 6)]
    assert ids[6, 6] == 6 and instances[6, 6] == 0  # the input is not changed
