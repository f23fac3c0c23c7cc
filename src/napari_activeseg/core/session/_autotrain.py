"""When training runs by itself: the submissions since the last round and the threshold,
both kept in the project's settings."""

from __future__ import annotations

from ..project import Project


class AutoTrainCounter:
    """Counts submissions since the last training round started, against ``every``."""

    def __init__(self, project: Project) -> None:
        self.project = project

    @property
    def since_train(self) -> int:
        return int(self.project.get_setting("submissions_since_train") or 0)

    @property
    def every(self) -> int:
        """Train by itself after this many submissions (0 = only when asked)."""
        return int(self.project.get_setting("auto_train_every") or 0)

    @every.setter
    def every(self, n: int) -> None:
        if int(n) != n or n < 0:
            raise ValueError(f"auto_train_every must be an integer >= 0, got {n!r}.")
        self.project.set_setting("auto_train_every", int(n))

    @property
    def continuous(self) -> bool:
        value = self.project.get_setting("continuous_training")
        return True if value is None else bool(value)

    @continuous.setter
    def continuous(self, on: bool) -> None:
        if not isinstance(on, bool):
            raise TypeError(f"continuous_training must be True or False, got {on!r}.")
        self.project.set_setting("continuous_training", on)

    def count_submission(self) -> None:
        if not self.project.read_only:
            self.project.set_setting("submissions_since_train", self.since_train + 1)

    def restart(self) -> None:
        """A training round started: count from zero."""
        if not self.project.read_only:
            self.project.set_setting("submissions_since_train", 0)

    def due(self, n_labelled: int) -> bool:
        """Whether enough was submitted since the last round for an automatic one."""
        n = self.every
        return bool(n) and n_labelled > 0 and self.since_train >= n
