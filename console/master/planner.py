"""Stage -> tasks, lazily, from the store alone.

Input stages are planned a window at a time (``stages.cursor`` = the next target
index, advanced in the same transaction as the task inserts), so a /8 costs
constant memory and a crash never plans a chunk twice. Derived stages read their
source's results past ``stages.cursor`` (the last results.id read), keep what
``where`` selects, derive typed targets, deduplicate them in ``stage_targets``
and drop what falls outside the run's scope (counted, logged, never dispatched).
``from: boxes`` plans one task per box, pinned to it. A ``stream`` stage plans as
its source's results arrive; any other waits for its source to end.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

from agentkit import wire
from console.status import STAGE_TERMINAL, RunState, StageState, TaskState, run_outcome
from console.store.sqlite.store import Store
from console.workflow.definition import load_definition
from console.workflow.models import StageBase

#: at most this many queued tasks per input stage at a time (more are planned as they drain)
WINDOW_TASKS = 512
#: a stream stage plans a partial chunk once its source has been quiet this long
STREAM_QUIET_S = 0.5
READ_BATCH = 5000


class RunPlanner:
    """Plans one run. Called from the master's store thread; every step is one or a few transactions."""

    def __init__(self, store: Store, run: dict[str, Any], boxes: list[str], window: int = WINDOW_TASKS) -> None:
        self.store = store
        self.run_id: str = run["id"]
        self.priority = int(run.get("priority") or 0)
        self.stages = {s.id: s for s in load_definition(run["definition"]).stages}
        self.targets_spec: str = run.get("targets") or ""
        self.scope_spec: str | None = run.get("scope")
        self.boxes = boxes
        self.window = max(1, window)
        self._targets: Any = None
        self._scope: Any = None
        self._last_source_result: dict[str, float] = {}

    # -- lazily parsed inputs ------------------------------------------------------------

    @property
    def target_set(self) -> Any:
        if self._targets is None:
            from console.targets.sets import parse_targets

            self._targets = parse_targets(self.targets_spec) if self.targets_spec else parse_targets_empty()
        return self._targets

    @property
    def scope(self) -> Any:
        if self._scope is None:
            from console.targets.sets import Scope, parse_scope

            if self.scope_spec:
                self._scope = parse_scope(self.scope_spec)
            elif self.targets_spec:
                self._scope = Scope.from_targets(self.target_set)
            else:
                self._scope = Scope([], [])
        return self._scope

    # -- one planning step -------------------------------------------------------------------

    def step(self) -> str | None:
        """Plan what can be planned, complete what is complete. Returns the run's final state if it ended."""
        rows = {r["id"]: r for r in self.store.list_stages(self.run_id)}
        for spec in self.stages.values():
            row = rows.get(spec.id)
            if row is None or row["state"] in STAGE_TERMINAL:
                continue
            sources_done = all(rows[d]["state"] in STAGE_TERMINAL for d in spec.depends if d in rows)
            if not row["planned"]:
                if spec.source == "input":
                    self._plan_input(spec, row)
                elif spec.source == "boxes":
                    self._plan_boxes(spec, row)
                elif spec.stream or sources_done:
                    self._plan_derived(spec, row, sources_done)
            row = self.store.query("SELECT * FROM stages WHERE run_id = ? AND id = ?", (self.run_id, spec.id))[0]
            rows[spec.id] = row
            if row["planned"] and (spec.source in ("input", "boxes") or sources_done):
                self._maybe_complete(spec, row)
                rows[spec.id] = self.store.query(
                    "SELECT * FROM stages WHERE run_id = ? AND id = ?", (self.run_id, spec.id)
                )[0]
        outcome = run_outcome([r["state"] for r in rows.values()])
        if outcome is None:
            return None
        failed = [r["id"] for r in rows.values() if r["state"] == StageState.FAILED]
        error = f"stage(s) failed: {', '.join(failed)}" if failed else None
        self.store.finish_run(self.run_id, outcome, error)
        return outcome

    # -- input ---------------------------------------------------------------------------------

    def _plan_input(self, spec: StageBase, row: dict[str, Any]) -> None:
        queued = self._queued(spec.id)
        room = self.window - queued
        if room <= 0:
            return
        targets = self.target_set
        cursor = int(row["cursor"])
        explicit_scope = self.scope_spec is not None
        chunks: list[list[str]] = []
        dropped: list[str] = []
        values = self._input_values(targets, cursor, spec.targets.type)
        want = room * spec.chunk
        taken = 0
        current: list[str] = []
        for value in islice(values, want):
            taken += 1
            if not value or (explicit_scope and not self.scope.contains(value)):
                dropped.append(value or "(unconvertible)")
                continue
            current.append(value)
            if len(current) == spec.chunk:
                chunks.append(current)
                current = []
        new_cursor = cursor + taken
        finished = new_cursor >= targets.size
        if current:
            chunks.append(current)
        with self.store.transaction() as conn:
            self._mark_running(conn, spec.id, row)
            self._insert_tasks(conn, spec, chunks, int(row["tasks_total"]))
            conn.execute(
                "UPDATE stages SET cursor = ?, planned = ?, dropped = dropped + ? WHERE run_id = ? AND id = ?",
                (new_cursor, 1 if finished else 0, len(dropped), self.run_id, spec.id),
            )
            if dropped:
                self._drop_event(conn, spec.id, dropped)

    @staticmethod
    def _input_values(targets: Any, cursor: int, kind: str | None) -> Iterator[str]:
        """Input targets from ``cursor`` as ``kind``; an address is already a host (no per-value parsing)."""
        if not kind:
            return iter(targets.iter_from(cursor))
        if kind not in ("host", "ip"):
            return iter(targets.iter_from(cursor, kind))
        from console.targets.sets import as_kind

        addresses = sum(span.size for span in targets.spans)
        raw = targets.iter_from(cursor)
        return (
            value if index < addresses else (as_kind(value, kind) or "")
            for index, value in enumerate(raw, start=cursor)
        )

    def _plan_boxes(self, spec: StageBase, row: dict[str, Any]) -> None:
        with self.store.transaction() as conn:
            self._mark_running(conn, spec.id, row)
            seq = int(row["tasks_total"])
            for box in self.boxes:
                self._insert_tasks(conn, spec, [[box]], seq, pinned=box)
                seq += 1
            conn.execute("UPDATE stages SET planned = 1 WHERE run_id = ? AND id = ?", (self.run_id, spec.id))
            if not self.boxes:
                self.store._event(conn, self.run_id, "warning", "plan", f"stage {spec.id}: no box is up")

    # -- derived ----------------------------------------------------------------------------

    def _plan_derived(self, spec: StageBase, row: dict[str, Any], sources_done: bool) -> None:
        from console.targets.records import derive_target, matches_where

        source = spec.depends[0]
        cursor = int(row["cursor"])
        now = time.monotonic()
        fresh = False
        while True:
            batch = self.store.conn.execute(
                "SELECT id, type, target, data FROM results WHERE run_id = ? AND stage_id = ? AND id > ?"
                " ORDER BY id LIMIT ?",
                (self.run_id, source, cursor, READ_BATCH),
            ).fetchall()
            if not batch:
                break
            fresh = True
            values: list[str] = []
            for _, rtype, target, data in batch:
                record = wire.Record(type=rtype, target=target or "", data=json.loads(data))
                if spec.targets.where and not matches_where(record, spec.targets.where):
                    continue
                value = derive_target(record, spec.targets.type)
                if value:
                    values.append(value)
            cursor = int(batch[-1][0])
            with self.store.transaction() as conn:
                self._mark_running(conn, spec.id, row)
                self._add_targets(conn, spec, values)
                conn.execute(
                    "UPDATE stages SET cursor = ? WHERE run_id = ? AND id = ?", (cursor, self.run_id, spec.id)
                )
        if fresh:
            self._last_source_result[spec.id] = now
        quiet = now - self._last_source_result.get(spec.id, 0.0) >= STREAM_QUIET_S
        self._chunk_targets(spec, row, partial_ok=sources_done or quiet, finish=sources_done)

    def _add_targets(self, conn: sqlite3.Connection, spec: StageBase, values: list[str]) -> None:
        """Deduplicate into stage_targets; out-of-scope values are stored as dropped (task_id -1), once."""
        kept = [v for v in values if self.scope.contains(v)]
        out = [v for v in values if not self.scope.contains(v)]
        conn.executemany(
            "INSERT OR IGNORE INTO stage_targets (run_id, stage_id, value) VALUES (?, ?, ?)",
            [(self.run_id, spec.id, v) for v in kept],
        )
        if out:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO stage_targets (run_id, stage_id, value, task_id) VALUES (?, ?, ?, -1)",
                [(self.run_id, spec.id, v) for v in out],
            )
            new = conn.total_changes - before
            if new:
                conn.execute(
                    "UPDATE stages SET dropped = dropped + ? WHERE run_id = ? AND id = ?",
                    (new, self.run_id, spec.id),
                )
                self._drop_event(conn, spec.id, sorted(set(out)))

    def _chunk_targets(self, spec: StageBase, row: dict[str, Any], *, partial_ok: bool, finish: bool) -> None:
        with self.store.transaction() as conn:
            waiting = conn.execute(
                "SELECT rowid, value FROM stage_targets WHERE run_id = ? AND stage_id = ? AND task_id IS NULL"
                " ORDER BY rowid",
                (self.run_id, spec.id),
            ).fetchall()
            chunks = [waiting[i : i + spec.chunk] for i in range(0, len(waiting), spec.chunk)]
            if chunks and len(chunks[-1]) < spec.chunk and not partial_ok:
                chunks.pop()
            seq = int(conn.execute(
                "SELECT tasks_total FROM stages WHERE run_id = ? AND id = ?", (self.run_id, spec.id)
            ).fetchone()[0])
            if chunks:
                self._mark_running(conn, spec.id, row)
            for chunk in chunks:
                task_id = self._insert_tasks(conn, spec, [[v for _, v in chunk]], seq)
                seq += 1
                conn.executemany(
                    "UPDATE stage_targets SET task_id = ? WHERE rowid = ?", [(task_id, rid) for rid, _ in chunk]
                )
            if finish:
                conn.execute("UPDATE stages SET planned = 1 WHERE run_id = ? AND id = ?", (self.run_id, spec.id))

    # -- shared ------------------------------------------------------------------------------

    def _insert_tasks(
        self, conn: sqlite3.Connection, spec: StageBase, chunks: list[list[str]], seq: int, pinned: str | None = None
    ) -> int:
        """Insert one task per chunk; returns the row id when exactly one was inserted (else 0)."""
        now = time.time()
        sql = (
            "INSERT INTO tasks (run_id, stage_id, seq, targets, state, max_attempts, priority, pinned, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        rows = [
            (self.run_id, spec.id, seq + offset, json.dumps(chunk), TaskState.QUEUED, spec.retries + 1,
             self.priority, pinned, now)
            for offset, chunk in enumerate(chunks)
        ]
        last = 0
        if len(rows) == 1:
            last = int(conn.execute(sql, rows[0]).lastrowid or 0)
        elif rows:
            conn.executemany(sql, rows)
        if chunks:
            conn.execute(
                "UPDATE stages SET tasks_total = tasks_total + ? WHERE run_id = ? AND id = ?",
                (len(chunks), self.run_id, spec.id),
            )
        return last

    def _mark_running(self, conn: sqlite3.Connection, stage_id: str, row: dict[str, Any]) -> None:
        if row["state"] == StageState.PENDING:
            conn.execute(
                "UPDATE stages SET state = ?, started = coalesce(started, ?) WHERE run_id = ? AND id = ?",
                (StageState.RUNNING, time.time(), self.run_id, stage_id),
            )
            row["state"] = StageState.RUNNING

    def _queued(self, stage_id: str) -> int:
        return int(self.store.conn.execute(
            "SELECT count(*) FROM tasks WHERE run_id = ? AND stage_id = ? AND state = ?",
            (self.run_id, stage_id, TaskState.QUEUED),
        ).fetchone()[0])

    def _maybe_complete(self, spec: StageBase, row: dict[str, Any]) -> None:
        with self.store.transaction() as conn:
            open_tasks = conn.execute(
                "SELECT count(*) FROM tasks WHERE run_id = ? AND stage_id = ? AND state IN (?, ?)",
                (self.run_id, spec.id, TaskState.QUEUED, TaskState.LEASED),
            ).fetchone()[0]
            if open_tasks:
                return
            failed = int(row["tasks_failed"]) > 0
            state = StageState.FAILED if failed else StageState.COMPLETED
            now = time.time()
            conn.execute(
                "UPDATE stages SET state = ?, started = coalesce(started, ?), ended = ? WHERE run_id = ? AND id = ?",
                (state, now, now, self.run_id, spec.id),
            )
            level = "warning" if failed else "info"
            detail = f", {row['tasks_failed']} task(s) failed" if failed else ""
            self.store._event(
                conn, self.run_id, level, "stage",
                f"stage {spec.id} {state}: {row['tasks_done']}/{row['tasks_total']} tasks, {row['results']} results{detail}",
            )

    def _drop_event(self, conn: sqlite3.Connection, stage_id: str, values: list[str]) -> None:
        shown = ", ".join(values[:5]) + (f" (+{len(values) - 5} more)" if len(values) > 5 else "")
        self.store._event(
            conn, self.run_id, "warning", "scope",
            f"stage {stage_id}: dropped {len(values)} out-of-scope target(s): {shown}",
        )


def parse_targets_empty() -> Any:
    from console.targets.sets import TargetSet

    return TargetSet([], [])


def run_is_active(state: str) -> bool:
    return state in (RunState.PENDING, RunState.RUNNING)
