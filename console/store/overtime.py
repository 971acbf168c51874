"""The store's interface for runs over time: what a diff reads, which run came before, amending a
run, notification bookkeeping (:class:`History`), and recurring runs (:class:`Schedules`).

Same error contract as :mod:`console.store.base` (StoreError and subclasses; RunNotFound for an
unknown run; BadInput for an unknown schedule).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from console.store.rows import RunRow, ScheduleRow
from console.store.writes import NewSchedule

#: one record as a diff reads it: (stage, type, key, data JSON)
KeyedRecord = tuple[str, str, str, str]


class History(ABC):
    """Runs over time: what a diff reads, which run came before, amending a run, notification bookkeeping."""

    @abstractmethod
    def keyed_pages(self, run_id: str, batch: int = 10_000) -> Iterator[list[KeyedRecord]]:
        """A run's records as :data:`KeyedRecord`, a page at a time in (stage, type, key) order, by code
        point (a keyset over the records' unique index), so two runs are merged as they stream in constant
        memory. The order must equal Python's ``str`` order (PostgreSQL: ``COLLATE "C"``)."""

    @abstractmethod
    def previous_run(self, run_id: str, *, same_schedule: bool = False) -> RunRow | None:
        """The latest ``completed`` run created before ``run_id`` with the same workflow and targets (with
        ``same_schedule`` and a run a schedule started: of that schedule), or None. RunNotFound if unknown."""

    @abstractmethod
    def definition(self, run_id: str) -> str:
        """The run's stored workflow definition, as the JSON text stored. RunNotFound if unknown."""

    @abstractmethod
    def amend(self, run_id: str, expected_definition: str, definition: dict[str, Any], stages: list[str],
              message: str) -> bool:
        """Store ``definition`` as the run's, logging ``message`` as an ``amend`` event, in one transaction,
        but only while the stored definition is still ``expected_definition`` and none of ``stages`` has a
        task, a remembered target or a planned mark; False (nothing written) when either moved."""

    @abstractmethod
    def notify_due(self, now: float, limit: int = 20) -> list[RunRow]:
        """Ended runs with a ``notify`` URL whose notification is neither done nor leased past ``now``."""

    @abstractmethod
    def notify_claim(self, run_id: str, now: float, lease_s: float) -> int:
        """Take the next delivery attempt of the run's notification (a compare-and-set: one process per
        attempt, however many masters); its number, or 0 when it is not due or another process has it."""

    @abstractmethod
    def notify_outcome(self, run_id: str, attempt: int, done: str | None, retry_at: float | None,
                       level: str, message: str) -> None:
        """Record attempt ``attempt``: ``done`` (``delivered`` / ``failed``: no more attempts) or a retry
        due at ``retry_at``; ``message`` logged as a ``notify`` event."""


class Schedules(ABC):
    """Recurring runs. A due occurrence fires exactly once however many masters share the store: firing is
    a compare-and-set on ``next_due`` in the same transaction as the run it creates."""

    @abstractmethod
    def add(self, schedule: NewSchedule) -> str:
        """Write the schedule; return its id."""

    @abstractmethod
    def all(self) -> list[ScheduleRow]:
        """Every schedule, oldest first."""

    @abstractmethod
    def resolve(self, prefix: str) -> str:
        """The id of the one schedule whose id is ``prefix`` or starts with it (4 characters or more); bad
        input (exit 2) naming the candidates otherwise, as for runs."""

    @abstractmethod
    def get(self, schedule_id: str) -> ScheduleRow:
        """The schedule; BadInput (field ``schedule``) if there is none."""

    @abstractmethod
    def remove(self, schedule_id: str) -> None:
        """Forget the schedule (its runs stay); BadInput if there is none."""

    @abstractmethod
    def set_paused(self, schedule_id: str, paused: bool, next_due: float | None = None) -> None:
        """Pause or resume (``next_due``, when given, replaces the due time); BadInput if there is none."""

    @abstractmethod
    def due(self, now: float) -> list[ScheduleRow]:
        """Schedules not paused whose ``next_due`` has come."""

    @abstractmethod
    def fire(self, schedule_id: str, expected_due: float, next_due: float, now: float, start: bool) -> str | None:
        """Move ``next_due`` from ``expected_due`` to ``next_due`` and, with ``start``, create the pending
        run of this occurrence (``schedule_id`` set), all in one transaction. The run's id; None when
        ``next_due`` had already moved (another master fired it) or nothing was started."""
