"""The Project panel: class names, New from folder / from layers, Open, and what is open."""

from __future__ import annotations

from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout


class ProjectPanel(QGroupBox):
    """Buttons to create or open a project; the dock connects them."""

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
        row = QHBoxLayout()
        self.new_folder_btn = QPushButton("New from folder…")
        self.new_layers_btn = QPushButton("From layers")
        self.new_layers_btn.setToolTip("New project from the open image layers")
        self.open_btn = QPushButton("Open…")
        for b in (self.new_folder_btn, self.new_layers_btn, self.open_btn):
            row.addWidget(b)
        v.addLayout(row)
        self.project_label = QLabel("No project open.")
        self.project_label.setWordWrap(True)
        v.addWidget(self.project_label)

    def show_session(self, session) -> None:
        """The open project in one wrapped line, and its classes in the classes field."""
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
