"""Schedules as the operator sees them: next run, last run, its state and how many changes it brought."""

from __future__ import annotations

from typing import Any

from console.errors import FleetscanError
from console.history.diff import count_changes, diff_runs
from console.store.base import Store
from console.store.rows import ScheduleRow


def last_changes(store: Store, run_id: str) -> int | None:
    """How many records changed in ``run_id`` against the previous run of its schedule (or workflow and
    targets); None when there is nothing to compare with or the run has not completed."""
    try:
        run = store.runs.get(run_id)
        if str(run.state) != "completed":
            return None
        prev = store.history.previous_run(run_id, same_schedule=True)
        if prev is None:
            return None
        return sum(count_changes(diff_runs(store, prev.id, run_id)).values())
    except FleetscanError:
        return None


def schedule_view(store: Store, row: ScheduleRow, *, with_changes: bool = True) -> dict[str, Any]:
    """One schedule as a dict (``schedule list --json`` and the console's schedules screen)."""
    last_state = None
    changes = None
    if row.last_run is not None:
        try:
            last_state = str(store.runs.get(row.last_run).state)
        except FleetscanError:
            last_state = None
        if with_changes:
            changes = last_changes(store, row.last_run)
    return {
        "id": row.id, "workflow": row.workflow, "targets": row.targets, "every_s": row.every_s,
        "window": row.window, "paused": row.paused, "next_due": row.next_due, "notify": row.notify,
        "last_run": row.last_run, "last_fired": row.last_fired, "last_state": last_state, "last_changes": changes,
    }
