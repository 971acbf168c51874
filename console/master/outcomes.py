"""What happens to a task once it is on an agent: results, done, lost agents, retries, timeouts.

The synchronous half of the master (a mixin of ``Master``): the fleet's readers call
``_on_message``/``_on_lost`` for every agent line, and nothing here awaits, so the
order of an agent's lines is the order they are handled in. Outcomes go into the
pending ``IngestBatch``; the master's loop writes it in one transaction.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from agentkit import wire
from console.errors import AgentError
from console.fleet.fleet import AgentHandle, Fleet
from console.master.executions import Execution, RunContext, TaskRun, iso_now
from console.status import TaskState, can_retry, next_delay
from console.store.sqlite.leases import Completion, IngestBatch, Requeue

FLUSH_RECORDS = 2000
#: after a cancel, how long an agent may take to answer ``done`` before the slot is taken back
CANCEL_GRACE_S = 5.0


class OutcomeTracker:
    """Execution bookkeeping shared by the master's loops (state lives on ``Master``)."""

    fleet: Fleet | None
    runs: dict[str, RunContext]
    tasks: dict[int, TaskRun]
    execs: dict[str, Execution]
    batch: IngestBatch
    batch_since: float
    wake: asyncio.Event
    dispatch_wake: asyncio.Event
    _dropped_lines: int
    _out_of_scope: int

    def _on_message(self, handle: AgentHandle, message: Any) -> None:
        if isinstance(message, wire.Results):
            self._on_results(handle, message)
        elif isinstance(message, wire.Done):
            self._on_done(handle, message)
        elif isinstance(message, wire.Progress):
            ex = self.execs.get(message.id)
            if ex is not None:
                ex.progress = (message.done, message.total)
        elif isinstance(message, wire.Error):
            self._event(None, "warning", "agent", f"agent {handle.name} reports: {message.error[:300]}")
        else:
            self._event(None, "warning", "protocol", f"agent {handle.name}: unexpected {type(message).__name__}")

    def _on_results(self, handle: AgentHandle, message: wire.Results) -> None:
        from console.targets.records import validate

        ex = self.execs.get(message.id)
        if ex is None or ex.agent is not handle:
            self._dropped_lines += 1
            if self._dropped_lines <= 20 or self._dropped_lines % 1000 == 0:
                self._event(
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
        for record in message.records:
            try:
                checked = validate(record, tool.reports, box=box)
            except AgentError as err:
                ex.invalid = f"invalid record from {handle.name}: {err}"
                ex.cancelled = "invalid"
                self._send_later(handle, wire.Cancel(op="cancel", id=ex.exec_id))
                break
            if not tool.host_is_box and not ctx.in_scope(checked, tool):
                self._out_of_scope += 1
                if self._out_of_scope <= 20 or self._out_of_scope % 1000 == 0:
                    self._event(
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
            if not self.batch:
                self.batch_since = time.monotonic()
            self.batch.records.extend(rows)
            if len(self.batch.records) >= FLUSH_RECORDS:
                self.wake.set()

    def _on_done(self, handle: AgentHandle, message: wire.Done) -> None:
        ex = self.execs.get(message.id)
        if ex is None or ex.agent is not handle:
            self._event(None, "warning", "protocol", f"agent {handle.name}: done for unknown task {message.id[:40]!r}")
            return
        self._end_exec(ex)
        task = ex.task
        if task.finished or ex.cancelled in ("stop", "loser"):
            return
        if message.ok and ex.cancelled is None:
            self._complete(task, TaskState.DONE, handle.name, None)
            assert self.fleet is not None
            self.fleet.task_ok(handle)
            for other in list(task.execs):
                loser = self.execs.get(other)
                if loser is not None:
                    loser.cancelled = "loser"
                    self._send_later(loser.agent, wire.Cancel(op="cancel", id=other))
            return
        reason = ex.invalid or (
            f"timeout after {self.runs[task.run_id].stages[task.stage_id].timeout:g} s"
            if ex.cancelled == "timeout" and task.run_id in self.runs else None
        ) or (message.error or "failed")
        if self.fleet is not None:
            self.fleet.task_failed(handle)
        if not task.execs:
            self._retry_or_fail(task, handle.name, reason, delay=None)

    def _on_lost(self, handle: AgentHandle, reason: str) -> None:
        for exec_id in list(handle.busy):
            ex = self.execs.get(exec_id)
            if ex is None:
                continue
            self._end_exec(ex)
            task = ex.task
            if task.finished or ex.cancelled in ("stop", "loser") or task.execs:
                continue
            self._retry_or_fail(task, handle.name, f"agent {handle.name} lost: {reason}", delay=0.0)
        self.wake.set()
        self.dispatch_wake.set()

    def _end_exec(self, ex: Execution) -> None:
        self.execs.pop(ex.exec_id, None)
        ex.task.execs.discard(ex.exec_id)
        ex.agent.busy.discard(ex.exec_id)
        self.dispatch_wake.set()

    def _complete(self, task: TaskRun, state: TaskState, agent: str | None, error: str | None) -> None:
        task.finished = True
        self.tasks.pop(task.task_id, None)
        if not self.batch:
            self.batch_since = time.monotonic()
        self.batch.completions.append(Completion(task.task_id, task.run_id, task.stage_id, state, agent, error))

    def _retry_or_fail(self, task: TaskRun, agent: str, reason: str, delay: float | None) -> None:
        tried = [*task.tried, agent]
        if can_retry(task.attempt, task.max_attempts):
            wait = next_delay(task.attempt) if delay is None else delay
            task.finished = True
            self.tasks.pop(task.task_id, None)
            self.batch.requeues.append(Requeue(task.task_id, time.time() + wait, json.dumps(tried), reason))
            self._event(
                task.run_id, "warning", "retry",
                f"task {task.task_id} ({task.stage_id}) attempt {task.attempt}/{task.max_attempts} failed on "
                f"{agent}: {reason}; retrying in {wait:.1f} s",
            )
        else:
            self._complete(task, TaskState.FAILED, agent, reason)
            self._event(task.run_id, "error", "task", f"task {task.task_id} ({task.stage_id}) failed: {reason}")
        self.wake.set()

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        for ex in list(self.execs.values()):
            if ex.cancelled is None and now > ex.deadline:
                ex.cancelled = "timeout"
                ex.cancel_sent = now
                self._send_later(ex.agent, wire.Cancel(op="cancel", id=ex.exec_id))
            elif ex.cancelled is not None and ex.cancel_sent and now - ex.cancel_sent > CANCEL_GRACE_S:
                # the agent does not answer the cancel: take the slot back, settle the task
                self._end_exec(ex)
                if not ex.task.finished and not ex.task.execs and ex.cancelled in ("timeout", "invalid"):
                    self._retry_or_fail(ex.task, ex.agent.name, ex.invalid or "timeout (no answer to cancel)", None)

    def _event(self, run_id: str | None, level: str, kind: str, message: str) -> None:
        if not self.batch:
            self.batch_since = time.monotonic()
        self.batch.events.append((run_id, level, kind, message))

    def _send_later(self, handle: AgentHandle, message: Any) -> None:
        if self.fleet is not None:
            fleet = self.fleet
            asyncio.get_running_loop().create_task(fleet.send(handle, [message]))
