"""What callers hand the store to write: a stage's planning handle and the master's batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from console.status import TaskState


@dataclass(frozen=True)
class TaskPlan:
    """One stage of one run as the planner writes tasks for it."""

    run_id: str
    stage_id: str
    priority: int
    #: the stage's retries + 1
    max_attempts: int
    #: the run's stored definition (JSON text) the planner planned from: a write is refused
    #: (:class:`~console.errors.StaleDefinition`) when the run holds another one, so an amendment that
    #: lands between the planner's read and its write is never planned over with the old stage
    definition: str | None = None


#: One validated record as the master ingests it:
#: ``(run_id, stage_id, type, key, target, agent, task_id, ts, data_json)``. A plain tuple on
#: purpose: sqlite3 binds exact tuples fastest (a NamedTuple here cost a fifth of ingest speed).
NewRecord = tuple[str, str, str, str, str, str, int, str, str]


class EventLine(NamedTuple):
    run_id: str | None
    level: str
    kind: str
    message: str


@dataclass
class Completion:
    """A task reached a terminal state on ``agent``."""

    task_id: int
    run_id: str
    stage_id: str
    state: TaskState
    agent: str | None = None
    error: str | None = None


@dataclass
class Requeue:
    """A failed attempt to be tried again after ``not_before`` (wall clock), avoiding ``tried`` boxes."""

    task_id: int
    not_before: float
    tried: tuple[str, ...]
    error: str | None = None


@dataclass
class IngestBatch:
    """What the master flushes in one transaction: records, task outcomes, retries, events."""

    records: list[NewRecord] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    requeues: list[Requeue] = field(default_factory=list)
    events: list[EventLine] = field(default_factory=list)
    #: the master that dispatched these tasks (each record's ``master``)
    master: str | None = None

    def __bool__(self) -> bool:
        return bool(self.records or self.completions or self.requeues or self.events)


@dataclass(frozen=True)
class NewSchedule:
    """A validated schedule to write: the run it submits each time (a frozen definition, as a run stores
    it, so editing the workflow file later never changes what the schedule runs) and its timing."""

    workflow: str
    definition: dict[str, object]
    every_s: int
    window: str | None
    first_due: float
    targets: str | None = None
    scope: str | None = None
    agents: str | None = None
    priority: int = 0
    workflows_file: str | None = None
    exclude: str | None = None
    max_rate: int | None = None
    host_rate: int | None = None
    notify: str | None = None
    submitted_by: str | None = None
