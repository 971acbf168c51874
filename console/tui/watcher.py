"""The one refresh loop: watch the store's ``PRAGMA data_version`` and post a view on change.

It runs on a thread worker with its own SQLite connection, so the event loop never
waits on SQLite. ``data_version`` changes whenever any *other* connection commits
(the embedded master, a CLI ``submit``/``pause`` in another process), so polling it a
few times a second costs nothing and a change shows within a second. A view is
posted only when something changed (or the UI asked, e.g. a new run was selected),
and views merge in the message queue (``can_replace``): a slow screen draws the
newest picture, never a backlog.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from console.tui.viewdata import ConsoleView, read_view

POLL_INTERVAL = 0.25


@dataclass
class StoreTrouble(Message):
    """Reading the store failed (``message``), or works again (``None``)."""

    message: str | None


@dataclass
class StoreChanged(Message):
    """A fresh picture of the store for the main screen."""

    view: ConsoleView

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StoreChanged)


def open_reader(db_path: str | Path) -> sqlite3.Connection:
    """A connection of the refresh thread's own (the store is one connection per thread)."""
    from console.store.sqlite.store import Store

    return Store.open(db_path).conn


class StoreWatcher:
    """State shared between the UI and the refresh thread: what is selected, and a poke.

    The UI only sets ``selected_run`` and calls ``poke()``; the thread does all reading.
    """

    def __init__(self, db_path: str | Path, interval: float = POLL_INTERVAL) -> None:
        self.db_path = db_path
        self.interval = interval
        self.selected_run: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()

    def poke(self) -> None:
        """Read again now, even if the data version did not move (selection changed, a write of ours)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def loop(
        self,
        post: Callable[[ConsoleView], None],
        cancelled: Callable[[], bool],
        trouble: Callable[[str | None], None] = lambda _message: None,
    ) -> None:
        """Poll until cancelled; call ``post`` with a new view whenever the store changed.

        A read that fails (the database locked past its timeout, a disk error) is reported
        through ``trouble`` once and retried every second; ``trouble(None)`` says it is over.
        The console keeps showing the last good picture meanwhile.
        """
        conn = open_reader(self.db_path)
        try:
            last_version: int | None = None
            last_selected: str | None = None
            failing = False
            forced = True
            while not (cancelled() or self._stop.is_set()):
                # clear the poke BEFORE reading: a poke that comes during the read is kept
                # for the next round, never lost
                forced = forced or self._wake.is_set()
                self._wake.clear()
                try:
                    version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                    selected = self.selected_run
                    if forced or failing or version != last_version or selected != last_selected:
                        view = read_view(conn, version, selected)
                        last_version, last_selected = version, selected
                        post(view)
                    if failing:
                        failing = False
                        trouble(None)
                except sqlite3.Error as err:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if not failing:
                        failing = True
                        trouble(f"cannot read {self.db_path}: {err}")
                    self._stop.wait(1.0)
                    continue
                forced = False
                self._wake.wait(self.interval)
        finally:
            conn.close()
