"""workflows.yaml: pydantic models of the file, graph checks, and the loader.

The models *are* the file format (a docstring per field, unknown keys
rejected). Each stage is discriminated by ``tool``, so its ``with`` block is
validated by that tool's parameter model. What pydantic cannot see (stage
references, cycles, where-filters that can never match, placeholders that need
a port) is checked by :func:`check_workflow`, which reports the offending
field's path; the loader turns every problem into ONE line
``FILE:LINE:COL: path.to.field: message`` (:class:`~console.errors.BadInput`).

A run stores ``Workflow.model_dump(mode="json")`` and the master serves it from
that copy (``Workflow.model_validate``), so a baseline stage carries its rules
inlined: editing the rules file later never changes a queued run.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, ValidationInfo, model_validator

from console import records, yamlsrc
from console.errors import BadInput
from console.toolparams import (
    BannerParams,
    BaselineParams,
    DnsParams,
    ExecParams,
    HttpProbeParams,
    NoopParams,
    Scalar,
    StrictModel,
    TcpConnectParams,
    TcpPingParams,
    TlsCertParams,
    load_rules_file,
)
from console.toolparams import Name as StageId

#: Where a stage with ``from: input`` / ``from: boxes`` reads its targets.
SOURCES = ("input", "boxes")
#: The kind of target each tool takes (exec and noop take any).
TOOL_KINDS: dict[str, frozenset[str]] = {
    "tcp_ping": frozenset({"host"}),
    "tcp_connect": frozenset({"host"}),
    "dns": frozenset({"host"}),
    "banner": frozenset({"port"}),
    "tls_cert": frozenset({"port"}),
    "http_probe": frozenset({"url", "port"}),
}
#: Tools that may run once per box (``from: boxes``).
BOX_TOOLS = frozenset({"baseline", "exec", "noop"})
DEFAULT_FILE = "workflows.yaml"


class TargetsSpec(StrictModel):
    """Where a stage's targets come from and what each becomes."""

    from_: Annotated[str, Field(alias="from", min_length=1, max_length=64)] = "input"
    """``input`` (the run's --targets), ``boxes`` (one task per agent box), or an earlier stage's id."""
    type: Literal["host", "port", "url"] = "host"
    """What each kept record (or input target) becomes: ``host``, ``port`` (host:port) or ``url``."""
    where: dict[Annotated[str, Field(max_length=64)], Scalar | list[Scalar]] | None = None
    """Filter on the source stage's records: ``type`` and data fields; a list value matches any of its items."""


class StageBase(StrictModel):
    """Fields every stage has, whatever its tool."""

    id: StageId
    """Unique stage id within the workflow ([A-Za-z0-9_-], not ``input`` or ``boxes``)."""
    targets: TargetsSpec = Field(default_factory=TargetsSpec)
    """Source and type of the stage's targets."""
    chunk: Annotated[int, Field(gt=0, le=1_000_000)] = 64
    """At most this many targets per task."""
    retries: Annotated[int, Field(ge=0, le=100)] = 2
    """Extra attempts of a failed task, each on another agent when one exists."""
    timeout: Annotated[float, Field(gt=0, le=7 * 86400)] = 600.0
    """Seconds a task may run before it is cancelled."""
    stream: bool = False
    """Dispatch chunks as the source stage's results arrive, without waiting for it to end."""
    output: list[records.RecordType] | None = None
    """Result types this stage reports (defaults from the tool; needed to filter an exec/jsonl stage by type)."""

    @property
    def tool_name(self) -> str:
        """The stage's tool (each subclass has a ``tool`` literal)."""
        return str(getattr(self, "tool"))  # noqa: B009 - declared by the subclasses only

    @property
    def params(self) -> BaseModel:
        return getattr(self, "with_")  # type: ignore[no-any-return]  # noqa: B009 - declared by subclasses

    def outputs(self) -> frozenset[str]:
        """The result types this stage can report."""
        if self.output:
            return frozenset(self.output)
        params = self.params
        if isinstance(params, ExecParams):
            return params.outputs()
        return records.TOOL_OUTPUTS.get(self.tool_name, frozenset(records.RECORD_TYPES))

    def agent_params(self) -> dict[str, Any]:
        """The JSON ``params`` the agent receives for this stage's tasks."""
        params = self.params
        if isinstance(params, BaselineParams):
            return params.agent_params()
        if isinstance(params, TcpConnectParams):
            return params.agent_params()
        return params.model_dump(mode="json", exclude_none=True, by_alias=True)


def _with(model: type[BaseModel], required: bool = False) -> Any:
    doc = "The tool's parameters (see SPEC's table of built-in tools)."
    if required:
        return Field(alias="with", description=doc)
    return Field(default_factory=model, alias="with", description=doc)


class TcpPingStage(StageBase):
    tool: Literal["tcp_ping"]
    """Host discovery by TCP connect (an accept or a reset means up)."""
    with_: TcpPingParams = _with(TcpPingParams)


class TcpConnectStage(StageBase):
    tool: Literal["tcp_connect"]
    """TCP connect scan."""
    with_: TcpConnectParams = _with(TcpConnectParams)


class BannerStage(StageBase):
    tool: Literal["banner"]
    """What a service says first."""
    with_: BannerParams = _with(BannerParams)


class HttpProbeStage(StageBase):
    tool: Literal["http_probe"]
    """HTTP(S) GET: status, title, server."""
    with_: HttpProbeParams = _with(HttpProbeParams)


class TlsCertStage(StageBase):
    tool: Literal["tls_cert"]
    """The peer certificate of a TLS port."""
    with_: TlsCertParams = _with(TlsCertParams)


class DnsStage(StageBase):
    tool: Literal["dns"]
    """Resolve hostnames."""
    with_: DnsParams = _with(DnsParams)


class BaselineStage(StageBase):
    tool: Literal["baseline"]
    """Host hardening checks on the box itself (Elkeid baseline rules)."""
    with_: BaselineParams = _with(BaselineParams, required=True)


class ExecStage(StageBase):
    tool: Literal["exec"]
    """An external program run from an argv list (never a shell) with a named output parser."""
    with_: ExecParams = _with(ExecParams, required=True)


class NoopStage(StageBase):
    tool: Literal["noop"]
    """Does nothing (optionally sleeps, or emits synthetic records): for tests and benchmarks."""
    with_: NoopParams = _with(NoopParams)


Stage = Annotated[
    TcpPingStage
    | TcpConnectStage
    | BannerStage
    | HttpProbeStage
    | TlsCertStage
    | DnsStage
    | BaselineStage
    | ExecStage
    | NoopStage,
    Field(discriminator="tool"),
]
TOOLS: tuple[str, ...] = (
    "tcp_ping",
    "tcp_connect",
    "banner",
    "http_probe",
    "tls_cert",
    "dns",
    "baseline",
    "exec",
    "noop",
)


class Workflow(StrictModel):
    """One named workflow: a list of stages, each reading from input, boxes or an earlier stage."""

    description: Annotated[str, Field(max_length=4096)] = ""
    """One line saying what the workflow finds."""
    stages: Annotated[list[Stage], Field(min_length=1, max_length=256)]
    """The stages, in order; a stage reads only from input, boxes, or a stage above it."""

    @model_validator(mode="after")
    def _graph(self, info: ValidationInfo) -> Workflow:
        """Graph checks; the file loader defers them to report the exact field's line."""
        if not (info.context or {}).get("defer_checks"):
            problem = check_workflow(self)
            if problem is not None:
                loc, message = problem
                raise ValueError(f"{yamlsrc.format_path(loc)}: {message}")
        return self

    @property
    def typed_stages(self) -> list[StageBase]:
        """The stages as their common base type (what callers iterating stages need)."""
        return list(self.stages)

    def stage(self, stage_id: str) -> StageBase:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(stage_id)

    def stage_params(self, stage: StageBase | str) -> dict[str, Any]:
        """The JSON params the agent receives for ``stage`` (baseline rules inlined)."""
        return (self.stage(stage) if isinstance(stage, str) else stage).agent_params()

    def dependencies(self) -> dict[str, list[str]]:
        """Each stage's direct source stage (empty for input and boxes stages)."""
        ids = {s.id for s in self.stages}
        return {s.id: [s.targets.from_] if s.targets.from_ in ids else [] for s in self.stages}

    def ancestors(self, stage_id: str) -> list[str]:
        """All stages ``stage_id`` waits for, transitively, nearest first."""
        deps = self.dependencies()
        chain: list[str] = []
        current = deps.get(stage_id, [])
        while current and current[0] not in chain:
            chain.append(current[0])
            current = deps.get(current[0], [])
        return chain

    def independent(self, first: str, second: str) -> bool:
        """True when neither stage depends on the other: they may run side by side."""
        return first not in self.ancestors(second) and second not in self.ancestors(first)


class WorkflowFile(StrictModel):
    """A workflows file: named workflows."""

    workflows: Annotated[dict[StageId, Workflow], Field(min_length=1)]
    """Workflows by name ([A-Za-z0-9_-])."""
    _path: str | None = PrivateAttr(default=None)

    @property
    def path(self) -> str | None:
        """The file it was loaded from."""
        return self._path

    def get(self, name: str) -> Workflow:
        """The workflow ``name`` or BadInput listing the known ones."""
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(sorted(self.workflows))
            where = self._path or "the workflows file"
            raise BadInput(f"no workflow {name!r} in {where} (known: {known})", field="workflow") from None


# -- graph checks ---------------------------------------------------------------------


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
    tool = stage.tool_name
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
    if tool == "baseline" and source != "boxes":
        return (*here, "targets", "from"), "baseline checks the boxes themselves: use `from: boxes`"
    if source == "boxes" and tool not in BOX_TOOLS:
        return (
            *here,
            "targets",
            "from",
        ), f"{tool} scans targets; only {', '.join(sorted(BOX_TOOLS))} run per box"
    if tool in TOOL_KINDS and kind not in TOOL_KINDS[tool]:
        wanted = " or ".join(sorted(TOOL_KINDS[tool]))
        return (*here, "targets", "type"), f"{tool} takes {wanted} targets, not {kind}"
    if stage.stream and source in SOURCES:
        return (*here, "stream"), "stream needs a source stage (it reads results as they arrive)"
    where = stage.targets.where
    if where is not None and source in SOURCES:
        return (*here, "targets", "where"), f"`where` filters a stage's results; {source} has none"
    if source not in SOURCES:
        problem = _check_where(workflow.stage(source), stage, here)
        if problem is not None:
            return problem
    params = stage.params
    if isinstance(params, ExecParams):
        for pos, arg in enumerate(params.argv):
            if arg in ("{host}", "{port}") and kind == "host" and arg == "{port}":
                return (*here, "with", "argv", pos), "{port} needs `type: port` or `type: url` targets"
    return None


def _check_where(
    source: StageBase, stage: StageBase, here: tuple[Any, ...]
) -> tuple[tuple[Any, ...], str] | None:
    """``where`` keys and ``type`` must be able to match what the source stage reports."""
    produced = source.outputs()
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
                    f"stage {source.id!r} ({source.tool_name}) reports {', '.join(sorted(produced))}, never {value}"
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
    if (
        kind in ("port", "url")
        and types
        and all("port" not in records.FIELDS[t] and t != "http" for t in types)
    ):
        return (
            *here,
            "targets",
            "type",
        ), f"{', '.join(sorted(types))} records have no port to make a {kind} from"
    return None


# -- loading --------------------------------------------------------------------------


def default_workflows_path() -> Path:
    """``./workflows.yaml`` if present, else the packaged copy."""
    local = Path(DEFAULT_FILE)
    if local.is_file():
        return local
    return Path(str(resources.files("console").joinpath("data", DEFAULT_FILE)))


def parse_workflows(data: Any, smap: yamlsrc.SourceMap, base_dir: Path) -> WorkflowFile:
    """Validate a loaded document (with its source map) into a WorkflowFile, rules inlined."""
    if not isinstance(data, dict):
        raise yamlsrc.bad_input_at(smap, (), "expected a mapping with a `workflows:` key")
    try:
        wf_file = WorkflowFile.model_validate(data, context={"defer_checks": True})
    except ValidationError as exc:
        raise yamlsrc.validation_error_to_bad_input(exc, smap, skip=TOOLS) from None
    for name, workflow in wf_file.workflows.items():
        base: tuple[Any, ...] = ("workflows", name)
        problem = check_workflow(workflow)
        if problem is not None:
            loc, message = problem
            raise yamlsrc.bad_input_at(smap, (*base, *loc), message)
        for index, stage in enumerate(workflow.stages):
            if isinstance(stage.params, BaselineParams):
                where = (*base, "stages", index, "with")
                raw = data["workflows"][name]["stages"][index].get("with", {})
                stage.params.resolve(raw, smap, where, base_dir)
    return wf_file


def load_workflows(path: str | Path | None = None) -> WorkflowFile:
    """Load and check a workflows file (default: :func:`default_workflows_path`)."""
    file = Path(path) if path is not None else default_workflows_path()
    data, smap = yamlsrc.load_file(file)
    wf_file = parse_workflows(data, smap, file.resolve().parent)
    wf_file._path = str(file)
    return wf_file


def describe(wf_file: WorkflowFile) -> list[str]:
    """Lines for ``fleetscan workflows``: each workflow, its description and its stage graph."""
    lines: list[str] = []
    width = max((len(n) for n in wf_file.workflows), default=0)
    for name, workflow in wf_file.workflows.items():
        lines.append(f"{name.ljust(width)}  {workflow.description}".rstrip())
        for stage in workflow.stages:
            source = stage.targets.from_
            where = ""
            if stage.targets.where:
                where = " where " + ", ".join(f"{k}={v}" for k, v in stage.targets.where.items())
            stream = " (streamed)" if stage.stream else ""
            lines.append(
                f"{' ' * width}    {stage.id}: {stage.tool_name} on {stage.targets.type}s from {source}{where}{stream}"
            )
    return lines


__all__ = [
    "TOOLS",
    "StageBase",
    "TargetsSpec",
    "Workflow",
    "WorkflowFile",
    "check_workflow",
    "default_workflows_path",
    "describe",
    "load_rules_file",
    "load_workflows",
    "parse_workflows",
]
