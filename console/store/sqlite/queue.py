"""The master's side of the SQLite store: ownership, claims, leases, batched ingest, run end.

Everything that changes task state happens in one ``BEGIN IMMEDIATE`` transaction per
batch, so two masters (or a master and a CLI intent) never see half a change, and a
crash between batches loses nothing the agents cannot redo idempotently.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from console.status import RUN_ACTIVE, TASK_OPEN, RunState, TaskState
from console.store import base
from console.store.grants import PACED_TOOLS, budget_of, grant
from console.store.rows import ClaimedTask, OwnedRun
from console.store.sqlite.database import Database, maps_errors, marks
from console.store.sqlite.runs import finish_stopped
from console.store.writes import IngestBatch, NewRecord

#: a budgeted claim looks at this many queued tasks per free slot
CANDIDATES_PER_SLOT = 8
#: the columns a claim returns, in ClaimedTask's order
_CLAIMED = "id, run_id, stage_id, targets, attempts, max_attempts, priority, pinned, tried, params, rate"
#: a master that has not been seen for a day and owns nothing is forgotten
FORGET_MASTERS_AFTER_S = 86400.0


def give_back(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> int:
    """Leased tasks matching ``where`` go back to the queue at once with their attempt returned:
    losing them was not the task's fault (a master stopped, died, or never dispatched them)."""
    return conn.execute(
        "UPDATE tasks SET state = ?, lease_owner = NULL, lease_expires = NULL, attempts = max(attempts - 1, 0)"
        f" WHERE state = ? AND {where}",
        (TaskState.QUEUED, TaskState.LEASED, *params),
    ).rowcount


def _add_stage_counts(conn: sqlite3.Connection, column: str, counts: Counter[tuple[str, str]]) -> None:
    assert column in ("tasks_done", "tasks_failed", "results")
    conn.executemany(
        f"UPDATE stages SET {column} = {column} + ? WHERE run_id = ? AND id = ?",
        [(count, run_id, stage_id) for (run_id, stage_id), count in counts.items()],
    )


@maps_errors
class SQLiteQueue(base.TaskQueue):
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- masters and ownership ---------------------------------------------------------

    def register_master(self, master_id: str) -> None:
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO masters (id, pid, host, started, seen) VALUES (?, ?, ?, ?, ?)",
                (master_id, os.getpid(), self.db.host, now, now),
            )
            # masters killed long ago (kill -9 leaves their row): forget them once they own nothing
            conn.execute(
                "DELETE FROM masters WHERE seen < ? AND id NOT IN (SELECT owner FROM runs WHERE owner IS NOT NULL)",
                (now - FORGET_MASTERS_AFTER_S,),
            )

    def unregister_master(self, master_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM masters WHERE id = ?", (master_id,))

    def adopt_runs(self, master_id: str, run_ids: list[str] | None = None) -> list[str]:
        now = time.time()
        with self.db.transaction() as conn:
            sql = f"SELECT id, state, owner FROM runs WHERE state IN ({marks(RUN_ACTIVE)})"
            params: list[Any] = [*RUN_ACTIVE]
            if run_ids is not None:
                sql += f" AND id IN ({marks(run_ids)})"
                params.extend(run_ids)
            rows = conn.execute(sql, params).fetchall()
            others = sorted({owner for _, _, owner in rows if owner is not None and owner != master_id})
            dead = self.db.dead_masters(conn, others) if others else set()
            owned: list[str] = []
            for run_id, state, owner in rows:
                if owner is not None and owner != master_id and owner not in dead:
                    continue
                if owner == master_id and state != RunState.PENDING:
                    owned.append(run_id)  # already ours: no write (keeps the change token quiet)
                    continue
                if owner != master_id:
                    moved = give_back(conn, "run_id = ?", (run_id,))
                    note = f" from master {owner} (gone), {moved} leased task(s) re-queued" if owner else ""
                    self.db.event(conn, run_id, "info", "adopt", f"run taken by master {master_id}{note}")
                new_state = RunState.RUNNING if state == RunState.PENDING else state
                conn.execute(
                    "UPDATE runs SET owner = ?, owner_seen = ?, state = ?, started = coalesce(started, ?)"
                    " WHERE id = ?",
                    (master_id, now, new_state, now, run_id),
                )
                owned.append(run_id)
        return owned

    def owned_runs(self, master_id: str) -> list[OwnedRun]:
        return [
            OwnedRun(
                id=r["id"], state=RunState(r["state"]), stop_requested=bool(r["stop_requested"]),
                priority=int(r["priority"] or 0), definition_json=r["definition"], targets=r["targets"],
                scope=r["scope"], exclude=r["exclude"],
            )
            for r in self.db.query(
                "SELECT id, state, stop_requested, priority, definition, targets, scope, exclude FROM runs"
                " WHERE owner = ?",
                (master_id,),
            )
        ]

    def touch_owned(self, master_id: str) -> None:
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute("UPDATE masters SET seen = ? WHERE id = ?", (now, master_id))
            conn.execute("UPDATE runs SET owner_seen = ? WHERE owner = ?", (now, master_id))

    def release_runs(self, master_id: str, run_ids: Iterable[str] | None = None) -> int:
        with self.db.transaction() as conn:
            ids = list(run_ids) if run_ids is not None else [
                r[0] for r in conn.execute("SELECT id FROM runs WHERE owner = ?", (master_id,)).fetchall()
            ]
            moved = 0
            for run_id in ids:
                moved += give_back(conn, "run_id = ? AND lease_owner = ?", (run_id, master_id))
                conn.execute("UPDATE runs SET owner = NULL WHERE id = ? AND owner = ?", (run_id, master_id))
            return moved

    def release_tasks(self, master_id: str, task_ids: list[int]) -> int:
        with self.db.transaction() as conn:
            return sum(give_back(conn, "id = ? AND lease_owner = ?", (task_id, master_id)) for task_id in task_ids)

    def end_stopped(self, run_id: str) -> None:
        with self.db.transaction() as conn:
            finish_stopped(self.db, conn, run_id)

    def finish_run(self, run_id: str, state: RunState, error: str | None = None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE runs SET state = ?, ended = ?, owner = NULL, stop_requested = 0, error = ? WHERE id = ?",
                (state, time.time(), error, run_id),
            )
            level = "info" if state == RunState.COMPLETED else "warning"
            self.db.event(conn, run_id, level, "run", f"run {state}" + (f": {error}" if error else ""))

    # -- claims and leases -------------------------------------------------------------

    def claim_tasks(
        self, master_id: str, n: int, lease_s: float, *, pinned_boxes: Iterable[str] = (),
        budget_slots: int | None = None,
    ) -> list[ClaimedTask]:
        if n <= 0:
            return []
        now = time.time()
        boxes = list(pinned_boxes)
        pinned_clause = f"(t.pinned IS NULL OR t.pinned IN ({marks(boxes)}))" if boxes else "t.pinned IS NULL"
        # a run with a rate budget hands its paced tasks out through grants (below); the rest as usual
        unbudgeted = (
            f"(r.max_rate IS NULL AND r.host_rate IS NULL) OR NOT EXISTS (SELECT 1 FROM stages s WHERE"
            f" s.run_id = t.run_id AND s.id = t.stage_id AND s.tool IN ({marks(PACED_TOOLS)}))"
        )
        sql = (
            "UPDATE tasks SET state = ?, attempts = attempts + 1, lease_owner = ?, lease_expires = ?,"
            " started = coalesce(started, ?) WHERE id IN ("
            " SELECT t.id FROM tasks t JOIN runs r ON r.id = t.run_id WHERE t.state = ?"
            "  AND r.owner = ? AND r.state = ? AND r.stop_requested = 0"
            "  AND (t.not_before IS NULL OR t.not_before <= ?)"
            f"  AND {pinned_clause} AND ({unbudgeted}) ORDER BY t.priority DESC, t.id LIMIT ?)"
            f" RETURNING {_CLAIMED}"
        )
        params: list[Any] = [
            TaskState.LEASED, master_id, now + lease_s, now, TaskState.QUEUED, master_id, RunState.RUNNING, now,
            *boxes, *PACED_TOOLS, n,
        ]
        with self.db.transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
            room = min(n - len(rows), n if budget_slots is None else budget_slots)
            if room > 0:
                rows.extend(self._claim_budgeted(conn, master_id, room, now + lease_s, now, pinned_clause, boxes))
        claimed = [
            ClaimedTask(
                id=r[0], run_id=r[1], stage_id=r[2], targets=r[3], attempts=r[4], max_attempts=r[5],
                priority=r[6], pinned=r[7], tried=tuple(json.loads(r[8])) if r[8] and r[8] != "[]" else (),
                params=r[9], rate=r[10],
            )
            for r in rows
        ]
        claimed.sort(key=lambda t: (-t.priority, t.id))
        return claimed

    def _claim_budgeted(
        self, conn: sqlite3.Connection, master_id: str, room: int, expires: float, now: float,
        pinned_clause: str, boxes: list[str],
    ) -> list[Any]:
        """Lease up to ``room`` paced tasks of this master's budgeted runs, each with its grant
        (``tasks.rate``) out of what the run's leased tasks, any master's, do not hold already."""
        candidates = conn.execute(
            "SELECT t.id, t.run_id, t.targets FROM tasks t JOIN runs r ON r.id = t.run_id"
            " JOIN stages s ON s.run_id = t.run_id AND s.id = t.stage_id WHERE t.state = ?"
            "  AND r.owner = ? AND r.state = ? AND r.stop_requested = 0"
            "  AND (r.max_rate IS NOT NULL OR r.host_rate IS NOT NULL)"
            f"  AND s.tool IN ({marks(PACED_TOOLS)}) AND (t.not_before IS NULL OR t.not_before <= ?)"
            f"  AND {pinned_clause} ORDER BY t.priority DESC, t.id LIMIT ?",
            # more candidates than slots: one whose host's share is taken is passed over for the next
            (TaskState.QUEUED, master_id, RunState.RUNNING, *PACED_TOOLS, now, *boxes, room * CANDIDATES_PER_SLOT),
        ).fetchall()
        by_run: dict[str, list[tuple[int, str]]] = {}
        for task_id, run_id, targets in candidates:
            by_run.setdefault(run_id, []).append((task_id, targets))
        rows: list[Any] = []
        for run_id, tasks in by_run.items():
            max_rate, host_rate = conn.execute(
                "SELECT max_rate, host_rate FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            leased = conn.execute(
                "SELECT targets, rate FROM tasks WHERE run_id = ? AND state = ? AND rate IS NOT NULL",
                (run_id, TaskState.LEASED),
            ).fetchall()
            grants = grant(budget_of(max_rate, host_rate, leased), tasks, room)
            for task_id, rate in grants.items():
                rows.append(conn.execute(
                    "UPDATE tasks SET state = ?, attempts = attempts + 1, lease_owner = ?, lease_expires = ?,"
                    f" started = coalesce(started, ?), rate = ? WHERE id = ? AND state = ? RETURNING {_CLAIMED}",
                    (TaskState.LEASED, master_id, expires, now, rate, task_id, TaskState.QUEUED),
                ).fetchone())
            room -= len(grants)
        return [r for r in rows if r is not None]

    def fail_pinned(self, master_id: str, keep_boxes: list[str], reason: str) -> int:
        now = time.time()
        with self.db.transaction() as conn:
            failed = conn.execute(
                "UPDATE tasks SET state = ?, error = ?, ended = ? WHERE state = ? AND pinned IS NOT NULL"
                f" AND pinned NOT IN ({marks(keep_boxes)})"
                " AND run_id IN (SELECT id FROM runs WHERE owner = ?) RETURNING run_id, stage_id",
                (TaskState.FAILED, reason, now, TaskState.QUEUED, *keep_boxes, master_id),
            ).fetchall()
            counts = Counter((r, s) for r, s in failed)
            _add_stage_counts(conn, "tasks_failed", counts)
            for (run_id, stage_id), count in counts.items():
                self.db.event(conn, run_id, "error", "task", f"stage {stage_id}: {count} task(s) {reason}")
        return len(failed)

    def bump_attempt(self, task_id: int) -> int:
        with self.db.transaction() as conn:
            row = conn.execute(
                "UPDATE tasks SET attempts = attempts + 1, max_attempts = max_attempts + 1 WHERE id = ?"
                " RETURNING attempts",
                (task_id,),
            ).fetchone()
        return int(row[0]) if row else 0

    def unbump_attempt(self, task_id: int, attempt: int) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE tasks SET attempts = attempts - 1, max_attempts = max_attempts - 1"
                " WHERE id = ? AND attempts = ?",
                (task_id, attempt),
            )

    def renew_leases(self, master_id: str, lease_s: float) -> int:
        with self.db.transaction() as conn:
            return conn.execute(
                "UPDATE tasks SET lease_expires = ? WHERE lease_owner = ? AND state = ?",
                (time.time() + lease_s, master_id, TaskState.LEASED),
            ).rowcount

    def sweep_expired(self, master_id: str) -> tuple[int, int]:
        now = time.time()
        owned = "run_id IN (SELECT id FROM runs WHERE owner = ?)"
        with self.db.transaction() as conn:
            failed = conn.execute(
                "UPDATE tasks SET state = ?, error = 'lease expired', ended = ?, lease_owner = NULL,"
                f" lease_expires = NULL WHERE state = ? AND lease_expires < ? AND attempts >= max_attempts AND {owned}"
                " RETURNING run_id, stage_id",
                (TaskState.FAILED, now, TaskState.LEASED, now, master_id),
            ).fetchall()
            _add_stage_counts(conn, "tasks_failed", Counter((r, s) for r, s in failed))
            requeued = conn.execute(
                "UPDATE tasks SET state = ?, lease_owner = NULL, lease_expires = NULL"
                f" WHERE state = ? AND lease_expires < ? AND {owned}",
                (TaskState.QUEUED, TaskState.LEASED, now, master_id),
            ).rowcount
        return requeued, len(failed)

    # -- ingest ------------------------------------------------------------------------

    def apply_batch(self, batch: IngestBatch) -> dict[tuple[str, str], int]:
        inserted: Counter[tuple[str, str]] = Counter()
        now = time.time()
        with self.db.transaction() as conn:
            for key, rows in _by_stage(batch.records).items():
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO results (run_id, stage_id, type, key, target, agent, task_id, ts, data)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                if conn.total_changes > before:
                    inserted[key] += conn.total_changes - before
            _add_stage_counts(conn, "results", inserted)
            done: Counter[tuple[str, str]] = Counter()
            failed: Counter[tuple[str, str]] = Counter()
            groups: dict[tuple[str, str | None, str | None], list[int]] = {}
            for c in batch.completions:
                groups.setdefault((c.state, c.agent, c.error), []).append(c.task_id)
            for (state, agent, error), ids in groups.items():
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    changed = conn.execute(
                        "UPDATE tasks SET state = ?, agent = coalesce(?, agent), error = ?, ended = ?,"
                        f" lease_owner = NULL, lease_expires = NULL WHERE id IN ({marks(chunk)})"
                        f" AND state IN ({marks(TASK_OPEN)}) RETURNING run_id, stage_id",
                        (state, agent, error, now, *chunk, *TASK_OPEN),
                    ).fetchall()
                    if state == TaskState.DONE:
                        done.update((r, s) for r, s in changed)
                    elif state == TaskState.FAILED:
                        failed.update((r, s) for r, s in changed)
            _add_stage_counts(conn, "tasks_done", done)
            _add_stage_counts(conn, "tasks_failed", failed)
            conn.executemany(
                "UPDATE tasks SET state = ?, not_before = ?, tried = ?, error = ?, lease_owner = NULL,"
                " lease_expires = NULL WHERE id = ? AND state = ?",
                [
                    (TaskState.QUEUED, r.not_before, json.dumps(list(r.tried)), r.error, r.task_id, TaskState.LEASED)
                    for r in batch.requeues
                ],
            )
            for event in batch.events:
                self.db.event(conn, *event)
        return dict(inserted)


def _by_stage(records: list[NewRecord]) -> dict[tuple[str, str], list[NewRecord]]:
    groups: dict[tuple[str, str], list[NewRecord]] = {}
    for row in records:
        groups.setdefault((row[0], row[1]), []).append(row)
    return groups
