"""The PostgreSQL store: the shared parts over a :class:`PGDatabase`, plus what differs.

Ingest copies a stage's records into a temporary staging table and moves them with one
``INSERT … SELECT … ON CONFLICT DO NOTHING`` (re-delivered records are ignored as on SQLite).
The change token counts notifications on the ``fleetscan`` channel (sent inside submit, pause,
resume, stop, amend and a schedule's firing) together with the newest event id, read on the store's own connection, which
LISTENs again after every reconnect; the watcher's slow unconditional wake stays the fallback.
"""

from __future__ import annotations

from typing import Any

import psycopg

from console.store import base
from console.store.postgres.database import CHANNEL, PGDatabase
from console.store.rows import ConsoleView
from console.store.sqlite.database import maps_errors
from console.store.sqlite.history import SQLiteHistory
from console.store.sqlite.plans import SQLitePlans
from console.store.sqlite.queue import SQLiteQueue
from console.store.sqlite.results import SQLiteResults
from console.store.sqlite.runs import SQLiteAgents, SQLiteEvents, SQLiteRuns
from console.store.sqlite.schedules import SQLiteSchedules
from console.store.writes import NewRecord

_RECORD_COLUMNS = "run_id, stage_id, type, key, target, agent, task_id, ts, data, master"


@maps_errors
class PGQueue(SQLiteQueue):
    def _insert_records(self, conn: Any, rows: list[NewRecord], master: str | None) -> int:
        """COPY straight into ``results`` under a savepoint (the common case: every record is new);
        when one is already there (a re-delivered batch), COPY into a staging table and move them with
        ``INSERT … SELECT … ON CONFLICT DO NOTHING``, which skips the known ones."""
        raw = conn.raw
        try:
            with raw.transaction(), raw.cursor() as cur:  # a savepoint inside the batch's transaction
                self._copy(cur, "results", rows, master)
            return len(rows)
        except psycopg.errors.UniqueViolation:
            pass
        if getattr(raw, "_fleetscan_staging", None) is not raw.pgconn:
            raw.execute(
                "CREATE TEMPORARY TABLE IF NOT EXISTS results_in (run_id TEXT, stage_id TEXT, type TEXT, key TEXT,"
                " target TEXT, agent TEXT, task_id BIGINT, ts TEXT, data TEXT, master TEXT) ON COMMIT DELETE ROWS"
            )
            raw._fleetscan_staging = raw.pgconn  # once per connection (a reconnect makes a new one)
        with raw.cursor() as cur:
            self._copy(cur, "results_in", rows, master)
            cur.execute(
                f"INSERT INTO results ({_RECORD_COLUMNS}) SELECT {_RECORD_COLUMNS} FROM results_in"
                " ON CONFLICT DO NOTHING"
            )
            new = max(cur.rowcount, 0)
            cur.execute("TRUNCATE results_in")
        return new

    @staticmethod
    def _copy(cur: Any, table: str, rows: list[NewRecord], master: str | None) -> None:
        with cur.copy(f"COPY {table} ({_RECORD_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((*row, master))


@maps_errors
class PostgresStore(base.Store):
    def __init__(self, db: PGDatabase) -> None:
        self.db = db
        self.location = db.location
        self.address = db.url
        self.runs = SQLiteRuns(db)
        self.results = SQLiteResults(db)
        self.events = SQLiteEvents(db)
        self.agents = SQLiteAgents(db)
        self.queue = PGQueue(db)
        self.plans = SQLitePlans(db)
        self.history = SQLiteHistory(db)
        self.schedules = SQLiteSchedules(db)
        self._notified = 0
        self._listening: Any = None

    @classmethod
    def open(cls, url: str) -> PostgresStore:
        """Connect (a server down or a refused login: StoreUnreachable, exit 2) and migrate."""
        return cls(PGDatabase.open_url(url))

    def close(self) -> None:
        self.db.close()

    def change_token(self) -> int:
        """Never waits out a reconnect (the watcher calls it often): one attempt, else StoreError."""
        try:
            return self._token()
        except psycopg.Error as err:
            if self.db.raw.closed or self.db.raw.broken:
                self.db.reconnect(deadline_s=0.0)
            raise self.db.map_error(err) from err

    def _token(self) -> int:
        raw = self.db.raw
        if self._listening is not raw.pgconn:
            raw.execute(f"LISTEN {CHANNEL}")
            self._listening = raw.pgconn
            self._notified += 1  # (re)connected: whatever was sent meanwhile counts as a change
        newest = raw.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
        self._notified += sum(1 for _ in raw.notifies(timeout=0))
        return (self._notified << 40) + int(newest[0] if newest else 0)

    def console_view(self, version: int, selected_run: str | None) -> ConsoleView:
        with self.db.raw.transaction():  # one snapshot for everything the screen draws
            self.db.raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return self.read_console_view(version, selected_run)
