"""Resuming a benchmark: each run's state file, the pinned settings of the output folder, and
the round-0 model shared by the strategies of a seed.

Each run keeps ``benchmark_state.json`` (:data:`STATE_NAME`) in its folder (finished rounds, and
the picks of the round in progress, written after every submission), next to its project, which
holds the labelled set and the models. Running the same command again skips finished rounds and
continues a half-done one where it stopped (a submission, a trained model are not redone).
``OUT/config.json`` pins the settings that define the experiment (:func:`check_resume`);
continuing with different ones is refused, but ``rounds``, ``seeds``, ``strategies`` and
``baselines`` may grow.

Round 0 is the same for every strategy of a seed (same initial images, no pre-annotation, same
training seed): :class:`Round0Cache` keeps the first strategy's weights under
``OUT/runs/_round0_s<seed>.*`` and lets the others adopt them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..core.atomic import atomic_path, atomic_write_text
from ..core.serialize import dumps
from .config import BenchmarkConfig

__all__ = ["STATE_NAME", "STATE_VERSION", "Round0Cache", "RunState", "check_resume", "utc_now"]

#: Per-run state file, next to the run's project.
STATE_NAME = "benchmark_state.json"
#: Version of the state file's layout.
STATE_VERSION = 1


def utc_now() -> str:
    """ISO 8601 UTC timestamp with milliseconds: the ``finished_at`` of rows and state files."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RunState:
    """A run's ``benchmark_state.json``: finished rounds and the pending round's picks."""

    def __init__(self, path: Path, kind: str, strategy: str, seed: int) -> None:
        self.path = path
        self.data: dict[str, Any] = {"version": STATE_VERSION, "kind": kind,
                                     "strategy": strategy, "seed": seed, "rounds": [],
                                     "pending": [], "notes": [], "exhausted": False}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"Cannot read the benchmark state {str(path)!r} ({exc}); delete its run "
                    f"folder {str(path.parent)!r} to recompute that run."
                ) from exc
            if loaded.get("strategy") != strategy or int(loaded.get("seed", -1)) != seed:
                raise ValueError(
                    f"{str(path)!r} belongs to {loaded.get('strategy')!r} seed "
                    f"{loaded.get('seed')!r}, not {strategy!r} seed {seed}; use another --out."
                )
            self.data.update(loaded)

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return self.data["rounds"]

    @property
    def pending(self) -> list[dict[str, Any]]:
        return self.data["pending"]

    def save(self) -> None:
        atomic_write_text(self.path, dumps(self.data, indent=1) + "\n")


def check_resume(cfg: BenchmarkConfig) -> None:
    """Refuse to continue a run made with other experiment-defining settings."""
    path = cfg.out / "config.json"
    ident = json.loads(json.dumps(cfg.identity()))
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            dflt = BenchmarkConfig.IDENTITY_DEFAULTS
            if isinstance(old.get("resolved_model"), dict):
                # a field ModelConfig gained since has its default in the older run: the
                # network was made as that default makes it
                from ..core.config import ModelConfig

                fresh = ModelConfig().to_dict()
                old["resolved_model"] = {**{k: v for k, v in fresh.items()
                                            if k in ident["resolved_model"]},
                                         **old["resolved_model"]}
            diff = [f"{k}: {old.get(k, dflt.get(k))!r} -> {ident[k]!r}" for k in ident
                    if old.get(k, dflt.get(k)) != ident[k]]
            if diff:
                raise ValueError(
                    f"{str(cfg.out)!r} holds a benchmark run with other settings ("
                    + "; ".join(diff) + "); use another --out, or the same settings to resume "
                    "(rounds, seeds, strategies and baselines may change)."
                )
            return
    atomic_write_text(path, json.dumps(ident, indent=1) + "\n")


class Round0Cache:
    """The round-0 model of a seed, trained by its first strategy and adopted by the others.

    Only sessions whose round 0 does not depend on the strategy share it (no ensemble, no
    pseudo-labels); the cache is used only when it was trained on the same images with the same
    model and training settings.
    """

    def __init__(self, runs_dir: Path, model_config, train_config) -> None:
        self.runs_dir = runs_dir
        self.model_config = model_config
        self.train_config = train_config

    def paths(self, seed: int) -> tuple[Path, Path]:
        """The weights (safetensors) and their JSON description."""
        base = self.runs_dir / f"_round0_s{seed}"
        return base.with_suffix(".safetensors"), base.with_suffix(".json")

    @staticmethod
    def shares(session) -> bool:
        """Whether the session's round 0 is the same as every other strategy's."""
        req = session.strategy.requirements
        return not (session.strategy.needs_ensemble or req["mode"] == "ensemble"
                    or (session.pseudo_config is not None and session.pseudo_config.enabled))

    @staticmethod
    def _names(session, labelled) -> list[str]:
        by_id = {r.id: r.name for r in session.project.images()}
        return sorted(by_id[i] for i in labelled)

    def save(self, session, seed: int, labelled, steps: int, train_s: float) -> None:
        """Keep the session's freshly trained round-0 model for the seed's other strategies."""
        from safetensors.torch import save_file

        if not self.shares(session):
            return
        weights, doc = self.paths(seed)
        state = {k: v.detach().cpu().contiguous() for k, v in session.model.state_dict().items()}
        with atomic_path(weights) as tmp:
            save_file(state, str(tmp))
        atomic_write_text(doc, json.dumps({
            "images": self._names(session, labelled), "steps": int(steps),
            "seconds": float(train_s), "model_config": self.model_config.to_dict(),
            "train_config": self.train_config.to_dict()}) + "\n")

    def adopt(self, session, seed: int, labelled) -> tuple[int, float] | None:
        """Adopt the seed's cached round-0 model if it was trained on these images.

        Returns its (steps, seconds), or None when there is none to adopt.
        """
        from ..core.project import load_state_dict

        weights, doc = self.paths(seed)
        if not (self.shares(session) and weights.is_file() and doc.is_file()):
            return None
        try:
            info = json.loads(doc.read_text(encoding="utf-8"))
            if info.get("images") != self._names(session, labelled) or \
                    info.get("model_config") != self.model_config.to_dict() or \
                    info.get("train_config") != self.train_config.to_dict():
                return None
            state = load_state_dict(weights)
            session.adopt_model(state, {"steps": info["steps"], "seconds": info["seconds"],
                                        "shared_round0": True})
        except Exception:  # a damaged cache only costs the training it would have saved
            return None
        return int(info["steps"]), float(info["seconds"])
