"""Backpressure: the master stops reading boxes whose records wait for the store beyond a bound.

Why: a box can send records faster than the store takes them (a flood of 4 KB records took the
master to 834 MB). The fleet's readers hand records over to the master, which counts the
bytes waiting for the store here; past ``LIMIT_BYTES`` the gate closes and every reader waits
at it before reading its next message. Nothing is dropped: the asyncio stream is simply not
read, so the pipe (or the SSH channel's window) fills and the box's own writes block until
the store caught up (the gate opens again at half the bound). Memory stays bounded whatever
a box sends.

While the gate is closed nobody's silence counts: the boxes answer, we do not read; the
heartbeat skips the silence check, and the clocks restart when the gate opens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: record bytes (their stored JSON) that may wait for the store before the readers stop reading
LIMIT_BYTES = 32 * 1024 * 1024


class ReadGate:
    """Open while the records waiting for the store stay under the bound."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = LIMIT_BYTES if limit is None else limit
        self.pending = 0
        self.peak = 0
        self.closures = 0
        self._open = asyncio.Event()
        self._open.set()
        #: called (no argument) each time the gate opens again
        self.on_open: list[Callable[[], None]] = []
        self.closed_since: float | None = None

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def hold(self, nbytes: int) -> None:
        """Records of ``nbytes`` were handed to the master and wait for the store."""
        self.pending += nbytes
        self.peak = max(self.peak, self.pending)
        if self.pending > self.limit and self._open.is_set():
            self._open.clear()
            self.closures += 1
            self.closed_since = time.monotonic()

    def release(self, nbytes: int) -> None:
        """Records of ``nbytes`` were written to the store (or will never be)."""
        self.pending = max(0, self.pending - nbytes)
        if self.pending <= self.limit // 2 and not self._open.is_set():
            self._open.set()
            self.closed_since = None
            for listener in list(self.on_open):
                listener()

    async def wait(self) -> None:
        """Return when reading may go on (at once while the gate is open)."""
        if not self._open.is_set():
            await self._open.wait()
