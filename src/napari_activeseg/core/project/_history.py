"""What the loop did: scores, suggestions and the user's answers (the query history), rounds.

- ``scores``: the last score per (image, strategy, model version), written by pool scoring.
- ``suggestions``: what was suggested (an image, or a box of it), by which model and strategy,
  with which score, and what the user did with it (``submitted`` / ``skipped``, linked to the
  submission and so to its effort: seconds, pixels changed, objects added and removed).
- ``rounds``: one row per active-learning round: the model it produced, how, on which images,
  its metrics and wall times.

None of these rows is ground truth; losing them loses the story of a project, never a label.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _store_files as sf
from .. import atomic
from ..validation import check_choice
from ._records import ProjectError, RoundRecord, ScoreRecord, check_int, check_text, dumps

if TYPE_CHECKING:  # pragma: no cover
    from ._catalog import ImageCatalog
    from ._store import _Store

__all__ = ["ACTIONS", "HISTORY_COLUMNS", "HistoryStore"]

ACTIONS = ("submitted", "skipped")
#: The columns of :meth:`HistoryStore.query_history` (and of its CSV export).
HISTORY_COLUMNS = (
    "suggestion_id", "created_at", "image_id", "image_name", "strategy", "model_version",
    "score", "reason", "box", "action", "acted_at", "submission_id", "seconds",
    "pixels_changed", "objects_added", "objects_removed",
)  # fmt: skip


def _finite_or_none(score: Any, what: str) -> float | None:
    if score is None:
        return None
    if not isinstance(score, numbers.Real) or not math.isfinite(float(score)):
        raise ProjectError(f"{what} must be a finite number or None, got {score!r}.")
    return float(score)


class HistoryStore:
    """The ``scores``, ``suggestions`` and ``rounds`` tables (see the module docstring)."""

    def __init__(self, store: _Store, catalog: ImageCatalog) -> None:
        self._store = store
        self._catalog = catalog

    def _known_ids(self) -> set[int]:
        return {int(r[0]) for r in self._store.db.execute("SELECT id FROM images")}

    # ------------------------------------------------------------------ scores

    def save_scores(self, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        """Store scores, keeping the last one per (image, strategy, model version).

        Parameters
        ----------
        rows : iterable of ``(image_id, strategy, model_version, score, reason)``
            Or mappings with those keys; ``model_version`` and ``reason`` may be None, ``score``
            a finite number or None. All rows are written in one transaction, or none.

        Returns
        -------
        n : int
            Rows written.
        """
        self._store.check_writable()
        fields = ("image_id", "strategy", "model_version", "score", "reason")
        clean = []
        for i, item in enumerate(rows):
            if isinstance(item, Mapping):
                missing = [f for f in fields[:2] if f not in item]
                if missing:
                    raise ProjectError(f"Score row {i} lacks {missing}; expected keys {fields}.")
                values = [item.get(f) for f in fields]
            else:
                values = list(item)
                if len(values) != 5:
                    raise ProjectError(
                        f"Score row {i} has {len(values)} values; expected {fields}."
                    )
            image_id, strategy, version, score, reason = values
            image_id = check_int(image_id, f"score row {i}: image_id")
            check_text(strategy, f"score row {i}: strategy", optional=False)
            check_text(version, f"score row {i}: model_version")
            score = _finite_or_none(score, f"score row {i}: score")
            if reason is not None and not isinstance(reason, str):
                reason = dumps(reason, f"score row {i}: reason")
            clean.append((image_id, strategy, version or "", score, reason))
        now = sf.utc_now()
        with self._store.lock:
            unknown = sorted({r[0] for r in clean} - self._known_ids())
            if unknown:
                raise ProjectError(
                    f"Scores for unknown image id(s) {unknown[:10]}; nothing was saved."
                )
            with self._store.transaction() as conn:
                conn.executemany(
                    "INSERT INTO scores(image_id, strategy, model_version, score, reason, "
                    "updated_at) VALUES (?,?,?,?,?,?) ON CONFLICT(image_id, strategy, "
                    "model_version) DO UPDATE SET score = excluded.score, "
                    "reason = excluded.reason, updated_at = excluded.updated_at",
                    [(*r, now) for r in clean],
                )
        return len(clean)

    def scores(
        self,
        strategy: str | None = None,
        model_version: str | None = None,
        *,
        image_id: int | None = None,
    ) -> list[ScoreRecord]:
        """Stored scores, filtered by strategy / model version / image (highest score first)."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT * FROM scores WHERE (? IS NULL OR strategy = ?) AND "
                "(? IS NULL OR model_version = ?) AND (? IS NULL OR image_id = ?) "
                "ORDER BY score IS NULL, score DESC, image_id",
                (strategy, strategy, model_version, model_version, image_id, image_id),
            ).fetchall()
        return [
            ScoreRecord(int(r["image_id"]), r["strategy"], r["model_version"] or None,
                        r["score"], r["reason"], r["updated_at"])
            for r in rows
        ]  # fmt: skip

    # ------------------------------------------------------------------ suggestions, actions

    def record_suggestion(
        self,
        image_id: int,
        strategy: str,
        model_version: str | None = None,
        score: float | None = None,
        reason: str | None = None,
        box: Sequence[int] | None = None,
    ) -> int:
        """Record that an image (or a region of it) was suggested for labelling.

        An ``unlabelled`` image becomes ``suggested``. The action taken is linked later by
        :meth:`~.LabelStore.submit` / :meth:`skip` (or :meth:`record_action`).

        Parameters
        ----------
        box : (y0, x0, y1, x1), optional
            The suggested region, in pixels (end exclusive), inside the image.

        Returns
        -------
        suggestion_id : int
        """
        self._store.check_writable()
        check_text(strategy, "strategy", optional=False)
        check_text(model_version, "model_version")
        score = _finite_or_none(score, "score")
        if reason is not None and not isinstance(reason, str):
            reason = dumps(reason, "reason")
        with self._store.lock:
            row = self._catalog.image_row(image_id)
            box_json = None
            if box is not None:
                h, w = json.loads(row["shape"])[:2]
                try:
                    y0, x0, y1, x1 = (check_int(v, "box") for v in box)
                except (TypeError, ValueError):
                    raise ProjectError(
                        f"box must be (y0, x0, y1, x1) integers, got {box!r}."
                    ) from None
                if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
                    raise ProjectError(
                        f"box {(y0, x0, y1, x1)} is not a region inside image {row['id']} of "
                        f"height {h} and width {w} (need 0 <= y0 < y1 <= {h}, "
                        f"0 <= x0 < x1 <= {w})."
                    )
                box_json = json.dumps([y0, x0, y1, x1])
            with self._store.transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO suggestions(image_id, created_at, strategy, model_version, "
                    "score, reason, box) VALUES (?,?,?,?,?,?,?)",
                    (row["id"], sf.utc_now(), strategy, model_version, score, reason, box_json),
                )
                if row["status"] == "unlabelled":
                    conn.execute(
                        "UPDATE images SET status = 'suggested' WHERE id = ?", (row["id"],)
                    )
                return int(cur.lastrowid)

    def open_suggestion(self, image_id: int, suggestion_id: int | None) -> int | None:
        """The suggestion an action on `image_id` answers (checked if given, else latest open)."""
        db = self._store.db
        if suggestion_id is None:
            row = db.execute(
                "SELECT id FROM suggestions WHERE image_id = ? AND action IS NULL "
                "ORDER BY id DESC LIMIT 1", (image_id,)
            ).fetchone()  # fmt: skip
            return None if row is None else int(row[0])
        sid = check_int(suggestion_id, "suggestion_id")
        row = db.execute("SELECT * FROM suggestions WHERE id = ?", (sid,)).fetchone()
        if row is None:
            raise ProjectError(f"No suggestion with id {sid}.")
        if row["image_id"] != image_id:
            raise ProjectError(
                f"Suggestion {sid} is for image {row['image_id']}, not image {image_id}."
            )
        if row["action"] is not None:
            raise ProjectError(f"Suggestion {sid} was already answered ({row['action']}).")
        return sid

    def skip(self, image_id: int, *, suggestion_id: int | None = None) -> None:
        """Mark an image skipped, and record that as the action on its open suggestion."""
        self._store.check_writable()
        with self._store.lock:
            row = self._catalog.image_row(image_id)
            sid = self.open_suggestion(row["id"], suggestion_id)
            with self._store.transaction() as conn:
                conn.execute("UPDATE images SET status = 'skipped' WHERE id = ?", (row["id"],))
                if sid is not None:
                    conn.execute(
                        "UPDATE suggestions SET action = 'skipped', acted_at = ? WHERE id = ?",
                        (sf.utc_now(), sid),
                    )

    def record_action(
        self, suggestion_id: int, action: str, *, submission_id: int | None = None
    ) -> None:
        """Record what the user did with a suggestion (``"submitted"`` or ``"skipped"``)."""
        self._store.check_writable()
        check_choice(action, ACTIONS, name="action")
        with self._store.lock:
            db = self._store.db
            sid = check_int(suggestion_id, "suggestion_id")
            row = db.execute("SELECT * FROM suggestions WHERE id = ?", (sid,)).fetchone()
            if row is None:
                raise ProjectError(f"No suggestion with id {sid}.")
            self.open_suggestion(row["image_id"], sid)
            if submission_id is not None:
                sub = db.execute(
                    "SELECT image_id FROM submissions WHERE id = ?",
                    (check_int(submission_id, "submission_id"),),
                ).fetchone()
                if sub is None or sub[0] != row["image_id"]:
                    raise ProjectError(
                        f"Submission {submission_id} is not a submission of image "
                        f"{row['image_id']}."
                    )
            with self._store.transaction() as conn:
                conn.execute(
                    "UPDATE suggestions SET action = ?, acted_at = ?, submission_id = ? "
                    "WHERE id = ?", (action, sf.utc_now(), submission_id, sid),
                )  # fmt: skip

    def query_history(
        self, *, image_id: int | None = None, strategy: str | None = None
    ) -> list[dict[str, Any]]:
        """What was suggested, by which model and strategy, with which score, and what the user
        did (and at what effort), oldest first. ``box`` is a list ``[y0, x0, y1, x1]`` or None;
        ``action`` is None while the suggestion is open."""
        with self._store.lock:
            rows = self._store.db.execute(
                "SELECT g.id AS suggestion_id, g.created_at, g.image_id, i.name AS image_name, "
                "g.strategy, g.model_version, g.score, g.reason, g.box, g.action, g.acted_at, "
                "g.submission_id, s.seconds, s.pixels_changed, s.objects_added, "
                "s.objects_removed FROM suggestions g JOIN images i ON i.id = g.image_id "
                "LEFT JOIN submissions s ON s.id = g.submission_id "
                "WHERE (? IS NULL OR g.image_id = ?) AND (? IS NULL OR g.strategy = ?) "
                "ORDER BY g.id",
                (image_id, image_id, strategy, strategy),
            ).fetchall()
        out = []
        for r in rows:
            item = {c: r[c] for c in HISTORY_COLUMNS}
            item["box"] = None if r["box"] is None else json.loads(r["box"])
            out.append(item)
        return out

    def export_history(self, path: str | os.PathLike) -> Path:
        """Write :meth:`query_history` to ``.csv`` or ``.json`` (by suffix), atomically.

        CSV has one row per suggestion with the columns of :meth:`query_history` (``box`` as
        ``y0 x0 y1 x1``); JSON is a list of objects.
        """
        path = Path(path).expanduser()
        suffix = check_choice(path.suffix.lower(), (".csv", ".json"), name="history file suffix")
        if not path.parent.is_dir():
            raise ProjectError(
                f"Cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist."
            )
        history = self.query_history()
        if suffix == ".json":
            data = json.dumps(history, indent=1, allow_nan=False).encode()
        else:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for item in history:
                box = item["box"]
                writer.writerow({**item, "box": "" if box is None else " ".join(map(str, box))})
            data = buffer.getvalue().encode()
        atomic.atomic_write_bytes(path, data)
        return path

    # ------------------------------------------------------------------ rounds

    def record_round(
        self,
        model_version: str | None,
        strategy: str | None,
        seed: int | None,
        labelled_ids: Iterable[int],
        metrics: Mapping[str, Any],
        wall_times: Mapping[str, Any],
    ) -> int:
        """Record one active-learning round: the model it produced, how, on which images.

        ``metrics`` and ``wall_times`` are JSON dicts (NaN/inf are stored as null).
        """
        self._store.check_writable()
        check_text(model_version, "model_version")
        check_text(strategy, "strategy")
        seed = None if seed is None else check_int(seed, "seed")
        ids = [check_int(i, "labelled_ids entry") for i in labelled_ids]
        for value, name in ((metrics, "metrics"), (wall_times, "wall_times")):
            if not isinstance(value, Mapping):
                raise ProjectError(f"{name} must be a dict, got {type(value).__name__}.")
        metrics_json, times_json = dumps(metrics, "metrics"), dumps(wall_times, "wall_times")
        with self._store.lock:
            unknown = sorted(set(ids) - self._known_ids())
            if unknown:
                raise ProjectError(f"labelled_ids holds unknown image id(s) {unknown[:10]}.")
            with self._store.transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO rounds(created_at, model_version, strategy, seed, labelled_ids, "
                    "metrics, wall_times) VALUES (?,?,?,?,?,?,?)",
                    (sf.utc_now(), model_version, strategy, seed, json.dumps(ids), metrics_json,
                     times_json),
                )  # fmt: skip
                return int(cur.lastrowid)

    def rounds(self) -> list[RoundRecord]:
        """All recorded rounds, oldest first."""
        with self._store.lock:
            rows = self._store.db.execute("SELECT * FROM rounds ORDER BY id").fetchall()
        return [
            RoundRecord(int(r["id"]), r["created_at"], r["model_version"], r["strategy"],
                        r["seed"], json.loads(r["labelled_ids"]), json.loads(r["metrics"]),
                        json.loads(r["wall_times"]))
            for r in rows
        ]  # fmt: skip
