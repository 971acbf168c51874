"""The master's side of the SQLite store: ownership, claims, leases, batched ingest, run end.

Everything that changes task state happens in one ``BEGIN IMMEDIATE`` transaction per
batch, so two masters (or a master and a CLI intent) never see half a change, and a
crash between batches loses nothing the agents cannot redo idempotently.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from console.status import (
    AGENT_LINKED,
    MASTER_DEAD_AFTER_S,
    RUN_ACTIVE,
    RUN_TERMINAL,
    TASK_OPEN,
    RunState,
    TaskState,
)
from console.store import base
from console.store.grants import PACED_TOOLS, budget_of, grant
from console.store.rows import ClaimedTask, MasterRow, OwnedRun
from console.store.sqlite.database import Database, maps_errors, marks
from console.store.sqlite.runs import finish_stopped
from console.store.writes import IngestBatch, NewRecord

#: a budgeted claim looks at this many queued tasks per free slot
CANDIDATES_PER_SLOT = 8
#: the columns a claim returns, in ClaimedTask's order
_CLAIMED = "id, run_id, stage_id, targets, attempts, max_attempts, priority, pinned, tried, params, rate"
#: a master that has not been seen for a day and owns nothing is forgotten
FORGET_MASTERS_AFTER_S = 86400.0


def give_back(conn: Any, where: str, params: tuple[Any, ...]) -> int:
    """Leased tasks matching ``where`` go back to the queue at once with their attempt returned:
    losing them was not the task's fault (a master stopped, died, or never dispatched them)."""
    return conn.execute(
        "UPDATE tasks SET state = ?, lease_owner = NULL, lease_expires = NULL,"
        " attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
        f" WHERE state = ? AND {where}",
        (TaskState.QUEUED, TaskState.LEASED, *params),
    ).rowcount


def _add_stage_counts(conn: Any, column: str, counts: Counter[tuple[str, str]]) -> None:
    """Stage rows in one order (several masters update the same counters: no lock-order deadlock)."""
    assert column in ("tasks_done", "tasks_failed", "results")
    if counts:
        conn.executemany(
            f"UPDATE stages SET {column} = {column} + ? WHERE run_id = ? AND id = ?",
            [(count, run_id, stage_id) for (run_id, stage_id), count in sorted(counts.items())],
        )


@maps_errors
class SQLiteQueue(base.TaskQueue):
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- masters and ownership ---------------------------------------------------------
    #
    # Every live master serves every active run it is asked to, task by task: claims are not limited
    # to one owner. ``runs.owner`` names one live master serving the run (the stop intent asks it),
    # taken over when that master goes. A master is alive while it heartbeats (MASTER_DEAD_AFTER_S);
    # the first master to notice one gone gives its leased tasks back, attempt returned.

    def register_master(self, master_id: str) -> None:
        with self.db.transaction() as conn:
            now = self.db.clock(conn)
            conn.execute("DELETE FROM masters WHERE id = ?", (master_id,))
            conn.execute(
                "INSERT INTO masters (id, pid, host, started, seen, agents, in_flight) VALUES (?, ?, ?, ?, ?, 0, 0)",
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
            # who served each run before the dead are reaped (reaping clears their runs' owner)
            before = dict(conn.execute(
                f"SELECT id, owner FROM runs WHERE owner IS NOT NULL AND state IN ({marks(RUN_ACTIVE)})", [*RUN_ACTIVE]
            ).fetchall())
            self._reap_dead_masters(conn, master_id)
            sql = f"SELECT id, state, owner FROM runs WHERE state IN ({marks(RUN_ACTIVE)})"
            params: list[Any] = [*RUN_ACTIVE]
            if run_ids is not None:
                sql += f" AND id IN ({marks(run_ids)})"
                params.extend(run_ids)
            rows = conn.execute(sql, params).fetchall()
            others = sorted({owner for _, _, owner in rows if owner is not None and owner != master_id})
            dead = self.db.dead_masters(conn, others) if others else set()
            served: list[str] = []
            for run_id, state, owner in rows:
                served.append(run_id)
                if state != RunState.PENDING and owner is not None and (owner == master_id or owner not in dead):
                    continue  # served already, its owner alive: no write (keeps the change token quiet)
                new_state = RunState.RUNNING if state == RunState.PENDING else state
                takes = owner is None or owner in dead
                changed = conn.execute(
                    "UPDATE runs SET owner = ?, owner_seen = ?, state = ?, started = coalesce(started, ?)"
                    " WHERE id = ? AND state = ?",
                    (master_id if takes else owner, now, new_state, now, run_id, state),
                ).rowcount
                if changed and takes and owner != master_id:
                    was = owner or before.get(run_id)
                    gone = f" from master {was} (gone)" if was and was != master_id else ""
                    self.db.event(conn, run_id, "info", "adopt", f"run taken by master {master_id}{gone}")
        return served

    def _reap_dead_masters(self, conn: Any, master_id: str) -> None:
        """Masters silent past MASTER_DEAD_AFTER_S (or a dead pid here): their leased tasks back to the
        queue, attempt given back, their row gone. Whoever deletes the row does the give-back, once."""
        ids = [r[0] for r in conn.execute("SELECT id FROM masters WHERE id <> ?", (master_id,)).fetchall()]
        for dead in sorted(self.db.dead_masters(conn, ids)) if ids else ():
            if not conn.execute("DELETE FROM masters WHERE id = ? RETURNING id", (dead,)).fetchall():
                continue
            moved = give_back(conn, "lease_owner = ?", (dead,))
            conn.execute("UPDATE runs SET owner = NULL WHERE owner = ?", (dead,))
            if moved:
                self.db.event(conn, None, "warning", "master", f"master {dead} gone: {moved} leased task(s) re-queued")

    def owned_runs(self, master_id: str) -> list[OwnedRun]:
        return [
            OwnedRun(
                id=r["id"], state=RunState(r["state"]), stop_requested=bool(r["stop_requested"]),
                priority=int(r["priority"] or 0), definition_json=r["definition"], targets=r["targets"],
                scope=r["scope"], exclude=r["exclude"],
            )
            for r in self.db.query(
                "SELECT id, state, stop_requested, priority, definition, targets, scope, exclude FROM runs"
                " WHERE state IN (?, ?) ORDER BY created",
                (RunState.RUNNING, RunState.PAUSED),
            )
        ]

    def touch_owned(self, master_id: str, agents: int | None = None, in_flight: int | None = None) -> None:
        with self.db.transaction() as conn:
            now = self.db.clock(conn)
            seen = conn.execute(
                "UPDATE masters SET seen = ?, agents = coalesce(?, agents), in_flight = coalesce(?, in_flight)"
                " WHERE id = ?",
                (now, agents, in_flight, master_id),
            ).rowcount
            if not seen:  # presumed dead during a stall of its own: it is back
                conn.execute(
                    "INSERT INTO masters (id, pid, host, started, seen, agents, in_flight) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (master_id, os.getpid(), self.db.host, now, now, agents or 0, in_flight or 0),
                )
            conn.execute("UPDATE runs SET owner_seen = ? WHERE owner = ?", (now, master_id))

    def masters(self) -> list[MasterRow]:
        return [
            MasterRow(
                id=r["id"], host=r["host"] or "", pid=r["pid"], started=r["started"], seen=r["seen"],
                agents=int(r["agents"] or 0), in_flight=int(r["in_flight"] or 0),
            )
            for r in self.db.query("SELECT id, host, pid, started, seen, agents, in_flight FROM masters ORDER BY started, id")
        ]

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
        """Once: every master serving the run ends it after its own tasks were cancelled."""
        with self.db.transaction() as conn:
            row = conn.execute(f"SELECT state FROM runs WHERE id = ?{self.db.row_lock}", (run_id,)).fetchone()
            if row is None or row[0] in RUN_TERMINAL:
                return
            finish_stopped(self.db, conn, run_id)

    def finish_run(self, run_id: str, state: RunState, error: str | None = None) -> None:
        with self.db.transaction() as conn:
            ended = conn.execute(
                "UPDATE runs SET state = ?, ended = ?, owner = NULL, stop_requested = 0, error = ?"
                f" WHERE id = ? AND state IN ({marks(RUN_ACTIVE)})",
                (state, time.time(), error, run_id, *RUN_ACTIVE),
            ).rowcount
            if not ended:
                return  # another master serving the run ended it first
            level = "info" if state == RunState.COMPLETED else "warning"
            self.db.event(conn, run_id, level, "run", f"run {state}" + (f": {error}" if error else ""))

    # -- claims and leases -------------------------------------------------------------

    def claim_tasks(
        self, master_id: str, n: int, lease_s: float, *, pinned_boxes: Iterable[str] = (),
        run_ids: Iterable[str] | None = None, budget_slots: int | None = None,
    ) -> list[ClaimedTask]:
        if n <= 0:
            return []
        now = time.time()
        boxes = list(pinned_boxes)
        pinned_clause = f"(t.pinned IS NULL OR t.pinned IN ({marks(boxes)}))" if boxes else "t.pinned IS NULL"
        runs = list(run_ids) if run_ids is not None else None
        runs_clause = f" AND r.id IN ({marks(runs)})" if runs is not None else ""
        # a run with a rate budget hands its paced tasks out through grants (below); the rest as usual
        unbudgeted = (
            f"(r.max_rate IS NULL AND r.host_rate IS NULL) OR NOT EXISTS (SELECT 1 FROM stages s WHERE"
            f" s.run_id = t.run_id AND s.id = t.stage_id AND s.tool IN ({marks(PACED_TOOLS)}))"
        )
        sql = (
            "UPDATE tasks SET state = ?, attempts = attempts + 1, lease_owner = ?, lease_expires = ?,"
            " started = coalesce(started, ?) WHERE id IN ("
            " SELECT t.id FROM tasks t JOIN runs r ON r.id = t.run_id WHERE t.state = ?"
            f"  AND r.state = ? AND r.stop_requested = 0{runs_clause}"
            "  AND (t.not_before IS NULL OR t.not_before <= ?)"
            f"  AND {pinned_clause} AND ({unbudgeted}) ORDER BY t.priority DESC, t.id LIMIT ?{self.db.skip_locked})"
            f" RETURNING {_CLAIMED}"
        )
        params: list[Any] = [
            TaskState.LEASED, master_id, now + lease_s, now, TaskState.QUEUED, RunState.RUNNING, *(runs or ()),
            now, *boxes, *PACED_TOOLS, n,
        ]
        with self.db.transaction() as conn:
            rows = conn.execute(sql, params).fetchall()
            room = min(n - len(rows), n if budget_slots is None else budget_slots)
            if room > 0:
                rows.extend(self._claim_budgeted(
                    conn, master_id, room, now + lease_s, now, pinned_clause, boxes, runs_clause, runs or [],
                ))
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
        self, conn: Any, master_id: str, room: int, expires: float, now: float,
        pinned_clause: str, boxes: list[str], runs_clause: str, runs: list[str],
    ) -> list[Any]:
        """Lease up to ``room`` paced tasks of the budgeted runs served (``runs_clause``), each with its
        grant (``tasks.rate``) out of what the run's leased tasks, any master's, do not hold already.
        The run's budget is read under a row lock (PostgreSQL: ``FOR UPDATE``), so
        masters sharing a run grant from it one after the other and see each other's grants."""
        candidates = conn.execute(
            "SELECT t.id, t.run_id, t.targets FROM tasks t JOIN runs r ON r.id = t.run_id"
            " JOIN stages s ON s.run_id = t.run_id AND s.id = t.stage_id WHERE t.state = ?"
            f"  AND r.state = ? AND r.stop_requested = 0{runs_clause}"
            "  AND (r.max_rate IS NOT NULL OR r.host_rate IS NOT NULL)"
            f"  AND s.tool IN ({marks(PACED_TOOLS)}) AND (t.not_before IS NULL OR t.not_before <= ?)"
            f"  AND {pinned_clause} ORDER BY t.priority DESC, t.id LIMIT ?",
            # more candidates than slots: one whose host's share is taken is passed over for the next
            (TaskState.QUEUED, RunState.RUNNING, *runs, *PACED_TOOLS, now, *boxes, room * CANDIDATES_PER_SLOT),
        ).fetchall()
        by_run: dict[str, list[tuple[int, str]]] = {}
        for task_id, run_id, targets in candidates:
            by_run.setdefault(run_id, []).append((task_id, targets))
        rows: list[Any] = []
        for run_id, tasks in by_run.items():
            if room <= 0:
                break
            max_rate, host_rate = conn.execute(
                f"SELECT max_rate, host_rate FROM runs WHERE id = ?{self.db.row_lock}", (run_id,)
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
        """Only boxes no other live master reports linked: several masters may have different fleets."""
        with self.db.transaction() as conn:
            now = self.db.clock(conn)
            failed = conn.execute(
                "UPDATE tasks SET state = ?, error = ?, ended = ? WHERE state = ? AND pinned IS NOT NULL"
                f" AND pinned NOT IN ({marks(keep_boxes)})"
                f" AND run_id IN (SELECT id FROM runs WHERE state IN ({marks(RUN_ACTIVE)}))"
                f" AND pinned NOT IN (SELECT name FROM agents WHERE master <> ? AND state IN ({marks(AGENT_LINKED)})"
                "  AND master IN (SELECT id FROM masters WHERE seen >= ?))"
                " RETURNING run_id, stage_id",
                (TaskState.FAILED, reason, now, TaskState.QUEUED, *keep_boxes, *RUN_ACTIVE, master_id, *AGENT_LINKED,
                 now - MASTER_DEAD_AFTER_S),
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
        """Every active run's expired leases (any master may sweep: the runs are shared)."""
        now = time.time()
        active = f"run_id IN (SELECT id FROM runs WHERE state IN ({marks(RUN_ACTIVE)}))"
        with self.db.transaction() as conn:
            failed = conn.execute(
                "UPDATE tasks SET state = ?, error = 'lease expired', ended = ?, lease_owner = NULL,"
                f" lease_expires = NULL WHERE state = ? AND lease_expires < ? AND attempts >= max_attempts AND {active}"
                " RETURNING run_id, stage_id",
                (TaskState.FAILED, now, TaskState.LEASED, now, *RUN_ACTIVE),
            ).fetchall()
            _add_stage_counts(conn, "tasks_failed", Counter((r, s) for r, s in failed))
            requeued = conn.execute(
                "UPDATE tasks SET state = ?, lease_owner = NULL, lease_expires = NULL"
                f" WHERE state = ? AND lease_expires < ? AND {active}",
                (TaskState.QUEUED, TaskState.LEASED, now, *RUN_ACTIVE),
            ).rowcount
        return requeued, len(failed)

    # -- ingest ------------------------------------------------------------------------

    def apply_batch(self, batch: IngestBatch) -> dict[tuple[str, str], int]:
        inserted: Counter[tuple[str, str]] = Counter()
        now = time.time()
        with self.db.transaction() as conn:
            for key, rows in _by_stage(batch.records).items():
                new = self._insert_records(conn, rows, batch.master)
                if new:
                    inserted[key] += new
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
            # the shared counters last: another master's batch waits on these rows only until this commit
            _add_stage_counts(conn, "results", inserted)
            _add_stage_counts(conn, "tasks_done", done)
            _add_stage_counts(conn, "tasks_failed", failed)
        return dict(inserted)

    def _insert_records(self, conn: Any, rows: list[NewRecord], master: str | None) -> int:
        """Insert one stage's records, each (run, stage, type, key) once; return how many were new."""
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO results (run_id, stage_id, type, key, target, agent, task_id, ts, data, master)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*row, master) for row in rows],
        )
        return int(conn.total_changes - before)


def _by_stage(records: list[NewRecord]) -> dict[tuple[str, str], list[NewRecord]]:
    groups: dict[tuple[str, str], list[NewRecord]] = {}
    for row in records:
        groups.setdefault((row[0], row[1]), []).append(row)
    return groups
