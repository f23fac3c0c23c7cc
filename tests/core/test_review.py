"""compose_review: what a correction amounts to, with known answers and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from napari_activeseg.core.review import box_mask, compose_review


def test_box_mask_is_the_union_of_half_open_boxes():
    m = box_mask((4, 5), [(0, 0, 2, 2), (1, 1, 3, 4)])
    want = np.array([[1, 1, 0, 0, 0],
                     [1, 1, 1, 1, 0],
                     [0, 1, 1, 1, 0],
                     [0, 0, 0, 0, 0]], bool)
    assert np.array_equal(m, want)
    assert not box_mask((3, 3), []).any()


@pytest.mark.parametrize("box", [(0, 0, 5, 2), (-1, 0, 2, 2), (2, 2, 2, 3), (0, 0, 1)])
def test_a_box_outside_the_image_or_empty_is_refused(box):
    with pytest.raises(ValueError, match="box|Box"):
        box_mask((4, 4), [box])


def test_clipped_boxes_keep_only_their_part_inside_the_image():
    m = box_mask((3, 4), [(-2, 2, 2, 9), (5, 0, 7, 2)], clip=True)  # the second is all outside
    want = np.array([[0, 0, 1, 1],
                     [0, 0, 1, 1],
                     [0, 0, 0, 0]], bool)
    assert np.array_equal(m, want)
    with pytest.raises(ValueError, match="A box is"):
        box_mask((3, 4), [(0, 0, 1)], clip=True)


def test_boxes_scribbles_and_edits_are_reviewed_and_nothing_else():
    shown = np.zeros((6, 6), np.uint8)
    labels = shown.copy()
    labels[5, 5] = 1  # an edit
    scribbles = np.zeros((6, 6), np.uint8)
    scribbles[0, 3:6] = 2  # class 1
    scribbles[4, 0] = 1  # class 0 (background) over a predicted 1
    labels[4, 0] = 1
    out, rev = compose_review(labels, n_classes=2, boxes=[(0, 0, 2, 2)], scribbles=scribbles,
                              shown=shown)
    want = np.zeros((6, 6), bool)
    want[0:2, 0:2] = True
    want[0, 3:6] = True
    want[4, 0] = True
    want[5, 5] = True
    assert np.array_equal(rev, want)
    assert out[0, 3:6].tolist() == [1, 1, 1] and out[4, 0] == 0 and out[5, 5] == 1
    assert labels[4, 0] == 1  # the input is not modified


def test_pending_pixels_and_whole_image_mode():
    labels = np.zeros((3, 3), np.uint8)
    pending = np.zeros((3, 3), bool)
    pending[1, 1] = True
    _, rev = compose_review(labels, n_classes=2, shown=labels, reviewed=pending)
    assert np.array_equal(rev, pending)
    out, rev = compose_review(labels, n_classes=2, whole=True)
    assert rev is None and out is labels
    _, rev = compose_review(labels, n_classes=2, boxes=[(0, 0, 3, 3)])
    assert rev is None  # every pixel reviewed = the whole image


def test_bad_input_is_refused_with_what_to_do():
    labels = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="Nothing was reviewed"):
        compose_review(labels, n_classes=2, shown=labels)
    with pytest.raises(ValueError, match=r"scribble has value 3.*1\.\.2"):
        compose_review(labels, n_classes=2, scribbles=np.full((4, 4), 3, np.uint8))
    with pytest.raises(ValueError, match="scribbles layer has shape"):
        compose_review(labels, n_classes=2, scribbles=np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        compose_review(np.zeros((2, 2, 2)), n_classes=2, whole=True)
