"""The master's own stalls: a gap in its event loop is never blamed on its agents.

Why: liveness is "an agent silent for DEAD_AFTER_S is lost", measured on the master's
clock. When the master itself stops running (SIGSTOP, a laptop suspend, a blocked loop),
every agent looks silent on its return although none was: without this, all of them were
declared lost, killed, and every task in flight lost an attempt.

A tiny task ticks every TICK_S; whoever is about to judge an agent's silence (the
heartbeat, the master's timeout check) calls :meth:`StallDetector.poll` first. A gap longer
than STALL_AFTER_S since the last tick is the master's own stall: the listeners restart the
silence clocks (and shift the master-side deadlines) by the gap. The gap is measured on
CLOCK_BOOTTIME where there is one (it counts a suspend, CLOCK_MONOTONIC does not) and on the
monotonic clock elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

TICK_S = 0.25
#: a gap in the loop this long (far above any tick's jitter, below DEAD_AFTER_S) is a stall
STALL_AFTER_S = 1.5


def _clock() -> float:
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        try:
            return time.clock_gettime(boottime)
        except OSError:
            pass
    return time.monotonic()


class StallDetector:
    """Tells the master's stalls apart from its agents' silence."""

    def __init__(self, clock: Callable[[], float] = _clock) -> None:
        self._clock = clock
        self._last = clock()
        #: called with the gap in seconds after each stall
        self.listeners: list[Callable[[float], None]] = []
        self.stalls = 0

    def poll(self) -> float:
        """Note that the loop runs now; after a stall, tell the listeners. Returns the gap (0.0 if none)."""
        now = self._clock()
        gap, self._last = now - self._last, now
        if gap < STALL_AFTER_S:
            return 0.0
        self.stalls += 1
        for listener in list(self.listeners):
            listener(gap)
        return gap

    async def run(self) -> None:
        """Tick until cancelled (the loop's own heartbeat)."""
        while True:
            await asyncio.sleep(TICK_S)
            self.poll()
