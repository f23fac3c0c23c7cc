"""Which of the project's images the loop works on: the pool that may be suggested, and the
labelled set that training learns from."""

from __future__ import annotations

import numpy as np

from ..project import Project


def pool_ids(project: Project) -> list[int]:
    """Images that may be suggested: not skipped, and not submitted whole (an image with
    reviewed boxes or scribbles only stays in the pool for its other windows)."""
    return [r.id for r in project.images()
            if r.status in ("unlabelled", "suggested", "in_progress") or r.partial]


def labelled_examples(project: Project) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
    """``(image id, labels, reviewed mask or None = whole)`` of every labelled image."""
    out = []
    for image_id in project.labelled_ids():
        if project.label_regions(image_id):  # a large image: read box by box (labelled_regions)
            continue
        loaded = project.load_labels(image_id)
        if loaded is not None:
            out.append((image_id, loaded[0], loaded[1]))
    return out


def labelled_regions(project: Project) -> list:
    """Every stored box of the large images (:class:`~.project._regions.LabelRegion`: its
    image id is the pair's first item), oldest first: training reads them as crops."""
    return [(image_id, region) for image_id in project.labelled_ids()
            for region in project.label_regions(image_id)]
