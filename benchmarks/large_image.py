"""Peak memory and wall time to score one very large image (issue 20 item 3).

Writes a ``--side`` x ``--side`` uint8 one-channel image (bright disks on noise, tile by tile:
it never exists whole here either) as a tiled, zlib-compressed TIFF in a temporary folder,
then, in a fresh child process, creates a project with it, adopts the default model
(``ModelConfig()``, untrained weights: the cost of a pass does not depend on them) and scores
the pool in box mode with the default strategy and window size -- the image is over the default
``large_image_pixels`` (4096^2), so it is read lazily, predicted tile by tile and only
per-window scores and a display overview are kept. The child reports its peak resident set
(``ru_maxrss``), the wall time of the scoring pass, the number of windows and the
``OMP_NUM_THREADS`` it ran with.

``--predict`` measures ``activeseg predict`` instead: a project with the same untrained default
model predicts the folder holding the image (:func:`~napari_activeseg.core.export.predict_folder`,
labels and the entropy map): read lazily, predicted strip by strip, written as tiled TIFFs a tile
row at a time; the child reports its peak resident set, the wall time and the outputs' sizes.

Prints one JSON line. Usage::

    OMP_NUM_THREADS=1 python benchmarks/large_image.py [--side 20000] [--limit-s 600] [--predict]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_activeseg.core.largeimage import LARGE_IMAGE_PIXELS, LARGE_SETTING

TILE = 512


def _tiles(side: int, seed: int = 0):
    """The image's tiles, row by row (what tifffile writes from an iterator)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:TILE, :TILE]
    n = -(-side // TILE)
    for _ in range(n * n):
        tile = (rng.random((TILE, TILE)) * 50).astype(np.uint8)
        for _ in range(6):
            cy, cx, r = rng.integers(0, TILE), rng.integers(0, TILE), rng.integers(6, 20)
            tile[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 200
        yield tile


def write_image(path: Path, side: int) -> None:
    import tifffile

    tifffile.imwrite(path, _tiles(side), shape=(side, side), dtype=np.uint8,
                     tile=(TILE, TILE), compression="zlib")


def child(path: str, folder: str, threshold: int = LARGE_IMAGE_PIXELS,
          limit_s: float = 0.0) -> dict:
    """Create the project, score the pool; runs in its own process (its own ru_maxrss).
    ``limit_s`` > 0 stops the pass after that many seconds (the tiles done say how far)."""
    import re
    import resource
    import threading

    from napari_activeseg.core.config import ModelConfig
    from napari_activeseg.core.model import UNet
    from napari_activeseg.core.project import Project
    from napari_activeseg.core.session import ActiveLearningSession

    t0 = time.perf_counter()
    project = Project.create(folder, classes=("background", "object"),
                             settings={LARGE_SETTING: int(threshold)})
    project.add_images([path])
    config = ModelConfig(polarity="none")
    session = ActiveLearningSession(project, model_config=config)
    session.adopt_model(UNet(config).state_dict())
    intake_s = time.perf_counter() - t0
    if limit_s > 0:
        timer = threading.Timer(limit_s, session.request_stop)
        timer.daemon = True
        timer.start()
    t1 = time.perf_counter()
    tiles = (0, 0)
    for rec in session.score_pool(regions=True):
        found = re.search(r"(\d+) of (\d+) tiles", rec.message)
        if found:
            tiles = (int(found[1]), int(found[2]))
    score_s = time.perf_counter() - t1
    held = session.cache_holdings()
    result = {
        "strategy": session.strategy.name,
        "intake_s": round(intake_s, 1),
        "score_s": round(score_s, 1),
        "tiles_done": tiles[0], "tiles_total": tiles[1],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "region_size": session.region_size,
        "cache": [(h["kind"], h["shapes"]) for h in held],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "(unset)"),
    }
    if limit_s > 0 and tiles[0]:
        result["predict_s_extrapolated"] = round(score_s * tiles[1] / tiles[0])
    project.close()
    return result


def predict_child(path: str, folder: str, threshold: int = LARGE_IMAGE_PIXELS) -> dict:
    """``activeseg predict`` of the folder holding `path` with an untrained default model, in
    its own process (its own ru_maxrss)."""
    import resource

    from napari_activeseg.core.config import ModelConfig
    from napari_activeseg.core.export import predict_folder
    from napari_activeseg.core.model import UNet
    from napari_activeseg.core.project import Project

    config = ModelConfig(polarity="none")
    with Project.create(Path(folder) / "project", arrays={"seed": np.zeros((64, 64), np.uint8)},
                        classes=("background", "object"),
                        settings={LARGE_SETTING: int(threshold)}) as project:
        project.save_model(UNet(config).state_dict(), config)
    image = Path(path)
    tiles = [0]
    t0 = time.perf_counter()
    result = predict_folder(Path(folder) / "project", image.parent, Path(folder) / "out",
                            pattern=image.name, uncertainty="entropy", device="cpu",
                            progress=lambda r: tiles.__setitem__(0, r.tiles_total or tiles[0]))
    predict_s = time.perf_counter() - t0
    if result.failed:
        raise SystemExit(f"Prediction failed: {result.failed}")
    files = result.files
    return {
        "predict_s": round(predict_s, 1), "tiles_total": tiles[0],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "outputs_mib": {p.name: round(p.stat().st_size / 2 ** 20) for p in files},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "(unset)"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=20000)
    parser.add_argument("--image", help="score this TIFF instead of writing one")
    parser.add_argument("--threshold", type=int, default=LARGE_IMAGE_PIXELS,
                        help="large_image_pixels (default 4096^2)")
    parser.add_argument("--limit-s", type=float, default=0.0,
                        help="stop the scoring pass after this many seconds (0: run it all)")
    parser.add_argument("--predict", action="store_true",
                        help="measure activeseg predict of the image instead of pool scoring")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--predict-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.predict_child:
        path, folder, threshold = args.predict_child
        print(json.dumps(predict_child(path, folder, int(threshold))))
        return
    if args.child:
        path, folder, threshold, limit = args.child
        print(json.dumps(child(path, folder, int(threshold), float(limit))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.image) if args.image else Path(tmp) / "in" / "large.tif"
        t0 = time.perf_counter()
        if not args.image:
            path.parent.mkdir()
            write_image(path, args.side)
        write_s = time.perf_counter() - t0
        command = ["--predict-child", str(path), tmp, str(args.threshold)] if args.predict \
            else ["--child", str(path), str(Path(tmp) / "project"), str(args.threshold),
                  str(args.limit_s)]
        out = subprocess.run([sys.executable, __file__, *command],
                             capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"The {'prediction' if args.predict else 'scoring'} process "
                             f"failed:\n{out.stderr}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result.update(side=args.side, file_mib=round(path.stat().st_size / 2 ** 20),
                      write_s=round(write_s, 1), load=os.getloadavg())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
