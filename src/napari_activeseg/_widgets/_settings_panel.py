"""The Settings panel (a tab of the dock): model, training and inference settings saved in the project.

The form is a magicgui :class:`~magicgui.widgets.Container`: one typed field per setting, read
from the session's configurations by :meth:`SettingsForm.load` and turned back into them by
:meth:`SettingsForm.configs`. *Apply settings* is wired by the dock, which hands the result to
:meth:`~napari_activeseg.core.session.ActiveLearningSession.configure` (which validates and saves).
"""

from __future__ import annotations

from magicgui import widgets as mw

DEVICES = ("auto", "cpu", "cuda", "mps")


def settings_panel():
    """``(widget, form)``: a :class:`SettingsForm` in a scroll area (the dock's Settings tab)."""
    from qtpy.QtWidgets import QScrollArea

    form = SettingsForm()
    box = QScrollArea()
    box.setWidgetResizable(True)
    box.setWidget(form.native)
    return box, form


class SettingsForm(mw.Container):
    """Reads a session's configurations into fields and builds new ones from them."""

    def __init__(self) -> None:
        self.unet_width = mw.SpinBox(label="U-Net width", min=2, max=128)
        self.unet_depth = mw.SpinBox(label="U-Net depth", min=1, max=6)
        self.patch_field = mw.SpinBox(label="Patch size", min=32, max=1024, step=32)
        self.time_field = mw.FloatSpinBox(label="Round time (s, 0: none)", min=0,
                                          max=36_000)
        self.steps_field = mw.SpinBox(label="Round steps (0: none)", min=0,
                                    max=1_000_000)
        self.lr_field = mw.FloatSpinBox(label="Learning rate", min=1e-5, max=1.0, step=1e-4)
        self.mc_field = mw.SpinBox(label="MC samples", min=1, max=64)
        self.consistency_field = mw.FloatSpinBox(
            # two lines: the dock is narrow
            label="Unlabelled-pixel\nconsistency weight", min=0.0, max=10.0, step=0.1,
            tooltip="Consistency training on the pixels nobody labelled (FixMatch-style: the "
                    "model's confident predictions on an image teach it on a perturbed copy; a "
                    "step takes ~1.4x longer); 0 = off, the default. Measured not to help on 2 "
                    "of 5 development sets (docs/2026-12-01-consistency.md).")
        self.calibrate_check = mw.CheckBox(
            text="Calibrate class thresholds",
            tooltip="After each round, shift each class's score so that the model calls as "
                    "much of each class as the reviewed pixels hold, where that raises their "
                    "Dice (on by default: a first model trained on a few boxes of a thin class "
                    "otherwise calls none of it; docs/2026-12-02-calibration.md).")
        self.device_field = mw.ComboBox(label="Device", choices=DEVICES)
        self.apply_btn = mw.PushButton(text="Apply settings")
        super().__init__(widgets=[self.unet_width, self.unet_depth, self.patch_field, self.time_field,
                                  self.steps_field, self.lr_field, self.mc_field,
                                  self.consistency_field, self.calibrate_check,
                                  self.device_field, self.apply_btn])
        self.lr_field.native.setDecimals(5)
        self.time_field.native.setDecimals(0)  # whole seconds: "90.00" is clipped at 290 px

    def load(self, session) -> None:
        mc, tc, ic = session.model_config, session.train_config, session.inference_config
        self.unet_width.value = mc.width
        self.unet_depth.value = mc.depth
        self.patch_field.value = tc.patch_size
        self.time_field.value = tc.time_budget_s or 0
        self.steps_field.value = tc.max_steps or 0
        self.lr_field.value = tc.lr
        self.mc_field.value = ic.mc_samples
        self.consistency_field.value = tc.consistency_weight
        self.calibrate_check.value = bool(tc.calibrate_bias)
        self.device_field.value = tc.device if tc.device in DEVICES else "auto"

    def configs(self, session) -> dict:
        """``configure()`` keyword arguments: the session's configurations with these fields."""
        device = self.device_field.value
        return {
            "model_config": session.model_config.replace(width=self.unet_width.value,
                                                         depth=self.unet_depth.value),
            "train_config": session.train_config.replace(
                patch_size=self.patch_field.value, time_budget_s=self.time_field.value or None,
                max_steps=self.steps_field.value or None, lr=self.lr_field.value, device=device,
                consistency_weight=self.consistency_field.value,
                calibrate_bias=bool(self.calibrate_check.value)),
            "inference_config": session.inference_config.replace(
                mc_samples=self.mc_field.value, device=device),
        }
