"""Threads for tasks: a reusable worker pool, and one watchdog for every task's cancel and timeout.

Starting two threads per task (a supervisor and a worker) was most of what a short
task cost the agent. Here a task's tool runs on a pooled thread, and a single
watchdog thread enforces cancel and timeout for all of them. The pool never makes
a task wait: with no idle worker a new thread starts, so tasks still run
concurrently up to what the master sends (a tool stuck past its cancel keeps its
thread, never a slot of someone else's). Idle workers exit after a while.
"""

from __future__ import annotations

import threading
import time
from queue import Empty, SimpleQueue
from typing import Any, Callable, Optional, Tuple

#: an idle worker thread exits after this many seconds without a task
IDLE_EXIT_S = 30.0
#: the watchdog sleeps until the next deadline it knows of (a cancel wakes it), at most this long
MAX_WAIT_S = 0.5

Job = Tuple[Callable[[Any], None], Any]


class WorkerPool:
    """Run jobs on reused daemon threads; a job never queues behind another."""

    def __init__(self, name: str = "tool") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._jobs: "SimpleQueue[Job]" = SimpleQueue()
        #: workers committed to taking the next job (each submit consumes one or starts a thread)
        self._idle = 0
        self._started = 0

    def submit(self, function: Callable[[Any], None], argument: Any) -> None:
        with self._lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1
            else:
                self._started += 1
                number = self._started
        if reuse:
            self._jobs.put((function, argument))
            return
        thread = threading.Thread(
            target=self._work, args=((function, argument),), name="%s-%d" % (self._name, number), daemon=True
        )
        thread.start()

    def _work(self, job: Optional[Job]) -> None:
        while True:
            if job is not None:
                function, argument = job
                try:
                    function(argument)
                except BaseException:  # noqa: BLE001 - the job reports its own failures; the worker lives on
                    pass
                job = None
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=IDLE_EXIT_S)
            except Empty:
                with self._lock:
                    if self._idle > 0:
                        self._idle -= 1  # nobody counted on this worker: leave
                        return
                # a submit reserved this worker just as it timed out: its job is (about to be) queued
                job = self._jobs.get()


class Watchdog:
    """One thread that stops tasks on cancel or timeout and ends the ones whose tool will not stop.

    ``check(now)`` is the owner's callback: it looks at every running task and returns
    when it next needs to look (or None: nothing is running).
    """

    def __init__(self, check: Callable[[float], Optional[float]], stopping: threading.Event) -> None:
        self._check = check
        self._stopping = stopping
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def poke(self) -> None:
        """A task started or was cancelled: make sure the watchdog runs and looks soon."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)
                    self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            wait_for = self._check(time.monotonic())
            if wait_for is None and self._stopping.is_set():
                return
            # nothing running: sleep until poked; else until the next deadline (a cancel pokes)
            self._wake.wait(None if wait_for is None else min(max(wait_for, 0.001), MAX_WAIT_S))
            self._wake.clear()

