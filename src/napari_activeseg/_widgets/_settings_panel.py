"""The Settings panel (collapsed): model, training and inference settings saved in the project."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QPushButton, QSpinBox, QWidget


def settings_panel():
    """A :class:`SettingsForm` inside a collapsible section (collapsed by default)."""
    from superqt import QCollapsible

    box = QCollapsible("Settings (saved in the project)")
    form = SettingsForm()
    box.addWidget(form)
    return box, form


class SettingsForm(QWidget):
    """Reads a session's configurations into fields and builds new ones from them."""

    def __init__(self) -> None:
        super().__init__()
        form = QFormLayout(self)
        self.width_spin = QSpinBox()
        self.width_spin.setRange(2, 128)
        self.depth_spin = QSpinBox()
        self.depth_spin.setRange(1, 6)
        self.patch_spin = QSpinBox()
        self.patch_spin.setRange(32, 1024)
        self.patch_spin.setSingleStep(32)
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(5, 36_000)
        self.budget_spin.setSuffix(" s")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 1_000_000)
        self.steps_spin.setSpecialValueText("no step limit")
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.mc_spin = QSpinBox()
        self.mc_spin.setRange(1, 64)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.apply_btn = QPushButton("Apply settings")
        form.addRow("U-Net width", self.width_spin)
        form.addRow("U-Net depth", self.depth_spin)
        form.addRow("Patch size", self.patch_spin)
        form.addRow("Time per round", self.budget_spin)
        form.addRow("Steps per round", self.steps_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("MC samples", self.mc_spin)
        form.addRow("Device", self.device_combo)
        form.addRow(self.apply_btn)

    def load(self, session) -> None:
        mc, tc, ic = session.model_config, session.train_config, session.inference_config
        self.width_spin.setValue(mc.width)
        self.depth_spin.setValue(mc.depth)
        self.patch_spin.setValue(tc.patch_size)
        self.budget_spin.setValue(tc.time_budget_s or 0)
        self.steps_spin.setValue(tc.max_steps or 0)
        self.lr_spin.setValue(tc.lr)
        self.mc_spin.setValue(ic.mc_samples)
        self.device_combo.setCurrentText(tc.device)

    def configs(self, session) -> dict:
        """``configure()`` keyword arguments: the session's configurations with these fields."""
        device = self.device_combo.currentText()
        return {
            "model_config": session.model_config.replace(width=self.width_spin.value(),
                                                         depth=self.depth_spin.value()),
            "train_config": session.train_config.replace(
                patch_size=self.patch_spin.value(), time_budget_s=self.budget_spin.value(),
                max_steps=self.steps_spin.value() or None, lr=self.lr_spin.value(),
                device=device),
            "inference_config": session.inference_config.replace(
                mc_samples=self.mc_spin.value(), device=device),
        }
