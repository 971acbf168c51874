"""The master's side of runs over time: fire due schedules, deliver end-of-run notifications, and pick up
a run's amended definition.

Firing is a compare-and-set on the schedule's ``next_due`` in the same transaction as the run it creates
(``store.schedules.fire``), so however many masters tick at once a due occurrence starts one run. The run
is then an ordinary pending run that any master adopts. Notifications go out from their own thread with
their own store connection: a slow receiver never holds the master's store thread, nor any run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from console.history.notify import deliver_due
from console.history.schedules import next_due, parse_window, window_opens
from console.offloop import DaemonExecutor
from console.store.base import Store

if TYPE_CHECKING:
    from console.master.executions import RunContext
    from console.store.rows import OwnedRun

#: how often a serving master looks for due schedules and due notifications
TICK_S = 1.0


def fire_due(store: Store, now: float | None = None) -> list[str]:
    """Start the due occurrences of every schedule (once each); the ids of the runs this call started."""
    now = time.time() if now is None else now
    started: list[str] = []
    for sched in store.schedules.due(now):
        window = parse_window(sched.window) if sched.window else None
        opens = window_opens(now, window)
        if opens > now:  # due, but outside its window: wait for the opening, start nothing now
            store.schedules.fire(sched.id, sched.next_due, opens, now, start=False)
            continue
        run_id = store.schedules.fire(sched.id, sched.next_due, next_due(sched.next_due, sched.every_s, now, window),
                                      now, start=True)
        if run_id is not None:
            started.append(run_id)
    return started


def tick_schedules(store: Store) -> bool:
    """``fire_due`` for the housekeeping loop (True: a run was started): a busy store is no reason to end
    the loop (the next tick fires what this one could not)."""
    try:
        return bool(fire_due(store))
    except Exception:  # noqa: BLE001 - StoreBusy and the like; nothing half-written (one transaction each)
        return False


class Notifier:
    """Delivers due notifications on a private thread with a private store connection."""

    def __init__(self, location: str) -> None:
        self.location = location
        self._executor = DaemonExecutor("fleetscan-notify")
        self._store: Store | None = None

    def _sweep(self) -> int:
        if self._store is None:
            from console.store import open_store

            self._store = open_store(self.location)
        return deliver_due(self._store)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                with contextlib.suppress(Exception):  # a store hiccup must not end the loop; the next tick retries
                    await loop.run_in_executor(self._executor, self._sweep)
                await asyncio.sleep(TICK_S)
        finally:
            store, self._store = self._store, None
            if store is not None:
                store.interrupt()  # a sweep stuck on the store gives up; the close runs after it
                self._executor.submit(store.close)
            self._executor.shutdown(wait=False)


def pick_up_amendment(ctx: RunContext, row: OwnedRun) -> bool:
    """The run's stored definition changed (``fleetscan amend``): serve its stages from the new one.

    Amending only touches stages with nothing planned, and stages already started keep their stored
    definition, so reloading every stage is exact. Task lines are re-encoded for the amended stages."""
    from console.workflow.definition import load_definition

    if row.definition_json == ctx.planner.definition_json:
        return False
    stages = {s.id: s for s in load_definition(row.definition).stages}
    changed = [sid for sid, spec in stages.items() if ctx.stages.get(sid) != spec]
    ctx.planner.stages = stages
    ctx.planner.definition_json = row.definition_json
    ctx.stages = stages
    for sid in changed:
        ctx.encoders.pop(sid, None)
    return True
