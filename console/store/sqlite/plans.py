"""The planner's side of the SQLite store: tasks written together with the planning cursor.

The cursor of a stage (``stages.cursor``: the next input target index, or the last source
record read) moves in the same transaction as the tasks it accounts for, and input
planning is a compare-and-set on it, so a crash or a second planner never plans a chunk
twice. Derived targets are deduplicated in ``stage_targets`` (an out-of-scope one is kept
there as dropped, ``task_id`` -1, so it is counted and logged once).
"""

from __future__ import annotations

import json
import time
from typing import Any

from console.errors import StaleDefinition
from console.status import TASK_OPEN, StageState, TaskState
from console.store import base
from console.store.rows import SourceRecord, StageRow
from console.store.sqlite.database import Database, maps_errors, marks
from console.store.sqlite.runs import stage_row
from console.store.writes import TaskPlan

#: stage_targets.task_id of a derived target dropped as out of scope
DROPPED = -1


@maps_errors
class SQLitePlans(base.Plans):
    def __init__(self, db: Database) -> None:
        self.db = db

    def stage(self, run_id: str, stage_id: str) -> StageRow:
        rows = self.db.query("SELECT * FROM stages WHERE run_id = ? AND id = ?", (run_id, stage_id))
        if not rows:
            raise KeyError(f"run {run_id} has no stage {stage_id!r}")
        return stage_row(rows[0])

    def queued(self, run_id: str, stage_id: str) -> int:
        return int(self.db.conn.execute(
            "SELECT count(*) FROM tasks WHERE run_id = ? AND stage_id = ? AND state = ?",
            (run_id, stage_id, TaskState.QUEUED),
        ).fetchone()[0])

    def add_input_tasks(
        self, plan: TaskPlan, chunks: list[list[str]], *, cursor: int, new_cursor: int, finished: bool,
        dropped: int, note: str | None = None, params: list[str | None] | None = None,
    ) -> bool:
        with self.db.transaction() as conn:
            moved = conn.execute(
                "UPDATE stages SET cursor = ?, planned = ?, dropped = dropped + ? WHERE run_id = ? AND id = ?"
                " AND cursor = ? AND planned = 0",
                (new_cursor, int(finished), dropped, plan.run_id, plan.stage_id, cursor),
            ).rowcount
            if not moved:
                return False
            self._same_definition(conn, plan)  # the UPDATE holds the stage now
            self._mark_running(conn, plan)
            self._insert_tasks(conn, plan, chunks, params=params)
            if note:
                self.db.event(conn, plan.run_id, "warning", "scope", note)
        return True

    def add_box_tasks(self, plan: TaskPlan, boxes: list[str], note: str | None = None) -> None:
        with self.db.transaction() as conn:
            planned = conn.execute(
                "UPDATE stages SET planned = 1 WHERE run_id = ? AND id = ? AND planned = 0", (plan.run_id, plan.stage_id)
            ).rowcount
            if not planned:
                return
            self._same_definition(conn, plan)
            self._mark_running(conn, plan)
            for box in boxes:
                self._insert_tasks(conn, plan, [[box]], pinned=box)
            if note:
                self.db.event(conn, plan.run_id, "warning", "plan", note)

    def source_records(self, run_id: str, stage_id: str, after_id: int, limit: int) -> list[SourceRecord]:
        rows = self.db.conn.execute(
            "SELECT id, type, target, data FROM results WHERE run_id = ? AND stage_id = ? AND id > ?"
            " ORDER BY id LIMIT ?",
            (run_id, stage_id, after_id, limit),
        ).fetchall()
        return [SourceRecord(id=r[0], type=r[1], target=r[2] or "", data=json.loads(r[3])) for r in rows]

    def add_targets(
        self, plan: TaskPlan, kept: list[str], dropped: list[str], cursor: int, note: str | None = None
    ) -> None:
        with self.db.transaction() as conn:
            self.db.lock_stage(conn, plan.run_id, plan.stage_id)
            self._same_definition(conn, plan)
            self._mark_running(conn, plan)
            conn.executemany(
                "INSERT OR IGNORE INTO stage_targets (run_id, stage_id, value) VALUES (?, ?, ?)",
                [(plan.run_id, plan.stage_id, v) for v in kept],
            )
            if dropped:
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO stage_targets (run_id, stage_id, value, task_id) VALUES (?, ?, ?, ?)",
                    [(plan.run_id, plan.stage_id, v, DROPPED) for v in dropped],
                )
                new = conn.total_changes - before
                if new:
                    conn.execute(
                        "UPDATE stages SET dropped = dropped + ? WHERE run_id = ? AND id = ?",
                        (new, plan.run_id, plan.stage_id),
                    )
                    if note:
                        self.db.event(conn, plan.run_id, "warning", "scope", note)
            # never backwards: another master may have read further meanwhile
            conn.execute(
                "UPDATE stages SET cursor = ? WHERE run_id = ? AND id = ? AND cursor < ?",
                (cursor, plan.run_id, plan.stage_id, cursor),
            )

    def chunk_targets(
        self, plan: TaskPlan, size: int, *, partial_ok: bool, finish: bool, parts: list[str] | None = None
    ) -> int:
        with self.db.transaction() as conn:
            self.db.lock_stage(conn, plan.run_id, plan.stage_id)
            self._same_definition(conn, plan)
            waiting = conn.execute(
                "SELECT rowid, value FROM stage_targets WHERE run_id = ? AND stage_id = ? AND task_id IS NULL"
                " ORDER BY rowid",
                (plan.run_id, plan.stage_id),
            ).fetchall()
            if parts is not None:
                for rid, value in waiting:
                    self._insert_tasks(conn, plan, [[value]] * len(parts), params=list(parts))
                    # the target is planned (its tasks hold it); the last part's task id marks it
                    last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
                    conn.execute("UPDATE stage_targets SET task_id = ? WHERE rowid = ?", (last, rid))
                if finish:
                    conn.execute(
                        "UPDATE stages SET planned = 1 WHERE run_id = ? AND id = ?", (plan.run_id, plan.stage_id)
                    )
                return len(waiting) * len(parts)
            chunks = [waiting[i : i + size] for i in range(0, len(waiting), size)]
            if chunks and len(chunks[-1]) < size and not partial_ok:
                chunks.pop()
            for chunk in chunks:
                task_id = self._insert_tasks(conn, plan, [[v for _, v in chunk]])
                conn.executemany(
                    "UPDATE stage_targets SET task_id = ? WHERE rowid = ?", [(task_id, rid) for rid, _ in chunk]
                )
            if finish:
                conn.execute("UPDATE stages SET planned = 1 WHERE run_id = ? AND id = ?", (plan.run_id, plan.stage_id))
        return len(chunks)

    def complete_stage(self, run_id: str, stage_id: str) -> StageState | None:
        with self.db.transaction() as conn:
            self.db.lock_stage(conn, run_id, stage_id)
            open_tasks = conn.execute(
                f"SELECT count(*) FROM tasks WHERE run_id = ? AND stage_id = ? AND state IN ({marks(TASK_OPEN)})",
                (run_id, stage_id, *TASK_OPEN),
            ).fetchone()[0]
            if open_tasks:
                return None
            row = stage_row(self.db.query("SELECT * FROM stages WHERE run_id = ? AND id = ?", (run_id, stage_id))[0])
            if row.state in (StageState.COMPLETED, StageState.FAILED):
                return row.state  # another master serving the run completed it
            failed = row.tasks_failed > 0
            state = StageState.FAILED if failed else StageState.COMPLETED
            now = time.time()
            conn.execute(
                "UPDATE stages SET state = ?, started = coalesce(started, ?), ended = ? WHERE run_id = ? AND id = ?",
                (state, now, now, run_id, stage_id),
            )
            detail = f", {row.tasks_failed} task(s) failed" if failed else ""
            self.db.event(
                conn, run_id, "warning" if failed else "info", "stage",
                f"stage {stage_id} {state}: {row.tasks_done}/{row.tasks_total} tasks, {row.results} results{detail}",
            )
        return state

    # -- shared ------------------------------------------------------------------------

    def _same_definition(self, conn: Any, plan: TaskPlan) -> None:
        """Inside a planning transaction: the run still holds the definition ``plan`` was made from.

        ``amend`` rewrites a run's definition only while the stages it changes have nothing planned, and
        it holds the run row and those stages as it checks; here the write already holds its stage (locked
        or updated) when it reads the run's definition. One of the two commits first: an amendment is then
        either seen here (the write is refused, its transaction rolled back) or refused itself (the stage
        has started). A plain read: taking the run row too would lock in the other order than amend's."""
        if plan.definition is None:
            return
        row = conn.execute(
            "SELECT definition = ? FROM runs WHERE id = ?", (plan.definition, plan.run_id)
        ).fetchone()
        if row is not None and not row[0]:
            raise StaleDefinition(f"run {plan.run_id}: its definition was amended since stage {plan.stage_id} "
                                  "was read; planning it again")

    def _insert_tasks(
        self, conn: Any, plan: TaskPlan, chunks: list[list[str]], pinned: str | None = None,
        params: list[str | None] | None = None,
    ) -> int:
        """Insert one task per chunk (marking the stage running); the row id when exactly one was inserted.
        ``params``: each chunk's parameter overrides (JSON object text or None)."""
        if not chunks:
            return 0
        self._mark_running(conn, plan)
        seq = int(conn.execute(
            "UPDATE stages SET tasks_total = tasks_total + ? WHERE run_id = ? AND id = ? RETURNING tasks_total",
            (len(chunks), plan.run_id, plan.stage_id),
        ).fetchone()[0]) - len(chunks)
        now = time.time()
        sql = (
            "INSERT INTO tasks (run_id, stage_id, seq, targets, state, max_attempts, priority, pinned, created,"
            " params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        rows = [
            (plan.run_id, plan.stage_id, seq + offset, json.dumps(chunk), TaskState.QUEUED, plan.max_attempts,
             plan.priority, pinned, now, params[offset] if params is not None else None)
            for offset, chunk in enumerate(chunks)
        ]
        if len(rows) == 1:
            return int(conn.execute(sql + " RETURNING id", rows[0]).fetchone()[0])
        conn.executemany(sql, rows)
        return 0

    @staticmethod
    def _mark_running(conn: Any, plan: TaskPlan) -> None:
        conn.execute(
            "UPDATE stages SET state = ?, started = coalesce(started, ?) WHERE run_id = ? AND id = ? AND state = ?",
            (StageState.RUNNING, time.time(), plan.run_id, plan.stage_id, StageState.PENDING),
        )
