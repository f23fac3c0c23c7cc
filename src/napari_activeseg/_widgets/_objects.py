"""Annotating objects (issue 18 items 2-3): for a project with a class in "objects" mode, an
image's correction gets a napari Labels layer of ids (``objects: <class>``), pre-filled with
the model's objects (or the stored ones), whose features hold each object's uncertainty, and
an ``object uncertainty`` overlay that paints each object with its doubt. The user paints a
new object with napari's new label (the layer's ``selected_label`` is always max + 1 after
an object is added: the *New object* button, or napari's M key) and fixes merges and splits
with napari's tools; Submit sends the ids through the session's
``submit_objects_correction`` with the boxes and scribbles reviewed like a class map.

:class:`ClassModes` is the control that says which classes are objects (the Project tab).
Class-map-only projects see none of it.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ._common import ANNOTATION, SCRIBBLES
from ._common import notify as _notify

__all__ = ["OBJECTS_PREFIX", "OBJECT_UNCERTAINTY", "ClassModes", "ObjectsReview"]

OBJECTS_PREFIX = "objects: "
OBJECT_UNCERTAINTY = "object uncertainty"
HINT = ("Objects: one colour per object. New object: press M (or the button), then paint; "
        "erase with 0; fill (F) to merge or split.")


class ObjectsReview(QWidget):
    """The objects layer of the open image (a row of the dock's review panel)."""

    def __init__(self, dock) -> None:
        super().__init__()
        self._dock = dock
        self.shown = None  # the ObjectsView on screen
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.hint = QLabel(HINT)
        self.hint.setWordWrap(True)
        self.new_btn = QPushButton("New object")
        self.new_btn.setToolTip("Select an unused id in the objects layer to paint a new "
                                "object with (napari's M key does the same).")
        self.new_btn.clicked.connect(self.new_object)
        row.addWidget(self.hint, 1)
        row.addWidget(self.new_btn)
        self.setVisible(False)

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """Whether the open project has a class in "objects" mode."""
        session = self._dock.session
        return session is not None and bool(session.project.object_classes)

    def layer(self):
        """The objects layer on the canvas, or None."""
        viewer = self._dock.viewer
        name = None if self.shown is None else OBJECTS_PREFIX + self.shown.class_name
        return viewer.layers[name] if name is not None and name in viewer.layers else None

    # ------------------------------------------------------------------ show
    def open(self, view) -> None:
        """After a view is on screen: its objects, predicted off the GUI thread."""
        self.shown = None
        self.setVisible(self.active)
        if not self.active or view is None or hasattr(view, "box"):  # no objects of a
            self._clear()  # large image's box (RegionView) yet: it is never predicted whole
            return
        session, image_id = self._dock.session, view.image_id

        def job():
            yield None
            return session.objects_view(image_id)

        self._dock.jobs.start(job, on_return=self.show, desc="Finding objects")

    def show(self, objects) -> None:
        """GUI thread: the objects layer and its uncertainty overlay."""
        if objects is None or objects.image_id != self._dock.current_id:
            return  # another image was opened meanwhile
        viewer = self._dock.viewer
        self._clear()
        self.shown = objects
        name = OBJECTS_PREFIX + objects.class_name
        layer = viewer.add_labels(objects.instances.copy(), name=name, opacity=0.7)
        ou = objects.uncertainty
        if ou is not None and ou.ids.size:
            layer.features = {"index": ou.ids, **{k: v for k, v in ou.table().items()
                                                  if k != "label"}}
            viewer.add_image(ou.lookup()[objects.instances], name=OBJECT_UNCERTAINTY,
                             colormap="magma", contrast_limits=(0.0, 1.0), opacity=0.5,
                             blending="additive", visible=False)
        session = self._dock.session
        if ANNOTATION in viewer.layers and not self._has_area_classes(session):
            viewer.layers[ANNOTATION].visible = False  # the objects layer says it all
        layer.selected_label = objects.next_id
        layer.mode = "paint"
        viewer.layers.selection.active = layer
        effort = objects.effort
        if effort is not None:
            self.hint.setText(f"{HINT} Likely: {len(effort.remove)} to remove, "
                              f"{len(effort.split_merge)} to split/merge, {effort.add} to add.")
        else:
            self.hint.setText(HINT)

    def is_edited(self) -> bool:
        """Whether the user changed the objects shown (a new model must not replace them)."""
        layer = self.layer()
        return layer is not None and not np.array_equal(np.asarray(layer.data),
                                                        self.shown.instances)

    def new_object(self) -> None:
        """Select the next unused id in the objects layer (napari's M key)."""
        layer = self.layer()
        if layer is not None:
            layer.selected_label = int(np.asarray(layer.data).max()) + 1
            layer.mode = "paint"
            self._dock.viewer.layers.selection.active = layer

    def _clear(self) -> None:
        viewer = self._dock.viewer
        for ly in [ly for ly in viewer.layers if ly.name.startswith(OBJECTS_PREFIX)
                   or ly.name == OBJECT_UNCERTAINTY]:
            viewer.layers.remove(ly)

    @staticmethod
    def _has_area_classes(session) -> bool:
        project = session.project
        return project.n_classes > 1 + len(project.object_classes)

    # ------------------------------------------------------------------ submit
    def submit(self, image_id: int, *, whole: bool) -> None:
        """Send the objects layer (and, with "area" classes, the annotation layer) to the
        session; raises ValueError when the objects are not shown yet or nothing was
        reviewed (the dock says "Not saved: ...")."""
        layer = self.layer()
        if layer is None or self.shown is None or self.shown.image_id != image_id:
            raise ValueError("the objects of this image are still being found (or their layer "
                             "was removed): wait a moment, or reopen the image.")
        viewer, session = self._dock.viewer, self._dock.session
        labels = None
        if self._has_area_classes(session) and ANNOTATION in viewer.layers:
            labels = np.asarray(viewer.layers[ANNOTATION].data)
        scribbles = np.asarray(viewer.layers[SCRIBBLES].data) if SCRIBBLES in viewer.layers \
            else None
        session.submit_objects_correction(image_id, np.asarray(layer.data), labels=labels,
                                          scribbles=scribbles, whole=whole)
        self.shown = None


class ClassModes(QGroupBox):
    """Which classes are objects: one "area / objects" choice per foreground class, applied
    with ``session.set_class_modes`` (a change of modes starts a fresh model)."""

    MODES = ("area", "objects")

    def __init__(self, dock) -> None:
        super().__init__("Class modes")
        self._dock = dock
        v = QVBoxLayout(self)
        self.form = QFormLayout()
        v.addLayout(self.form)
        self.apply_btn = QPushButton("Apply class modes")
        self.apply_btn.setToolTip("'objects': one id per object (touching nuclei stay "
                                  "separate, counted and measured one by one); 'area': a "
                                  "class map. Changing them starts a fresh model.")
        self.apply_btn.clicked.connect(self.apply)
        v.addWidget(self.apply_btn)
        self.combos: dict[str, QComboBox] = {}
        dock.session_changed.connect(self.load)
        self.load()

    def load(self) -> None:
        """One choice per foreground class of the open project."""
        while self.form.rowCount():
            self.form.removeRow(0)
        self.combos = {}
        session = self._dock.session
        if session is None:
            self.setVisible(False)
            return
        for name, mode in session.project.class_modes.items():
            combo = QComboBox()
            combo.addItems(self.MODES)
            combo.setCurrentText(mode)
            self.form.addRow(name, combo)
            self.combos[name] = combo
        self.apply_btn.setEnabled(not session.project.read_only)
        self.setVisible(True)

    def modes(self) -> dict[str, str]:
        return {name: combo.currentText() for name, combo in self.combos.items()}

    def apply(self) -> None:
        session = self._dock.session
        if session is None:
            return
        if self.modes() == session.project.class_modes:
            return
        try:
            session.set_class_modes(self.modes())
        except ValueError as exc:  # ProjectError is one
            _notify("error", f"Class modes not changed: {exc}")
            return
        _notify("info", "Class modes saved; the next training round starts a fresh model.")
        view = self._dock.current_view
        self._dock.objects.open(view)
