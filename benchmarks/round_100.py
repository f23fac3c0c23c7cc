"""Issue 16's CPU round: train + re-score on a 100-image pool, with the product defaults.

One default training round (warm start from a short previous round, ``TrainConfig()``
defaults) after a box submission, then re-scoring the pool in the dock's default box mode with
the default strategy: the user's wait between two rounds when continuous training is off.
Real images (the first ``--images`` of ``--data``, DSB 2018 nuclei beside the checkout by
default). Medians over ``--repeats`` rounds, each after one more submitted box.

Usage::

    python benchmarks/round_100.py --json bench_out/round_100.json [--images 100] [--repeats 3]

Run it on an idle machine: the timings of a loaded machine measure the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_nuclei"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)

    import torch

    from napari_activeseg.core.progress import run_to_end
    from napari_activeseg.core.project import Project
    from napari_activeseg.core.review import box_mask
    from napari_activeseg.core.session import ActiveLearningSession
    from napari_activeseg.evaluation.dataset import load_dataset

    ds = load_dataset(a.data, max_images=a.images)
    truth_by_name = dict(zip(ds.names, ds.masks, strict=True))
    rounds = []
    with tempfile.TemporaryDirectory(prefix="activeseg-round100-") as tmp, \
            Project.create(Path(tmp) / "p",
                           images=[ds.root / "images" / n for n in ds.names]) as project:
        session = ActiveLearningSession(project)
        truth = {r.id: truth_by_name[r.name] for r in project.images()}
        ids = [r.id for r in project.images()]
        for i in ids[:4]:
            session.submit(i, truth[i])
        first = session.train_config.replace(max_steps=80, time_budget_s=None)
        run_to_end(session.train(train_config=first))  # the previous round (not timed)
        run_to_end(session.score_pool(regions=True))
        for _ in range(a.repeats):
            s = session.suggest(1, regions=True)[0]
            gt = truth[s.image_id]
            if s.box is not None:
                session.submit(s.image_id, gt, reviewed=box_mask(gt.shape[:2], [s.box]))
            else:
                session.submit(s.image_id, gt)
            t0 = time.perf_counter()
            summary = run_to_end(session.train())
            train_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            n = run_to_end(session.score_pool(regions=True))
            rescore_s = time.perf_counter() - t1
            rounds.append({"train_s": round(train_s, 1), "rescore_s": round(rescore_s, 1),
                           "round_s": round(train_s + rescore_s, 1),
                           "steps": summary.result.steps, "rescored": n,
                           "box": None if s.box is None else list(s.box)})
        out = {
            "round_100_s": statistics.median(r["round_s"] for r in rounds),
            "round_100_max_s": max(r["round_s"] for r in rounds),
            "rounds": rounds, "project": f"{len(ds)} images of {ds.root.name}",
            "strategy": session.strategy.name, "region_size": session.region_size,
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "platform": platform.platform(), "torch": torch.__version__},
        }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
