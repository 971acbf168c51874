"""The store's interface: what every backend provides, what it returns, what it raises.

A ``Store`` is one open connection to the single source of truth, used by one thread at a
time (open one per thread). It is cut by who asks, each part a small object of its own:

* ``runs``     — submit and read runs; intents from any process (pause, resume, stop)
* ``results``  — a run's records: counts, streamed pages for export, the browser's pages
* ``events``   — the event log
* ``agents``   — the boxes as their masters last reported them
* ``queue``    — the master's side: ownership, claims, leases, batched ingest, run end
* ``plans``    — the planner's side: tasks written with the planning cursor, derived targets
* ``history``, ``schedules`` — runs over time (:mod:`console.store.overtime`)

Error contract (every method of every part): a problem of the store itself raises
:class:`~console.errors.StoreError` or a subclass (``StoreBusy`` when the write lock stayed
taken past the busy timeout, ``StoreCorrupt`` for a file that is not a fleetscan store);
an unknown run id raises :class:`~console.errors.RunNotFound` (bad input, exit 2). No
driver exception (``sqlite3.Error`` and the like) ever leaves a backend.

Backends keep the shared bookkeeping out of their engine code where it is engine-free: the
results browser's paging arithmetic lives here (:class:`Results`), over two small abstract
reads each backend implements (saq's ``queue/base.py`` pattern).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from console.runoptions import RunOptions
from console.status import RunState, StageState
from console.store.overtime import History, KeyedRecord, Schedules
from console.store.rows import (
    FEED_EVENTS,
    FEED_RESULTS,
    MAX_RUNS,
    AgentRow,
    ClaimedTask,
    ConsoleView,
    EventRow,
    MasterRow,
    OwnedRun,
    ResultFilter,
    ResultPage,
    ResultRow,
    RunRow,
    SourceRecord,
    StageRow,
    TaskFailure,
)
from console.store.summary import summary as _summary
from console.store.writes import IngestBatch, TaskPlan

__all__ = ["History", "KeyedRecord", "Schedules", "Store"]

#: a raw result row for export: (id, run, stage, type, key, target, agent, task_id, ts, data_json, master)
RawResult = tuple[Any, ...]
PAGE_SIZE = 50


class Runs(ABC):
    @abstractmethod
    def create(
        self, workflow: str, definition: dict[str, Any], targets: str | None = None, scope: str | None = None,
        agents: str | None = None, priority: int = 0, workflows_file: str | None = None,
        options: RunOptions | None = None,
    ) -> str:
        """Write a pending run and its stages' progress rows in one transaction; return the new run id."""

    @abstractmethod
    def get(self, run_id: str) -> RunRow:
        """The run (without progress sums). RunNotFound if there is none."""

    @abstractmethod
    def definition(self, run_id: str) -> dict[str, Any]:
        """The workflow definition the run was submitted with (what a re-run serves again);
        RunNotFound for an unknown run."""

    @abstractmethod
    def newest(self, limit: int = 100, states: Iterable[RunState] | None = None) -> list[RunRow]:
        """Runs newest first, with progress summed over their stages."""

    @abstractmethod
    def stages(self, run_id: str) -> list[StageRow]:
        """The run's stages in workflow order (empty for an unknown run)."""

    @abstractmethod
    def stages_of(self, run_ids: list[str]) -> dict[str, tuple[StageRow, ...]]:
        """The stages of several runs at once (every id present in the answer)."""

    @abstractmethod
    def resolve(self, prefix: str) -> str:
        """The id of the one run whose id is ``prefix`` or starts with it (4 characters or more).

        RunNotFound (bad input, exit 2) when the prefix is shorter, matches no run, or matches
        several (the message names the candidates). Portable SQL: no LIKE (``%`` and ``_`` in a prefix
        are plain characters)."""

    @abstractmethod
    def failures(self, run_id: str, limit: int = 5, stage: str | None = None) -> list[TaskFailure]:
        """The run's tasks that failed for good, first failed first, with their reasons; ``stage``: only
        that stage's (what the console lists for a failed stage)."""

    @abstractmethod
    def unserved(self, run_ids: list[str]) -> set[str]:
        """Which of these runs are active (pending, running) but served by no live master: no owner yet,
        or an owner that stopped heartbeating. Such a run waits for a master (`master`, the console)."""

    def summary(self, run_id: str) -> dict[str, Any]:
        """SPEC's ``--json`` object for one run (plus workflow, created, priority, per-stage dropped,
        the failed tasks and whether a master serves it)."""
        run, stages = self.get(run_id), self.stages(run_id)
        failures = self.failures(run_id) if any(s.tasks_failed for s in stages) else []
        return _summary(run, stages, failures, run_id in self.unserved([run_id]))

    def summaries(self, limit: int = 100) -> list[dict[str, Any]]:
        """``summary`` of the newest runs, newest first, in three reads whatever their number (a run
        with failed tasks adds one read for them)."""
        runs = self.newest(limit)
        stages = self.stages_of([r.id for r in runs])
        unserved = self.unserved([r.id for r in runs])
        return [
            _summary(run, stages[run.id], self.failures(run.id) if run.tasks_failed else [], run.id in unserved)
            for run in runs
        ]

    @abstractmethod
    def pause(self, run_id: str) -> RunState:
        """Pending/running -> paused (the owner stops dispatching); returns the state it is in now."""

    @abstractmethod
    def resume(self, run_id: str) -> RunState:
        """Paused -> pending (its owner, or any master if the owner is gone, continues it)."""

    def retry_failed(self, run_id: str) -> int:
        """Failed -> pending with its failed tasks queued again (``resume --retry-failed``); how many
        were queued again, -1 when the run is not failed. A backend without it says so in one line."""
        from console.errors import StoreError

        raise StoreError(f"this store backend cannot retry a failed run ({type(self).__name__})")

    @abstractmethod
    def stop(self, run_id: str) -> RunState:
        """Ask a live owner to cancel the run's tasks and end it ``stopped``; with no live owner, end it now."""


class Results(ABC):
    @abstractmethod
    def pages(
        self, run_id: str, stage: str | None = None, type: str | None = None, batch: int = 5000
    ) -> Iterator[list[RawResult]]:
        """A run's records as raw rows, a page at a time in id order (keyset: constant memory)."""

    def records(
        self, run_id: str, stage: str | None = None, type: str | None = None, batch: int = 5000
    ) -> Iterator[dict[str, Any]]:
        """A run's records in the SPEC's shape, streamed."""
        for rows in self.pages(run_id, stage, type, batch):
            for row in rows:
                yield {
                    "run": row[1], "stage": row[2], "type": row[3], "key": row[4], "target": row[5],
                    "agent": row[6], "master": row[10], "task": str(row[7]) if row[7] is not None else None,
                    "ts": row[8],
                    "data": json.loads(row[9]),
                }

    @abstractmethod
    def count(self, run_id: str, stage: str | None = None, type: str | None = None) -> int:
        """How many records a run (or one stage / one type of it) has."""

    @abstractmethod
    def latest(self, limit: int) -> list[ResultRow]:
        """The newest records of every run, oldest first (a live feed appends them in that order)."""

    @abstractmethod
    def types(self, run_id: str) -> list[str]:
        """The record types a run's stages report (from its definition), else those present."""

    @abstractmethod
    def baseline_counts(self, run_id: str) -> dict[str, int]:
        """The run's baseline records counted by their status (pass, fail, error); empty when it has none."""

    # -- the results browser: keyset pages over a filter, in the filter's order ------------

    @abstractmethod
    def _count_matching(self, flt: ResultFilter) -> int:
        """How many records match ``flt`` (stage, type, ``fields`` and text; the order does not matter)."""

    @abstractmethod
    def _read_page(
        self, flt: ResultFilter, bound: tuple[Literal[">", "<", ">=", "<="], ResultRow] | None, descending: bool,
        limit: int,
    ) -> list[ResultRow]:
        """Up to ``limit`` records matching ``flt`` in the order (``flt.sort``, id), ascending, or
        descending when ``descending``; with ``bound = (op, row)`` only those whose pair
        (sort value, id) compares ``op`` to ``row``'s pair (a row-value comparison, standard SQL).

        ``flt.fields`` name a column (``COLUMN_FIELDS``: stage, type, key, target, agent) or a key
        of the record's JSON data; a field matches when its value, as text, equals the given
        value without regard to case (so ``port=443`` matches the number). Names are identifiers
        (checked by ``ResultFilter``); values only ever travel as parameters."""

    def _ordered(self, flt: ResultFilter, backwards: bool) -> bool:
        """Whether to read descending: the filter's own direction, flipped to read backwards."""
        return flt.descending != backwards

    def first_page(self, flt: ResultFilter, limit: int = PAGE_SIZE, count: bool = True) -> ResultPage:
        """``count=False``: the page without counting what matches (a count over a large run costs more
        than the page; the browser shows the page first and asks for ``counted`` after). A page that
        is not full is counted anyway: its rows are all there is."""
        if count:
            rows = self._read_page(flt, None, self._ordered(flt, False), limit)
            return ResultPage(tuple(rows), 0, self._count_matching(flt), flt)
        rows = self._read_page(flt, None, self._ordered(flt, False), limit + 1)
        if len(rows) <= limit:
            return ResultPage(tuple(rows), 0, len(rows), flt)
        return ResultPage(tuple(rows[:limit]), 0, limit + 1, flt, counted=False)

    def counted(self, page: ResultPage) -> ResultPage:
        """``page`` with the count of what matches its filter (a page already counted as it is)."""
        if page.counted:
            return page
        return ResultPage(page.rows, page.offset, self._count_matching(page.filter), page.filter)

    def last_page(self, flt: ResultFilter, limit: int = PAGE_SIZE) -> ResultPage:
        total = self._count_matching(flt)
        rows = list(reversed(self._read_page(flt, None, self._ordered(flt, True), limit)))
        return ResultPage(tuple(rows), max(0, total - len(rows)), total, flt)

    def _after(self, flt: ResultFilter) -> Literal[">", "<"]:
        return "<" if flt.descending else ">"

    def next_page(self, page: ResultPage, limit: int = PAGE_SIZE) -> ResultPage:
        """The page after ``page`` (the total is carried over: counting is the costly part of a text filter)."""
        last = page.last_row
        if last is None:
            return self.first_page(page.filter, limit)
        flt = page.filter
        rows = self._read_page(flt, (self._after(flt), last), self._ordered(flt, False), limit)
        if not rows:
            return page
        offset = page.offset + len(page.rows)
        return ResultPage(tuple(rows), offset, max(page.total, offset + len(rows)), flt)

    def prev_page(self, page: ResultPage, limit: int = PAGE_SIZE) -> ResultPage:
        first = page.first_row
        if first is None or page.offset == 0:
            return self.first_page(page.filter, limit)
        flt = page.filter
        before: Literal[">", "<"] = ">" if flt.descending else "<"
        rows = list(reversed(self._read_page(flt, (before, first), self._ordered(flt, True), limit)))
        return ResultPage(tuple(rows), max(0, page.offset - len(rows)), page.total, flt)

    def same_page(self, page: ResultPage, limit: int = PAGE_SIZE) -> ResultPage:
        """The page starting where ``page`` starts, read again (new records may have filled it)."""
        first = page.first_row
        if first is None:
            return self.first_page(page.filter, limit)
        flt = page.filter
        rows = self._read_page(flt, ("<=" if flt.descending else ">=", first), flt.descending, limit)
        return ResultPage(tuple(rows), page.offset, self._count_matching(flt), flt)

    def matching(self, flt: ResultFilter, batch: int = 5000) -> Iterator[list[ResultRow]]:
        """Every record matching ``flt`` in its order, a batch at a time (keyset: constant memory).
        The browser's export writes exactly what the browser lists, in the same order."""
        rows = self._read_page(flt, None, flt.descending, batch)
        while rows:
            yield rows
            if len(rows) < batch:
                return
            rows = self._read_page(flt, (self._after(flt), rows[-1]), flt.descending, batch)


class Events(ABC):
    @abstractmethod
    def recent(self, run_id: str | None = None, after_id: int = 0, limit: int = 200) -> list[EventRow]:
        """The newest ``limit`` events after ``after_id`` (of one run, or all), oldest first."""

    @abstractmethod
    def since(self, run_id: str | None = None, after_id: int = 0, limit: int = 1000) -> list[EventRow]:
        """The OLDEST ``limit`` events after ``after_id`` (of one run, or every event, the fleet's
        included), oldest first: paging forward through the whole log (``fleetscan events``)."""


class Agents(ABC):
    @abstractmethod
    def all(self) -> list[AgentRow]:
        """Every box any master reported, by name; a local agent only while its master lives (it is that
        master's subprocess)."""

    @abstractmethod
    def report(self, rows: list[AgentRow]) -> None:
        """Insert or replace these boxes' rows."""


class TaskQueue(ABC):
    """The master's side. Every change of task state is one transaction per batch, so two masters (or a
    master and an intent) never see half a change; attempts are counted at claim time."""

    @abstractmethod
    def register_master(self, master_id: str) -> None:
        """Announce a live master (and forget masters dead for a day that own nothing)."""

    @abstractmethod
    def unregister_master(self, master_id: str) -> None: ...

    @abstractmethod
    def adopt_runs(self, master_id: str, run_ids: list[str] | None = None) -> list[str]:
        """Serve the active runs (of ``run_ids`` only, when given) beside any other master: pending ones
        start running; dead masters' leased tasks are re-queued, attempt given back. Returns their ids."""

    @abstractmethod
    def owned_runs(self, master_id: str) -> list[OwnedRun]:
        """The running and paused runs, which every live master serves (the caller keeps those it was asked to)."""

    @abstractmethod
    def touch_owned(self, master_id: str, agents: int | None = None, in_flight: int | None = None) -> None:
        """Heartbeat: this master (with ``agents`` linked and ``in_flight`` tasks) and the runs it owns are
        alive. A master silent for MASTER_DEAD_AFTER_S is dead: the next ``adopt_runs`` of another master
        gives its leased tasks back."""

    @abstractmethod
    def masters(self) -> list[MasterRow]:
        """The masters sharing this store, as their last heartbeat reported them."""

    @abstractmethod
    def release_runs(self, master_id: str, run_ids: Iterable[str] | None = None) -> int:
        """Give this master's leases back (queued, attempt returned) and drop ownership; return how many."""

    @abstractmethod
    def release_tasks(self, master_id: str, task_ids: list[int]) -> int:
        """Claimed but never dispatched: back to queued, attempt returned."""

    @abstractmethod
    def end_stopped(self, run_id: str) -> None:
        """End a run ``stopped``: its unfinished tasks cancelled."""

    @abstractmethod
    def claim_tasks(
        self, master_id: str, n: int, lease_s: float, *, pinned_boxes: Iterable[str] = (),
        run_ids: Iterable[str] | None = None, budget_slots: int | None = None,
    ) -> list[ClaimedTask]:
        """Lease up to ``n`` due queued tasks of the running runs (of ``run_ids`` only, when given), highest
        priority then oldest first; a pinned task only for the boxes named. Several masters claim at once,
        each task once. The attempt is counted here, so a crash counts.

        A paced task (:data:`console.store.grants.PACED_TOOLS`) of a run with a rate budget is leased
        only with a grant (``ClaimedTask.rate``, stored in the task's ``rate``) computed by
        :func:`console.store.grants.grant` in the same transaction from the grants of the run's leased
        tasks, so masters sharing the store never hand out more than the budget; at most
        ``budget_slots`` such tasks per claim (the agent slots free to run them now)."""

    @abstractmethod
    def fail_pinned(self, master_id: str, keep_boxes: list[str], reason: str) -> int:
        """Queued tasks of this master's runs pinned to a box not in ``keep_boxes`` can never run: fail them."""

    @abstractmethod
    def bump_attempt(self, task_id: int) -> int:
        """A straggler copy is an attempt of its own (with its own budget): return its attempt number (0: gone)."""

    @abstractmethod
    def unbump_attempt(self, task_id: int, attempt: int) -> None:
        """Give back a straggler attempt never dispatched, while it is still the task's latest."""

    @abstractmethod
    def renew_leases(self, master_id: str, lease_s: float) -> int: ...

    @abstractmethod
    def sweep_expired(self, master_id: str) -> tuple[int, int]:
        """Expired leases of this master's runs: re-queued, or failed when out of attempts: (requeued, failed)."""

    @abstractmethod
    def apply_batch(self, batch: IngestBatch) -> dict[tuple[str, str], int]:
        """Records (each (run, stage, type, key) once: a re-delivered record is ignored), outcomes, retries
        and events in one transaction; return the number of NEW records per (run, stage)."""

    @abstractmethod
    def finish_run(self, run_id: str, state: RunState, error: str | None = None) -> None: ...


class Plans(ABC):
    """The planner's side. Task inserts and the planning cursor move in one transaction, so a crash
    never plans a chunk twice."""

    @abstractmethod
    def stage(self, run_id: str, stage_id: str) -> StageRow: ...

    @abstractmethod
    def queued(self, run_id: str, stage_id: str) -> int:
        """How many of the stage's tasks wait in the queue."""

    @abstractmethod
    def add_input_tasks(
        self, plan: TaskPlan, chunks: list[list[str]], *, cursor: int, new_cursor: int, finished: bool,
        dropped: int, note: str | None = None, params: list[str | None] | None = None,
    ) -> bool:
        """Insert one task per chunk and move the stage's cursor from ``cursor`` to ``new_cursor``
        (``finished``: every input target is planned), counting ``dropped`` targets and logging ``note``.
        ``params``: per chunk, the task's parameter overrides (a JSON object text, or None), stored with it.
        False, and nothing written, when the cursor is no longer at ``cursor`` (planned elsewhere)."""

    @abstractmethod
    def add_box_tasks(self, plan: TaskPlan, boxes: list[str], note: str | None = None) -> None:
        """One task per box, pinned to it; the stage is then fully planned."""

    @abstractmethod
    def source_records(self, run_id: str, stage_id: str, after_id: int, limit: int) -> list[SourceRecord]:
        """A stage's records with ids above ``after_id``, in id order."""

    @abstractmethod
    def add_targets(
        self, plan: TaskPlan, kept: list[str], dropped: list[str], cursor: int, note: str | None = None
    ) -> None:
        """Remember derived targets (each once per stage) and move the stage's cursor to ``cursor``;
        ``dropped`` ones (out of scope) are remembered as dropped and counted once, ``note`` logged then."""

    @abstractmethod
    def chunk_targets(
        self, plan: TaskPlan, size: int, *, partial_ok: bool, finish: bool, parts: list[str] | None = None
    ) -> int:
        """Turn the stage's remembered, unassigned targets into tasks of ``size`` (a shorter last one only
        when ``partial_ok``); ``finish`` marks the stage fully planned. Returns the tasks written.
        With ``parts`` (parameter overrides, JSON object texts: a ``split_ports`` stage) every target
        becomes one task per part instead, each holding that one target and its part as ``params``."""

    @abstractmethod
    def complete_stage(self, run_id: str, stage_id: str) -> StageState | None:
        """End the stage (completed, or failed when a task failed) if none of its tasks is open."""


class Store(ABC):
    """An open store; see the module docstring for its parts and its error contract."""

    runs: Runs
    results: Results
    events: Events
    agents: Agents
    queue: TaskQueue
    plans: Plans
    history: History
    schedules: Schedules

    #: where it is, for messages (a path, or a URL without its password)
    location: str
    #: what ``open_store`` takes to open this store again (a URL may hold a password: never print it)
    address: str

    @abstractmethod
    def close(self) -> None: ...

    def interrupt(self) -> None:
        """From another thread, before closing: abort the call in flight on this store's connection
        (a statement, a reconnect with backoff), so the closer never waits on it."""
        self.db.interrupt()  # type: ignore[attr-defined]

    @abstractmethod
    def change_token(self) -> int:
        """A number that moves when another connection commits: cheap change detection for watchers."""

    @abstractmethod
    def console_view(self, version: int, selected_run: str | None) -> ConsoleView:
        """Everything the console's main screen draws, read consistently in one transaction."""

    def read_console_view(self, version: int, selected_run: str | None) -> ConsoleView:
        """The reads behind :meth:`console_view`; each backend runs them inside its one snapshot."""
        runs = self.runs.newest(MAX_RUNS)
        if selected_run is None or all(r.id != selected_run for r in runs):
            selected_run = runs[0].id if runs else None
        stages_by_run = self.runs.stages_of([r.id for r in runs])
        return ConsoleView(
            version=version,
            runs=tuple(runs),
            selected_run=selected_run,
            stages=stages_by_run.get(selected_run, ()) if selected_run else (),
            stages_by_run=stages_by_run,
            agents=tuple(self.agents.all()),
            results=tuple(self.results.latest(FEED_RESULTS)),
            events=tuple(self.events.recent(limit=FEED_EVENTS)),
            total_results=sum(r.results for r in runs),
        )

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
