"""The PostgreSQL connection behind the shared parts: dialect hooks, error mapping, reconnecting.

A :class:`PGDatabase` is the SQLite ``Database`` with the hooks the engines answer differently:
claims lock with ``FOR UPDATE SKIP LOCKED``, a read-to-change takes ``FOR UPDATE``, planning holds
the stage row, intents ``NOTIFY`` inside their transaction. A connection lost mid-run (a server
restart, a network cut) is reconnected with backoff for up to ``RECONNECT_FOR_S`` and the failed
transaction run again, so the master keeps its agents meanwhile; a deadlock or serialization
failure between masters is retried at once. Every message names the URL without its password.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors

from console.errors import StoreError
from console.store import redact
from console.store.postgres.connection import Connection
from console.store.sqlite.database import Database

CONNECT_TIMEOUT_S = 5
#: a lost connection is retried this long (a server restart) before the call fails
RECONNECT_FOR_S = 60.0
#: a call whose connection broke again right after reconnecting gives up after this many reconnects
RECONNECT_ATTEMPTS = 5
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0
#: the LISTEN/NOTIFY channel of intents and submissions
CHANNEL = "fleetscan"
_RETRY_NOW = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


class StoreUnreachable(StoreError):
    """The PostgreSQL server is down or refused the login: bad input at start (exit 2)."""

    exit_code = 2


def one_line(err: BaseException, url: str = "") -> str:
    """The driver's message on one line, never holding the URL's password (libpq may echo a URI)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    password = urlsplit(url).password if url else None
    return text.replace(url, redact(url)).replace(password, "***") if password else text


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="fleetscan")


class PGDatabase(Database):
    errors = (psycopg.Error,)
    skip_locked = " FOR UPDATE OF t SKIP LOCKED"
    row_lock = " FOR UPDATE"
    collate_binary = ' COLLATE "C"'

    def __init__(self, url: str, raw: psycopg.Connection[Any]) -> None:
        self.url = url
        self.path = redact(url)  # type: ignore[assignment]  # messages name it like the SQLite file
        self.conn = Connection(raw)  # type: ignore[assignment]
        self.host = socket.gethostname()
        self.reconnects = 0
        #: set by :meth:`interrupt` (another thread closing): a reconnect in progress gives up at once
        self.closing = threading.Event()

    @classmethod
    def open_url(cls, url: str) -> PGDatabase:
        from console.store.postgres.schema import migrate

        try:
            raw = connect(url)
        except psycopg.Error as err:
            raise StoreUnreachable(f"cannot open the store {redact(url)}: {one_line(err, url)}") from err
        try:
            migrate(raw, redact(url))
        except psycopg.Error as err:
            raw.close()
            raise StoreError(f"{redact(url)}: {one_line(err, url)}") from err
        except BaseException:
            raw.close()
            raise
        return cls(url, raw)

    @property
    def location(self) -> str:
        return redact(self.url)

    @property
    def raw(self) -> psycopg.Connection[Any]:
        return self.conn.raw  # type: ignore[attr-defined, no-any-return]

    def close(self) -> None:
        self.closing.set()
        self.raw.close()

    def interrupt(self) -> None:
        self.closing.set()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.raw.transaction():
            yield self.conn

    def map_error(self, err: BaseException) -> StoreError:
        return StoreError(f"{self.location}: {one_line(err, self.url)}")

    def retry_after(self, err: BaseException, attempt: int) -> bool:
        if isinstance(err, _RETRY_NOW) and attempt < 20:
            return True
        if attempt >= RECONNECT_ATTEMPTS or self.closing.is_set() or (not self.raw.closed and not self.raw.broken):
            return False
        return self.reconnect()

    def reconnect(self, deadline_s: float = RECONNECT_FOR_S) -> bool:
        """A new connection, with backoff, within ``deadline_s``; False when the server stayed away."""
        wait, give_up = BACKOFF_FIRST_S, time.monotonic() + deadline_s
        while True:
            try:
                raw = connect(self.url)
            except psycopg.Error:
                if time.monotonic() + wait > give_up or self.closing.wait(wait):
                    return False
                wait = min(wait * 2, BACKOFF_MAX_S)
                continue
            try:
                self.raw.close()
            except psycopg.Error:
                pass
            self.conn.raw = raw  # type: ignore[attr-defined]
            self.reconnects += 1
            return True

    def notify(self, conn: Any, what: str) -> None:
        conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, what))

    #: masters on different machines may share a host name (containers): judge by heartbeat only
    pid_fast_path = False

    def clock(self, conn: Any) -> float:
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        return float(row[0])

    def lock_stage(self, conn: Any, run_id: str, stage_id: str) -> None:
        conn.execute("SELECT 1 FROM stages WHERE run_id = ? AND id = ? FOR UPDATE", (run_id, stage_id))
