"""The embedded master: own runs, plan, claim, dispatch, ingest, complete.

One asyncio task drives the store side (control, planning, claims, batched
ingest), another hands claimed tasks to free agents, the fleet's readers feed
agent messages in through ``_on_message``. Every store call runs on one private
thread with the master's own connection, so the event loop (and the TUI sharing
it) never waits on SQLite. Records and the task outcome they belong to are
written in the same transaction, so a crash anywhere re-runs at most the tasks
in flight, and the (run, stage, type, key) identity keeps re-delivered records
from ever duplicating.

Ctrl-C (``serve()`` cancelled) and ``shutdown()`` leave owned runs in their state
with no owner and their leases back in the queue: an interrupted run is a
``running`` run without a live owner, which ``resume`` — or any master — takes
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from console.errors import TransportError
from console.fleet.fleet import AgentHandle, Fleet, cancel_quietly, handles_for
from console.master.budget import budget_slots
from console.master.executions import RunContext, TaskRun
from console.master.outcomes import FLUSH_RECORDS, InFlight
from console.master.pausing import Pausing
from console.master.planner import WINDOW_TASKS, RunPlanner
from console.master.schedules import Notifier, pick_up_amendment, tick_schedules
from console.master.speculation import copy_slow_tasks
from console.offloop import DaemonExecutor
from console.status import AGENT_LINKED, RUN_TERMINAL, AgentState, CancelReason, RunState
from console.store import open_store
from console.store.base import Store
from console.store.rows import OwnedRun
from console.store.watch import StoreWatcher

T = TypeVar("T")

LEASE_S = 60.0
FLUSH_EVERY_S = 0.05
CONTROL_EVERY_S = 1.0
#: after a change by another process, read intents (and new runs) this soon: a few more may land meanwhile
WAKE_CONTROL_S = 0.01
CONTROL_MIN_GAP_S = 0.05
#: with nothing claimed in hand, look for queued tasks (e.g. retries coming due) this often
RECLAIM_EVERY_S = 0.2
#: plan at least this often (a stream stage's partial chunk once its source went quiet)
REPLAN_EVERY_S = 0.5
#: a master-side deadline beyond the task's own timeout (the agent enforces the timeout itself)
TIMEOUT_GRACE_S = 10.0
STOP_GRACE_S = 3.0
#: leaving the store (last flush, leases and runs given back, agents reported down) takes at most this;
#: a store that does not answer by then is left as it is (every write is one transaction: nothing half-done)
LEAVE_STORE_S = 10.0
STRAGGLER_AFTER_S = 2.0
#: reconnect attempts after which a down box's pinned tasks are failed
GIVE_UP_AFTER = 3
#: plan again once this many tasks were claimed since the last planning step (a quarter of the
#: planner's window, so the queue never runs dry between steps), or when a claim came back short
PLAN_AFTER_CLAIMED = WINDOW_TASKS // 4
#: a dispatch round waits this long after a wakeup to batch more tasks into one write per box
DISPATCH_COALESCE_S = 0.001


class Master:
    """``serve()`` runs until cancelled or ``shutdown()``; ``run_until_done(run)`` drives one run."""

    def __init__(
        self, store: Store, fleet_source: str = "local", *, workflows_file: str | None = None,
        master_id: str | None = None,
    ) -> None:
        self.store = store
        self.location = store.address
        self.fleet_source = fleet_source
        self.workflows_file = workflows_file
        self.master_id = master_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.fleet: Fleet | None = None
        self.db: Store | None = None
        self.runs: dict[str, RunContext] = {}
        self.ready: list[TaskRun] = []
        self.wake = asyncio.Event()
        self.dispatch_wake = asyncio.Event()
        #: the tasks this master leased, their executions on agents, and their outcomes to write
        self.flight = InFlight(self.runs, wake=self.wake.set, freed=self.dispatch_wake.set)
        self.pausing = Pausing(self.flight)
        self._stopping = False
        self._executor: DaemonExecutor | None = None
        self._claim_dirty = True
        self._plan_dirty = True
        self._claimed_since_plan = 0
        self._queue_empty = False
        self._idle = False
        #: serving every run (not `run`/`resume` of one): fire schedules, deliver notifications
        self._serving_all = False
        self.dispatched_total = 0
        #: wall time of each run's first dispatch by this master (latency figures)
        self.first_dispatch: dict[str, float] = {}

    # -- public ------------------------------------------------------------------------

    def reconnect(self, names: list[str]) -> list[str]:
        """Intent from the operator (the console's agents screen): reconnect these down boxes now."""
        return self.fleet.retry_now(names) if self.fleet is not None else []

    def shutdown(self) -> None:
        """Graceful stop: leases go back to the queue, so a restart continues at once."""
        self._stopping = True
        self.wake.set()

    async def run_until_done(self, run_id: str) -> RunState:
        """Serve only this run until it ends (completed, failed or stopped); return its state.

        A paused run is resumed first; one paused later by another process keeps this waiting.
        """
        if self.store.runs.get(run_id).state == RunState.PAUSED:
            self.store.runs.resume(run_id)
        try:
            await self.serve(run_ids=[run_id], stop_when_idle=True)
        except TransportError as err:  # no agent came up: failed, so no master starts it later unasked
            self.store.queue.finish_run(run_id, RunState.FAILED, f"start failed: {err}")
            raise
        return self.store.runs.get(run_id).state

    async def serve(self, *, run_ids: list[str] | None = None, stop_when_idle: bool = False) -> None:
        from agentkit.archive import build_archive

        self._executor = DaemonExecutor("fleetscan-store")
        background: list[asyncio.Task[Any]] = []
        watcher: StoreWatcher | None = None
        try:
            self.db = await self._db(open_store, self.location)
            await self._db(self.db.queue.register_master, self.master_id)
            archive, sha = await asyncio.to_thread(build_archive)
            self.fleet = Fleet(
                handles_for(self.fleet_source), on_message=self.flight.on_message, on_lost=self.flight.on_lost
            )
            self.flight.fleet = self.fleet
            self.fleet.stall.listeners.append(self.flight.shift_deadlines)
            try:
                await self.fleet.start(archive, sha)
            except TransportError as err:
                if run_ids is not None:  # `run`/`resume`: the run ends failed with the reason
                    raise
                # serving (console, `master`): wait for boxes; the heartbeat retries them with backoff
                self.fleet.events.append(("error", "agent", f"{err}; retrying (trust or check a box: at once)"))
            finally:
                await self._flush(force=True)
            watcher = StoreWatcher(open_store(self.location))
            background = [
                asyncio.create_task(watcher.run(self.wake)), asyncio.create_task(self.fleet.heartbeat()),
                asyncio.create_task(self._dispatch_loop()), asyncio.create_task(self._housekeeping()),
            ]
            self._serving_all = run_ids is None
            if self._serving_all:
                background.append(asyncio.create_task(Notifier(self.location).run()))
            await self._control_loop(run_ids, stop_when_idle)
        finally:
            for task in background:
                await cancel_quietly(task)
            if watcher is not None:
                watcher.close()
            await self._close()

    # -- the store-side loop ---------------------------------------------------------------

    async def _control_loop(self, run_ids: list[str] | None, stop_when_idle: bool) -> None:
        next_control = last_control = 0.0
        last_claim = last_plan = 0.0
        while not self._stopping:
            woken = self.wake.is_set()
            self.wake.clear()  # anything that happens from here on wakes the next round
            now = time.monotonic()
            if woken:
                # soon after a quiet spell; at most every CONTROL_MIN_GAP_S while changes keep coming
                # (the master's own flushes wake it too)
                next_control = min(next_control, max(now + WAKE_CONTROL_S, last_control + CONTROL_MIN_GAP_S))
            if now >= next_control:
                last_control = now
                await self._control(run_ids)
                next_control = now + (0.1 if woken else CONTROL_EVERY_S)
                if stop_when_idle and self._idle and not self.flight.execs:
                    return
            if self._claim_dirty and self.fleet is not None and len(self.ready) < self.fleet.total_slots():
                # the dispatcher runs short: claim before this round's flush and planning (the
                # store thread is serial; behind them, free slots waited ~15% of a no-op run)
                last_claim = now
                await self._refill()
            await self._flush()
            await self.pausing.release(self._db, self._require_db().queue.release_tasks, self.master_id)
            await self._finish_stopping()
            if self._plan_dirty or now - last_plan >= REPLAN_EVERY_S:
                self._plan_dirty = False
                last_plan = now
                if await self._plan():
                    next_control = 0.0  # a run ended: `run` learns it now, not at the next control tick
            if self._claim_dirty or (not self.ready and now - last_claim >= RECLAIM_EVERY_S):
                last_claim = now
                await self._refill()
            await self._stragglers()
            if not self.wake.is_set():
                pause = min(FLUSH_EVERY_S, max(0.0, next_control - time.monotonic()))
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), pause)

    async def _control(self, run_ids: list[str] | None) -> None:
        """Adopt runs, read intents (pause, resume, stop) of the owned ones."""
        db = self._require_db()
        await self._db(db.queue.adopt_runs, self.master_id, run_ids)
        # every live master serves every active run (task by task); `run`/`resume` serve only theirs
        rows = {
            r.id: r for r in await self._db(db.queue.owned_runs, self.master_id) if run_ids is None or r.id in run_ids
        }
        for run_id, row in rows.items():
            ctx = self.runs.get(run_id)
            if ctx is None:
                try:
                    ctx = await self._db(self._context, row)
                except Exception as err:  # noqa: BLE001 - e.g. a targets @file gone since submit
                    await self._db(db.queue.finish_run, run_id, RunState.FAILED, f"cannot load the run: {err}")
                    continue
                self.runs[run_id] = ctx
                self._plan_dirty = self._claim_dirty = True
            amended = pick_up_amendment(ctx, row)
            if row.state != ctx.state or amended:
                self._plan_dirty = self._claim_dirty = True
            ctx.state = row.state
            if row.stop_requested and not ctx.stopping:
                self._begin_stop(ctx)
            if ctx.state == RunState.PAUSED:
                self.pausing.hold(run_id)
                await self._release_ready(lambda t, rid=run_id: t.run_id == rid)  # type: ignore[misc]
        for run_id in [r for r in self.runs if r not in rows]:
            self._forget_run(run_id)
        if self.fleet is not None and rows:
            usable = [
                h.name for h in self.fleet.handles.values() if h.state != AgentState.DOWN or h.reconnects < GIVE_UP_AFTER
            ]
            await self._db(db.queue.fail_pinned, self.master_id, usable, "failed: their box is not reachable")
        if run_ids is not None:
            states = await self._db(lambda: [db.runs.get(r).state for r in run_ids])
            # `run` / `resume` wait for the END: a run paused from elsewhere keeps them waiting (and
            # holding it) until it is resumed or stopped; Ctrl-C leaves it resumable
            self._idle = all(s in RUN_TERMINAL for s in states)
        else:
            self._idle = not rows

    def _context(self, row: OwnedRun) -> RunContext:
        """Runs on the store thread: parsing targets and scope may take a moment."""
        assert self.fleet is not None and self.db is not None
        # `from: boxes` covers every box of the fleet, up or not: a box that is down gets its pinned
        # task anyway, which runs when it comes back or fails visibly (never silently left out)
        planner = RunPlanner(self.db, row, sorted(self.fleet.handles))
        return RunContext(
            run_id=row.id, priority=row.priority, state=row.state, stages=planner.stages, planner=planner,
            scope=planner.scope.wire(), exclude=planner.exclusions.wire(),
        )

    async def _plan(self) -> bool:
        """One planning step of every running run; True when one of them ended."""
        ended = False
        self._claimed_since_plan = 0
        for ctx in list(self.runs.values()):
            if ctx.state != RunState.RUNNING or ctx.stopping:
                continue
            try:
                outcome = await self._db(ctx.planner.step)
            except Exception as err:  # noqa: BLE001 - a broken run must not take the master down
                outcome = RunState.FAILED
                await self._db(self._require_db().queue.finish_run, ctx.run_id, RunState.FAILED, f"planning failed: {err}")
            if outcome is not None:
                self._forget_run(ctx.run_id)
                ended = True
            elif ctx.planner.stale:
                self.wake.set()  # the run was amended under this step: read its definition again now
            self._claim_dirty = True
        return ended

    async def _refill(self) -> None:
        assert self.fleet is not None
        want = 2 * self.fleet.total_slots() - len(self.ready) - len(self.flight.execs)
        self._claim_dirty = False
        if want <= 0 or not any(c.state == RunState.RUNNING and not c.stopping for c in self.runs.values()):
            return
        boxes = [h.name for h in self.fleet.handles.values() if h.state in AGENT_LINKED]
        serving = [r for r, c in self.runs.items() if c.state == RunState.RUNNING and not c.stopping]
        rows = await self._db(
            self._require_db().queue.claim_tasks, self.master_id, want, LEASE_S, pinned_boxes=boxes, run_ids=serving,
            budget_slots=budget_slots(self.fleet.total_slots(), self.ready, self.flight.execs),
        )
        self._queue_empty = not rows
        if not rows:
            return
        for row in rows:
            task = TaskRun.from_claim(row)
            self.flight.tasks[task.task_id] = task
            self.ready.append(task)
        self.ready.sort(key=lambda t: (-t.priority, t.task_id))
        self._claimed_since_plan += len(rows)
        if self._claimed_since_plan >= PLAN_AFTER_CLAIMED or len(rows) < want:
            # the planned window drained by a good part (or ran short): plan more. Not after every
            # claim: a planner step per dispatch round was a fifth of the master's store time
            self._plan_dirty = True
        self.dispatch_wake.set()

    async def _flush(self, force: bool = False) -> None:
        if self.fleet is not None:
            for level, kind, message in self.fleet.drain_events():
                self.flight.event(None, level, kind, message)
        flight = self.flight
        if not flight.batch:
            return
        # the last outcome of a quiet spell is written at once: nothing more is coming to batch it with
        settled = bool(flight.batch.completions) and not flight.execs
        if (
            not force and not settled and len(flight.batch.records) < FLUSH_RECORDS
            and time.monotonic() - flight.batch_since < FLUSH_EVERY_S
        ):
            return
        batch = flight.take_batch()
        batch.master = self.master_id
        try:
            await self._db(self._require_db().queue.apply_batch, batch)
        finally:
            flight.stored(flight.taken_bytes)
        if batch.completions or batch.requeues:
            self._plan_dirty = self._claim_dirty = True
        elif batch.records:
            self._plan_dirty = True  # a stream stage may have a chunk now

    # -- dispatch ------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self.dispatch_wake.wait()
            if DISPATCH_COALESCE_S:
                await asyncio.sleep(DISPATCH_COALESCE_S)  # let more slots free up: one write per box per round
            self.dispatch_wake.clear()
            await self._dispatch()

    async def _dispatch(self) -> None:
        assert self.fleet is not None
        outgoing: dict[str, tuple[AgentHandle, list[bytes]]] = {}
        keep: list[TaskRun] = []
        for index, task in enumerate(self.ready):
            ctx = self.runs.get(task.run_id)
            if ctx is None or ctx.stopping or ctx.state != RunState.RUNNING or task.finished:
                if ctx is not None and not task.finished:
                    keep.append(task)
                continue
            handle = self.fleet.pick(avoid=task.tried, pinned=task.pinned)
            if handle is None:
                if task.pinned is None and self.fleet.free_slots() == 0:
                    keep.extend(self.ready[index:])
                    break
                keep.append(task)
                continue
            spec = ctx.stages[task.stage_id]
            exec_id = f"{task.task_id}.{task.attempt}"
            self.flight.start(exec_id, task, handle, spec.timeout, TIMEOUT_GRACE_S)
            line = ctx.scope_lines(handle.link) + ctx.task_line(task.stage_id, exec_id, task.targets, task)
            outgoing.setdefault(handle.name, (handle, []))[1].append(line)
            ctx.dispatched += 1
            ctx.dispatched_to.add(handle.name)
            if task.run_id not in self.first_dispatch:
                self.first_dispatch[task.run_id] = time.time()
        self.ready = keep
        fleet = self.fleet
        for _, lines in outgoing.values():
            self.dispatched_total += len(lines)
        # concurrently: a box whose pipe is full (frozen) never holds up the others
        await asyncio.gather(*(fleet.send_raw(handle, b"".join(lines)) for handle, lines in outgoing.values()))
        if len(self.ready) < (self.fleet.total_slots() or 1):
            self._claim_dirty = True
            self.wake.set()

    # -- stop, pause, stragglers, timeouts ------------------------------------------------------

    def _begin_stop(self, ctx: RunContext) -> None:
        ctx.stopping = True
        ctx.stop_since = time.monotonic()
        for ex in list(self.flight.execs.values()):
            if ex.task.run_id == ctx.run_id:
                self.flight.cancel(ex, CancelReason.STOP)

    async def _finish_stopping(self) -> None:
        for ctx in [c for c in self.runs.values() if c.stopping]:
            running = [ex for ex in self.flight.execs.values() if ex.task.run_id == ctx.run_id]
            if running and time.monotonic() - ctx.stop_since < STOP_GRACE_S:
                continue
            for ex in running:
                self.flight.end(ex)
            await self._flush(force=True)
            await self._db(self._require_db().queue.end_stopped, ctx.run_id)
            self._forget_run(ctx.run_id)

    def _forget_run(self, run_id: str) -> None:
        self.runs.pop(run_id, None)
        self.ready = [t for t in self.ready if t.run_id != run_id]
        tasks = self.flight.tasks
        for task_id in [i for i, t in tasks.items() if t.run_id == run_id and not t.execs]:
            tasks.pop(task_id, None)

    async def _release_ready(self, which: Callable[[TaskRun], bool]) -> None:
        released = [t for t in self.ready if which(t)]
        if not released:
            return
        self.ready = [t for t in self.ready if not which(t)]
        for task in released:
            self.flight.tasks.pop(task.task_id, None)
        await self._db(self._require_db().queue.release_tasks, self.master_id, [t.task_id for t in released])

    async def _stragglers(self) -> None:
        await copy_slow_tasks(self, STRAGGLER_AFTER_S, TIMEOUT_GRACE_S)

    # -- housekeeping -------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        db = self._require_db()
        tick = 0
        while True:
            await asyncio.sleep(0.5)
            tick += 1
            if self.fleet is not None:
                self.fleet.stall.poll()  # a stall shifts the deadlines before they are judged
            self.flight.check_timeouts()
            if tick % 2 == 0:
                agents = len(self.fleet.up()) if self.fleet is not None else 0
                await self._db(db.queue.touch_owned, self.master_id, agents, len(self.flight.execs))
                if self.fleet is not None:
                    await self._db(db.agents.report, self.fleet.rows(self.master_id))
                if self._serving_all and await self._db(tick_schedules, db):
                    self.wake.set()  # adopt the runs just started
            if tick % 10 == 0:
                for ctx in self.runs.values():
                    if ctx.dispatched:
                        self.flight.event(
                            ctx.run_id, "info", "dispatch",
                            f"dispatched {ctx.dispatched} task(s) to {', '.join(sorted(ctx.dispatched_to))}",
                        )
                        ctx.dispatched = 0
                        ctx.dispatched_to.clear()
            if tick % 20 == 0:
                await self._db(db.queue.renew_leases, self.master_id, LEASE_S)
                requeued, failed = await self._db(db.queue.sweep_expired, self.master_id)
                if requeued or failed:
                    self.flight.event(None, "warning", "lease", f"expired leases: {requeued} re-queued, {failed} failed")

    # -- helpers -------------------------------------------------------------------------------

    def _require_db(self) -> Store:
        assert self.db is not None, "the master's store is not open"
        return self.db

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _close(self) -> None:
        """Flush, give leases back, drop ownership, close agents: the runs stay resumable."""
        try:
            if self.db is not None:
                try:
                    await asyncio.wait_for(self._leave_store(self.db), LEAVE_STORE_S)
                except asyncio.TimeoutError:
                    self.db.interrupt()  # the store thread gives up its call; the close queued behind it runs
            if self.fleet is not None:
                await self.fleet.close()
        finally:
            if self.db is not None:
                db, self.db = self.db, None
                if self._executor is not None:
                    # behind whatever the store thread still does: waited for briefly, never for long
                    closed = asyncio.wrap_future(self._executor.submit(db.close))
                    with contextlib.suppress(Exception, asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(closed), 2.0)
            if self._executor is not None:
                self._executor.shutdown(wait=False)

    async def _leave_store(self, db: Store) -> None:
        with contextlib.suppress(Exception):
            await self._flush(force=True)
        with contextlib.suppress(Exception):
            await self._db(db.queue.release_runs, self.master_id)
        with contextlib.suppress(Exception):
            if self.fleet is not None:
                rows = [replace(r, state=AgentState.DOWN, busy=0) for r in self.fleet.rows(self.master_id)]
                await self._db(db.agents.report, rows)
        with contextlib.suppress(Exception):
            await self._db(db.queue.unregister_master, self.master_id)
