"""Stage graph checks of a workflow: what pydantic cannot see field by field.

Each problem is reported as ``(loc, message)`` with ``loc`` relative to the
workflow (``("stages", 2, "targets", "from")``), so the loader can point at
the exact line: references to missing or later stages, cycles, duplicate or
reserved ids, tools fed the wrong kind of target, ``where`` filters that can
never match what their source stage reports, ``{port}`` without ports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from console.targets import records
from console.workflow.params import ExecParams
from console.workflow.tools import BOX_TOOLS

if TYPE_CHECKING:
    from console.workflow.models import StageBase, Workflow

#: Where a stage with ``from: input`` / ``from: boxes`` reads its targets.
SOURCES = ("input", "boxes")


def _cycle(workflow: Workflow, start: int) -> list[str] | None:
    """The stage ids of a reference loop through stage ``start``, if there is one."""
    stages = workflow.stages
    by_id = {s.id: s for s in stages}
    chain = [stages[start].id]
    current = stages[start].targets.from_
    while current in by_id:
        chain.append(current)
        if current == chain[0]:
            return chain
        if chain.count(current) > 1:
            return None
        current = by_id[current].targets.from_
    return None


def check_workflow(workflow: Workflow) -> tuple[tuple[Any, ...], str] | None:
    """The first problem pydantic cannot see, as (loc relative to the workflow, message)."""
    stages = workflow.stages
    seen: dict[str, int] = {}
    for index, stage in enumerate(stages):
        if stage.id in SOURCES:
            return ("stages", index, "id"), f"{stage.id!r} is reserved (a stage reads `from: {stage.id}`)"
        if stage.id in seen:
            return ("stages", index, "id"), f"duplicate stage id {stage.id!r} (also stage {seen[stage.id]})"
        seen[stage.id] = index
    for index, stage in enumerate(stages):
        problem = _check_stage(workflow, index, stage, seen)
        if problem is not None:
            return problem
    return None


def _check_stage(
    workflow: Workflow, index: int, stage: StageBase, positions: dict[str, int]
) -> tuple[tuple[Any, ...], str] | None:
    here: tuple[Any, ...] = ("stages", index)
    source = stage.targets.from_
    kind = stage.targets.type
    tool = stage.tool
    spec = stage.tool_spec
    if source not in SOURCES:
        if source == stage.id:
            return (*here, "targets", "from"), f"cycle: stage {stage.id!r} reads its own results"
        if source not in positions:
            known = ", ".join([*SOURCES, *(s.id for s in workflow.stages[:index])])
            return (*here, "targets", "from"), f"no stage {source!r} (known here: {known})"
        if positions[source] > index:
            loop = _cycle(workflow, index)
            if loop:
                return (*here, "targets", "from"), "cycle: " + " -> ".join(loop)
            return (*here, "targets", "from"), (
                f"stage {source!r} comes later; a stage reads from input, boxes or an earlier stage"
            )
    if spec.boxes == "only" and source != "boxes":
        return (*here, "targets", "from"), f"{tool} checks the boxes themselves: use `from: boxes`"
    if source == "boxes" and spec.boxes == "never":
        per_box = ", ".join(BOX_TOOLS)
        return (*here, "targets", "from"), f"{tool} scans targets; only {per_box} run per box"
    if spec.takes is not None and kind not in spec.takes:
        wanted = " or ".join(sorted(spec.takes))
        return (*here, "targets", "type"), f"{tool} takes {wanted} targets, not {kind}"
    if stage.stream and source in SOURCES:
        return (*here, "stream"), "stream needs a source stage (it reads results as they arrive)"
    problem = _check_host_ports(stage, here)
    if problem is not None:
        return problem
    if stage.output:
        possible = stage.can_report
        for pos, rtype in enumerate(stage.output):
            if rtype not in possible:
                reports = ", ".join(sorted(possible))
                return (*here, "output", pos), f"{tool} never reports {rtype} (it reports {reports})"
    where = stage.targets.where
    if where is not None and source in SOURCES:
        return (*here, "targets", "where"), f"`where` filters a stage's results; {source} has none"
    if source not in SOURCES:
        problem = _check_where(workflow.stage(source), stage, here)
        if problem is not None:
            return problem
    params = stage.with_
    if isinstance(params, ExecParams):
        if params.timeout > stage.timeout:
            return (*here, "with", "timeout"), (
                f"the program's timeout ({params.timeout:g} s) is longer than the stage's task timeout "
                f"({stage.timeout:g} s): raise `timeout` of the stage too"
            )
        for pos, arg in enumerate(params.argv):
            if arg == "{port}" and kind in ("host", "host_ports"):
                return (*here, "with", "argv", pos), "{port} needs `type: port` or `type: url` targets"
            if arg == "{ports}" and kind == "host":
                return (*here, "with", "argv", pos), "{ports} needs `type: host_ports` (or port) targets"
    return None


def _check_host_ports(stage: StageBase, here: tuple[Any, ...]) -> tuple[tuple[Any, ...], str] | None:
    """``host_ports`` groups a finished source stage's records by host: only for exec (and noop)."""
    if stage.targets.type != "host_ports":
        return None
    if stage.targets.from_ in SOURCES:
        return (*here, "targets", "type"), "host_ports groups a stage's records by host: read from an earlier stage"
    if stage.stream:
        return (*here, "stream"), "host_ports needs each host's whole port list: it cannot stream"
    if stage.tool not in ("exec", "noop"):
        return (*here, "targets", "type"), f"{stage.tool} does not take host_ports targets (exec does: {{host}} {{ports}})"
    return None


def _check_where(
    source: StageBase, stage: StageBase, here: tuple[Any, ...]
) -> tuple[tuple[Any, ...], str] | None:
    """``where`` keys and ``type`` must be able to match what the source stage reports."""
    produced = source.outputs
    where = stage.targets.where or {}
    types = produced
    if "type" in where:
        wanted = where["type"] if isinstance(where["type"], list) else [where["type"]]
        for value in wanted:
            if value not in records.RECORD_TYPES:
                return (*here, "targets", "where", "type"), (
                    f"unknown result type {value!r} (known: {', '.join(records.RECORD_TYPES)})"
                )
            if value not in produced:
                return (*here, "targets", "where", "type"), (
                    f"stage {source.id!r} ({source.tool}) reports {', '.join(sorted(produced))}, never {value}"
                )
        types = frozenset(str(v) for v in wanted)
    known_fields = frozenset().union(*(records.FIELDS[t] for t in types)) if types else frozenset()
    for key in where:
        if key != "type" and key not in known_fields:
            return (*here, "targets", "where", key), (
                f"no field {key!r} in {', '.join(sorted(types))} records "
                f"(fields: type, {', '.join(sorted(known_fields))})"
            )
    kind = stage.targets.type
    portless = all("port" not in records.FIELDS[t] and t != "http" for t in types)
    if kind in ("port", "url", "host_ports") and types and portless:
        names = ", ".join(sorted(types))
        return (*here, "targets", "type"), f"{names} records have no port to make a {kind} from"
    return None
