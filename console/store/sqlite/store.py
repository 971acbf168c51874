"""The SQLite store: the single source of truth for runs, stages, tasks, results, agents and events.

Every process (CLI, TUI, masters) opens the same file; intents (submit, pause,
resume, stop) are plain short writes, and the owning master notices them within
a second (``console/store/sqlite/watcher.py``). The scheduler-only operations (claims, leases,
ingest) live in ``console/store/sqlite/leases.py`` as a mixin so this module stays the API
the UI and CLI read. Schema: ``console/store/sqlite/schema.py`` (mirrored in ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs
import sqlite_utils

from console.errors import RunNotFound, StoreError
from console.status import (
    MASTER_DEAD_AFTER_S,
    RUN_TERMINAL,
    STOP_REQUESTED,
    RunState,
    TaskState,
)
from console.store.sqlite.leases import LeaseOps
from console.store.sqlite.schema import migrate

BUSY_TIMEOUT_MS = 5000
_RUN_COLUMNS = (
    "id, workflow, definition, workflows_file, targets, scope, agents, priority, state, created, "
    "started, ended, error, owner, owner_seen"
)


def default_db_path() -> Path:
    """``$FLEETSCAN_DB``, else ``fleetscan.db`` in the platformdirs user data dir."""
    env = os.environ.get("FLEETSCAN_DB")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("fleetscan")) / "fleetscan.db"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _row_dict(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {col[0]: value for col, value in zip(cursor.description, row, strict=True)}


class Store(LeaseOps):
    """One connection to the database. Not shared across threads: open one per thread."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.db = sqlite_utils.Database(conn)
        self.host = socket.gethostname()

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None) -> Store:
        """Open (creating mode 0600, migrating) the database at ``path`` or the default one."""
        db_path = Path(path).expanduser() if path is not None else default_db_path()
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            if not db_path.exists():
                fd = os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(fd)
            conn = sqlite3.connect(
                db_path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn)
        except sqlite3.Error as err:
            raise StoreError(f"{db_path}: {err}") from err
        except OSError as err:
            raise StoreError(f"{db_path}: {err.strerror or err}") from err
        return cls(conn, db_path)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken up front, so no upgrade deadlock."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise StoreError(f"{self.path}: {err}") from err
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        return [_row_dict(cursor, row) for row in cursor.fetchall()]

    def data_version(self) -> int:
        """Changes when ANOTHER connection commits: cheap change detection for watchers."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    # -- runs --------------------------------------------------------------------

    def create_run(
        self,
        workflow_name: str,
        definition: dict[str, Any],
        targets: str | None,
        scope: str | None = None,
        agents: str | None = None,
        priority: int = 0,
        workflows_file: str | None = None,
    ) -> str:
        """Insert a pending run and its stages in one transaction; return the run id."""
        stages = definition.get("stages") or []
        now = time.time()
        run_id = secrets.token_hex(4)
        with self.transaction() as conn:
            while conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                run_id = secrets.token_hex(4)
            conn.execute(
                "INSERT INTO runs (id, workflow, definition, workflows_file, targets, scope, agents, priority,"
                " state, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, workflow_name, json.dumps(definition), workflows_file, targets, scope, agents,
                    int(priority), RunState.PENDING, now,
                ),
            )
            conn.executemany(
                "INSERT INTO stages (run_id, id, idx, tool) VALUES (?, ?, ?, ?)",
                [(run_id, str(s["id"]), i, str(s.get("tool", ""))) for i, s in enumerate(stages)],
            )
            self._event(conn, run_id, "info", "submit", f"run {run_id} of {workflow_name} submitted")
        return run_id

    def get_run(self, run_id: str) -> dict[str, Any]:
        rows = self.query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise RunNotFound(f"no run {run_id!r}", field="run")
        return rows[0]

    def list_runs(self, limit: int = 100, states: list[str] | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        params: list[Any] = []
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            params.extend(states)
        sql += " ORDER BY created DESC, rowid DESC LIMIT ?"
        params.append(limit)
        return self.query(sql, params)

    def list_stages(self, run_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM stages WHERE run_id = ? ORDER BY idx", (run_id,))

    def run_summary(self, run_id: str) -> dict[str, Any]:
        """SPEC's ``--json`` shape (plus workflow, created, priority, and per-stage dropped)."""
        run = self.get_run(run_id)
        stages = [
            {
                "id": s["id"], "state": s["state"], "tasks_total": s["tasks_total"],
                "tasks_done": s["tasks_done"], "tasks_failed": s["tasks_failed"], "results": s["results"],
                "dropped": s["dropped"],
            }
            for s in self.list_stages(run_id)
        ]
        started = run["started"]
        end = run["ended"] if run["ended"] is not None else time.time()
        duration = round(max(0.0, end - started), 3) if started is not None else 0.0
        return {
            "run": run["id"], "state": run["state"], "stages": stages,
            "results": sum(s["results"] for s in stages), "duration_s": duration,
            "workflow": run["workflow"], "created": run["created"], "priority": run["priority"],
            "error": run["error"],
        }

    # -- intents (any process) -----------------------------------------------------

    def request_pause(self, run_id: str) -> str:
        """Pending/running -> paused: the owner stops dispatching, running tasks finish."""
        with self.transaction() as conn:
            state = self._state_for_update(conn, run_id)
            if state in (RunState.PENDING, RunState.RUNNING):
                conn.execute("UPDATE runs SET state = ? WHERE id = ?", (RunState.PAUSED, run_id))
                self._event(conn, run_id, "info", "pause", "pause requested")
                return RunState.PAUSED
            return state

    def request_resume(self, run_id: str) -> str:
        """Paused -> pending; the owner (or any master, if the owner is gone) continues it."""
        with self.transaction() as conn:
            state = self._state_for_update(conn, run_id)
            if state == RunState.PAUSED:
                conn.execute("UPDATE runs SET state = ? WHERE id = ?", (RunState.PENDING, run_id))
                self._event(conn, run_id, "info", "resume", "resume requested")
                return RunState.PENDING
            return state

    def request_stop(self, run_id: str) -> str:
        """Stop: a live owner cancels the running tasks and ends the run; with no live owner it ends now."""
        with self.transaction() as conn:
            state = self._state_for_update(conn, run_id)
            if state in RUN_TERMINAL:
                return state
            owner = conn.execute("SELECT owner FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
            if owner is not None and owner not in self.dead_masters(conn, [owner]):
                conn.execute("UPDATE runs SET error = ? WHERE id = ?", (STOP_REQUESTED, run_id))
                self._event(conn, run_id, "info", "stop", "stop requested")
                return state
            self.finish_stopped(conn, run_id)
            return RunState.STOPPED

    def finish_stopped(self, conn: sqlite3.Connection, run_id: str) -> None:
        """End a run ``stopped``: every unfinished task cancelled (inside the caller's transaction)."""
        now = time.time()
        conn.execute(
            "UPDATE tasks SET state = ?, ended = ?, lease_owner = NULL, lease_expires = NULL,"
            " error = coalesce(error, 'stopped') WHERE run_id = ? AND state IN (?, ?)",
            (TaskState.CANCELLED, now, run_id, TaskState.QUEUED, TaskState.LEASED),
        )
        conn.execute(
            "UPDATE runs SET state = ?, ended = ?, owner = NULL, error = NULL WHERE id = ?",
            (RunState.STOPPED, now, run_id),
        )
        self._event(conn, run_id, "warning", "stop", "run stopped")

    def _state_for_update(self, conn: sqlite3.Connection, run_id: str) -> str:
        row = conn.execute("SELECT state FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r}", field="run")
        return str(row[0])

    # -- results -------------------------------------------------------------------

    def iter_result_pages(
        self, run_id: str, stage: str | None = None, type: str | None = None, batch: int = 5000
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Raw rows ``(id, run, stage, type, key, target, agent, task_id, ts, data_json)`` a page at a
        time, in id order, by keyset pagination on the (run_id, id) index: constant memory, and
        export can splice ``data`` without decoding it."""
        where, params = self._results_filter(run_id, stage, type)
        last = 0
        sql = (
            "SELECT id, run_id, stage_id, type, key, target, agent, task_id, ts, data FROM results"
            f" WHERE {where} AND id > ? ORDER BY id LIMIT ?"
        )
        while True:
            rows = self.conn.execute(sql, (*params, last, batch)).fetchall()
            if rows:
                yield rows
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def iter_results(
        self, run_id: str, stage: str | None = None, type: str | None = None, batch: int = 5000
    ) -> Iterator[dict[str, Any]]:
        """Every record of a run in id order, streamed (constant memory)."""
        for rows in self.iter_result_pages(run_id, stage, type, batch):
            for row in rows:
                yield {
                    "run": row[1], "stage": row[2], "type": row[3], "key": row[4], "target": row[5],
                    "agent": row[6], "task": str(row[7]) if row[7] is not None else None, "ts": row[8],
                    "data": json.loads(row[9]),
                }

    def count_results(self, run_id: str, stage: str | None = None, type: str | None = None) -> int:
        where, params = self._results_filter(run_id, stage, type)
        return int(self.conn.execute(f"SELECT count(*) FROM results WHERE {where}", params).fetchone()[0])

    @staticmethod
    def _results_filter(run_id: str, stage: str | None, type: str | None) -> tuple[str, tuple[Any, ...]]:
        clauses, params = ["run_id = ?"], [run_id]
        if stage is not None:
            clauses.append("stage_id = ?")
            params.append(stage)
        if type is not None:
            clauses.append("type = ?")
            params.append(type)
        return " AND ".join(clauses), tuple(params)

    # -- agents, events, masters -------------------------------------------------------

    def list_agents(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT * FROM agents ORDER BY name")
        for row in rows:
            row["programs"] = json.loads(row["programs"]) if row.get("programs") else {}
        return rows

    def upsert_agents(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.db["agents"].upsert_all(rows, pk="name")  # type: ignore[union-attr]

    def recent_events(self, run_id: str | None = None, after_id: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        """The newest ``limit`` events after ``after_id``, oldest first (tail with the last id seen)."""
        sql = "SELECT id, ts, run_id, level, kind, message FROM events WHERE id > ?"
        params: list[Any] = [after_id]
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return list(reversed(self.query(sql, params)))

    def add_event(self, kind: str, message: str, *, run_id: str | None = None, level: str = "info") -> None:
        self._event(self.conn, run_id, level, kind, message)

    @staticmethod
    def _event(conn: sqlite3.Connection, run_id: str | None, level: str, kind: str, message: str) -> None:
        conn.execute(
            "INSERT INTO events (ts, run_id, level, kind, message) VALUES (?, ?, ?, ?, ?)",
            (time.time(), run_id, level, kind, message[:2000]),
        )

    def register_master(self, master_id: str) -> None:
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO masters (id, pid, host, started, seen) VALUES (?, ?, ?, ?, ?)",
                (master_id, os.getpid(), self.host, now, now),
            )
            # masters killed long ago (kill -9 leaves their row): forget them once they own nothing
            conn.execute(
                "DELETE FROM masters WHERE seen < ? AND id NOT IN (SELECT owner FROM runs WHERE owner IS NOT NULL)",
                (now - 86400,),
            )

    def heartbeat_master(self, master_id: str) -> None:
        self.conn.execute("UPDATE masters SET seen = ? WHERE id = ?", (time.time(), master_id))

    def unregister_master(self, master_id: str) -> None:
        self.conn.execute("DELETE FROM masters WHERE id = ?", (master_id,))

    def dead_masters(self, conn: sqlite3.Connection, ids: list[str]) -> set[str]:
        """Which of ``ids`` are gone: unknown, not seen for a while, or a dead pid on this host."""
        now = time.time()
        dead = set(ids)
        for master_id, pid, host, seen in conn.execute(
            f"SELECT id, pid, host, seen FROM masters WHERE id IN ({','.join('?' * len(ids))})", ids
        ).fetchall():
            if seen is not None and now - seen > MASTER_DEAD_AFTER_S:
                continue
            if host == self.host and pid is not None and not pid_alive(int(pid)):
                continue
            dead.discard(master_id)
        return dead
