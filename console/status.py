"""Run, stage, task and agent states, with the small predicates the master and the UI share.

One definition of every state string the store holds, so a typo is a NameError
rather than a run stuck forever in a state nothing looks for (saq/litequeue style:
a ``StrEnum`` with ACTIVE and TERMINAL sets).
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """``enum.StrEnum`` for Python 3.10 too: members are their values, in str() and f-strings alike."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


class StageState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class TaskState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AgentState(StrEnum):
    """A box as the master sees it (stored in ``agents.state``)."""

    STARTING = "starting"
    UP = "up"
    DOWN = "down"
    #: kept out of new work for a while after failing again and again
    SET_ASIDE = "set_aside"


class CancelReason(StrEnum):
    """Why the master cancelled one execution of a task on an agent."""

    #: the run is being stopped
    STOP = "stop"
    #: another copy of the same task finished first
    LOSER = "loser"
    #: the task ran past its stage's timeout
    TIMEOUT = "timeout"
    #: the agent sent a record that failed validation
    INVALID = "invalid"
    #: the run is paused: the task goes back to the queue with its attempt given back
    PAUSE = "pause"


RUN_TERMINAL = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.STOPPED})
#: runs a master may own and work on (paused ones keep their owner but get no new dispatch)
RUN_ACTIVE = frozenset({RunState.PENDING, RunState.RUNNING, RunState.PAUSED})
STAGE_TERMINAL = frozenset({StageState.COMPLETED, StageState.FAILED})
#: tasks that still have work ahead of them (a stage is complete when none is left)
TASK_OPEN = frozenset({TaskState.QUEUED, TaskState.LEASED})
#: agent states in which a box holds a live link (a set-aside box still runs its pinned tasks)
AGENT_LINKED = frozenset({AgentState.UP, AgentState.SET_ASIDE})

def stage_label(run: RunState, stage: StageState) -> str:
    """What a stage is, as people read it: a stage of a paused run is not "running", nor is an
    unfinished stage of a stopped run (the store keeps the stage's own state; this is its label)."""
    if stage in STAGE_TERMINAL:
        return str(stage)
    if run == RunState.PAUSED and stage == StageState.RUNNING:
        return "paused"
    if run == RunState.STOPPED:
        return "stopped"
    return str(stage)


#: a master not seen for this long is dead; its runs are orphaned and may be taken over
MASTER_DEAD_AFTER_S = 5.0

#: retry backoff: first retry after BACKOFF_BASE_S, doubling, capped
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 10.0


def can_retry(attempts: int, max_attempts: int) -> bool:
    """Attempts are counted at claim time, so ``attempts`` includes the one that just ended."""
    return attempts < max_attempts


def next_delay(attempts: int) -> float:
    """Backoff before the next attempt: 0.2 s, 0.4 s, 0.8 s ... capped at 10 s."""
    if attempts <= 0:
        return 0.0
    return min(BACKOFF_BASE_S * (2 ** (attempts - 1)), BACKOFF_MAX_S)


def run_outcome(stage_states: list[str]) -> RunState | None:
    """The run's final state once every stage is terminal, else None."""
    if not all(s in STAGE_TERMINAL for s in stage_states):
        return None
    if any(s == StageState.FAILED for s in stage_states):
        return RunState.FAILED
    return RunState.COMPLETED
