"""The SQLite store: one file that every process on this machine opens (CLI, console, masters).

WAL lets readers and one writer work side by side; intents (submit, pause, resume, stop)
are short writes that the owning master notices within a second through the change token
(``PRAGMA data_version``). The parts (runs, results, events, agents, queue, plans) share
this store's one connection, so a store object belongs to one thread at a time.
"""

from __future__ import annotations

from pathlib import Path

from console.store import base
from console.store.rows import ConsoleView
from console.store.sqlite.database import Database, maps_errors
from console.store.sqlite.history import SQLiteHistory
from console.store.sqlite.plans import SQLitePlans
from console.store.sqlite.queue import SQLiteQueue
from console.store.sqlite.results import SQLiteResults
from console.store.sqlite.runs import SQLiteAgents, SQLiteEvents, SQLiteRuns
from console.store.sqlite.schedules import SQLiteSchedules


@maps_errors
class SQLiteStore(base.Store):
    def __init__(self, db: Database) -> None:
        self.db = db
        self.location = self.address = str(db.path)
        self.runs = SQLiteRuns(db)
        self.results = SQLiteResults(db)
        self.events = SQLiteEvents(db)
        self.agents = SQLiteAgents(db)
        self.queue = SQLiteQueue(db)
        self.plans = SQLitePlans(db)
        self.history = SQLiteHistory(db)
        self.schedules = SQLiteSchedules(db)

    @classmethod
    def open(cls, path: Path) -> SQLiteStore:
        """Open (creating mode 0600, migrating) the database file at ``path``."""
        return cls(Database.open(path))

    @property
    def path(self) -> Path:
        return self.db.path

    def close(self) -> None:
        self.db.close()

    def change_token(self) -> int:
        return int(self.db.conn.execute("PRAGMA data_version").fetchone()[0])

    def console_view(self, version: int, selected_run: str | None) -> ConsoleView:
        conn = self.db.conn
        conn.execute("BEGIN")
        try:
            return self.read_console_view(version, selected_run)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
