"""Cross-process wakeups: notice another process's write to the store within ~50 ms.

SQLite has no LISTEN/NOTIFY, but ``PRAGMA data_version`` on a connection changes
whenever any OTHER connection commits, and reading it costs microseconds without
taking a lock. One dedicated connection polled every ~50 ms is therefore a cheap
notification; a slow unconditional wake (every second) is the fallback that makes
a missed change impossible to wait on forever.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

POLL_S = 0.05
FALLBACK_S = 1.0


class StoreWatcher:
    """Sets ``event`` when the database changed (or FALLBACK_S passed)."""

    def __init__(self, path: Path, event: asyncio.Event, *, poll_s: float = POLL_S, fallback_s: float = FALLBACK_S):
        self.path = path
        self.event = event
        self.poll_s = poll_s
        self.fallback_s = fallback_s
        self.changes = 0

    async def run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            version = _version(conn)
            last_wake = time.monotonic()
            while True:
                await asyncio.sleep(self.poll_s)
                current = _version(conn)
                now = time.monotonic()
                if current != version:
                    version = current
                    self.changes += 1
                    self.event.set()
                    last_wake = now
                elif now - last_wake >= self.fallback_s:
                    self.event.set()
                    last_wake = now
        finally:
            conn.close()


def _version(conn: sqlite3.Connection) -> int:
    try:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])
    except sqlite3.Error:
        return -1
