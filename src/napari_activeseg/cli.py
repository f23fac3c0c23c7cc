"""The ``activeseg`` command line.

Subcommands wrap the same core generators the napari widgets use, with a text progress line.
Heavy imports happen inside the subcommands so ``activeseg --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys


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


def _cmd_demo(args: argparse.Namespace) -> int:
    import napari

    viewer = napari.Viewer(title="napari-activeseg demo")
    viewer.open_sample("napari-activeseg", "nuclei")
    if args.screenshot:
        viewer.window._qt_window.resize(1400, 900)
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        return 0
    napari.run()
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
