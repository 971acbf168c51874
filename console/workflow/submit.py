"""Turning operator input into a run: validate everything first, then write once.

Shared by the CLI (`run`, `submit`) and the console's new-run modal, so both refuse the
same bad input with the same one-line message, and neither writes a half-made run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.errors import BadInput
from console.targets.sets import parse_scope, parse_targets
from console.workflow.definition import freeze
from console.workflow.models import load_workflows


@dataclass(frozen=True)
class PreparedRun:
    """A validated run, ready to be written."""

    workflow: str
    definition: dict[str, Any]
    targets: str | None
    scope: str | None
    agents: str | None
    priority: int
    workflows_file: str

    def create(self, store: Any) -> str:
        return str(
            store.runs.create(
                self.workflow, self.definition, self.targets, scope=self.scope, agents=self.agents,
                priority=self.priority, workflows_file=self.workflows_file,
            )
        )


def prepare_run(
    *,
    workflows_file: str | Path | None,
    workflow: str,
    targets: str | None,
    scope: str | None = None,
    priority: int = 0,
    agents: str | None = None,
) -> PreparedRun:
    """Load the workflow, check targets and scope; BadInput (one line) on anything wrong."""
    wf_file = load_workflows(workflows_file)
    wf = wf_file.get(workflow)
    readers = [s.id for s in wf.stages if s.source == "input"]
    canonical_targets: str | None = None
    if targets is not None and targets.strip():
        target_set = parse_targets(targets, field="--targets")
        if len(target_set) == 0:
            raise BadInput("no targets given", field="--targets")
        canonical_targets = target_set.format()
    elif readers:
        raise BadInput(f"required: stage {readers[0]!r} of {workflow!r} reads input", field="--targets")
    canonical_scope = parse_scope(scope, field="--scope").format() if scope and scope.strip() else None
    if not -1_000_000 <= priority <= 1_000_000:
        raise BadInput("must be between -1000000 and 1000000", field="--priority")
    return PreparedRun(
        workflow=workflow,
        definition=freeze(workflow, wf),
        targets=canonical_targets,
        scope=canonical_scope,
        agents=agents,
        priority=priority,
        workflows_file=str(wf_file.path or workflows_file or ""),
    )
