"""What happens to a task once it is on an agent: results, done, lost agents, retries, timeouts.

``InFlight`` is the master's book of tasks it leased and their executions on agents. The
fleet's readers call :meth:`InFlight.on_message` / :meth:`InFlight.on_lost` for every agent
line, and nothing here awaits, so the order of an agent's lines is the order they are
handled in. Outcomes go into the pending :class:`~console.store.writes.IngestBatch`; the
master's loop writes it in one transaction (``take_batch``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from agentkit import wire
from console.errors import AgentError
from console.fleet.fleet import AgentHandle, Fleet
from console.master.about import about_task, exempt
from console.master.executions import Execution, RunContext, TaskRun, iso_now
from console.status import CancelReason, TaskState, can_retry, next_delay
from console.store.writes import Completion, EventLine, IngestBatch, Requeue

FLUSH_RECORDS = 2000
#: what a stored row costs beyond its data text, for the read gate's count (a tuple of nine fields)
ROW_OVERHEAD = 256
#: after a cancel, how long an agent may take to answer ``done`` before the slot is taken back
CANCEL_GRACE_S = 5.0
#: a cancelled copy whose outcome no longer matters (the run stops, or another copy won)
SETTLED = (CancelReason.STOP, CancelReason.LOSER)


class InFlight:
    """Leased tasks, their executions on agents, and the outcomes waiting to be written."""

    def __init__(self, runs: dict[str, RunContext], *, wake: Callable[[], None], freed: Callable[[], None]) -> None:
        #: the master's owned runs (shared with it, read here)
        self.runs = runs
        #: the store side has work (a flush, a retry, a plan): wake its loop
        self._wake = wake
        #: an agent slot came free: wake the dispatcher
        self._freed = freed
        self.fleet: Fleet | None = None
        self.tasks: dict[int, TaskRun] = {}
        self.execs: dict[str, Execution] = {}
        self.batch = IngestBatch()
        self.batch_since = 0.0
        self._dropped_lines = 0
        self._out_of_scope = 0
        #: per run: addresses an agent refused to contact (a name resolved to an excluded or out-of-scope one)
        self.blocked: dict[str, int] = {}
        #: tasks of paused runs whose executions ended: to go back to the queue, attempt given back
        self.given_back: list[int] = []

        #: records refused per box (invalid, or not about their task's targets)
        self.refused: dict[str, int] = {}
        #: record bytes in the open batch, and in the batch being written (the read gate's count)
        self.batch_bytes = 0
        self.taken_bytes = 0

    # -- the batch -------------------------------------------------------------------------

    def take_batch(self) -> IngestBatch:
        batch, self.batch = self.batch, IngestBatch()
        self.batch_since = time.monotonic()
        self.taken_bytes, self.batch_bytes = self.batch_bytes, 0
        return batch

    def stored(self, nbytes: int) -> None:
        """A taken batch of ``nbytes`` record bytes is in the store: the readers may read on."""
        if self.fleet is not None:
            self.fleet.gate.release(nbytes)

    def _pending(self) -> IngestBatch:
        """The batch to add to; its age starts with its first entry (the flush deadline counts from it)."""
        if not self.batch:
            self.batch_since = time.monotonic()
        return self.batch

    def event(self, run_id: str | None, level: str, kind: str, message: str) -> None:
        self._pending().events.append(EventLine(run_id, level, kind, message))

    # -- executions ------------------------------------------------------------------------

    def start(self, exec_id: str, task: TaskRun, handle: AgentHandle, timeout: float, grace: float) -> None:
        self.execs[exec_id] = Execution(exec_id, task, handle, time.monotonic() + timeout + grace)
        task.execs.add(exec_id)
        handle.busy.add(exec_id)

    def end(self, ex: Execution) -> None:
        self.execs.pop(ex.exec_id, None)
        ex.task.execs.discard(ex.exec_id)
        ex.agent.busy.discard(ex.exec_id)
        self._freed()

    def cancel(self, ex: Execution, reason: CancelReason) -> None:
        ex.cancelled = reason
        ex.cancel_sent = time.monotonic()
        self.send_later(ex.agent, wire.Cancel(op="cancel", id=ex.exec_id))

    # -- agent messages --------------------------------------------------------------------

    def on_message(self, handle: AgentHandle, message: Any) -> None:
        if isinstance(message, wire.Results):
            self._on_results(handle, message)
        elif isinstance(message, wire.Done):
            self._on_done(handle, message)
        elif isinstance(message, wire.Progress):
            ex = self.execs.get(message.id)
            if ex is not None:
                ex.progress = (message.done, message.total)
        elif isinstance(message, wire.Blocked):
            self._on_blocked(handle, message)
        elif isinstance(message, wire.Error):
            self.event(None, "warning", "agent", f"agent {handle.name} reports: {message.error}")  # made printable by the protocol reader
        else:
            self.event(None, "warning", "protocol", f"agent {handle.name}: unexpected {type(message).__name__}")

    def _on_results(self, handle: AgentHandle, message: wire.Results) -> None:
        from console.targets.records import validate

        ex = self.execs.get(message.id)
        if ex is None or ex.agent is not handle:
            self._dropped_lines += 1
            if self._dropped_lines <= 20 or self._dropped_lines % 1000 == 0:
                self.event(
                    None, "warning", "protocol",
                    f"agent {handle.name}: results for unknown or finished task {message.id[:40]!r} dropped",
                )
            return
        if ex.cancelled is not None or ex.invalid is not None:
            return
        ctx = self.runs.get(ex.task.run_id)
        if ctx is None:
            return
        tool = ctx.stages[ex.task.stage_id].tool_spec
        box = handle.name if tool.host_is_box else None
        ts = iso_now()
        rows = []
        held = not exempt(tool, ex.task.pinned)
        for record in message.records:
            # one bad record is dropped and logged (naming the box), never the task nor the records after it
            try:
                checked = validate(record, tool.reports, box=box)
            except AgentError as err:
                self._refused(handle, ex.task.run_id, f"invalid record dropped: {err}")
                continue
            if held and not about_task(checked, ex.task.targets):
                self._refused(
                    handle, ex.task.run_id,
                    f"{checked.type} record about {checked.key[:80]} is not about its task's targets: dropped",
                )
                continue
            if not tool.host_is_box and not ctx.in_scope(checked, tool):
                self._out_of_scope += 1
                if self._out_of_scope <= 20 or self._out_of_scope % 1000 == 0:
                    self.event(
                        ex.task.run_id, "warning", "protocol",
                        f"agent {handle.name}: {checked.type} record about {checked.key[:80]} is outside the run's"
                        " scope: dropped",
                    )
                continue
            rows.append((
                ex.task.run_id, ex.task.stage_id, checked.type, checked.key, checked.target, handle.name,
                ex.task.task_id, ts, json.dumps(checked.data, separators=(",", ":")),
            ))
        if rows:
            records = self._pending().records
            records.extend(rows)
            nbytes = sum(len(row[8]) + ROW_OVERHEAD for row in rows)
            self.batch_bytes += nbytes
            if self.fleet is not None:
                self.fleet.gate.hold(nbytes)  # backpressure past the bound (console.fleet.gate)
            if len(records) >= FLUSH_RECORDS:
                self._wake()

    def _refused(self, handle: AgentHandle, run_id: str, text: str) -> None:
        """A record a box sent was refused: counted per box, logged (the first 20, then every 1000th)."""
        count = self.refused[handle.name] = self.refused.get(handle.name, 0) + 1
        if count <= 20 or count % 1000 == 0:
            self.event(run_id, "warning", "protocol", f"agent {handle.name}: {text} ({count} refused so far)")

    def _on_blocked(self, handle: AgentHandle, message: wire.Blocked) -> None:
        """An agent's guard refused an address: count it for the run and log it (the first 100, then every 1000th)."""
        from console.targets.records import escape_text

        ex = self.execs.get(message.id)
        if ex is None or ex.agent is not handle:
            return
        run_id = ex.task.run_id
        count = self.blocked[run_id] = self.blocked.get(run_id, 0) + 1
        if count <= 100 or count % 1000 == 0:
            self.event(
                run_id, "warning", "scope",
                f"stage {ex.task.stage_id}: agent {handle.name} did not contact {escape_text(message.address, 64)}"
                f" ({escape_text(message.host, 100)} resolved to it): {escape_text(message.reason, 40)}"
                f" [{count} so far in this run]",
            )

    def _on_done(self, handle: AgentHandle, message: wire.Done) -> None:
        ex = self.execs.get(message.id)
        if ex is None or ex.agent is not handle:
            self.event(None, "warning", "protocol", f"agent {handle.name}: done for unknown task {message.id[:40]!r}")
            return
        self.end(ex)
        task = ex.task
        if task.finished or ex.cancelled in SETTLED:
            return
        if ex.cancelled == CancelReason.PAUSE:
            # even an ``ok``: its records after the cancel were not kept; it runs again on resume and
            # the (run, stage, type, key) identity keeps the records it sent before from doubling
            self.give_back(task)
            return
        if message.ok and ex.cancelled is None:
            self.complete(task, TaskState.DONE, handle.name, None)
            if self.fleet is not None:
                self.fleet.task_ok(handle)
            for other in list(task.execs):
                loser = self.execs.get(other)
                if loser is not None:
                    self.cancel(loser, CancelReason.LOSER)
            return
        reason = ex.invalid or (
            f"timeout after {self.runs[task.run_id].stages[task.stage_id].timeout:g} s"
            if ex.cancelled == CancelReason.TIMEOUT and task.run_id in self.runs else None
        ) or (message.error or "failed")  # made printable by the protocol reader
        if self.fleet is not None:
            self.fleet.task_failed(handle)
        if not task.execs:
            self.retry_or_fail(task, handle.name, reason, delay=None)

    def on_lost(self, handle: AgentHandle, reason: str) -> None:
        for exec_id in list(handle.busy):
            ex = self.execs.get(exec_id)
            if ex is None:
                continue
            self.end(ex)
            task = ex.task
            if task.finished or ex.cancelled in SETTLED or task.execs:
                continue
            if ex.cancelled == CancelReason.PAUSE:
                self.give_back(task)
                continue
            self.retry_or_fail(task, handle.name, f"agent {handle.name} lost: {reason}", delay=0.0)
        self._wake()
        self._freed()

    # -- outcomes --------------------------------------------------------------------------

    def complete(self, task: TaskRun, state: TaskState, agent: str | None, error: str | None) -> None:
        task.finished = True
        self.tasks.pop(task.task_id, None)
        self._pending().completions.append(Completion(task.task_id, task.run_id, task.stage_id, state, agent, error))

    def give_back(self, task: TaskRun) -> None:
        """A paused run's task whose executions all ended: back to the queue, not an attempt."""
        if task.finished or task.execs:
            return
        task.finished = True
        self.tasks.pop(task.task_id, None)
        self.given_back.append(task.task_id)
        self._wake()

    def retry_or_fail(self, task: TaskRun, agent: str, reason: str, delay: float | None) -> None:
        if can_retry(task.attempt, task.max_attempts):
            wait = next_delay(task.attempt) if delay is None else delay
            task.finished = True
            self.tasks.pop(task.task_id, None)
            self.batch.requeues.append(Requeue(task.task_id, time.time() + wait, (*task.tried, agent), reason))
            self.event(
                task.run_id, "warning", "retry",
                f"task {task.task_id} ({task.stage_id}) attempt {task.attempt}/{task.max_attempts} failed on "
                f"{agent}: {reason}; retrying in {wait:.1f} s",
            )
        else:
            self.complete(task, TaskState.FAILED, agent, reason)
            self.event(task.run_id, "error", "task", f"task {task.task_id} ({task.stage_id}) failed: {reason}")
        self._wake()

    def shift_deadlines(self, gap: float) -> None:
        """The master stalled for ``gap`` s: its own deadlines count from after the stall."""
        for ex in self.execs.values():
            ex.deadline += gap
            if ex.cancel_sent:
                ex.cancel_sent += gap

    def check_timeouts(self) -> None:
        now = time.monotonic()
        for ex in list(self.execs.values()):
            if ex.cancelled is None and now > ex.deadline:
                self.cancel(ex, CancelReason.TIMEOUT)
            elif ex.cancelled is not None and ex.cancel_sent and now - ex.cancel_sent > CANCEL_GRACE_S:
                # the agent does not answer the cancel: take the slot back, settle the task
                self.end(ex)
                if ex.cancelled == CancelReason.PAUSE:
                    self.give_back(ex.task)
                    continue
                retry = ex.cancelled in (CancelReason.TIMEOUT, CancelReason.INVALID)
                if not ex.task.finished and not ex.task.execs and retry:
                    self.retry_or_fail(ex.task, ex.agent.name, ex.invalid or "timeout (no answer to cancel)", None)

    def send_later(self, handle: AgentHandle, message: Any) -> None:
        if self.fleet is not None:
            fleet = self.fleet
            asyncio.get_running_loop().create_task(fleet.send(handle, [message]))
