"""The ``activeseg`` command line.

Subcommands wrap the same core generators the napari widgets use, with a text progress line.
Heavy imports happen inside the subcommands so ``activeseg --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_info(args: argparse.Namespace) -> int:
    import platform

    import torch

    from . import __version__
    from .core.device import choose_device

    print(f"napari-activeseg {__version__}")
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"device (auto): {choose_device('auto')}")
    return 0


def _new_demo_folder(base: Path) -> Path:
    folder, n = base, 1
    while folder.exists() and any(folder.iterdir()):
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _cmd_demo(args: argparse.Namespace) -> int:
    """napari with the workflow docked on the bundled sample images, in a fresh project."""
    import napari

    from ._sample_data import sample_paths
    from ._widgets import ActiveSegWidget
    from .core.project import Project

    folder = _new_demo_folder(Path(args.project).expanduser())
    project = Project.create(folder, images=sample_paths(), copy_images=True,
                             classes=("background", "nucleus"))
    print(f"demo project: {folder}")
    viewer = napari.Viewer(title="napari-activeseg demo")
    widget = ActiveSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Active learning", area="right")
    widget._set_project(project)
    if args.screenshot:
        return _demo_screenshot(viewer, widget, args)
    widget.suggest_next()
    napari.run()
    return 0


def _demo_screenshot(viewer, widget, args) -> int:
    """Scripted run of the demo for the README screenshot (hidden option)."""
    from qtpy.QtWidgets import QApplication

    from .core.training import run_to_end

    session = widget.session
    picks = session.suggest(2)
    for pick in picks:  # two images labelled from their ground truth, as a user would
        rec = session.project.get_image(pick.image_id)
        from .core.imageio import read_image

        mask = read_image(Path(__file__).parent / "sample_data" / "masks" / rec.name)
        session.submit(pick.image_id, (mask > 0).astype("uint8"))
    run_to_end(session.train())
    widget.refresh_table()
    run_to_end(session.score_pool())
    widget.refresh_table()
    widget._show_suggestion()
    viewer.window._qt_window.resize(1500, 950)
    for _ in range(20):
        QApplication.processEvents()
    viewer.screenshot(args.screenshot, canvas_only=False)
    viewer.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="activeseg",
        description="Active-learning segmentation: train, predict, benchmark (napari plugin CLI).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="versions and the device that would be used")
    info.set_defaults(func=_cmd_info)
    demo = sub.add_parser("demo", help="open napari with the plugin on the bundled nuclei images")
    demo.add_argument("--project", default="~/activeseg-demo",
                      help="folder for the demo project (a new numbered one if it exists)")
    demo.add_argument("--screenshot", default=None, help=argparse.SUPPRESS)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except ValueError as exc:  # bad input: a clear message, no traceback
        print(f"activeseg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
