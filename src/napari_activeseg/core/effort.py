"""Correction effort: what an annotator changed from the pre-annotation.

Used to record the real effort of a submission (pixels changed from the model's prediction,
objects added or removed) and by the simulated annotator of the benchmark, next to the effort of
annotating the same image from scratch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Effort:
    """Effort of turning ``pre`` into ``final`` inside the reviewed area.

    Attributes
    ----------
    pixels_changed : int
        Reviewed pixels whose class differs between the pre-annotation and the final labels.
    objects_added : int
        Connected foreground objects of the final labels that touch no pre-annotated object of
        their class (drawn from nothing).
    objects_removed : int
        Pre-annotated objects that touch no final object of their class (deleted).
    pixels_from_scratch : int
        Foreground pixels of the final labels: what painting from an empty canvas would take.
    objects_from_scratch : int
        Objects of the final labels: what drawing from an empty canvas would take.
    """

    pixels_changed: int
    objects_added: int
    objects_removed: int
    pixels_from_scratch: int
    objects_from_scratch: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _objects(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from skimage.measure import label

    lab = label(mask, connectivity=1)
    return lab, int(lab.max())


def correction_effort(
    pre: np.ndarray | None, final: np.ndarray, reviewed: np.ndarray | None = None
) -> Effort:
    """Compare a pre-annotation with the submitted labels.

    Parameters
    ----------
    pre : (H, W) int ndarray or None
        The pre-annotation shown to the annotator (the model's prediction); None = empty.
    final : (H, W) int ndarray
        The submitted class map.
    reviewed : (H, W) bool ndarray, optional
        Only these pixels count (default: all).
    """
    final = np.asarray(final)
    pre = np.zeros_like(final) if pre is None else np.asarray(pre)
    if pre.shape != final.shape:
        raise ValueError(f"Pre-annotation shape {pre.shape} differs from labels {final.shape}.")
    if reviewed is not None:
        reviewed = np.asarray(reviewed, bool)
        if reviewed.shape != final.shape:
            raise ValueError(
                f"Shape mismatch: the reviewed mask has shape {reviewed.shape} but the labels "
                f"{final.shape}; both must have the image's height and width."
            )
        pre = np.where(reviewed, pre, 0)
        final = np.where(reviewed, final, 0)
    changed = int(np.count_nonzero(pre != final))
    added = removed = from_scratch_objects = 0
    for k in np.union1d(np.unique(pre), np.unique(final)):
        if k == 0:
            continue
        f_lab, n_f = _objects(final == k)
        p_lab, _ = _objects(pre == k)
        from_scratch_objects += n_f
        a, r = _added_removed(p_lab, f_lab)
        added, removed = added + a, removed + r
    return Effort(changed, added, removed, int(np.count_nonzero(final)), from_scratch_objects)


def _added_removed(pre_ids: np.ndarray, final_ids: np.ndarray) -> tuple[int, int]:
    """Final objects touching no pre-annotated one (added), and pre-annotated objects
    touching no final one (removed); 0 = no object."""
    both = (pre_ids > 0) & (final_ids > 0)
    n_f = np.unique(final_ids[final_ids > 0]).size
    n_p = np.unique(pre_ids[pre_ids > 0]).size
    return (n_f - np.unique(final_ids[both]).size, n_p - np.unique(pre_ids[both]).size)


def instance_effort(
    pre: np.ndarray | None, final: np.ndarray, reviewed: np.ndarray | None = None
) -> Effort:
    """:func:`correction_effort` in objects: ``pre`` (the objects shown, or None) and
    ``final`` (the objects submitted) are instance images (one id per object, 0 = none), so
    touching objects count one by one. ``pixels_changed``: reviewed pixels that became, or
    stopped being, part of an object."""
    final = np.asarray(final)
    pre = np.zeros_like(final) if pre is None else np.asarray(pre)
    if pre.shape != final.shape:
        raise ValueError(f"Shown objects' shape {pre.shape} differs from {final.shape}.")
    if reviewed is not None:
        reviewed = np.asarray(reviewed, bool)
        pre, final = np.where(reviewed, pre, 0), np.where(reviewed, final, 0)
    added, removed = _added_removed(pre, final)
    return Effort(int(np.count_nonzero((pre > 0) != (final > 0))), added, removed,
                  int(np.count_nonzero(final)), int(np.unique(final[final > 0]).size))
