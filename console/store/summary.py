"""A run's summary: SPEC's ``--json`` status object, built from the store's rows (no SQL here,
so every backend answers the same)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from console.status import RunState, stage_label
from console.store.rows import RunRow, StageRow, TaskFailure


def _failure_text(run: RunRow, failures: list[TaskFailure]) -> str | None:
    """The run's error, naming the first failed task and its reason (a stage list alone says too little)."""
    if not failures or run.state != RunState.FAILED:
        return run.error
    first = failures[0]
    where = f" on {first.agent}" if first.agent else ""
    more = f" (and {len(failures) - 1} more failed task(s))" if len(failures) > 1 else ""
    named = f"task {first.task_id} of stage {first.stage_id} failed{where}: {first.error}{more}"
    return f"{run.error}; {named}" if run.error else named


def summary(
    run: RunRow, stage_rows: Iterable[StageRow], failures: list[TaskFailure] | None = None,
    unserved: bool = False,
) -> dict[str, Any]:
    """SPEC's status object for one run (plus workflow, created, priority, failures, the run's request)."""
    stages = [
        {
            "id": s.id, "state": stage_label(run.state, s.state), "tasks_total": s.tasks_total, "tasks_done": s.tasks_done,
            "tasks_failed": s.tasks_failed, "results": s.results, "dropped": s.dropped,
        }
        for s in stage_rows
    ]
    end = run.ended if run.ended is not None else time.time()
    if run.paused_at is not None:
        end = min(end, run.paused_at)  # paused (or stopped while paused): the clock stopped then
    duration = round(max(0.0, end - run.started - run.paused_s), 3) if run.started is not None else 0.0
    return {
        "run": run.id, "state": str(run.state), "stages": stages,
        "results": sum(s["results"] for s in stages), "duration_s": duration,
        "workflow": run.workflow, "created": run.created, "priority": run.priority,
        "error": _failure_text(run, failures or []),
        "failures": [
            {"task": f.task_id, "stage": f.stage_id, "agent": f.agent, "error": f.error} for f in failures or []
        ],
        "waiting_for_master": unserved,
        "targets": run.targets, "scope": run.scope if run.scope is not None else run.targets,
        "exclude": run.exclude, "agents": run.agents, "max_rate": run.max_rate, "host_rate": run.host_rate,
        "notify": run.notify, "submitted_by": run.submitted_by, "schedule": run.schedule_id,
    }
