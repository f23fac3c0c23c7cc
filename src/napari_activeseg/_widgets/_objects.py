"""Annotating objects (issue 18 items 2-3): for a project with classes in "objects" mode, an
image's correction gets one napari Labels layer of ids per object class (``objects:
<class>``), pre-filled with the model's objects (or the stored ones, or the image's draft),
whose features hold each object's uncertainty, and an ``object uncertainty`` overlay that
paints each object with its doubt. One layer per class, not one layer whose ids carry a
class: a new label painted in "objects: nucleus" is a nucleus, with nothing to choose per
id, as napari users keep one Labels layer per kind of object. The user paints a new object
with napari's new label (the layer's ``selected_label`` is always max + 1 after an object is
added: the *New object* button, or napari's M key) and fixes merges and splits with napari's
tools; Submit sends every class's ids through the session's ``submit_objects_correction``
with the boxes and scribbles reviewed like a class map. Edits are saved as the image's draft
a moment after the last stroke (and by the dock's 30 s autosave), so they survive closing
napari or a crash; Submit deletes the draft.

:class:`ClassModes` is the control that says which classes are objects (the Project tab):
for the open project (applied with ``session.set_class_modes``) and, before a project is
created, for the classes typed in the Project tab (the create flow passes them to
``Project.create(class_modes=...)``). Class-map-only projects see no objects layer.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer
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
    """The objects layers of the open image (a row of the dock's review panel)."""

    #: how long after the last stroke in an objects layer its draft is saved (ms)
    DRAFT_DELAY_MS = 2000

    def __init__(self, dock) -> None:
        super().__init__()
        self._dock = dock
        self.shown: dict[str, object] = {}  # class name -> the ObjectsView on screen
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
        self._draft_timer = QTimer(self)
        self._draft_timer.setSingleShot(True)
        self._draft_timer.setInterval(self.DRAFT_DELAY_MS)
        self._draft_timer.timeout.connect(self.autosave)
        self.setVisible(False)

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """Whether the open project has a class in "objects" mode."""
        session = self._dock.session
        # a timer may fire after the project was closed (the viewer closing): not active then
        return session is not None and not session.project.closed and \
            bool(session.project.object_classes)

    def layers(self) -> dict:
        """The objects layers on the canvas, by class name."""
        viewer = self._dock.viewer
        return {name: viewer.layers[OBJECTS_PREFIX + name] for name in self.shown
                if OBJECTS_PREFIX + name in viewer.layers}

    def layer(self, class_name: str | None = None):
        """The objects layer of ``class_name`` (default: the first object class), or None."""
        layers = self.layers()
        if class_name is None:
            return next(iter(layers.values()), None)
        return layers.get(class_name)

    def instances(self) -> dict:
        """The ids painted in each objects layer, by class name."""
        return {name: np.asarray(layer.data) for name, layer in self.layers().items()}

    def combined(self, annotation: np.ndarray | None = None):
        """``(ids, class map)`` of every objects layer at once (ids unique across classes;
        the class map: ``annotation``'s "area" classes, each object its class), or None
        without objects layers -- what the Measure panel measures."""
        layers = self.instances()
        if not layers:
            return None
        classes = self._dock.session.project.classes
        shape = next(iter(layers.values())).shape
        ids = np.zeros(shape, np.int64)
        class_map = np.zeros(shape, np.uint16) if annotation is None or \
            np.shape(annotation) != shape else np.asarray(annotation).astype(np.uint16)
        objects = [classes.index(name) for name in layers]
        class_map[np.isin(class_map, objects)] = 0
        for (_, data), c in zip(layers.items(), objects, strict=True):
            inside = data > 0
            ids[inside] = data[inside].astype(np.int64) + int(ids.max(initial=0))
            class_map[inside] = c
        return ids, class_map

    # ------------------------------------------------------------------ show
    def open(self, view) -> None:
        """After a view is on screen: its objects, predicted off the GUI thread."""
        if self._draft_timer.isActive():  # the last strokes on the image shown before
            self.autosave()
        self.shown = {}
        self.setVisible(self.active)
        if not self.active or view is None or hasattr(view, "box"):  # no objects of a
            self._clear()  # large image's box (RegionView) yet: it is never predicted whole
            return
        session, image_id = self._dock.session, view.image_id

        def job():
            yield None
            return session.objects_views(image_id)

        self._dock.jobs.start(job, on_return=self.show, desc="Finding objects")

    def show(self, views) -> None:
        """GUI thread: one objects layer per object class and their uncertainty overlay."""
        if not views or views[0].image_id != self._dock.current_id:
            return  # another image was opened meanwhile
        viewer = self._dock.viewer
        self._clear()
        overlay, layers = None, []
        for objects in views:
            self.shown[objects.class_name] = objects
            layer = viewer.add_labels(objects.instances.copy(),
                                      name=OBJECTS_PREFIX + objects.class_name, opacity=0.7)
            ou = objects.uncertainty
            if ou is not None and ou.ids.size:
                layer.features = {"index": ou.ids, **{k: v for k, v in ou.table().items()
                                                      if k != "label"}}
                doubt = np.where(objects.instances > 0, ou.lookup()[objects.instances], 0.0)
                overlay = doubt if overlay is None else np.maximum(overlay, doubt)
            layer.selected_label = objects.next_id
            for event in (layer.events.paint, layer.events.data):
                event.connect(self._edited)
            layers.append(layer)
        if overlay is not None:
            viewer.add_image(overlay, name=OBJECT_UNCERTAINTY, colormap="magma",
                             contrast_limits=(0.0, 1.0), opacity=0.5, blending="additive",
                             visible=False)
        session = self._dock.session
        if ANNOTATION in viewer.layers and not self._has_area_classes(session):
            viewer.layers[ANNOTATION].visible = False  # the objects layers say it all
        layers[0].mode = "paint"
        viewer.layers.selection.active = layers[0]
        efforts = [v.effort for v in views if v.effort is not None]
        if efforts:
            self.hint.setText(
                f"{HINT} Likely: {sum(len(e.remove) for e in efforts)} to remove, "
                f"{sum(len(e.split_merge) for e in efforts)} to split/merge, "
                f"{sum(e.add for e in efforts)} to add.")
        else:
            self.hint.setText(HINT)

    def is_edited(self) -> bool:
        """Whether the user changed the objects shown (a new model must not replace them)."""
        return any(not np.array_equal(np.asarray(layer.data), self.shown[name].instances)
                   for name, layer in self.layers().items())

    def new_object(self) -> None:
        """Select the next unused id in the selected objects layer (napari's M key)."""
        active = self._dock.viewer.layers.selection.active
        layer = active if active in self.layers().values() else self.layer()
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

    def _inputs(self) -> dict:
        """``labels`` (the "area" classes' annotation, if any) and ``scribbles`` for the
        session's objects calls."""
        viewer, session = self._dock.viewer, self._dock.session
        labels = None
        if self._has_area_classes(session) and ANNOTATION in viewer.layers:
            labels = np.asarray(viewer.layers[ANNOTATION].data)
        scribbles = np.asarray(viewer.layers[SCRIBBLES].data) if SCRIBBLES in viewer.layers \
            else None
        return {"labels": labels, "scribbles": scribbles}

    # ------------------------------------------------------------------ drafts
    def _edited(self, _event=None) -> None:
        self._draft_timer.start()  # saved once the user pauses

    def autosave(self) -> bool:
        """Save the edited objects (every class) of the image shown as its draft; True when
        saved. Untouched objects are not saved; a failed save waits for the next edit or
        the dock's autosave (a draft is a convenience). Once another image is open (its
        layers replaced the annotation and scribbles), the objects alone are saved."""
        self._draft_timer.stop()
        session = self._dock.session
        if session is None or session.project.closed or session.project.read_only or \
                not self.shown or not self.is_edited():
            return False
        image_id, view = next(iter(self.shown.values())).image_id, self._dock.current_view
        same = view is not None and view.image_id == image_id and not hasattr(view, "box")
        try:
            session.save_objects_draft(image_id, self.instances(),
                                       **(self._inputs() if same else {}))
        except (ValueError, OSError):
            return False
        return True

    # ------------------------------------------------------------------ submit
    def submit(self, image_id: int, *, whole: bool) -> None:
        """Send every objects layer (and, with "area" classes, the annotation layer) to the
        session; raises ValueError when the objects are not shown yet or nothing was
        reviewed (the dock says "Not saved: ...")."""
        self._draft_timer.stop()
        layers = self.layers()
        if not layers or len(layers) != len(self.shown) or \
                next(iter(self.shown.values())).image_id != image_id:
            raise ValueError("the objects of this image are still being found (or their layer "
                             "was removed): wait a moment, or reopen the image.")
        self._dock.session.submit_objects_correction(image_id, self.instances(),
                                                     whole=whole, **self._inputs())
        self.shown = {}


class ClassModes(QGroupBox):
    """Which classes are objects: one "area / objects" choice per foreground class of the
    classes typed in the Project tab. When they are the open project's classes, *Apply*
    saves the choice with ``session.set_class_modes`` (a change of modes starts a fresh
    model); otherwise they are the modes a new project is created with (New from folder,
    From layers: :meth:`~._project_panel.ProjectPanel.create_options` reads :meth:`modes`)."""

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
        dock.project_panel.classes_edit.textChanged.connect(self.load)
        self.load()

    def _typed(self) -> list[str] | None:
        """The foreground classes typed in the Project tab, or None when they do not parse."""
        from ..core.classes import parse_class_spec

        try:
            return parse_class_spec(self._dock.project_panel.classes_edit.text())[0][1:]
        except ValueError:
            return None

    @property
    def for_open_project(self) -> bool:
        """Whether the choices shown are the open project's (else a new project's)."""
        session, typed = self._dock.session, self._typed()
        return session is not None and typed in (None, session.project.classes[1:])

    def load(self) -> None:
        """One choice per class: the open project's modes, or, for the classes of a project
        to create, what was chosen for each name so far ("area" by default)."""
        chosen = self.modes()
        while self.form.rowCount():
            self.form.removeRow(0)
        self.combos = {}
        session, own = self._dock.session, self.for_open_project
        if own:
            modes = session.project.class_modes
        else:
            modes = {name: chosen.get(name, "area") for name in self._typed() or ()}
        for name, mode in modes.items():
            combo = QComboBox()
            combo.addItems(self.MODES)
            combo.setCurrentText(mode)
            combo.setToolTip(f"'objects': each {name} is its own object (one id each); "
                             "'area': a class map.")
            self.form.addRow(name, combo)
            self.combos[name] = combo
        self.setTitle("Class modes" if own else "Class modes of a new project")
        self.apply_btn.setVisible(own)
        self.apply_btn.setEnabled(own and not session.project.read_only)
        self.setVisible(bool(modes))

    def modes(self) -> dict[str, str]:
        return {name: combo.currentText() for name, combo in self.combos.items()}

    def apply(self) -> None:
        session = self._dock.session
        if session is None or not self.for_open_project:
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
