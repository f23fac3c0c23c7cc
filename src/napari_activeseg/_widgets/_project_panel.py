"""The Project panel: class names, New from folder / from layers, Open, Import masks, and what
is open."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

from ._common import notify


class ProjectPanel(QGroupBox):
    """Buttons to create or open a project: each asks for its folders, then says what the user
    chose with a signal the dock acts on."""

    #: (new project folder, folder of images); the folder of images is "" for "From layers"
    create_requested = Signal(str, str)
    open_requested = Signal(str)
    #: a folder of masks to import into the open project
    import_requested = Signal(str)

    def __init__(self) -> None:
        super().__init__("Project")
        v = QVBoxLayout(self)
        self.classes_edit = QLineEdit("background, foreground")
        self.classes_edit.setToolTip("Classes of a new project, comma-separated; the first is "
                                     "the background (label 0). Colours are optional: "
                                     "'background, nucleus:#ffd400, membrane:#00c8ff'. They "
                                     "are saved in the project.")
        row = QHBoxLayout()
        row.addWidget(QLabel("Classes:"))
        row.addWidget(self.classes_edit, 1)
        v.addLayout(row)
        self._add_axes_row(v)
        self.new_folder_btn = QPushButton("New from folder…")
        self.new_layers_btn = QPushButton("From layers")
        self.new_layers_btn.setToolTip("New project from the open image layers")
        self.open_btn = QPushButton("Open…")
        # two per row: the dock stays narrow (the canvas keeps most of the window)
        for pair in ((self.new_folder_btn, self.open_btn),
                     (self.new_layers_btn, self.stack_channels_check)):
            row = QHBoxLayout()
            for w in pair:
                row.addWidget(w, 1)
            v.addLayout(row)
        self.import_btn = QPushButton("Import masks…")
        self.import_btn.setToolTip(
            "Import masks made elsewhere (Fiji, ilastik, Cellpose) as submitted labels: files "
            "named after the images (also <name>_mask, _labels, _cp_masks, ...); labels "
            "already in the project are kept.")
        self._can_import = False  # a project is open read-write
        self.import_btn.setEnabled(False)
        v.addWidget(self.import_btn)
        self.import_btn.clicked.connect(self._import)
        self.new_folder_btn.clicked.connect(self._new_from_folder)
        self.new_layers_btn.clicked.connect(self._new_from_layers)
        self.open_btn.clicked.connect(self._open)
        v.addStretch(1)
        # what is open, in one wrapped line: the dock shows it above its tabs
        self.project_label = QLabel("No project open.")
        self.project_label.setWordWrap(True)

    _AUTO = "auto (from the file)"

    def _add_axes_row(self, v: QVBoxLayout) -> None:
        self.axes_combo = QComboBox()
        self.axes_combo.setEditable(True)
        self.axes_combo.addItems([self._AUTO, "CYX", "YXC", "ZYX", "ZCYX", "TZCYX"])
        self.axes_combo.setToolTip(
            "Axes of the images of a new project, one letter per stored axis: C channels, Z "
            "and T planes (one image each), Y X the plane. 'auto' reads them from the "
            "ImageJ/OME metadata. Saved in the project.")
        self.stack_channels_check = QCheckBox("stack is channels")
        self.stack_channels_check.setToolTip(
            "From layers: a (C, H, W) layer is one multichannel image, not C slices")
        row = QHBoxLayout()
        row.addWidget(QLabel("Axes:"))
        row.addWidget(self.axes_combo, 1)
        v.addLayout(row)

    def create_options(self, from_layers: bool) -> dict:
        """Project.create's axes arguments and class modes the user chose for a new project
        (the modes: the :class:`~._objects.ClassModes` box of this tab, if the dock put one)."""
        from ._objects import ClassModes

        control = self.findChild(ClassModes)
        options = {"class_modes": control.modes()} if control is not None else {}
        if from_layers:
            if self.stack_channels_check.isChecked():
                options["channel_axis"] = -1
            return options
        text = self.axes_combo.currentText().strip()
        return options if text in ("", self._AUTO) else {**options, "axes": text}

    @property
    def stack_is_channels(self) -> bool:
        return self.stack_channels_check.isChecked()

    def _ask_dir(self, title: str) -> str:
        return QFileDialog.getExistingDirectory(self, title)

    def _new_from_folder(self) -> None:
        src = self._ask_dir("Folder of images")
        dst = self._ask_dir("Empty folder for the new project") if src else ""
        if dst:
            self.create_requested.emit(dst, src)

    def _new_from_layers(self) -> None:
        dst = self._ask_dir("Empty folder for the new project")
        if dst:
            self.create_requested.emit(dst, "")

    def _open(self) -> None:
        folder = self._ask_dir("Project folder")
        if folder:
            self.open_requested.emit(folder)

    def _import(self) -> None:
        folder = self._ask_dir("Folder of masks to import")
        if folder:
            self.import_requested.emit(folder)

    def import_masks(self, project, folder: str, jobs, on_done) -> None:
        """Import the masks of `folder` into `project` in a job (see
        :meth:`~napari_activeseg.core.project.Project.import_masks`); the summary is shown as a
        notification, the whole report as the button's tooltip; ``on_done(report)`` follows."""

        def job():
            yield None
            return project.import_masks(folder)

        def done(report) -> None:
            notify("info" if report.imported else "warning", report.summary())
            self.import_btn.setToolTip(str(report))
            on_done(report)

        jobs.start(job, on_return=done, desc="Importing masks", slot="import")

    def show_session(self, session) -> None:
        """The open project in one wrapped line, and its classes in the classes field."""
        self._can_import = session is not None and not session.project.read_only
        self.import_btn.setEnabled(self._can_import)
        if session is None:
            self.project_label.setText("No project open.")
            return
        project = session.project
        self.project_label.setText(
            f"{project.folder.name}: {len(project.images())} images "
            f"({session.n_labelled} labelled), classes {', '.join(project.classes[1:])}; "
            f"model {session.model_version or 'none yet'}")
        self.project_label.setToolTip(str(project.folder))
        self.classes_edit.setText(", ".join(
            [project.classes[0]] + [f"{n}:{c}" for n, c in zip(project.classes[1:],
                                                              project.colors[1:], strict=False)]))

    def set_busy(self, busy: bool) -> None:
        for w in (self.new_folder_btn, self.new_layers_btn, self.open_btn):
            w.setEnabled(not busy)
        self.import_btn.setEnabled(self._can_import and not busy)
