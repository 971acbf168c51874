"""What a run stores of its workflow, and how the planner and the master read it back.

A run is served from its own frozen copy of the workflow, never from the file:
:func:`freeze` dumps the validated :class:`~console.workflow.models.Workflow` to JSON
(with the workflow's name, each baseline stage's rules already inlined by the loader,
and each stage's ``output`` filled in), and :func:`load_definition` validates that dump
back into the same stage classes. Editing the workflows or rules file later never
changes a run already queued.

Runs stored by the previous release hold another shape, a dict per stage with the
agent's ``params`` in place of ``with``; :class:`RunDefinition` accepts it too, so an
existing database keeps working.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator

from console import yamlsrc
from console.errors import BadInput
from console.workflow.models import SKIP_GRAPH_CHECKS, Workflow, as_model, dump_workflow, validating_model

#: what the previous release's reader assumed when a stored stage left a key out
_PREVIOUS_DEFAULTS: dict[str, Any] = {"retries": 0}


class RunDefinition(Workflow):
    """A workflow as a run stores it: frozen at submit, with the workflow's name."""

    name: Annotated[str, Field(max_length=64)] = ""
    """The workflow's name in the file it came from (empty in hand-made definitions)."""

    @model_validator(mode="before")
    @classmethod
    def _previous_release(cls, data: Any) -> Any:
        """Stages stored by the previous release: ``params`` (the agent's) becomes ``with``."""
        if isinstance(data, Mapping) and isinstance(data.get("stages"), list):
            stages = [_previous_stage(s) if isinstance(s, Mapping) and "params" in s else s for s in data["stages"]]
            data = {**data, "stages": stages}
        return data


def _previous_stage(stage: Mapping[str, Any]) -> dict[str, Any]:
    """``{"id", "tool", "params", "targets": {"from", "type", "where"}, "chunk", ...}`` in today's shape.

    Keys the previous reader took as "use the default" (absent, or null) are left out,
    so today's defaults apply, except where that reader's default differs.
    """
    converted = {k: v for k, v in stage.items() if v is not None and k != "params"}
    converted["with"] = stage["params"] or {}
    for key, default in _PREVIOUS_DEFAULTS.items():
        converted.setdefault(key, default)
    targets = stage.get("targets")
    if isinstance(targets, Mapping):
        converted["targets"] = {k: v for k, v in targets.items() if v is not None}
    return converted


def freeze(name: str, workflow: Workflow) -> dict[str, Any]:
    """The JSON definition a run is served from (the workflow must come from the loader: rules inlined)."""
    stored = dump_workflow(workflow)
    for dumped, stage in zip(stored["stages"], workflow.stages, strict=True):
        dumped["output"] = sorted(stage.outputs)  # what the UI offers to filter by, without the tool table
    return {"name": name, **stored}


def load_definition(stored: str | Mapping[str, Any]) -> RunDefinition:
    """A run's stored definition as the model; BadInput (one line) when it is not one."""
    try:
        data = json.loads(stored) if isinstance(stored, str) else stored
        model = validating_model(RunDefinition, data.get("stages") if isinstance(data, Mapping) else None)
        return as_model(RunDefinition, model.model_validate(data, context=SKIP_GRAPH_CHECKS))
    except ValueError as exc:  # json.JSONDecodeError and pydantic's ValidationError alike
        raise BadInput(f"the run's stored definition is not valid: {_one_line(exc)}", field="definition") from None


def _one_line(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors(include_url=False)[0]
        where = yamlsrc.format_path(err.get("loc", ())) or "definition"
        return f"{where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
