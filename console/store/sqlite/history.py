"""Runs over time on SQLite: records in key order for a diff, the run before, amending, notifications.

Plain parameterised SQL (row values, no engine functions), so the PostgreSQL backend can share it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from console.errors import RunNotFound
from console.status import RUN_TERMINAL, RunState
from console.store import base
from console.store.rows import RunRow
from console.store.sqlite.database import Database, maps_errors, marks
from console.store.sqlite.runs import _RUN_COLUMNS, SQLiteRuns, run_row

_TERMINAL = [str(s) for s in RUN_TERMINAL]


@maps_errors
class SQLiteHistory(base.History):
    def __init__(self, db: Database) -> None:
        self.db = db
        self._runs = SQLiteRuns(db)

    def keyed_pages(self, run_id: str, batch: int = 10_000) -> Iterator[list[base.KeyedRecord]]:
        conn = self.db.conn
        first = "SELECT stage_id, type, key, data FROM results WHERE run_id = ? ORDER BY stage_id, type, key LIMIT ?"
        rest = (
            "SELECT stage_id, type, key, data FROM results WHERE run_id = ? AND (stage_id, type, key) > (?, ?, ?)"
            " ORDER BY stage_id, type, key LIMIT ?"
        )
        rows = conn.execute(first, (run_id, batch)).fetchall()
        while rows:
            yield rows
            if len(rows) < batch:
                return
            stage, rtype, key, _ = rows[-1]
            rows = conn.execute(rest, (run_id, stage, rtype, key, batch)).fetchall()

    def previous_run(self, run_id: str, *, same_schedule: bool = False) -> RunRow | None:
        run = self._runs.get(run_id)
        if same_schedule and run.schedule_id is not None:
            where, params = "schedule_id = ?", [run.schedule_id]
        else:
            where, params = "workflow = ?", [run.workflow]
            if run.targets is None:
                where += " AND targets IS NULL"
            else:
                where += " AND targets = ?"
                params.append(run.targets)
        rows = self.db.query(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE {where} AND state = ? AND id <> ?"
            " AND (created < ? OR (created = ? AND id < ?)) ORDER BY created DESC, id DESC LIMIT 1",
            [*params, RunState.COMPLETED, run_id, run.created, run.created, run_id],
        )
        return run_row(rows[0]) if rows else None

    def definition(self, run_id: str) -> str:
        row = self.db.conn.execute("SELECT definition FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r}", field="run")
        return str(row[0])

    def amend(self, run_id: str, expected_definition: str, definition: dict[str, Any], stages: list[str],
              message: str) -> bool:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT definition FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or row[0] != expected_definition:
                return False
            if stages:
                moved = conn.execute(
                    f"SELECT count(*) FROM stages WHERE run_id = ? AND id IN ({marks(stages)})"
                    " AND (planned <> 0 OR cursor <> 0 OR tasks_total <> 0)",
                    [run_id, *stages],
                ).fetchone()[0]
                if moved:
                    return False
                for table in ("tasks", "stage_targets"):
                    if conn.execute(
                        f"SELECT 1 FROM {table} WHERE run_id = ? AND stage_id IN ({marks(stages)}) LIMIT 1",
                        [run_id, *stages],
                    ).fetchone():
                        return False
            conn.execute("UPDATE runs SET definition = ? WHERE id = ?", (json.dumps(definition), run_id))
            self.db.event(conn, run_id, "info", "amend", message)
            return True

    def notify_due(self, now: float, limit: int = 20) -> list[RunRow]:
        rows = self.db.query(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE notify IS NOT NULL AND notify_done IS NULL"
            f" AND state IN ({marks(_TERMINAL)}) AND (notify_next IS NULL OR notify_next <= ?)"
            " ORDER BY ended LIMIT ?",
            [*_TERMINAL, now, limit],
        )
        return [run_row(r) for r in rows]

    def notify_claim(self, run_id: str, now: float, lease_s: float) -> int:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET notify_next = ?, notify_attempts = notify_attempts + 1"
                f" WHERE id = ? AND notify IS NOT NULL AND notify_done IS NULL AND state IN ({marks(_TERMINAL)})"
                " AND (notify_next IS NULL OR notify_next <= ?)",
                (now + lease_s, run_id, *_TERMINAL, now),
            )
            if cur.rowcount != 1:
                return 0
            return int(conn.execute("SELECT notify_attempts FROM runs WHERE id = ?", (run_id,)).fetchone()[0])

    def notify_outcome(self, run_id: str, attempt: int, done: str | None, retry_at: float | None,
                       level: str, message: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE runs SET notify_done = ?, notify_next = ? WHERE id = ? AND notify_attempts = ?",
                (done, retry_at, run_id, attempt),
            )
            self.db.event(conn, run_id, level, "notify", message)
