"""Schedules on SQLite: recurring runs, fired once per occurrence by a compare-and-set on ``next_due``."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from console.errors import BadInput
from console.runoptions import RunOptions
from console.store import base
from console.store.rows import ScheduleRow
from console.store.sqlite.database import Database, maps_errors
from console.store.sqlite.runs import insert_run, resolve_id
from console.store.writes import NewSchedule

_COLUMNS = (
    "id, workflow, definition, workflows_file, targets, scope, agents, priority, exclude, max_rate, host_rate,"
    " notify, submitted_by, every_s, run_window, paused, created, next_due, last_run, last_fired"
)


def schedule_row(r: dict[str, Any]) -> ScheduleRow:
    return ScheduleRow(
        id=r["id"], workflow=r["workflow"], every_s=int(r["every_s"]), window=r["run_window"],
        paused=bool(r["paused"]), created=float(r["created"]), next_due=float(r["next_due"]), targets=r["targets"],
        scope=r["scope"], agents=r["agents"], priority=int(r["priority"] or 0), exclude=r["exclude"],
        max_rate=r["max_rate"], host_rate=r["host_rate"], notify=r["notify"], submitted_by=r["submitted_by"],
        workflows_file=r["workflows_file"], last_run=r["last_run"], last_fired=r["last_fired"],
    )


@maps_errors
class SQLiteSchedules(base.Schedules):
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, schedule: NewSchedule) -> str:
        s = schedule
        with self.db.transaction() as conn:
            schedule_id = secrets.token_hex(4)
            while conn.execute("SELECT 1 FROM schedules WHERE id = ?", (schedule_id,)).fetchone():
                schedule_id = secrets.token_hex(4)
            conn.execute(
                f"INSERT INTO schedules ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?,"
                " NULL, NULL)",
                (
                    schedule_id, s.workflow, json.dumps(s.definition), s.workflows_file, s.targets, s.scope, s.agents,
                    s.priority, s.exclude, s.max_rate, s.host_rate, s.notify, s.submitted_by, s.every_s, s.window,
                    time.time(), s.first_due,
                ),
            )
            self.db.event(conn, None, "info", "schedule", f"schedule {schedule_id} of {s.workflow} added")
        return schedule_id

    def all(self) -> list[ScheduleRow]:
        return [schedule_row(r) for r in self.db.query(f"SELECT {_COLUMNS} FROM schedules ORDER BY created, id")]

    def resolve(self, prefix: str) -> str:
        return resolve_id(self.db, "schedules", prefix, "schedule", "schedule", BadInput)

    def get(self, schedule_id: str) -> ScheduleRow:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM schedules WHERE id = ?", (schedule_id,))
        if not rows:
            raise BadInput(f"no schedule {schedule_id!r}", field="schedule")
        return schedule_row(rows[0])

    def remove(self, schedule_id: str) -> None:
        with self.db.transaction() as conn:
            if conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount != 1:
                raise BadInput(f"no schedule {schedule_id!r}", field="schedule")
            self.db.event(conn, None, "info", "schedule", f"schedule {schedule_id} removed")

    def set_paused(self, schedule_id: str, paused: bool, next_due: float | None = None) -> None:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE schedules SET paused = ?, next_due = COALESCE(?, next_due) WHERE id = ?",
                (int(paused), next_due, schedule_id),
            )
            if cur.rowcount != 1:
                raise BadInput(f"no schedule {schedule_id!r}", field="schedule")
            self.db.event(conn, None, "info", "schedule", f"schedule {schedule_id} {'paused' if paused else 'resumed'}")

    def due(self, now: float) -> list[ScheduleRow]:
        return [
            schedule_row(r)
            for r in self.db.query(
                f"SELECT {_COLUMNS} FROM schedules WHERE paused = 0 AND next_due <= ? ORDER BY next_due", (now,)
            )
        ]

    def fire(self, schedule_id: str, expected_due: float, next_due: float, now: float, start: bool) -> str | None:
        with self.db.transaction() as conn:
            moved = conn.execute(
                "UPDATE schedules SET next_due = ? WHERE id = ? AND next_due = ? AND paused = 0",
                (next_due, schedule_id, expected_due),
            ).rowcount
            if moved != 1 or not start:
                return None
            rows = self.db.query(f"SELECT {_COLUMNS} FROM schedules WHERE id = ?", (schedule_id,))
            s = schedule_row(rows[0])
            definition = json.loads(rows[0]["definition"])
            options = RunOptions(
                exclude=s.exclude, max_rate=s.max_rate, host_rate=s.host_rate, notify=s.notify,
                submitted_by=s.submitted_by, schedule_id=s.id,
            )
            run_id = insert_run(
                self.db, conn, s.workflow, definition, s.targets, s.scope, s.agents, s.priority, s.workflows_file,
                options,
            )
            conn.execute("UPDATE schedules SET last_run = ?, last_fired = ? WHERE id = ?", (run_id, now, schedule_id))
            self.db.event(conn, run_id, "info", "schedule", f"schedule {schedule_id} started run {run_id}")
            return run_id
