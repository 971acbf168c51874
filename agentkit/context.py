"""What a running task gives its tool: emit, progress, cancel, deadline, child processes.

Tools never touch the protocol stream: they call :meth:`TaskContext.emit`, and the
agent batches records into ``results`` messages (flushed every ~100 ms by the
agent's flusher, or at once when ``MAX_BATCH`` records are waiting). Every child
process a tool starts goes through :meth:`TaskContext.popen`, which puts it in a
new session (its own process group) so that cancel and timeout can kill the
whole tree with one ``os.killpg``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from agentkit.guard import Guard
from agentkit.targets import target_scope_entry
from agentkit.wire import MAX_BATCH, Record


class ToolError(Exception):
    """An expected failure: the task ends ``done`` with ok=false and ``str(err)`` as the reason."""


class TaskStopped(ToolError):
    """Raised inside a tool when the task was cancelled or ran past its timeout."""


#: Seconds between two ``progress`` messages of one task (the last one always goes out).
PROGRESS_INTERVAL = 0.25


class TaskContext:
    """The per-task handle a tool works through; thread-safe."""

    def __init__(
        self,
        task_id: str,
        timeout: float,
        scope: Sequence[str],
        send_records: Callable[[List[Record]], None],
        send_progress: Callable[[int, int], None],
        exclude: Sequence[str] = (),
        targets: Sequence[str] = (),
        send_blocked: Optional[Callable[[str, str, str], None]] = None,
    ) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.scope = list(scope)
        self.exclude = list(exclude)
        self._targets = list(targets)
        self._send_blocked = send_blocked
        self._guard: Optional[Guard] = None
        self.deadline = time.monotonic() + timeout
        #: set when the task must stop (cancel or timeout); tools wait on it instead of sleeping
        self.cancelled = threading.Event()
        self._send_records = send_records
        self._send_progress = send_progress
        self._lock = threading.Lock()
        #: held while a batch is taken AND written, so no batch can overtake ``done``
        self._send_lock = threading.Lock()
        self._buffer: List[Record] = []
        self._closed = False
        self._procs: List[subprocess.Popen] = []  # type: ignore[type-arg]
        #: the tool started a process at some point (its descendants may outlive it: sweep them)
        self._spawned = False
        self._last_progress = 0.0
        self._last_sent = (-1, -1)

    # -- the network -----------------------------------------------------------

    @property
    def guard(self) -> Guard:
        """The task's resolver/connector (:mod:`agentkit.guard`): every tool connects through it.

        Built on first use from the task's scope (its own targets when the task names none)
        and exclusions; a scope that does not parse fails the task (ToolError).
        """
        if self._guard is None:
            try:
                scope = self.scope or [target_scope_entry(t) for t in self._targets]
                self._guard = Guard(scope, self.exclude, self._send_blocked, names_vouch=not self.scope)
            except ValueError as err:
                raise ToolError(str(err)) from None
        return self._guard

    # -- results -------------------------------------------------------------

    def emit(self, type: str, target: str, data: Dict[str, Any]) -> None:
        """Queue one record; it leaves in the next batch."""
        with self._lock:
            if self._closed:
                return
            self._buffer.append(Record(type=type, target=target, data=data))
            full = len(self._buffer) >= MAX_BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        with self._send_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if batch:
                self._send_records(batch)

    def progress(self, done: int, total: int) -> None:
        """Report progress, throttled: the final ``done == total`` always goes out."""
        now = time.monotonic()
        with self._send_lock:
            with self._lock:
                if self._closed:
                    return
                if (done, total) == self._last_sent or (
                    done < total and now - self._last_progress < PROGRESS_INTERVAL
                ):
                    return
                self._last_progress = now
                self._last_sent = (done, total)
            self._send_progress(done, total)

    def close(self) -> None:
        """No more records from this task (a straggling tool thread is silenced); flush the rest."""
        with self._send_lock:
            with self._lock:
                self._closed = True
                batch, self._buffer = self._buffer, []
            if batch:
                self._send_records(batch)

    # -- stopping ------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() >= self.deadline

    def check(self) -> None:
        """Raise :class:`TaskStopped` when the task must stop."""
        if self.should_stop():
            raise TaskStopped("cancelled" if self.cancelled.is_set() else "timeout")

    def stop(self) -> None:
        """Signal the tool and kill every process group it started."""
        self.cancelled.set()
        self.kill_processes()

    # -- child processes -----------------------------------------------------

    def popen(self, argv: Sequence[str], **kwargs: Any) -> "subprocess.Popen[bytes]":
        """Start a child in its own session (process group), never with a shell, tied to the
        agent's life and marked with this task (:mod:`agentkit.reaper`)."""
        from agentkit.reaper import reaper

        kwargs.setdefault("stdin", subprocess.DEVNULL)
        keeper = reaper()
        self._spawned = True
        proc = subprocess.Popen(
            list(argv), start_new_session=True, shell=False, **keeper.popen_kwargs(self.task_id, kwargs)
        )
        keeper.started(proc.pid)
        with self._lock:
            self._procs.append(proc)
        if self.cancelled.is_set():
            self.kill_processes()
        return proc

    def has_processes(self) -> bool:
        """Whether the tool started any child (most tasks never do: no kill pass needed)."""
        return self._spawned

    def kill_processes(self) -> None:
        """Kill every process group the tool started, then every process still carrying this
        task's mark (a ``setsid`` grandchild left the group but not the mark)."""
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
        if self._spawned:
            from agentkit.reaper import reaper

            reaper().sweep(self.task_id)

    def run_program(
        self, argv: Sequence[str], timeout: Optional[float] = None, stdin_data: Optional[bytes] = None
    ) -> Tuple[int, bytes, bytes]:
        """Run a program to completion, honouring cancel and the deadline; (rc, stdout, stderr).

        The whole process group is killed afterwards, so a background grandchild
        of a finished program does not outlive the task.
        """
        limit = self.remaining() if timeout is None else min(timeout, self.remaining())
        ends = time.monotonic() + max(limit, 0.0)
        proc = self.popen(
            argv,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        pending_input = stdin_data
        try:
            while True:
                try:
                    out, err = proc.communicate(input=pending_input, timeout=0.1)
                    if proc.returncode < 0 and self.cancelled.is_set():
                        raise TaskStopped("cancelled")
                    return proc.returncode, out or b"", err or b""
                except subprocess.TimeoutExpired:
                    pending_input = None
                if self.cancelled.is_set():
                    raise TaskStopped("cancelled")
                if time.monotonic() >= ends:
                    raise TaskStopped("timeout")
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            if proc.returncode is None:
                try:
                    proc.communicate(timeout=2)
                except (subprocess.TimeoutExpired, ValueError, OSError):
                    pass
            with self._lock:
                if proc in self._procs:
                    self._procs.remove(proc)
            if proc.returncode is not None:
                from agentkit.reaper import reaper

                reaper().ended(proc.pid)
