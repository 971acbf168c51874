"""The console's one refresh loop: read a new picture of the store whenever it changed.

It runs on a thread worker with a store of its own (a store is used by one thread at a
time), so the event loop never waits on the database. Change detection is the store's
one watcher (:class:`console.store.watch.StoreWatcher`): another connection's commit (the
embedded master, a CLI ``submit``/``pause`` in another process) shows within a poll
interval. A view is posted only when something changed (or the UI asked, e.g. a new run
was selected), and views merge in the message queue (``can_replace``): a slow screen
draws the newest picture, never a backlog.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from console.errors import StoreError
from console.store import open_store
from console.store.rows import ConsoleView
from console.store.watch import StoreWatcher

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


class ViewRefresher:
    """State shared between the UI and the refresh thread: what is selected, and a poke.

    The UI only sets ``selected_run`` and calls ``poke()``; the thread does all reading.
    """

    def __init__(self, db_path: str | Path, interval: float = POLL_INTERVAL) -> None:
        self.db_path = db_path
        self.interval = interval
        self.selected_run: str | None = None
        self._watcher: StoreWatcher | None = None
        self._poked = True
        self._stopped = False

    def poke(self) -> None:
        """Read again now, even if the store did not change (selection changed, a write of ours)."""
        self._poked = True
        if self._watcher is not None:
            self._watcher.poke()

    def stop(self) -> None:
        self._stopped = True
        if self._watcher is not None:
            self._watcher.stop()

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
        store = open_store(self.db_path)
        # the fallback wake is for waiters that could miss a change; this loop re-reads the token
        # every interval, so it reads views only on a real change, a poke or a new selection
        watcher = self._watcher = StoreWatcher(store, fallback_s=float("inf"))
        if self._poked:
            watcher.poke()
        try:
            last_selected: str | None = None
            failing = False
            while not (cancelled() or self._stopped or watcher.stopped):
                try:
                    selected = self.selected_run
                    if watcher.changed() or failing or selected != last_selected:
                        view = store.console_view(watcher.version or 0, selected)
                        last_selected = selected
                        post(view)
                    if failing:
                        failing = False
                        trouble(None)
                except StoreError as err:
                    if not failing:
                        failing = True
                        trouble(f"cannot read {self.db_path}: {err}")
                    watcher.wait(1.0)
                    continue
                watcher.wait(self.interval)
        finally:
            store.close()
