"""The console's writes: submit, pause/resume, stop. Plain store intents, no Textual.

Each call opens a store for the calling thread (a store is used by one thread at a
time) and closes it again, so the UI can run them on short thread workers.
A master — ours or another process's — notices within a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from console.errors import BadInput
from console.status import RUN_TERMINAL, RunState

if TYPE_CHECKING:
    from console.store.base import Store


@contextmanager
def opened_store(db_path: str | Path) -> Iterator[Store]:
    from console.store import open_store

    with open_store(db_path) as store:
        yield store


@dataclass(frozen=True)
class NewRunForm:
    """What the new-run modal collected, as typed (validation happens in ``submit_run``)."""

    workflow: str
    targets: str
    scope: str = ""
    agents: str = ""
    priority: str = "0"


def parse_priority(text: str) -> int:
    try:
        return int(text.strip() or "0")
    except ValueError:
        raise BadInput(f"not a whole number: {text.strip()!r}", field="priority") from None


def submit_run(db_path: str | Path, workflows_file: str | Path | None, form: NewRunForm) -> str:
    """Validate everything first (BadInput names the field), then write the run in one go."""
    from console.fleet.inventory import parse_agents_source
    from console.workflow.models import default_workflows_path
    from console.workflow.submit import prepare_run

    if not form.workflow.strip():
        raise BadInput("pick a workflow", field="workflow")
    if not form.targets.strip():
        raise BadInput("give at least one target", field="targets")
    priority = parse_priority(form.priority)
    agents = form.agents.strip() or "local"
    parse_agents_source(agents)
    prepared = prepare_run(
        workflows_file=Path(workflows_file) if workflows_file else default_workflows_path(),
        workflow=form.workflow.strip(),
        targets=form.targets.strip(),
        scope=form.scope.strip() or None,
        priority=priority,
        agents=agents,
    )
    with opened_store(db_path) as store:
        return str(prepared.create(store))


def toggle_pause(db_path: str | Path, run_id: str) -> tuple[str, str]:
    """Pause a pending/running run, resume a paused one; returns (state before, state after)."""
    with opened_store(db_path) as store:
        before = store.runs.get(run_id).state
        if before == RunState.PAUSED:
            after = store.runs.resume(run_id)
        elif before in RUN_TERMINAL:
            after = before
        else:
            after = store.runs.pause(run_id)
        return str(before), str(after)


def request_stop(db_path: str | Path, run_id: str) -> str:
    with opened_store(db_path) as store:
        return str(store.runs.stop(run_id))


def workflow_names(workflows_file: str | Path | None) -> list[str]:
    """Names in the workflows file, in file order (BadInput if the file is wrong)."""
    from console.workflow.models import default_workflows_path, load_workflows

    path = Path(workflows_file) if workflows_file else default_workflows_path()
    return list(load_workflows(path).workflows)
