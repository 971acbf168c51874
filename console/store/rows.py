"""What the store returns: typed, immutable rows. The CLI, the console and the master read these.

Every backend builds the same rows, so nothing above ``console/store`` knows which engine
answered. Rows are frozen dataclasses (``slots``: a results page or a claim batch holds many).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from console.status import AgentState, RunState, StageState


@dataclass(frozen=True, slots=True)
class RunRow:
    """One run: what was asked (workflow, targets, scope, agents, priority) and where it stands."""

    id: str
    workflow: str
    state: RunState
    priority: int = 0
    targets: str | None = None
    scope: str | None = None
    agents: str | None = None
    workflows_file: str | None = None
    created: float | None = None
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    #: the master working on it, and when that master last said so
    owner: str | None = None
    owner_seen: float | None = None
    #: a stop was asked for; the owner is cancelling the run's tasks
    stop_requested: bool = False
    #: addresses, ranges and hosts never contacted (target syntax, canonical form)
    exclude: str | None = None
    #: probes/s summed over the fleet (``--max-rate``) and per target address (``--host-rate``); None = unbounded
    max_rate: int | None = None
    host_rate: int | None = None
    #: where the end-of-run notification goes (``--notify``)
    notify: str | None = None
    #: ``user@host`` of whoever submitted it, and the schedule that started it (if one did)
    submitted_by: str | None = None
    schedule_id: str | None = None
    #: seconds spent paused since it started, and since when it is paused (None when it is not)
    paused_s: float = 0.0
    paused_at: float | None = None
    #: progress summed over the run's stages (filled by the listing reads, 0 elsewhere)
    tasks_total: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    results: int = 0


@dataclass(frozen=True, slots=True)
class StageRow:
    """One stage's progress (its definition lives in the run's stored workflow)."""

    run_id: str
    id: str
    idx: int
    tool: str
    state: StageState
    tasks_total: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    results: int = 0
    dropped: int = 0
    #: every task of the stage has been planned
    planned: bool = False
    #: input stages: the next target index; derived stages: the last source record read
    cursor: int = 0
    started: float | None = None
    ended: float | None = None


@dataclass(frozen=True, slots=True)
class AgentRow:
    """One box as its master last reported it."""

    name: str
    kind: str = ""
    address: str = ""
    state: AgentState = AgentState.DOWN
    slots: int = 0
    busy: int = 0
    tasks_done: int = 0
    failures: int = 0
    last_seen: float | None = None
    latency_ms: float | None = None
    python: str | None = None
    programs: dict[str, Any] = field(default_factory=dict)
    hash: str | None = None
    error: str | None = None
    master: str | None = None


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    ts: float
    run_id: str | None
    level: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A task of a run that failed for good, with the reason its last attempt gave (kept whole up to
    4,096 characters): what `status` names when a run failed."""

    task_id: int
    stage_id: str
    agent: str | None
    error: str
    ended: float | None = None


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One stored record; ``data`` is the validated JSON text as stored (decoded on demand)."""

    id: int
    run_id: str
    stage_id: str
    type: str
    key: str
    target: str
    agent: str
    task_id: int | None
    ts: str
    data: str
    #: the master that dispatched the record's task (None: stored before masters were recorded)
    master: str | None = None

    def data_dict(self) -> dict[str, Any]:
        try:
            value = json.loads(self.data)
        except (TypeError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def sort_value(self, sort: str) -> str | int:
        """This row's value of a ``SORT_KEYS`` column (the keyset bound of a sorted page)."""
        return self.id if sort == "id" else str(getattr(self, "stage_id" if sort == "stage" else sort))

    def as_raw(self) -> tuple[Any, ...]:
        """The export's raw row: (id, run, stage, type, key, target, agent, task_id, ts, data_json, master)."""
        return (self.id, self.run_id, self.stage_id, self.type, self.key, self.target, self.agent, self.task_id,
                self.ts, self.data, self.master)


@dataclass(frozen=True, slots=True)
class MasterRow:
    """A master sharing the store, as its last heartbeat reported it (``fleetscan masters``)."""

    id: str
    host: str
    pid: int | None
    started: float | None
    #: wall time of the last heartbeat
    seen: float | None
    agents: int
    in_flight: int

    def record(self) -> dict[str, Any]:
        """SPEC's ``masters --json`` object."""
        return {
            "id": self.id, "host": self.host, "pid": self.pid, "agents": self.agents, "in_flight": self.in_flight,
            "started": self.started, "heartbeat": self.seen,
        }


@dataclass(frozen=True, slots=True)
class OwnedRun:
    """What a master needs of a run it works on (the stored workflow definition included)."""

    id: str
    state: RunState
    stop_requested: bool
    priority: int
    #: the stored workflow definition as JSON text (decoded by ``definition`` only when a master takes
    #: the run up: the owned runs are re-read on every control round)
    definition_json: str
    targets: str | None
    scope: str | None
    #: the run's canonical --exclude SPEC (None: nothing excluded)
    exclude: str | None = None

    @property
    def definition(self) -> dict[str, Any]:
        value = json.loads(self.definition_json)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task leased to a master by a claim: ``attempts`` already counts this attempt."""

    id: int
    run_id: str
    stage_id: str
    #: the task's targets as the JSON list text the planner stored (spliced into the task line as is)
    targets: str
    attempts: int
    max_attempts: int
    priority: int
    pinned: str | None
    #: boxes this task already failed on
    tried: tuple[str, ...] = ()
    #: the task's own parameter overrides (JSON object text: a ``split_ports`` task's port part), or None
    params: str | None = None
    #: probes/s granted to this task from its run's rate budget (None: the run has no budget)
    rate: float | None = None


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A record of a stage as the planner reads it to derive the next stage's targets."""

    id: int
    type: str
    target: str
    data: dict[str, Any]


#: how many of the newest results and events a ConsoleView holds (the console's live feeds)
FEED_RESULTS = 200
FEED_EVENTS = 200
#: the newest runs a ConsoleView lists (older ones stay reachable with `fleetscan status`)
MAX_RUNS = 200


@dataclass(frozen=True)
class ConsoleView:
    """One consistent picture of the store for the console's main screen."""

    version: int
    runs: tuple[RunRow, ...] = ()
    selected_run: str | None = None
    stages: tuple[StageRow, ...] = ()
    #: every listed run's stages, so moving the cursor redraws at once without a store read
    stages_by_run: dict[str, tuple[StageRow, ...]] = field(default_factory=dict)
    agents: tuple[AgentRow, ...] = ()
    results: tuple[ResultRow, ...] = ()
    events: tuple[EventRow, ...] = ()
    total_results: int = 0


#: what the results browser can sort by: a record's own columns (``id`` is arrival order)
SORT_KEYS = ("id", "stage", "type", "key", "target", "agent", "ts")
#: field names a filter reads from the record's columns; any other name is a ``data`` field
COLUMN_FIELDS = ("stage", "type", "key", "target", "agent")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def parse_query(query: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """Split what the operator typed into field filters (``port=443 status=fail``) and free text.

    A word ``NAME=VALUE`` whose NAME is an identifier is a field filter; every other word is
    free text (kept in order, joined by single spaces). Names are checked here so that a
    backend can use them as a JSON path safely; values are only ever SQL parameters.
    """
    fields: list[tuple[str, str]] = []
    words: list[str] = []
    for word in query.split():
        name, eq, value = word.partition("=")
        if eq and value and _FIELD_NAME.fullmatch(name):
            fields.append((name.lower(), value))
        else:
            words.append(word)
    return tuple(fields), " ".join(words)


@dataclass(frozen=True, slots=True)
class ResultFilter:
    """Which records of a run the results browser shows, and in which order.

    Stage and type match exactly; ``fields`` match one field each (a record column named in
    ``COLUMN_FIELDS``, else that key of the record's data), exactly but without regard to case
    (``port=443`` matches the number 443); ``text`` is found anywhere in key, target or data.
    Sorting is by ``sort`` (one of ``SORT_KEYS``), ties broken by id, so keyset paging stays exact.
    """

    run_id: str
    stage: str | None = None
    type: str | None = None
    #: matched (case-insensitively, literally) against key, target and the record's data
    text: str = ""
    fields: tuple[tuple[str, str], ...] = ()
    sort: str = "id"
    descending: bool = False

    def __post_init__(self) -> None:
        if self.sort not in SORT_KEYS:
            raise ValueError(f"cannot sort results by {self.sort!r}")
        for name, _ in self.fields:
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"not a field name: {name!r}")

    @property
    def narrowed(self) -> bool:
        """Whether anything is filtered out (the sort order alone narrows nothing)."""
        return bool(self.stage or self.type or self.fields or self.text.strip())


@dataclass(frozen=True, slots=True)
class ResultPage:
    """A page of records in the filter's order, found by keyset (page 900 costs what page 1 costs)."""

    rows: tuple[ResultRow, ...]
    #: how many matching records come before this page
    offset: int
    total: int
    filter: ResultFilter
    #: False for a first page read without counting (``first_page(count=False)``): ``total`` is then
    #: only "more than this page" (the rows read plus one) until ``Results.counted`` gives the count
    counted: bool = True

    @property
    def first_id(self) -> int | None:
        return self.rows[0].id if self.rows else None

    @property
    def first_row(self) -> ResultRow | None:
        return self.rows[0] if self.rows else None

    @property
    def last_row(self) -> ResultRow | None:
        return self.rows[-1] if self.rows else None

    @property
    def last_id(self) -> int | None:
        return self.rows[-1].id if self.rows else None

    @property
    def has_next(self) -> bool:
        return self.offset + len(self.rows) < self.total

    @property
    def has_prev(self) -> bool:
        return self.offset > 0


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A recurring run: what each occurrence submits, how often, inside which local-time window."""

    id: str
    workflow: str
    every_s: int
    #: ``HH:MM-HH:MM`` in the master's local time (may wrap midnight), or None: any time
    window: str | None
    paused: bool
    created: float
    #: when the next occurrence is due (epoch seconds); the compare-and-set column of firing
    next_due: float
    targets: str | None = None
    scope: str | None = None
    agents: str | None = None
    priority: int = 0
    exclude: str | None = None
    max_rate: int | None = None
    host_rate: int | None = None
    notify: str | None = None
    submitted_by: str | None = None
    workflows_file: str | None = None
    #: the run the latest occurrence started, and when
    last_run: str | None = None
    last_fired: float | None = None
