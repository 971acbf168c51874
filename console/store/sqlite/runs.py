"""Runs, their stages' progress, intents from any process, the event log and the agents table."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from typing import Any

from console.errors import BadInput, RunNotFound
from console.runoptions import RunOptions
from console.status import RUN_TERMINAL, TASK_OPEN, AgentState, RunState, StageState, TaskState
from console.store import base
from console.store.rows import AgentRow, EventRow, RunRow, StageRow, TaskFailure
from console.store.sqlite.database import Database, maps_errors, marks

_RUN_COLUMNS = (
    "id, workflow, targets, scope, agents, workflows_file, priority, state, created, started, ended, error,"
    " owner, owner_seen, stop_requested, exclude, max_rate, host_rate, notify, submitted_by, schedule_id,"
    " paused_s, paused_at"
)


#: the shortest id prefix accepted (runs, schedules), and how many candidates an ambiguous one names
MIN_PREFIX = 4
MAX_CANDIDATES = 8


def resolve_id(db: Database, table: str, prefix: str, what: str, field: str, error: type[BadInput]) -> str:
    """The id of the one row of ``table`` whose id is ``prefix`` or starts with it (``MIN_PREFIX`` or more
    characters); ``error`` naming ``field`` when it is shorter, matches none or several (naming them).
    Portable SQL: no LIKE (``%`` and ``_`` in a prefix are plain characters)."""
    text = prefix.strip()
    if len(text) < MIN_PREFIX:
        raise error(f"a {what} id or a prefix of {MIN_PREFIX} characters or more, not {text!r}", field=field)
    rows = db.query(
        f"SELECT id FROM {table} WHERE id = ? OR substr(id, 1, ?) = ? ORDER BY id LIMIT ?",
        (text, len(text), text, MAX_CANDIDATES + 1),
    )
    ids = [str(r["id"]) for r in rows]
    if text in ids:
        return text
    if not ids:
        raise error(f"no {what} {text!r}", field=field)
    if len(ids) > 1:
        shown = ", ".join(ids[:MAX_CANDIDATES]) + (" ..." if len(ids) > MAX_CANDIDATES else "")
        raise error(f"{text!r} is ambiguous: it starts {shown}", field=field)
    return ids[0]


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def run_row(r: dict[str, Any]) -> RunRow:
    return RunRow(
        id=r["id"], workflow=r["workflow"] or "", state=RunState(r["state"]), priority=_int(r["priority"]),
        targets=r["targets"], scope=r["scope"], agents=r["agents"], workflows_file=r["workflows_file"],
        created=r["created"], started=r["started"], ended=r["ended"], error=r["error"], owner=r["owner"],
        owner_seen=r["owner_seen"], stop_requested=bool(r["stop_requested"]), exclude=r["exclude"],
        max_rate=r["max_rate"], host_rate=r["host_rate"], notify=r["notify"], submitted_by=r["submitted_by"],
        schedule_id=r["schedule_id"], paused_s=float(r.get("paused_s") or 0.0), paused_at=r.get("paused_at"),
        tasks_total=_int(r.get("tasks_total")), tasks_done=_int(r.get("tasks_done")),
        tasks_failed=_int(r.get("tasks_failed")), results=_int(r.get("results")),
    )


def stage_row(r: dict[str, Any]) -> StageRow:
    return StageRow(
        run_id=r["run_id"], id=r["id"], idx=_int(r["idx"]), tool=r["tool"] or "", state=StageState(r["state"]),
        tasks_total=_int(r["tasks_total"]), tasks_done=_int(r["tasks_done"]), tasks_failed=_int(r["tasks_failed"]),
        results=_int(r["results"]), dropped=_int(r["dropped"]), planned=bool(r["planned"]), cursor=_int(r["cursor"]),
        started=r["started"], ended=r["ended"],
    )


@maps_errors
class SQLiteRuns(base.Runs):
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, workflow: str, definition: dict[str, Any], targets: str | None = None, scope: str | None = None,
        agents: str | None = None, priority: int = 0, workflows_file: str | None = None,
        options: RunOptions | None = None,
    ) -> str:
        with self.db.transaction() as conn:
            return insert_run(
                self.db, conn, workflow, definition, targets, scope, agents, priority, workflows_file, options
            )

    def get(self, run_id: str) -> RunRow:
        rows = self.db.query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise RunNotFound(f"no run {run_id!r}", field="RUN")
        return run_row(rows[0])

    def resolve(self, prefix: str) -> str:
        return resolve_id(self.db, "runs", prefix, "run", "RUN", RunNotFound)

    def failures(self, run_id: str, limit: int = 5, stage: str | None = None) -> list[TaskFailure]:
        one_stage = "" if stage is None else " AND stage_id = ?"
        rows = self.db.query(
            f"SELECT id, stage_id, agent, error, ended FROM tasks WHERE run_id = ? AND state = ?{one_stage}"
            " ORDER BY ended, id LIMIT ?",
            (run_id, TaskState.FAILED, *(() if stage is None else (stage,)), limit),
        )
        return [
            TaskFailure(task_id=int(r["id"]), stage_id=str(r["stage_id"]), agent=r["agent"],
                        error=r["error"] or "failed", ended=r["ended"])
            for r in rows
        ]

    def unserved(self, run_ids: list[str]) -> set[str]:
        waiting = (RunState.PENDING, RunState.RUNNING)
        found: set[str] = set()
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start:start + 500]
            rows = self.db.query(
                f"SELECT id, owner FROM runs WHERE id IN ({marks(chunk)}) AND state IN ({marks(waiting)})",
                [*chunk, *waiting],
            )
            owners = sorted({r["owner"] for r in rows if r["owner"] is not None})
            dead = self.db.dead_masters(self.db.conn, owners) if owners else set()
            found.update(r["id"] for r in rows if r["owner"] is None or r["owner"] in dead)
        return found

    def definition(self, run_id: str) -> dict[str, Any]:
        rows = self.db.query("SELECT definition FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise RunNotFound(f"no run {run_id!r}", field="RUN")
        value = json.loads(rows[0]["definition"] or "{}")
        return value if isinstance(value, dict) else {}

    def newest(self, limit: int = 100, states: Iterable[RunState] | None = None) -> list[RunRow]:
        wanted = [str(s) for s in states or ()]
        where = f"WHERE r.state IN ({marks(wanted)})" if wanted else ""
        columns = ", ".join(f"r.{c.strip()}" for c in _RUN_COLUMNS.split(","))
        rows = self.db.query(
            f"SELECT {columns}, COALESCE(SUM(s.tasks_total), 0) AS tasks_total,"
            " COALESCE(SUM(s.tasks_done), 0) AS tasks_done, COALESCE(SUM(s.tasks_failed), 0) AS tasks_failed,"
            " COALESCE(SUM(s.results), 0) AS results"
            f" FROM runs AS r LEFT JOIN stages AS s ON s.run_id = r.id {where}"
            " GROUP BY r.id ORDER BY r.created DESC, r.rowid DESC LIMIT ?",
            [*wanted, limit],
        )
        return [run_row(r) for r in rows]

    def stages(self, run_id: str) -> list[StageRow]:
        return [stage_row(r) for r in self.db.query("SELECT * FROM stages WHERE run_id = ? ORDER BY idx", (run_id,))]

    def stages_of(self, run_ids: list[str]) -> dict[str, tuple[StageRow, ...]]:
        found: dict[str, list[StageRow]] = {run_id: [] for run_id in run_ids}
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start:start + 500]
            for row in self.db.query(
                f"SELECT * FROM stages WHERE run_id IN ({marks(chunk)}) ORDER BY run_id, idx", chunk
            ):
                found[row["run_id"]].append(stage_row(row))
        return {run_id: tuple(stages) for run_id, stages in found.items()}

    # -- intents (any process) ---------------------------------------------------------

    def pause(self, run_id: str) -> RunState:
        return self._move(run_id, (RunState.PENDING, RunState.RUNNING), RunState.PAUSED, "pause")

    def resume(self, run_id: str) -> RunState:
        return self._move(run_id, (RunState.PAUSED,), RunState.PENDING, "resume")

    def _move(self, run_id: str, when: tuple[RunState, ...], to: RunState, kind: str) -> RunState:
        """``when`` the run is in one of those states, put it in ``to`` (logged); return its state now."""
        with self.db.transaction() as conn:
            state = self._state_for_update(conn, run_id)
            if state not in when:
                return state
            now = time.time()
            if to == RunState.PAUSED:
                # the clock stops now (only for a run that has started: a pending run has no duration yet)
                conn.execute("UPDATE runs SET state = ?, paused_at = CASE WHEN started IS NULL THEN NULL ELSE ? END"
                             " WHERE id = ?", (to, now, run_id))
            else:
                conn.execute("UPDATE runs SET state = ?, paused_s = paused_s + coalesce(? - paused_at, 0),"
                             " paused_at = NULL WHERE id = ?", (to, now, run_id))
            self.db.event(conn, run_id, "info", kind, f"{kind} requested")
            self.db.notify(conn, kind)
            return to

    def retry_failed(self, run_id: str) -> int:
        """A failed run goes back to pending with its failed tasks queued again (attempts from zero);
        the stages from the first one that failed on are reopened (later ones plan again from
        their cursor). Only on the operator's word (``resume --retry-failed``). Returns how many
        tasks were queued again; -1 when the run is not failed (nothing changed)."""
        with self.db.transaction() as conn:
            if self._state_for_update(conn, run_id) != RunState.FAILED:
                return -1
            failed = conn.execute(
                "SELECT stage_id, count(*) FROM tasks WHERE run_id = ? AND state = ? GROUP BY stage_id",
                (run_id, TaskState.FAILED),
            ).fetchall()
            conn.execute(
                "UPDATE tasks SET state = ?, attempts = 0, error = NULL, ended = NULL, not_before = NULL,"
                " lease_owner = NULL, lease_expires = NULL, tried = '[]' WHERE run_id = ? AND state = ?",
                (TaskState.QUEUED, run_id, TaskState.FAILED),
            )
            conn.executemany(
                "UPDATE stages SET tasks_failed = CASE WHEN tasks_failed > ? THEN tasks_failed - ? ELSE 0 END"
                " WHERE run_id = ? AND id = ?",
                [(count, count, run_id, stage_id) for stage_id, count in failed],
            )
            stages = {stage_id for stage_id, _ in failed}
            first = conn.execute(
                f"SELECT min(idx) FROM stages WHERE run_id = ? AND (state = ? OR id IN ({','.join('?' * len(stages))}))",
                (run_id, StageState.FAILED, *stages),
            ).fetchone()[0]
            if first is not None:
                conn.execute(
                    "UPDATE stages SET state = CASE WHEN started IS NULL THEN ? ELSE ? END, ended = NULL,"
                    " planned = CASE WHEN idx > ? THEN 0 ELSE planned END WHERE run_id = ? AND idx >= ?",
                    (StageState.PENDING, StageState.RUNNING, first, run_id, first),
                )
            conn.execute(
                "UPDATE runs SET state = ?, error = NULL, ended = NULL, owner = NULL, stop_requested = 0 WHERE id = ?",
                (RunState.PENDING, run_id),
            )
            count = sum(n for _, n in failed)
            self.db.event(conn, run_id, "info", "resume", f"retry of the failed run requested: {count} failed task(s) queued again")
            self.db.notify(conn, "resume")
            return count

    def stop(self, run_id: str) -> RunState:
        with self.db.transaction() as conn:
            state = self._state_for_update(conn, run_id)
            if state in RUN_TERMINAL:
                return state
            owner = conn.execute("SELECT owner FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
            if owner is not None and owner not in self.db.dead_masters(conn, [owner]):
                conn.execute("UPDATE runs SET stop_requested = 1 WHERE id = ?", (run_id,))
                self.db.event(conn, run_id, "info", "stop", "stop requested")
                self.db.notify(conn, "stop")
                return state
            finish_stopped(self.db, conn, run_id)
            self.db.notify(conn, "stop")
            return RunState.STOPPED

    def _state_for_update(self, conn: Any, run_id: str) -> RunState:
        row = conn.execute(f"SELECT state FROM runs WHERE id = ?{self.db.row_lock}", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r}", field="RUN")
        return RunState(row[0])


def insert_run(
    db: Database, conn: Any, workflow: str, definition: dict[str, Any], targets: str | None,
    scope: str | None, agents: str | None, priority: int, workflows_file: str | None, options: RunOptions | None,
) -> str:
    """Write a pending run and its stages inside the caller's transaction (a schedule's occurrence is
    written in the same transaction as the move of its due time); return the new id."""
    opts = options or RunOptions()
    stages = definition.get("stages") or []
    run_id = secrets.token_hex(4)
    while conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
        run_id = secrets.token_hex(4)
    conn.execute(
        "INSERT INTO runs (id, workflow, definition, workflows_file, targets, scope, agents, priority,"
        " state, created, exclude, max_rate, host_rate, notify, submitted_by, schedule_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id, workflow, json.dumps(definition), workflows_file, targets, scope, agents,
            int(priority), RunState.PENDING, time.time(), opts.exclude, opts.max_rate, opts.host_rate,
            opts.notify, opts.submitted_by, opts.schedule_id,
        ),
    )
    conn.executemany(
        "INSERT INTO stages (run_id, id, idx, tool) VALUES (?, ?, ?, ?)",
        [(run_id, str(s["id"]), i, str(s.get("tool", ""))) for i, s in enumerate(stages)],
    )
    db.event(conn, run_id, "info", "submit", f"run {run_id} of {workflow} submitted")
    db.notify(conn, "submit")
    return run_id


def finish_stopped(db: Database, conn: Any, run_id: str) -> None:
    """End a run ``stopped``, every unfinished task cancelled (inside the caller's transaction)."""
    now = time.time()
    conn.execute(
        "UPDATE tasks SET state = ?, ended = ?, lease_owner = NULL, lease_expires = NULL,"
        f" error = coalesce(error, 'stopped') WHERE run_id = ? AND state IN ({marks(TASK_OPEN)})",
        (TaskState.CANCELLED, now, run_id, *TASK_OPEN),
    )
    conn.execute(
        "UPDATE runs SET state = ?, ended = ?, owner = NULL, stop_requested = 0 WHERE id = ?",
        (RunState.STOPPED, now, run_id),
    )
    db.event(conn, run_id, "warning", "stop", "run stopped")


@maps_errors
class SQLiteEvents(base.Events):
    def __init__(self, db: Database) -> None:
        self.db = db

    def recent(self, run_id: str | None = None, after_id: int = 0, limit: int = 200) -> list[EventRow]:
        sql = "SELECT id, ts, run_id, level, kind, message FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [_event_row(r) for r in reversed(self.db.query(sql, params))]


    def since(self, run_id: str | None = None, after_id: int = 0, limit: int = 1000) -> list[EventRow]:
        sql = "SELECT id, ts, run_id, level, kind, message FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [_event_row(r) for r in self.db.query(sql, params)]


def _event_row(r: dict[str, Any]) -> EventRow:
    return EventRow(id=r["id"], ts=float(r["ts"] or 0.0), run_id=r["run_id"], level=r["level"] or "info",
                    kind=r["kind"] or "", message=r["message"] or "")


_AGENT_COLUMNS = (
    "name", "kind", "address", "state", "slots", "busy", "tasks_done", "failures", "last_seen", "latency_ms",
    "python", "programs", "hash", "error", "master",
)


@maps_errors
class SQLiteAgents(base.Agents):
    def __init__(self, db: Database) -> None:
        self.db = db

    def all(self) -> list[AgentRow]:
        rows = self.db.query(f"SELECT {', '.join(_AGENT_COLUMNS)} FROM agents ORDER BY name")
        # a local agent is a subprocess of its master: once that master is gone, so is the agent (an SSH
        # box outlives its master and stays listed)
        local_masters = sorted({r["master"] for r in rows if r["kind"] == "local" and r["master"]})
        gone = self.db.dead_masters(self.db.conn, local_masters) if local_masters else set()
        return [
            AgentRow(
                name=r["name"], kind=r["kind"] or "", address=r["address"] or "",
                state=AgentState(r["state"]) if r["state"] in AgentState._value2member_map_ else AgentState.DOWN,
                slots=_int(r["slots"]), busy=_int(r["busy"]), tasks_done=_int(r["tasks_done"]),
                failures=_int(r["failures"]), last_seen=r["last_seen"], latency_ms=r["latency_ms"],
                python=r["python"], programs=json.loads(r["programs"]) if r["programs"] else {}, hash=r["hash"],
                error=r["error"], master=r["master"],
            )
            for r in rows
            if not (r["kind"] == "local" and r["master"] in gone)
        ]

    def report(self, rows: list[AgentRow]) -> None:
        if not rows:
            return
        values = [
            (a.name, a.kind, a.address, str(a.state), a.slots, a.busy, a.tasks_done, a.failures, a.last_seen,
             a.latency_ms, a.python, json.dumps(a.programs) if a.programs else None, a.hash, a.error, a.master)
            for a in rows
        ]
        with self.db.transaction() as conn:
            conn.executemany(
                f"INSERT OR REPLACE INTO agents ({', '.join(_AGENT_COLUMNS)}) VALUES ({marks(_AGENT_COLUMNS)})",
                values,
            )
