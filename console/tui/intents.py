"""The console's writes: submit, pause/resume, stop. Plain store intents, no Textual.

Each call opens a store for the calling thread (a store is used by one thread at a
time) and closes it again, so the UI can run them on short thread workers.
A master — ours or another process's — notices within a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    """What the new-run modal collected, as typed (validation happens in ``check_form``)."""

    workflow: str
    targets: str = ""
    scope: str = ""
    exclude: str = ""
    priority: str = "0"
    max_rate: str = ""
    host_rate: str = ""


#: the words a target parser starts its message with, said the way each field means it
_WHAT = {"scope": "not a scope entry", "exclude": "not an exclusion"}


def _field_message(field: str, err: BadInput) -> str:
    message = err.message
    if field in _WHAT and message.startswith("bad target"):
        message = _WHAT[field] + message[len("bad target"):]
    return message


def _whole(text: str, field: str, low: int, high: int) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"not a whole number: {text!r}", field=field) from None
    if not low <= value <= high:
        raise BadInput(f"must be from {low:,} to {high:,}", field=field)
    return value


def parse_priority(text: str) -> int:
    return _whole(text, "priority", -1_000_000, 1_000_000) or 0


@dataclass(frozen=True)
class WorkflowInfo:
    """A workflow as the modal offers it: its stages, and whether any of them reads targets."""

    name: str
    description: str
    stages: tuple[tuple[str, str, str], ...]  # (id, tool, source)

    @property
    def reads_input(self) -> bool:
        return any(source == "input" for _, _, source in self.stages)


def check_form(workflows_file: str | Path | None, form: NewRunForm) -> tuple[dict[str, str], Any]:
    """Every field checked on its own, so the operator sees every error at once.

    Returns ``(errors by field, None)``, or ``({}, the PreparedRun)`` when everything is valid.
    A file-level problem (the workflows file, an ``@file`` of targets) is the form's error.
    """
    from console.targets.sets import parse_scope, parse_targets
    from console.workflow.models import default_workflows_path, load_workflows
    from console.workflow.submit import MAX_RATE, check_rate, prepare_run

    errors: dict[str, str] = {}
    path = Path(workflows_file) if workflows_file else default_workflows_path()
    try:
        known = load_workflows(path).workflows
    except BadInput as err:
        return {"form": str(err)}, None
    name = form.workflow.strip()
    if not name:
        errors["workflow"] = "pick a workflow"
    elif name not in known:
        errors["workflow"] = f"unknown workflow {name!r} (known: {', '.join(known)})"
    values: dict[str, Any] = {}
    checks: list[tuple[str, Any]] = [
        ("targets", lambda: parse_targets(form.targets, field="targets") if form.targets.strip() else None),
        ("scope", lambda: parse_scope(form.scope, field="scope") if form.scope.strip() else None),
        ("exclude", lambda: parse_scope(form.exclude, field="exclude") if form.exclude.strip() else None),
        ("priority", lambda: parse_priority(form.priority)),
        ("max_rate", lambda: check_rate(_whole(form.max_rate, "max_rate", 1, MAX_RATE), "max_rate")),
        ("host_rate", lambda: check_rate(_whole(form.host_rate, "host_rate", 1, MAX_RATE), "host_rate")),
    ]
    for field, check in checks:
        try:
            values[field] = check()
        except BadInput as err:
            if err.file is not None:
                errors["form" if "form" not in errors else field] = str(err)
            else:
                errors[field] = _field_message(field, err)
    if "workflow" not in errors and "targets" not in errors and not form.targets.strip():
        readers = [s.id for s in known[name].stages if s.source == "input"]
        if readers:
            errors["targets"] = f"required: stage {readers[0]!r} of {name!r} reads targets"
    if errors:
        return errors, None
    try:
        prepared = prepare_run(
            workflows_file=path, workflow=name, targets=form.targets.strip() or None,
            scope=form.scope.strip() or None, priority=values["priority"], exclude=form.exclude.strip() or None,
            max_rate=values["max_rate"], host_rate=values["host_rate"],
        )
    except BadInput as err:
        field = (err.field or "").lstrip("-").replace("-", "_")
        return {field if field in NEW_RUN_FIELDS else "form": err.message if field else str(err)}, None
    return {}, prepared


#: the modal's fields, in order
NEW_RUN_FIELDS = ("workflow", "targets", "scope", "exclude", "priority", "max_rate", "host_rate")


def submit_run(db_path: str | Path, workflows_file: str | Path | None, form: NewRunForm,
               agents: str = "local") -> str:
    """Validate everything first (BadInput with every field's error), then write the run in one go.

    ``agents`` is the console's own agents source: the console's master serves the run with its
    boxes, so that is what the run records (the modal has no agents field to ignore).
    """
    errors, prepared = check_form(workflows_file, form)
    if errors:
        raise FormErrors(errors)
    with opened_store(db_path) as store:
        return str(replace(prepared, agents=agents).create(store))


class FormErrors(BadInput):
    """Every invalid field of the form at once (``errors``: field -> message)."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        first = next(iter(errors.items()))
        super().__init__(first[1], field=None if first[0] == "form" else first[0])


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
    return [info.name for info in workflow_infos(workflows_file)]


def workflow_infos(workflows_file: str | Path | None) -> list[WorkflowInfo]:
    """The workflows of the file in file order, each with its stages (BadInput if the file is wrong)."""
    from console.workflow.models import default_workflows_path, load_workflows

    path = Path(workflows_file) if workflows_file else default_workflows_path()
    return [
        WorkflowInfo(name, wf.description or "", tuple((s.id, s.tool, str(s.source)) for s in wf.stages))
        for name, wf in load_workflows(path).workflows.items()
    ]
