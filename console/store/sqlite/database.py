"""One SQLite connection shared by the store's parts, and the boundary where sqlite3 errors end.

Opening: the file is created mode 0600, WAL, ``busy_timeout`` 5 s, ``synchronous=NORMAL``,
then migrated. Every public method of every SQLite part runs under :func:`maps_errors`, so
``sqlite3.Error`` becomes :class:`~console.errors.StoreError` (or ``StoreBusy`` /
``StoreCorrupt``) naming the file, the way httpcore maps its transport's exceptions.
"""

from __future__ import annotations

import functools
import inspect
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from console.errors import StoreBusy, StoreCorrupt, StoreError
from console.sanitize import safe_line
from console.status import MASTER_DEAD_AFTER_S

BUSY_TIMEOUT_MS = 5000
#: an event carries an error text kept whole (up to 4,096 characters) plus what it is about
MAX_EVENT_TEXT = 4096 + 512

C = TypeVar("C", bound=type)


def store_error(path: object, err: BaseException) -> StoreError:
    """The StoreError for a sqlite3 (or OS) error on ``path``."""
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and not isinstance(err, sqlite3.Error):
        text = err.strerror or text
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return StoreBusy(f"{path}: {text}")
    if "not a database" in lowered or "malformed" in lowered:
        return StoreCorrupt(f"{path}: {text}")
    return StoreError(f"{path}: {text}")


def maps_errors(cls: C) -> C:
    """Class decorator: every public method (generators included) raises StoreError, never a driver error.

    The part's ``db`` says which errors are its driver's and how they map (SQLite or PostgreSQL);
    a method whose error the backend can recover from (a PostgreSQL connection lost, a deadlock)
    is called again after ``db.retry_after`` reconnected: every method is one transaction, so a
    retried call is a retried transaction.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(self: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    yield from fn(self, *args, **kwargs)
                except self.db.errors as err:
                    raise self.db.map_error(err) from err

            return gen

        @functools.wraps(fn)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            attempt = 0
            while True:
                try:
                    return fn(self, *args, **kwargs)
                except self.db.errors as err:
                    if not self.db.retry_after(err, attempt):
                        raise self.db.map_error(err) from err
                    attempt += 1

        return call

    for name, value in list(vars(cls).items()):
        if not name.startswith("__") and inspect.isfunction(value) and not getattr(value, "__isabstractmethod__", 0):
            setattr(cls, name, wrap(value))
    return cls


class Database:
    """The connection, its transaction helper and the event log writer that every part shares.

    This is also the dialect seam: the part classes (runs, results, queue, plans) are written against
    ``conn.execute``/``executemany`` with ``?`` placeholders and these few hooks, so the PostgreSQL
    backend (console/store/postgres) runs the same SQL; it overrides the hooks where the engines differ.
    """

    #: the driver's errors that maps_errors turns into StoreError
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    #: appended to the claim's inner SELECT (PostgreSQL: `` FOR UPDATE OF t SKIP LOCKED``; SQLite's
    #: ``BEGIN IMMEDIATE`` already makes a claim exclusive)
    skip_locked = ""
    #: appended to a SELECT that reads a row to change it (PostgreSQL: `` FOR UPDATE``)
    row_lock = ""
    #: appended to a text column to order it by code point, as Python's str does (PostgreSQL: `` COLLATE "C"``)
    collate_binary = ""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.host = socket.gethostname()

    @property
    def location(self) -> str:
        return str(self.path)

    def map_error(self, err: BaseException) -> StoreError:
        return store_error(self.path, err)

    def retry_after(self, err: BaseException, attempt: int) -> bool:
        """True once the store recovered from ``err`` and the failed call may run again (SQLite: never;
        its busy timeout already waited)."""
        return False

    def notify(self, conn: Any, what: str) -> None:
        """Inside an intent's transaction: wake the other masters (SQLite: they watch ``data_version``)."""

    def clock(self, conn: Any) -> float:
        """The wall clock heartbeats are written and judged by (SQLite: this machine's; PostgreSQL: the
        server's, so masters on machines whose clocks disagree still judge each other right)."""
        return time.time()

    #: a master whose pid is dead on this host is dead at once (SQLite: masters share one machine)
    pid_fast_path = True

    def lock_stage(self, conn: Any, run_id: str, stage_id: str) -> None:
        """Inside a planning transaction: hold the stage row so two masters never plan it at once
        (SQLite: ``BEGIN IMMEDIATE`` already serialises every writer)."""

    @classmethod
    def open(cls, path: Path) -> Database:
        from console.store.sqlite.schema import migrate

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
            try:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                migrate(conn, path)
            except BaseException:
                conn.close()
                raise
        except (sqlite3.Error, OSError) as err:
            raise store_error(path, err) from err
        return cls(conn, path)

    def close(self) -> None:
        self.conn.close()

    def interrupt(self) -> None:
        """From another thread: abort the statement in flight (its transaction rolls back), so a closing
        caller never waits on it."""
        self.conn.interrupt()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken up front, so no upgrade deadlock."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts, so a column added later never shifts anything."""
        cursor = self.conn.execute(sql, tuple(params))
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    @staticmethod
    def event(conn: Any, run_id: str | None, level: str, kind: str, message: str) -> None:
        conn.execute(
            "INSERT INTO events (ts, run_id, level, kind, message) VALUES (?, ?, ?, ?, ?)",
            (time.time(), run_id, level, kind, safe_line(message, MAX_EVENT_TEXT)),
        )

    def dead_masters(self, conn: Any, ids: list[str]) -> set[str]:
        """Which of ``ids`` are gone: unknown, silent for MASTER_DEAD_AFTER_S, or (the fast path for
        masters on one machine) a dead pid on this host."""
        now = self.clock(conn)
        dead = set(ids)
        for master_id, pid, host, seen in conn.execute(
            f"SELECT id, pid, host, seen FROM masters WHERE id IN ({marks(ids)})", ids
        ).fetchall():
            if seen is not None and now - seen > MASTER_DEAD_AFTER_S:
                continue
            if self.pid_fast_path and host == self.host and pid is not None and not pid_alive(int(pid)):
                continue
            dead.discard(master_id)
        return dead


def marks(values: list[Any] | tuple[Any, ...] | frozenset[Any]) -> str:
    """``?, ?, ?``: one placeholder per value, for ``IN (...)``."""
    return ",".join("?" * len(values))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
