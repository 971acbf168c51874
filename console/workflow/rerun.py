"""A re-run: a new run with the same inputs as a stored one, its definition included.

"The same inputs" means what the first run was served from, not what the workflows file
says today: the stored definition (a run never changes when the file is edited, and its
re-run does not either), the same targets, scope, exclusions, agents, priority, rate
budgets and notification URL. Only who submitted it is new. Everything is validated again
(a value stored by an older release must pass today's checks), and nothing is written here:
the caller hands the ``PreparedRun`` to its store, as ``fleetscan run``/``submit`` do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from console.errors import BadInput
from console.runoptions import RunOptions
from console.status import RUN_TERMINAL
from console.targets.sets import parse_scope, parse_targets
from console.workflow.definition import load_definition
from console.workflow.submit import PreparedRun, check_notify_url, check_rate, submitter


@dataclass(frozen=True)
class StoredRequest:
    """What a stored run was asked to do (the fields of the store's run row a re-run needs)."""

    run_id: str
    workflow: str
    definition: dict[str, Any]
    targets: str | None
    scope: str | None
    exclude: str | None
    agents: str | None
    priority: int
    max_rate: int | None
    host_rate: int | None
    notify: str | None
    workflows_file: str | None
    finished: bool


def prepare_rerun(request: StoredRequest) -> PreparedRun:
    """The new run, validated; BadInput when the old run has not ended or its inputs no longer pass."""
    if not request.finished:
        raise BadInput(f"run {request.run_id} has not ended: pause, stop or wait for it first", field="run")
    load_definition(request.definition)  # the stored definition still reads as a workflow
    targets = parse_targets(request.targets, field="targets", stored=True).format() if request.targets else None
    scope = parse_scope(request.scope, field="scope", stored=True).format() if request.scope else None
    exclude = parse_scope(request.exclude, field="exclude", stored=True).format() if request.exclude else None
    options = RunOptions(
        exclude=exclude, max_rate=check_rate(request.max_rate, "max_rate"),
        host_rate=check_rate(request.host_rate, "host_rate"), notify=check_notify_url(request.notify, "notify"),
        submitted_by=submitter(),
    )
    return PreparedRun(
        workflow=request.workflow, definition=request.definition, targets=targets, scope=scope,
        agents=request.agents, priority=request.priority, workflows_file=request.workflows_file or "",
        options=options,
    )


def rerun_run(store: Any, run_id: str) -> str:
    """Write the re-run of ``run_id`` to ``store`` (a ``console.store`` Store) and return its id.
    BadInput or RunNotFound: nothing written."""
    run = store.runs.get(run_id)
    request = StoredRequest(
        run_id=run.id, workflow=run.workflow, definition=store.runs.definition(run.id), targets=run.targets,
        scope=run.scope, exclude=run.exclude, agents=run.agents, priority=run.priority, max_rate=run.max_rate,
        host_rate=run.host_rate, notify=run.notify, workflows_file=run.workflows_file,
        finished=run.state in RUN_TERMINAL,
    )
    return prepare_rerun(request).create(store)
