"""Pause within 1 s (SPEC): no probe of a paused run stays in flight.

The store's pause intent only changes the run's state; the owning master notices it on its next
control round (the store watcher wakes it within tens of milliseconds). Then every execution of the
run still running on a box is cancelled there (the agent kills its tool processes), and each task,
once its executions have ended, goes back to the queue with its attempt given back: a pause is not
the task's failure. Claimed tasks not yet dispatched go back the same way (the scheduler's
``_release_ready``). Resume puts the run back in the queue and its tasks are dispatched again; the
(run, stage, type, key) identity keeps the records a cancelled task sent before from doubling.

Kept apart from the scheduler (which only calls :meth:`Pausing.hold` and :meth:`Pausing.release`):
the decision of what a pause does to work in flight is one concern with its own state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from console.master.outcomes import InFlight
from console.status import CancelReason

#: runs the store-side call on the master's store thread (``Master._db``)
DbCall = Callable[..., Awaitable[Any]]


class Pausing:
    def __init__(self, flight: InFlight) -> None:
        self.flight = flight

    def hold(self, run_id: str) -> int:
        """Cancel every running execution of a paused run on its box; return how many were cancelled.

        Idempotent (the control loop calls it on every round while the run is paused): an execution
        already being cancelled, for whatever reason, is left alone."""
        running = [ex for ex in self.flight.execs.values() if ex.task.run_id == run_id and ex.cancelled is None]
        for ex in running:
            self.flight.cancel(ex, CancelReason.PAUSE)
        if running:
            boxes = ", ".join(sorted({ex.agent.name for ex in running}))
            self.flight.event(
                run_id, "info", "pause",
                f"paused: {len(running)} running task(s) cancelled on {boxes}; they go back to the queue",
            )
        return len(running)

    async def release(self, db: DbCall, release_tasks: Callable[[str, list[int]], int], master_id: str) -> int:
        """Give the tasks whose cancelled executions ended back to the queue, attempt returned."""
        if not self.flight.given_back:
            return 0
        ids, self.flight.given_back = self.flight.given_back, []
        return int(await db(release_tasks, master_id, ids))
