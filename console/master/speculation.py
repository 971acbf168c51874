"""Straggler copies: with nothing queued and agents idle, a copy of the slowest running tasks on
another box; the first to finish wins and the other is cancelled.

Only in a stage that asks for it (``speculate: true``): a copy probes every target of the task
again, from a second box, so by default none is ever made (SPEC: no target is probed more often
than the stage asks). Tasks holding a share of a rate budget are never copied either.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from console.master.executions import may_copy
from console.status import AgentState, RunState

if TYPE_CHECKING:
    from console.master.scheduler import Master


async def copy_slow_tasks(master: Master, after_s: float, grace_s: float) -> None:
    """Nothing queued, agents idle: run a copy of the slowest tasks there; first done wins."""
    execs = master.flight.execs
    if master.fleet is None or master.ready or not master._queue_empty or not execs:
        return
    idle = [h for h in master.fleet.up() if not h.busy]
    if not idle:
        return
    now = time.monotonic()
    slow = sorted(
        (ex for ex in execs.values()
         if ex.cancelled is None and ex.task.pinned is None and ex.task.copies == 0 and ex.task.rate is None
         and may_copy(ex, master.runs)
         and len(ex.task.execs) == 1 and now - ex.started >= after_s),
        key=lambda ex: ex.started,
    )
    for ex in slow[: len(idle)]:
        handle = master.fleet.pick(avoid=[ex.agent.name])
        if handle is None or handle is ex.agent or handle.busy:
            break
        ctx = master.runs.get(ex.task.run_id)
        if ctx is None or ctx.stopping or ctx.state != RunState.RUNNING:
            continue
        attempt = await master._db(master._require_db().queue.bump_attempt, ex.task.task_id)
        if ex.task.finished or not attempt or handle.state != AgentState.UP or handle.busy:
            # while the copy was being counted the task ended, or the idle box was lost or given
            # work: no copy, and no attempt (an exec on a lost box would hold the run until its timeout)
            if attempt:
                await master._db(master._require_db().queue.unbump_attempt, ex.task.task_id, attempt)
            continue
        task = ex.task
        task.copies += 1
        task.max_attempts += 1
        exec_id = f"{task.task_id}.{attempt}"
        spec = ctx.stages[task.stage_id]
        master.flight.start(exec_id, task, handle, spec.timeout, grace_s)
        master.flight.event(task.run_id, "info", "straggler", f"task {task.task_id} slow on {ex.agent.name}: copy on {handle.name}")
        line = ctx.scope_lines(handle.link) + ctx.task_line(task.stage_id, exec_id, task.targets, task)
        await master.fleet.send_raw(handle, line)

