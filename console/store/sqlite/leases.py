"""The master's side of the store: ownership, claims, leases, batched ingest.

A mixin of ``Store`` (so there is one connection and one transaction helper),
kept apart because only the scheduler calls it. Everything that changes task
state happens in one ``BEGIN IMMEDIATE`` transaction per batch, so two masters
(or a master and a CLI intent) never see half a change, and a crash between
batches loses nothing the agents cannot redo idempotently.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from console.status import STOP_REQUESTED, RunState, TaskState

#: (run_id, stage_id, type, key, target, agent, task_id, ts, data_json)
ResultRow = tuple[str, str, str, str, str, str, int, str, str]


@dataclass
class Completion:
    task_id: int
    run_id: str
    stage_id: str
    state: TaskState
    agent: str | None = None
    error: str | None = None


@dataclass
class Requeue:
    task_id: int
    not_before: float
    tried: str
    error: str | None = None


@dataclass
class IngestBatch:
    """What the master flushes in one transaction: records, task outcomes, retries, events."""

    records: list[ResultRow] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    requeues: list[Requeue] = field(default_factory=list)
    #: (run_id, level, kind, message)
    events: list[tuple[str | None, str, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.records or self.completions or self.requeues or self.events)


class LeaseOps:
    """Scheduler-only operations; ``Store`` provides conn/transaction/_event/dead_masters."""

    conn: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:  # provided by Store
        raise NotImplementedError

    def dead_masters(self, conn: sqlite3.Connection, ids: list[str]) -> set[str]:  # provided by Store
        raise NotImplementedError

    @staticmethod
    def _event(conn: sqlite3.Connection, run_id: str | None, level: str, kind: str, message: str) -> None:
        raise NotImplementedError

    # -- ownership ---------------------------------------------------------------

    def adopt_runs(self, master_id: str, run_ids: list[str] | None = None) -> list[str]:
        """Take pending runs and runs whose owner is gone; re-queue the tasks their dead owner had leased.

        Returns the ids of the active runs this master now owns. A master crash is not the
        task's fault, so a re-queued lease gets its attempt back.
        """
        now = time.time()
        with self.transaction() as conn:
            sql = "SELECT id, state, owner FROM runs WHERE state IN (?, ?, ?)"
            params: list[Any] = [RunState.PENDING, RunState.RUNNING, RunState.PAUSED]
            if run_ids is not None:
                sql += f" AND id IN ({','.join('?' * len(run_ids))})"
                params.extend(run_ids)
            rows = conn.execute(sql, params).fetchall()
            others = sorted({owner for _, _, owner in rows if owner is not None and owner != master_id})
            dead = self.dead_masters(conn, others) if others else set()
            owned: list[str] = []
            for run_id, state, owner in rows:
                if owner is not None and owner != master_id and owner not in dead:
                    continue
                if owner == master_id and state != RunState.PENDING:
                    owned.append(run_id)  # already ours: no write (keeps data_version quiet)
                    continue
                if owner != master_id:
                    moved = conn.execute(
                        "UPDATE tasks SET state = ?, lease_owner = NULL, lease_expires = NULL,"
                        " attempts = max(attempts - 1, 0) WHERE run_id = ? AND state = ?",
                        (TaskState.QUEUED, run_id, TaskState.LEASED),
                    ).rowcount
                    note = f" from master {owner} (gone), {moved} leased task(s) re-queued" if owner else ""
                    self._event(conn, run_id, "info", "adopt", f"run taken by master {master_id}{note}")
                new_state = RunState.RUNNING if state == RunState.PENDING else state
                conn.execute(
                    "UPDATE runs SET owner = ?, owner_seen = ?, state = ?, started = coalesce(started, ?)"
                    " WHERE id = ?",
                    (master_id, now, new_state, now, run_id),
                )
                owned.append(run_id)
        return owned

    def owned_runs(self, master_id: str) -> list[dict[str, Any]]:
        cursor = self.conn.execute(
            "SELECT id, state, error, priority, definition, targets, scope FROM runs WHERE owner = ?",
            (master_id,),
        )
        return [dict(zip([c[0] for c in cursor.description], row, strict=True)) for row in cursor.fetchall()]

    def touch_owned(self, master_id: str) -> None:
        now = time.time()
        with self.transaction() as conn:
            conn.execute("UPDATE masters SET seen = ? WHERE id = ?", (now, master_id))
            conn.execute("UPDATE runs SET owner_seen = ? WHERE owner = ?", (now, master_id))

    def release_runs(self, master_id: str, run_ids: Iterable[str] | None = None) -> int:
        """Give leases back (queued at once, attempt returned) and drop ownership; runs stay resumable."""
        with self.transaction() as conn:
            ids = list(run_ids) if run_ids is not None else [
                r[0] for r in conn.execute("SELECT id FROM runs WHERE owner = ?", (master_id,)).fetchall()
            ]
            moved = 0
            for run_id in ids:
                moved += conn.execute(
                    "UPDATE tasks SET state = ?, lease_owner = NULL, lease_expires = NULL,"
                    " attempts = max(attempts - 1, 0) WHERE run_id = ? AND state = ? AND lease_owner = ?",
                    (TaskState.QUEUED, run_id, TaskState.LEASED, master_id),
                ).rowcount
                conn.execute("UPDATE runs SET owner = NULL WHERE id = ? AND owner = ?", (run_id, master_id))
            return moved

    def release_tasks(self, master_id: str, task_ids: list[int]) -> int:
        """Claimed but never dispatched (run paused, master stopping): back to queued, attempt returned."""
        with self.transaction() as conn:
            return conn.executemany(
                "UPDATE tasks SET state = ?, lease_owner = NULL, lease_expires = NULL,"
                " attempts = max(attempts - 1, 0) WHERE id = ? AND state = ? AND lease_owner = ?",
                [(TaskState.QUEUED, task_id, TaskState.LEASED, master_id) for task_id in task_ids],
            ).rowcount

    def end_stopped(self, run_id: str) -> None:
        with self.transaction() as conn:
            self.finish_stopped(conn, run_id)

    def finish_stopped(self, conn: sqlite3.Connection, run_id: str) -> None:  # provided by Store
        raise NotImplementedError

    # -- claims and leases ----------------------------------------------------------

    def claim_tasks(
        self, master_id: str, n: int, lease_s: float, *, pinned_boxes: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """Lease up to ``n`` queued tasks of this master's running runs in ONE statement.

        Highest priority first, then oldest. Pinned tasks are only claimed for the boxes
        named (those with a free slot). The attempt is counted here, so a crash counts.
        """
        if n <= 0:
            return []
        now = time.time()
        boxes = list(pinned_boxes)
        pinned_clause = "t.pinned IS NULL"
        if boxes:
            pinned_clause = f"(t.pinned IS NULL OR t.pinned IN ({','.join('?' * len(boxes))}))"
        sql = (
            "UPDATE tasks SET state = ?, attempts = attempts + 1, lease_owner = ?, lease_expires = ?,"
            " started = coalesce(started, ?) WHERE id IN ("
            " SELECT t.id FROM tasks t WHERE t.state = ?"
            "  AND t.run_id IN (SELECT id FROM runs WHERE owner = ? AND state = ? AND error IS NULL)"
            "  AND (t.not_before IS NULL OR t.not_before <= ?)"
            f"  AND {pinned_clause} ORDER BY t.priority DESC, t.id LIMIT ?)"
            " RETURNING id, run_id, stage_id, targets, attempts, max_attempts, pinned, tried, priority"
        )
        params: list[Any] = [
            TaskState.LEASED, master_id, now + lease_s, now, TaskState.QUEUED, master_id, RunState.RUNNING, now,
            *boxes, n,
        ]
        with self.transaction() as conn:
            cursor = conn.execute(sql, params)
            names = [c[0] for c in cursor.description]
            claimed = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        claimed.sort(key=lambda t: (-t["priority"], t["id"]))
        return claimed

    def fail_pinned(self, master_id: str, keep_boxes: list[str], reason: str) -> int:
        """Queued tasks of this master's runs pinned to a box NOT in ``keep_boxes`` can never run: fail them."""
        now = time.time()
        with self.transaction() as conn:
            failed = conn.execute(
                "UPDATE tasks SET state = ?, error = ?, ended = ? WHERE state = ? AND pinned IS NOT NULL"
                f" AND pinned NOT IN ({','.join('?' * len(keep_boxes))})"
                " AND run_id IN (SELECT id FROM runs WHERE owner = ?) RETURNING run_id, stage_id, pinned",
                (TaskState.FAILED, reason, now, TaskState.QUEUED, *keep_boxes, master_id),
            ).fetchall()
            for (run_id, stage_id), count in Counter((r, s) for r, s, _ in failed).items():
                conn.execute(
                    "UPDATE stages SET tasks_failed = tasks_failed + ? WHERE run_id = ? AND id = ?",
                    (count, run_id, stage_id),
                )
                self._event(conn, run_id, "error", "task", f"stage {stage_id}: {count} task(s) {reason}")
        return len(failed)

    def bump_attempt(self, task_id: int) -> int:
        """A straggler copy is an attempt of its own (with its own budget): return its attempt number."""
        with self.transaction() as conn:
            row = conn.execute(
                "UPDATE tasks SET attempts = attempts + 1, max_attempts = max_attempts + 1 WHERE id = ?"
                " RETURNING attempts",
                (task_id,),
            ).fetchone()
        return int(row[0]) if row else 0

    def unbump_attempt(self, task_id: int, attempt: int) -> None:
        """Give back a straggler attempt counted but never dispatched (the task ended during the count).

        Only while it is still the task's latest attempt, so a number once sent on the wire is never reused.
        """
        with self.transaction() as conn:
            conn.execute(
                "UPDATE tasks SET attempts = attempts - 1, max_attempts = max_attempts - 1"
                " WHERE id = ? AND attempts = ?",
                (task_id, attempt),
            )

    def renew_leases(self, master_id: str, lease_s: float) -> int:
        return self.conn.execute(
            "UPDATE tasks SET lease_expires = ? WHERE lease_owner = ? AND state = ?",
            (time.time() + lease_s, master_id, TaskState.LEASED),
        ).rowcount

    def sweep_expired(self, master_id: str) -> tuple[int, int]:
        """Expired leases of this master's runs: re-queued, or failed when attempts are exhausted."""
        now = time.time()
        owned = "run_id IN (SELECT id FROM runs WHERE owner = ?)"
        with self.transaction() as conn:
            failed = conn.execute(
                "UPDATE tasks SET state = ?, error = 'lease expired', ended = ?, lease_owner = NULL,"
                f" lease_expires = NULL WHERE state = ? AND lease_expires < ? AND attempts >= max_attempts AND {owned}"
                " RETURNING run_id, stage_id",
                (TaskState.FAILED, now, TaskState.LEASED, now, master_id),
            ).fetchall()
            for (run_id, stage_id), count in Counter(failed).items():
                conn.execute(
                    "UPDATE stages SET tasks_failed = tasks_failed + ? WHERE run_id = ? AND id = ?",
                    (count, run_id, stage_id),
                )
            requeued = conn.execute(
                "UPDATE tasks SET state = ?, lease_owner = NULL, lease_expires = NULL"
                f" WHERE state = ? AND lease_expires < ? AND {owned}",
                (TaskState.QUEUED, TaskState.LEASED, now, master_id),
            ).rowcount
        return requeued, len(failed)

    # -- ingest ----------------------------------------------------------------------

    def apply_batch(self, batch: IngestBatch) -> dict[tuple[str, str], int]:
        """Records (INSERT OR IGNORE on the record identity), outcomes, retries, events: one transaction.

        Returns the number of NEW records per (run, stage); a re-delivered batch adds none.
        """
        inserted: dict[tuple[str, str], int] = {}
        now = time.time()
        with self.transaction() as conn:
            for (run_id, stage_id), rows in _group_records(batch.records):
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO results (run_id, stage_id, type, key, target, agent, task_id, ts, data)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                count = conn.total_changes - before
                if count:
                    inserted[(run_id, stage_id)] = inserted.get((run_id, stage_id), 0) + count
                    conn.execute(
                        "UPDATE stages SET results = results + ? WHERE run_id = ? AND id = ?",
                        (count, run_id, stage_id),
                    )
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
                        f" lease_owner = NULL, lease_expires = NULL WHERE id IN ({','.join('?' * len(chunk))})"
                        " AND state IN (?, ?) RETURNING run_id, stage_id",
                        (state, agent, error, now, *chunk, TaskState.LEASED, TaskState.QUEUED),
                    ).fetchall()
                    if state == TaskState.DONE:
                        done.update((r, s) for r, s in changed)
                    elif state == TaskState.FAILED:
                        failed.update((r, s) for r, s in changed)
            for (run_id, stage_id), count in done.items():
                conn.execute(
                    "UPDATE stages SET tasks_done = tasks_done + ? WHERE run_id = ? AND id = ?",
                    (count, run_id, stage_id),
                )
            for (run_id, stage_id), count in failed.items():
                conn.execute(
                    "UPDATE stages SET tasks_failed = tasks_failed + ? WHERE run_id = ? AND id = ?",
                    (count, run_id, stage_id),
                )
            conn.executemany(
                "UPDATE tasks SET state = ?, not_before = ?, tried = ?, error = ?, lease_owner = NULL,"
                " lease_expires = NULL WHERE id = ? AND state = ?",
                [(TaskState.QUEUED, r.not_before, r.tried, r.error, r.task_id, TaskState.LEASED) for r in batch.requeues],
            )
            conn.executemany(
                "INSERT INTO events (ts, run_id, level, kind, message) VALUES (?, ?, ?, ?, ?)",
                [(now, run_id, level, kind, message[:2000]) for run_id, level, kind, message in batch.events],
            )
        return inserted

    # -- run end --------------------------------------------------------------------

    def stop_requested(self, run: dict[str, Any]) -> bool:
        return run.get("error") == STOP_REQUESTED

    def finish_run(self, run_id: str, state: RunState, error: str | None = None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET state = ?, ended = ?, owner = NULL, error = ? WHERE id = ?",
                (state, time.time(), error, run_id),
            )
            level = "info" if state == RunState.COMPLETED else "warning"
            self._event(conn, run_id, level, "run", f"run {state}" + (f": {error}" if error else ""))


def _group_records(records: list[ResultRow]) -> Iterator[tuple[tuple[str, str], list[ResultRow]]]:
    groups: dict[tuple[str, str], list[ResultRow]] = {}
    for row in records:
        groups.setdefault((row[0], row[1]), []).append(row)
    yield from groups.items()
