"""The one change watcher: notice another process's write to the store within ~20 ms.

Every backend has a cheap change token (SQLite: ``PRAGMA data_version``, which moves
whenever another connection commits and costs microseconds to read without a lock;
PostgreSQL: the notifications on its LISTEN connection, sent inside every submission and
intent, plus the newest event id).
Polling it is the notification; a slow unconditional wake (every ``fallback_s``) makes a
missed change impossible to wait on forever. The master awaits :meth:`StoreWatcher.run`
on its event loop; the console's refresh thread calls :meth:`changed` and :meth:`wait`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from console.errors import StoreError
from console.offloop import DaemonExecutor
from console.store.base import Store

POLL_S = 0.02
FALLBACK_S = 1.0


class StoreWatcher:
    """Watches one store connection of its own (a store is used by one thread at a time)."""

    def __init__(self, store: Store, *, poll_s: float = POLL_S, fallback_s: float = FALLBACK_S) -> None:
        self.store = store
        self.poll_s = poll_s
        self.fallback_s = fallback_s
        self.version: int | None = None
        self._last_wake = time.monotonic()
        self._poke = threading.Event()
        self._stopped = threading.Event()
        self._executor: DaemonExecutor | None = None

    def changed(self) -> bool:
        """True when the store changed since the last call, a poke came, or ``fallback_s`` passed.

        Raises StoreError when the store cannot be read (the caller decides how to say so).
        """
        poked = self._poke.is_set()
        self._poke.clear()  # cleared BEFORE reading: a poke that comes during the read is kept
        current = self.store.change_token()
        now = time.monotonic()
        moved = current != self.version
        self.version = current
        if moved or poked or now - self._last_wake >= self.fallback_s:
            self._last_wake = now
            return True
        return False

    def poke(self) -> None:
        """Count the next check as a change (the caller changed what it reads, or wrote itself)."""
        self._poke.set()

    def stop(self) -> None:
        self._stopped.set()
        self._poke.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wait(self, timeout: float) -> None:
        """Block (a thread) until poked, stopped, or ``timeout`` passed."""
        self._poke.wait(timeout)

    async def run(self, event: asyncio.Event) -> None:
        """Set ``event`` on every change until cancelled (the master's wake-up)."""
        with contextlib.suppress(StoreError):
            await self._changed_off_loop()
        while not self.stopped:
            await asyncio.sleep(self.poll_s)
            try:
                if await self._changed_off_loop():
                    event.set()
            except StoreError:
                event.set()  # the store itself is in trouble: let the master's loop meet the error

    async def _changed_off_loop(self) -> bool:
        """:meth:`changed` on the watcher's own thread: a PostgreSQL token is a round trip (and a reconnect
        attempt when the server went away), which must never hold up the master's event loop. Cancelled,
        the read in flight is left to finish on its thread; :meth:`close` queues the close behind it."""
        if self._executor is None:
            self._executor = DaemonExecutor("fleetscan-watch")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.changed)

    def close(self) -> None:
        """Stop and close the watcher's store without waiting for a read in flight (it is interrupted)."""
        self.stop()
        executor, self._executor = self._executor, None
        if executor is None:
            with contextlib.suppress(Exception):
                self.store.close()
            return
        self.store.interrupt()
        executor.submit(self._close_quietly)
        executor.shutdown(wait=False)

    def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):  # a full disk must not keep the master from closing its agents
            self.store.close()
