"""Amending a run: stages that have no task planned yet take the definitions of the same-named workflow
in another workflow file; stages already started keep theirs.

The file is validated like any workflow file, the merged definition is validated again as a whole (its
stage graph included), and the store writes it only while none of the amended stages has started and
the stored definition is still the one read (a compare-and-set): bad input, or a stage that started
meanwhile, changes nothing. The owning master notices the new definition on its next control round.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from console.errors import BadInput
from console.status import RUN_TERMINAL, StageState
from console.store.base import Store
from console.workflow.definition import RunDefinition, freeze
from console.workflow.models import load_workflows


@dataclass(frozen=True)
class Amendment:
    run_id: str
    #: stages that took a new definition
    amended: tuple[str, ...]
    #: stages the file changes that had started already (they keep theirs)
    kept: tuple[str, ...]


def amend_run(store: Store, run_id: str, workflows_file: str | Path) -> Amendment:
    """Amend ``run_id`` from ``workflows_file``; BadInput (nothing written) on anything wrong."""
    run = store.runs.get(run_id)
    if run.state in RUN_TERMINAL:
        raise BadInput(f"run {run_id} has ended ({run.state}): nothing left to amend", field="run")
    file = str(workflows_file)
    workflow = load_workflows(workflows_file).get(run.workflow)
    new_def = freeze(run.workflow, workflow)
    stored_text = store.history.definition(run_id)
    stored: dict[str, Any] = json.loads(stored_text)
    old_stages: list[dict[str, Any]] = list(stored.get("stages") or [])
    new_by_id = {str(s["id"]): s for s in new_def["stages"]}
    old_ids = [str(s.get("id")) for s in old_stages]
    if set(new_by_id) != set(old_ids):
        raise BadInput(
            f"workflow {run.workflow!r} must keep the run's stages ({', '.join(old_ids)}); it has "
            f"{', '.join(new_by_id)}", file=file, field=f"workflows.{run.workflow}.stages",
        )
    rows = {r.id: r for r in store.runs.stages(run_id)}
    fresh = {
        sid for sid, r in rows.items()
        if r.state == StageState.PENDING and not r.planned and r.cursor == 0 and r.tasks_total == 0
    }
    merged_stages, amended, kept = [], [], []
    for old in old_stages:
        sid = str(old.get("id"))
        new = new_by_id[sid]
        if _same(old, new):
            merged_stages.append(old)
        elif sid in fresh:
            merged_stages.append(new)
            amended.append(sid)
        else:
            merged_stages.append(old)
            kept.append(sid)
    merged = {**stored, "stages": merged_stages}
    try:
        RunDefinition.model_validate(merged)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        raise BadInput(f"the amended definition is not valid: {first.get('msg', 'invalid')}", file=file,
                       field=f"workflows.{run.workflow}") from None
    if amended:
        note = f"stage(s) {', '.join(amended)} amended from {file}"
        if kept:
            note += f"; {', '.join(kept)} already started, kept"
        if not store.history.amend(run_id, stored_text, merged, amended, note):
            raise BadInput(f"run {run_id} moved while amending (a stage started): nothing changed; try again",
                           field="run")
    return Amendment(run_id, tuple(amended), tuple(kept))


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)
