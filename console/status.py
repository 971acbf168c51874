"""Run, stage and task states, with the small predicates the master and the UI share.

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


RUN_TERMINAL = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.STOPPED})
#: runs a master may own and work on (paused ones keep their owner but get no new dispatch)
RUN_ACTIVE = frozenset({RunState.PENDING, RunState.RUNNING, RunState.PAUSED})
STAGE_TERMINAL = frozenset({StageState.COMPLETED, StageState.FAILED})
TASK_ACTIVE = frozenset({TaskState.LEASED})
TASK_TERMINAL = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})

#: ``runs.error`` value that carries a stop intent until the owner has cancelled its tasks
STOP_REQUESTED = "stop requested"

#: a master not seen for this long is dead; its runs are orphaned and may be taken over
MASTER_DEAD_AFTER_S = 5.0

#: retry backoff: first retry after BACKOFF_BASE_S, doubling, capped
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 10.0


def is_terminal_run(state: str) -> bool:
    return state in RUN_TERMINAL


def can_retry(attempts: int, max_attempts: int) -> bool:
    """Attempts are counted at claim time, so ``attempts`` includes the one that just ended."""
    return attempts < max_attempts


def next_delay(attempts: int) -> float:
    """Backoff before the next attempt: 0.2 s, 0.4 s, 0.8 s ... capped at 10 s."""
    if attempts <= 0:
        return 0.0
    return min(BACKOFF_BASE_S * (2 ** (attempts - 1)), BACKOFF_MAX_S)


def is_expired(lease_expires: float | None, now: float) -> bool:
    """A lease with no expiry never expires on its own (only its master releases it)."""
    return lease_expires is not None and lease_expires <= now


def run_outcome(stage_states: list[str]) -> RunState | None:
    """The run's final state once every stage is terminal, else None."""
    if not all(s in STAGE_TERMINAL for s in stage_states):
        return None
    if any(s == StageState.FAILED for s in stage_states):
        return RunState.FAILED
    return RunState.COMPLETED
