"""Former name of ``benchmarks/box_arms.py`` (paired arms on the same random boxes); the dated
files in ``docs/`` quote their commands with it. Same arguments, same outputs."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("box_arms.py")), run_name="__main__")
