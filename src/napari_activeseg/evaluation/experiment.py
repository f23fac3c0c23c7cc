"""One benchmark invocation's shared ground: the dataset, the resolved model, training and
inference settings, each seed's pool/test split and initial draw, the run folders, and what
every run measures the same way (test Dice, the from-scratch effort, the effort columns of a
round).

:class:`Experiment` is built once by :func:`.runner.run_benchmark`; the active-learning loop
(:mod:`.loop`), the baselines (:mod:`.baselines`) and the outputs (:mod:`.results`) read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.review import box_mask
from .annotator import SimulatedAnnotator
from .config import BenchmarkConfig
from .dataset import SegDataset, class_dice, load_dataset, mean_dice, read_mask, split_dataset
from .object_columns import instance_mode, object_columns, pick_effort, sum_effort
from .progress import ROUND_OVERHEAD, Tracker
from .report import class_columns

__all__ = ["Experiment"]


class Experiment:
    """The dataset, the configs and the per-seed draws of one benchmark invocation."""

    def __init__(self, cfg: BenchmarkConfig) -> None:
        from ..core.config import InferenceConfig, ModelConfig, TrainConfig

        self.cfg = cfg
        self.ds: SegDataset = load_dataset(cfg.data, max_images=cfg.max_images)
        ds = self.ds
        self.index = {name: i for i, name in enumerate(ds.names)}
        if cfg.objects and (ds.instances is None or ds.n_classes != 2):
            raise ValueError(
                f"--objects needs a dataset with instances/ and one foreground class; "
                f"{str(ds.root)!r} has {'no instances/' if ds.instances is None else ''}"
                f"{'' if ds.instances is None else f'{ds.n_classes - 1} foreground classes'}."
            )
        # in the instance mode the network has the boundary output the project will ask for
        self.model_config = ModelConfig(**{"in_channels": ds.in_channels,
                                           "n_classes": ds.n_classes,
                                           **({"boundary_classes": (1,)} if cfg.objects else {}),
                                           **cfg.model})
        if self.model_config.polarity == "pool":
            from ..core.preprocess import decide_polarity

            # one rule for the whole dataset, as a project decides it from its images (from the
            # intensities only, no mask; test images included: every seed then trains under
            # the same rule); recorded as the concrete "invert"/"none"
            self.model_config = self.model_config.replace(polarity=decide_polarity(ds.images))
        if self.model_config.in_channels != ds.in_channels or \
                self.model_config.n_classes != ds.n_classes:
            raise ValueError(
                f"The dataset has {ds.in_channels} channel(s) and {ds.n_classes} classes; do not "
                "override in_channels or n_classes."
            )
        self.train_config = TrainConfig(**{"max_steps": cfg.steps, "time_budget_s": None,
                                           "device": cfg.device, **cfg.train})
        self.inference_config = InferenceConfig(**{"device": cfg.device, **cfg.inference})
        k = ds.n_classes
        self.classes = ("background", "foreground") if k == 2 else \
            ("background", *(f"class {i}" for i in range(1, k)))
        self.splits = {s: split_dataset(len(ds), seed=s, test_fraction=cfg.test_fraction)
                       for s in cfg.seeds}
        for seed, (pool, _) in self.splits.items():
            if cfg.initial > len(pool):
                raise ValueError(
                    f"--initial {cfg.initial} is more than the {len(pool)} pool images of seed "
                    f"{seed} ({len(ds)} images, test fraction {cfg.test_fraction}); lower it."
                )
        self.runs_dir = cfg.out / "runs"
        self.notes: list[str] = []
        self.annotator = SimulatedAnnotator()
        self._test_cache: tuple[int, list[np.ndarray]] | None = None
        self._pixels_scratch: dict[tuple, tuple[int, int]] = {}

    # -------------------------------------------------------------- draws
    def order(self, seed: int) -> list[int]:
        """The seed's permutation of the pool: its first ``initial`` entries start every run."""
        pool, _ = self.splits[seed]
        return [int(i) for i in np.random.default_rng(seed).permutation(pool)]

    def initial_picks(self, seed: int) -> list[tuple[str, list[tuple[int, ...]] | None]]:
        """Round 0: ``initial`` images (and in region mode one random box in each)."""
        from ..core.strategies import region_boxes

        rng = np.random.default_rng([seed, 1])
        out = []
        for i in self.order(seed)[: self.cfg.initial]:
            boxes = None
            if self.cfg.regions:
                cands = region_boxes(self.ds.masks[i].shape, size=self.cfg.region_size)
                boxes = [tuple(int(v) for v in cands[int(rng.integers(len(cands)))])]
            out.append((self.ds.names[i], boxes))
        return out

    def test_inputs(self, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Test images as the network sees them (normalised, then the polarity rule)."""
        from ..core.preprocess import apply_polarity

        _, test = self.splits[seed]
        if self._test_cache is None or self._test_cache[0] != seed:
            pol, margin = self.model_config.polarity, self.model_config.polarity_margin
            self._test_cache = (seed, [apply_polarity(self.ds.images[i], pol, margin=margin)
                                       for i in test])
        return self._test_cache[1], [self.ds.masks[i] for i in test]

    def test_instances(self, seed: int) -> list[np.ndarray] | None:
        """True instance labels of the seed's test images (None: the dataset has none)."""
        if self.ds.instances is None:
            return None
        return [self.ds.instances[i] for i in self.splits[seed][1]]

    def objects(self, seed: int, *, semantic=None, instances=None, method=None
                ) -> dict[str, Any]:
        """Object-level columns of test predictions (:mod:`.object_columns`); {} without
        ``instances/``."""
        truths = self.test_instances(seed)
        if truths is None:
            return {}
        return object_columns(truths, semantic=semantic, instances=instances, method=method)

    def pick_objects(self, name: str, shown, boxes) -> dict[str, int]:
        """Object effort of correcting ``shown`` on one pick; {} without ``instances/``."""
        if self.ds.instances is None:
            return {}
        return pick_effort(self.ds.instances[self.index[name]], shown, boxes)

    def unet_round_work(self) -> float:
        """Work units of one U-Net round of a strategy."""
        return self.cfg.steps + ROUND_OVERHEAD

    def run_dir(self, name: str, seed: int) -> Path:
        return self.runs_dir / f"{name}_s{seed}"

    def open_project(self, folder: Path, seed: int):
        """The run's project: opened if it exists, else created on the seed's pool (by path)."""
        from ..core.project import Project

        pool, _ = self.splits[seed]
        names = [self.ds.names[i] for i in pool]
        if (folder / "project.sqlite").is_file():
            project = Project.open(folder)
            have = sorted(r.name for r in project.images())
            if have != sorted(names):
                project.close()
                raise ValueError(
                    f"The project in {str(folder)!r} holds other images than the pool of seed "
                    f"{seed}; delete that run folder (or use another --out) to start it again."
                )
        else:
            project = Project.create(
                folder, images=[self.ds.root / "images" / n for n in names],
                classes=self.classes, skip_unreadable=False,
                class_modes={self.classes[1]: "objects"} if self.cfg.objects else None,
                # --objects measures the boundary head, with the model's distance_head the
                # boundary + distance head (the distance formulation is the semantic run's
                # inst_* columns)
                settings={"instance_formulation": "distance_head"
                          if self.model_config.distance_head else "boundary"}
                if self.cfg.objects else None)
        return project

    def submitted_instances(self, name: str, reviewed) -> np.ndarray | None:
        """The objects the annotator submits with an image in ``--objects`` mode (inside the
        reviewed pixels), else None."""
        if not self.cfg.objects:
            return None
        ids = self.ds.instances[self.index[name]]
        return ids if reviewed is None else np.where(reviewed, ids, 0).astype(ids.dtype)

    def evaluate(self, model, seed: int, track: Tracker, run: str, rnd: int, base: float):
        """Mean test Dice of ``model`` and its per-class (and object) columns; yields progress
        per image."""
        from ..core.inference import predict

        images, masks = self.test_inputs(seed)
        with_objects = self.ds.instances is not None
        preds, inst, method = [], [], None
        for n, img in enumerate(images):
            preds.append(predict(model, img, mode="single", maps=(),
                                 config=self.inference_config).labels)
            got = instance_mode(model, img, preds[-1], self.inference_config) \
                if with_objects else None
            if got is not None:
                inst.append(got[0])
                method = got[1]
            if n % 5 == 4:
                yield track.record(run, rnd, "evaluate", f"{n + 1}/{len(images)} test images",
                                   base + ROUND_OVERHEAD * 0.5 * (n + 1) / len(images))
        dice, extra = self.scores(preds, masks)
        extra.update(self.objects(seed, semantic=preds, method=method,
                                  instances=inst if len(inst) == len(preds) else None))
        return dice, extra

    def scores(self, preds, masks) -> tuple[float, dict[str, float]]:
        """Mean per-image foreground Dice, and per-class columns on a multi-class set."""
        k = self.ds.n_classes
        dice = mean_dice(preds, masks, k)
        return dice, class_columns(class_dice(preds, masks, k)) if k > 2 else {}

    def second_observer(self, seed: int) -> float | None:
        """Mean Dice of ``masks_2nd_observer/`` against ``masks/`` on the seed's test images."""
        folder = self.ds.root / "masks_2nd_observer"
        if not folder.is_dir():
            return None
        _, test = self.splits[seed]
        preds, masks = [], []
        for i in test:
            path = folder / self.ds.names[i]
            if not path.is_file():
                continue
            other = read_mask(path)
            if other.shape != self.ds.masks[i].shape or int(other.max()) >= self.ds.n_classes:
                self.notes.append(f"masks_2nd_observer/{path.name} does not fit its mask; "
                                  "the second observer's line leaves it out")
                continue
            preds.append(other)
            masks.append(self.ds.masks[i])
        return mean_dice(preds, masks, self.ds.n_classes) if preds else None

    def scratch(self, name: str, boxes) -> tuple[int, int]:
        """(pixels, objects) annotating an image (or its boxes) from scratch would take."""
        from ..core.effort import correction_effort

        key = (name, None if boxes is None else tuple(tuple(b) for b in boxes))
        if key not in self._pixels_scratch:
            truth = self.ds.masks[self.index[name]]
            rev = None if boxes is None else box_mask(truth.shape, boxes, clip=True)
            e = correction_effort(None, truth, rev)
            self._pixels_scratch[key] = (e.pixels_from_scratch, e.objects_from_scratch)
        return self._pixels_scratch[key]

    @staticmethod
    def effort_row(name, seed, rnd, picks, previous, dice) -> dict[str, Any]:
        """Effort columns of a round: this round's picks, and running totals."""
        px = sum(int(p["pixels_changed"]) for p in picks)
        obj = sum(int(p["objects_added"]) + int(p["objects_removed"]) for p in picks)
        px0 = sum(int(p["pixels_from_scratch"]) for p in picks)
        obj0 = sum(int(p["objects_from_scratch"]) for p in picks)
        prev = previous[-1] if previous else {}
        return {
            "strategy": name, "seed": int(seed), "round": int(rnd),
            "n_picked": sum(len(p["boxes"]) if p.get("boxes") else 1 for p in picks),
            "pixels_reviewed": int(prev.get("pixels_reviewed", 0))
            + sum(int(p["pixels_reviewed"]) for p in picks),
            "dice": float(dice),
            "pixels_corrected": px, "objects_corrected": obj,
            "objects_added": sum(int(p["objects_added"]) for p in picks),
            "objects_removed": sum(int(p["objects_removed"]) for p in picks),
            "pixels_scratch": px0, "objects_scratch": obj0,
            "total_pixels_corrected": int(prev.get("total_pixels_corrected", 0)) + px,
            "total_objects_corrected": int(prev.get("total_objects_corrected", 0)) + obj,
            "total_pixels_scratch": int(prev.get("total_pixels_scratch", 0)) + px0,
            "total_objects_scratch": int(prev.get("total_objects_scratch", 0)) + obj0,
            **sum_effort(picks, prev),
        }

    def round_message(self, row) -> str:
        x = (f"{row['n_labelled']} images" if not self.cfg.regions
             else f"{row['pixels_reviewed']} px in {row['n_labelled']} images")
        return (f"Dice {row['dice']:.3f} with {x}; corrected {row['pixels_corrected']} px / "
                f"{row['objects_corrected']} objects (scratch {row['pixels_scratch']} / "
                f"{row['objects_scratch']}); {row['seconds']:.0f} s")
