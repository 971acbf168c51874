"""What the console shows, read from the store in one short transaction.

The refresh thread builds a ``ConsoleView`` (immutable rows, no Textual) and posts it
to the app; widgets only diff those rows against what they show. Reading here is
small and bounded whatever the size of the run: runs, the selected run's stages, the
agents, and the latest N results and events (the feed is "latest N", so a view that
replaces an older one in the message queue loses nothing that matters).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: How many rows the main screen's live feeds keep.
FEED_RESULTS = 200
FEED_EVENTS = 200
#: The runs table shows the newest runs; older ones stay reachable with `fleetscan status`.
MAX_RUNS = 200


@dataclass(frozen=True)
class RunRow:
    id: str
    workflow: str
    state: str
    priority: int
    created: float | None
    started: float | None
    ended: float | None
    error: str | None
    tasks_total: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    results: int = 0

    @property
    def stop_requested(self) -> bool:
        return self.error == "stop requested" and self.state not in ("stopped", "completed", "failed")


@dataclass(frozen=True)
class StageRow:
    run_id: str
    id: str
    idx: int
    tool: str
    state: str
    tasks_total: int
    tasks_done: int
    tasks_failed: int
    results: int
    dropped: int
    planned: bool
    started: float | None
    ended: float | None


@dataclass(frozen=True)
class AgentRow:
    name: str
    kind: str
    address: str
    state: str
    slots: int
    busy: int
    tasks_done: int
    failures: int
    last_seen: float | None
    latency_ms: float | None
    error: str | None


@dataclass(frozen=True)
class ResultRow:
    id: int
    run_id: str
    stage_id: str
    type: str
    key: str
    target: str
    agent: str
    ts: str
    data: str

    def data_dict(self) -> dict[str, Any]:
        try:
            value = json.loads(self.data)
        except (TypeError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class EventRow:
    id: int
    ts: float
    run_id: str | None
    level: str
    kind: str
    message: str


@dataclass(frozen=True)
class ConsoleView:
    """One consistent picture of the store for the main screen."""

    version: int
    runs: tuple[RunRow, ...] = ()
    selected_run: str | None = None
    stages: tuple[StageRow, ...] = ()
    #: every listed run's stages, so moving the cursor redraws at once without a store read
    stages_by_run: dict[str, tuple[StageRow, ...]] = field(default_factory=dict)
    agents: tuple[AgentRow, ...] = ()
    results: tuple[ResultRow, ...] = ()
    events: tuple[EventRow, ...] = ()
    total_results: int = field(default=0)


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def fetch_dicts(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """Rows as dicts, so a column the store adds later never shifts anything."""
    cursor = conn.execute(sql, tuple(params))
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def read_runs(conn: sqlite3.Connection, limit: int = MAX_RUNS) -> list[RunRow]:
    """Runs newest first, with progress summed over their stages (no scan of results)."""
    rows = fetch_dicts(
        conn,
        """
        SELECT r.id, r.workflow, r.state, r.priority, r.created, r.started, r.ended, r.error,
               COALESCE(SUM(s.tasks_total), 0) AS tasks_total,
               COALESCE(SUM(s.tasks_done), 0) AS tasks_done,
               COALESCE(SUM(s.tasks_failed), 0) AS tasks_failed,
               COALESCE(SUM(s.results), 0) AS results
        FROM runs AS r LEFT JOIN stages AS s ON s.run_id = r.id
        GROUP BY r.id
        ORDER BY r.created DESC, r.id DESC
        LIMIT ?
        """,
        (limit,),
    )
    return [
        RunRow(
            id=r["id"],
            workflow=r["workflow"] or "",
            state=r["state"] or "",
            priority=_int(r["priority"]),
            created=r["created"],
            started=r["started"],
            ended=r["ended"],
            error=r["error"],
            tasks_total=_int(r["tasks_total"]),
            tasks_done=_int(r["tasks_done"]),
            tasks_failed=_int(r["tasks_failed"]),
            results=_int(r["results"]),
        )
        for r in rows
    ]


def read_stages(conn: sqlite3.Connection, run_id: str) -> list[StageRow]:
    rows = fetch_dicts(conn, "SELECT * FROM stages WHERE run_id = ? ORDER BY idx", (run_id,))
    return [stage_from_row(r) for r in rows]


def read_stages_of(conn: sqlite3.Connection, run_ids: list[str]) -> dict[str, tuple[StageRow, ...]]:
    """Stages of many runs in one query (the runs table's runs: a few hundred rows at most)."""
    found: dict[str, list[StageRow]] = {run_id: [] for run_id in run_ids}
    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start:start + 500]
        rows = fetch_dicts(
            conn,
            f"SELECT * FROM stages WHERE run_id IN ({','.join('?' * len(chunk))}) ORDER BY run_id, idx",
            chunk,
        )
        for row in rows:
            found[row["run_id"]].append(stage_from_row(row))
    return {run_id: tuple(stages) for run_id, stages in found.items()}


def stage_from_row(r: dict[str, Any]) -> StageRow:
    return (
        StageRow(
            run_id=r["run_id"],
            id=r["id"],
            idx=_int(r.get("idx")),
            tool=r.get("tool") or "",
            state=r.get("state") or "",
            tasks_total=_int(r.get("tasks_total")),
            tasks_done=_int(r.get("tasks_done")),
            tasks_failed=_int(r.get("tasks_failed")),
            results=_int(r.get("results")),
            dropped=_int(r.get("dropped")),
            planned=bool(r.get("planned")),
            started=r.get("started"),
            ended=r.get("ended"),
        )
    )


def read_agents(conn: sqlite3.Connection) -> list[AgentRow]:
    rows = fetch_dicts(conn, "SELECT * FROM agents ORDER BY name")
    return [
        AgentRow(
            name=r["name"],
            kind=r.get("kind") or "",
            address=r.get("address") or "",
            state=r.get("state") or "unknown",
            slots=_int(r.get("slots")),
            busy=_int(r.get("busy")),
            tasks_done=_int(r.get("tasks_done")),
            failures=_int(r.get("failures")),
            last_seen=r.get("last_seen"),
            latency_ms=r.get("latency_ms"),
            error=r.get("error"),
        )
        for r in rows
    ]


def result_from_row(r: dict[str, Any]) -> ResultRow:
    return ResultRow(
        id=_int(r["id"]),
        run_id=r.get("run_id") or "",
        stage_id=r.get("stage_id") or "",
        type=r.get("type") or "",
        key=r.get("key") or "",
        target=r.get("target") or "",
        agent=r.get("agent") or "",
        ts=r.get("ts") or "",
        data=r.get("data") or "{}",
    )


def read_latest_results(conn: sqlite3.Connection, limit: int = FEED_RESULTS) -> list[ResultRow]:
    """The newest results of every run, oldest first (the order a feed appends them)."""
    rows = fetch_dicts(conn, "SELECT * FROM results ORDER BY id DESC LIMIT ?", (limit,))
    return [result_from_row(r) for r in reversed(rows)]


def read_latest_events(conn: sqlite3.Connection, limit: int = FEED_EVENTS) -> list[EventRow]:
    rows = fetch_dicts(conn, "SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
    return [
        EventRow(
            id=_int(r["id"]),
            ts=float(r.get("ts") or 0.0),
            run_id=r.get("run_id"),
            level=r.get("level") or "info",
            kind=r.get("kind") or "",
            message=r.get("message") or "",
        )
        for r in reversed(rows)
    ]


def read_view(conn: sqlite3.Connection, version: int, selected_run: str | None) -> ConsoleView:
    """Everything the main screen draws, in one read transaction so the parts agree."""
    conn.execute("BEGIN")
    try:
        runs = read_runs(conn)
        if selected_run is None or all(r.id != selected_run for r in runs):
            selected_run = runs[0].id if runs else None
        stages_by_run = read_stages_of(conn, [r.id for r in runs])
        stages = stages_by_run.get(selected_run, ()) if selected_run else ()
        return ConsoleView(
            version=version,
            runs=tuple(runs),
            selected_run=selected_run,
            stages=tuple(stages),
            stages_by_run=stages_by_run,
            agents=tuple(read_agents(conn)),
            results=tuple(read_latest_results(conn)),
            events=tuple(read_latest_events(conn)),
            total_results=sum(r.results for r in runs),
        )
    finally:
        conn.execute("COMMIT")
