"""The SQLite schema and its ordered migrations (``PRAGMA user_version``).

Version 1 is plain DDL (partial indexes and all). Later versions change tables through
sqlite-utils, which is what it is for: SQLite's own ALTER TABLE can add a column but not
change or drop one, and sqlite-utils' ``add_column``/``transform`` do the table rebuild
dance (new table, copy, swap, indexes back) correctly. Every migration runs in one
``BEGIN IMMEDIATE`` transaction, so two processes opening an old file migrate it once.
docs/ARCHITECTURE.md "Store" mirrors this page and must stay true.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from console.errors import StoreCorrupt

if TYPE_CHECKING:
    import sqlite_utils

_V1 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, workflow TEXT NOT NULL, definition TEXT NOT NULL,
    workflows_file TEXT, targets TEXT, scope TEXT, agents TEXT, priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL, created REAL NOT NULL, started REAL, ended REAL, error TEXT,
    owner TEXT, owner_seen REAL
);
CREATE INDEX runs_state ON runs(state);
CREATE INDEX runs_created ON runs(created);
CREATE TABLE stages (
    run_id TEXT NOT NULL, id TEXT NOT NULL, idx INTEGER NOT NULL, tool TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', tasks_total INTEGER NOT NULL DEFAULT 0,
    tasks_done INTEGER NOT NULL DEFAULT 0, tasks_failed INTEGER NOT NULL DEFAULT 0,
    results INTEGER NOT NULL DEFAULT 0, dropped INTEGER NOT NULL DEFAULT 0,
    planned INTEGER NOT NULL DEFAULT 0, cursor INTEGER NOT NULL DEFAULT 0,
    started REAL, ended REAL, PRIMARY KEY (run_id, id)
);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, stage_id TEXT NOT NULL, seq INTEGER NOT NULL,
    targets TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 1, priority INTEGER NOT NULL DEFAULT 0, pinned TEXT,
    agent TEXT, lease_owner TEXT, lease_expires REAL, not_before REAL,
    tried TEXT NOT NULL DEFAULT '[]', error TEXT, created REAL NOT NULL, started REAL, ended REAL
);
CREATE INDEX tasks_claim ON tasks(state, priority DESC, id);
CREATE INDEX tasks_stage ON tasks(run_id, stage_id, state);
CREATE INDEX tasks_lease ON tasks(lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE stage_targets (
    run_id TEXT NOT NULL, stage_id TEXT NOT NULL, value TEXT NOT NULL, task_id INTEGER,
    UNIQUE (run_id, stage_id, value)
);
CREATE INDEX stage_targets_unassigned ON stage_targets(run_id, stage_id) WHERE task_id IS NULL;
CREATE TABLE results (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, stage_id TEXT NOT NULL, type TEXT NOT NULL,
    key TEXT NOT NULL, target TEXT, agent TEXT, task_id INTEGER, ts TEXT, data TEXT NOT NULL,
    UNIQUE (run_id, stage_id, type, key)
);
CREATE INDEX results_stage ON results(run_id, stage_id, id);
CREATE INDEX results_run ON results(run_id, id);
CREATE TABLE agents (
    name TEXT PRIMARY KEY, kind TEXT, address TEXT, state TEXT, slots INTEGER, busy INTEGER,
    tasks_done INTEGER, failures INTEGER, last_seen REAL, latency_ms REAL, python TEXT,
    programs TEXT, hash TEXT, error TEXT, master TEXT
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, run_id TEXT, level TEXT NOT NULL,
    kind TEXT NOT NULL, message TEXT NOT NULL
);
CREATE INDEX events_run ON events(run_id, id);
CREATE TABLE masters (
    id TEXT PRIMARY KEY, pid INTEGER, host TEXT, started REAL, seen REAL
);
"""



def _v1(db: sqlite_utils.Database) -> None:
    for statement in _V1.split(";"):
        if statement.strip():
            db.execute(statement)


def _v2(db: sqlite_utils.Database) -> None:
    """The stop intent gets a column of its own (it used to ride in ``runs.error``)."""
    runs = db.table("runs")
    runs.add_column("stop_requested", int, not_null_default=0)
    db.execute("UPDATE runs SET stop_requested = 1, error = NULL WHERE error = 'stop requested'")


def _v3(db: sqlite_utils.Database) -> None:
    """A run's full request (exclusions, rate budgets, notification URL, who submitted it, the schedule
    that made it) and, per record, the master that dispatched its task."""
    runs = db.table("runs")
    for name, kind in (
        ("exclude", str), ("max_rate", int), ("host_rate", int), ("notify", str), ("submitted_by", str),
        ("schedule_id", str),
    ):
        runs.add_column(name, kind)
    db.table("results").add_column("master", str)


def _paused_time(db: sqlite_utils.Database) -> None:
    """A run's time spent paused (``paused_s``, and ``paused_at`` while it is): its duration stops
    counting while it is paused."""
    runs = db.table("runs")
    runs.add_column("paused_s", float, not_null_default=0.0)
    runs.add_column("paused_at", float)


_SCHEDULES = """
CREATE TABLE schedules (
    id TEXT PRIMARY KEY, workflow TEXT NOT NULL, definition TEXT NOT NULL, workflows_file TEXT,
    targets TEXT, scope TEXT, agents TEXT, priority INTEGER NOT NULL DEFAULT 0, exclude TEXT,
    max_rate INTEGER, host_rate INTEGER, notify TEXT, submitted_by TEXT,
    every_s INTEGER NOT NULL, run_window TEXT, paused INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    next_due REAL NOT NULL, last_run TEXT, last_fired REAL
);
CREATE INDEX schedules_due ON schedules(paused, next_due)
"""


def _history(db: sqlite_utils.Database) -> None:
    """Runs over time: schedules (``next_due`` is the compare-and-set column that makes a due occurrence
    fire once across masters), and each run's end-of-run notification bookkeeping (attempts made, when the
    next is due, the outcome), so any master can deliver it exactly once and retry it."""
    for statement in _SCHEDULES.split(";"):
        if statement.strip():
            db.execute(statement)
    runs = db.table("runs")
    runs.add_column("notify_attempts", int, not_null_default=0)
    runs.add_column("notify_next", float)
    runs.add_column("notify_done", str)
    db.execute("CREATE INDEX runs_schedule ON runs(schedule_id, created)")
    db.execute("CREATE INDEX runs_workflow ON runs(workflow, created)")


#: ordered migrations: index i brings the schema from user_version i to i + 1
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _paused_time, _history]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, path: Path | str = "the store") -> None:
    """Bring the database up to SCHEMA_VERSION, one migration per transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreCorrupt(
            f"{path}: schema version {version} is newer than this fleetscan knows ({SCHEMA_VERSION}); upgrade fleetscan"
        )
    if version == SCHEMA_VERSION:
        return
    import sqlite_utils  # only when migrating (its import costs more than opening the store)

    # no plugins (they would run third-party code on our connection), no pragmas
    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    while version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current == version:  # another process may have migrated meanwhile
                MIGRATIONS[version](db)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = conn.execute("PRAGMA user_version").fetchone()[0]
