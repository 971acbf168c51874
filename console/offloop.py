"""Blocking work off the event loop, on threads that never keep the process alive.

``ThreadPoolExecutor`` workers are joined when the interpreter exits, and ``asyncio.run`` joins the
loop's default executor on its way out: one store call stuck in a reconnect (a PostgreSQL server gone
for good) then holds an interrupted master, or a finished test session, for minutes. The store is
the source of truth and every write is one transaction, so a call abandoned at exit loses nothing:
these executors run on daemon threads, and whoever closes them never waits for the call in flight.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_STOP = object()


class DaemonExecutor(Executor):
    """Calls run one at a time, in order, on one daemon thread started on first use."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: submit after shutdown")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._calls.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while True:
            item = self._calls.get()
            if item is _STOP:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as err:  # noqa: BLE001 - handed to the awaiting side
                future.set_exception(err)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; the queued ones still run (a close queued behind a read), then the thread ends.
        ``wait`` waits for them; the process never does."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._calls.put(_STOP)
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()
