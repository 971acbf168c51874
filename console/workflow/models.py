"""workflows.yaml: pydantic models of the file, and the loader.

The models *are* the file format (a docstring per field, unknown keys
rejected). There is one stage class per tool of :data:`console.workflow.tools.TOOLS`,
made from its entry: the stages are discriminated by ``tool``, so a stage's ``with``
block is validated by that tool's parameter model. What pydantic cannot see (stage
references, cycles, where-filters that can never match, placeholders that need a
port) is checked by :func:`console.workflow.graph.check_workflow`, which reports the
offending field's path; the loader turns every problem into ONE line
``FILE:LINE:COL: path.to.field: message`` (:class:`~console.errors.BadInput`), and
inlines each baseline stage's ``rules_file``.

These same classes are what a run stores and what the planner and the master read:
:mod:`console.workflow.definition` freezes a loaded workflow into its JSON dump and
reads it back with ``model_validate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, Field, PrivateAttr, ValidationInfo, create_model, model_validator

from console import yamlsrc
from console.errors import BadInput
from console.targets import records
from console.workflow.graph import SOURCES, check_workflow
from console.workflow.params import BaselineParams, Scalar, StrictModel, ToolParams, load_rules_file
from console.workflow.params import Name as StageId
from console.workflow.tools import TOOLS, Tool

DEFAULT_FILE = "workflows.yaml"
#: validation context that leaves out the graph checks: the file loader runs them itself
#: (to point at the line), and a run's stored definition was checked when it was submitted
SKIP_GRAPH_CHECKS: dict[str, Any] = {"graph_checks": False}


#: tools whose ``ports`` parameter ``split_ports`` may cut into parts (one task per host and part); an exec
#: stage splits too when its targets are ``host_ports`` and its argv reads ``{ports}`` (each host's list is cut)
SPLITTABLE_TOOLS = ("tcp_connect",)


class TargetsSpec(StrictModel):
    """Where a stage's targets come from and what each becomes."""

    from_: Annotated[str, Field(alias="from", min_length=1, max_length=64)] = "input"
    """``input`` (the run's --targets), ``boxes`` (one task per agent box), or an earlier stage's id."""
    type: Literal["host", "port", "url", "host_ports"] = "host"
    """What each kept record (or input target) becomes: ``host``, ``port`` (host:port), ``url``, or
    ``host_ports``: one target per host with all its ports from the source records (``{host}`` and
    ``{ports}`` in an exec argv; read once the source stage has ended)."""
    where: dict[Annotated[str, Field(max_length=64)], Scalar | list[Scalar]] | None = None
    """Filter on the source stage's records: ``type`` and data fields; a list value matches any of its items."""


class StageBase(StrictModel):
    """Fields every stage has, whatever its tool; each tool's class narrows ``tool`` and ``with``."""

    id: StageId
    """Unique stage id within the workflow ([A-Za-z0-9_-], not ``input`` or ``boxes``)."""
    tool: str
    """The built-in tool the stage runs."""
    with_: Annotated[ToolParams, Field(alias="with")]
    """The tool's parameters (see SPEC's table of built-in tools)."""
    targets: Annotated[TargetsSpec, Field(default_factory=TargetsSpec)]
    """Source and type of the stage's targets."""
    chunk: Annotated[int, Field(gt=0, le=1_000_000)] = 64
    """At most this many targets per task."""
    retries: Annotated[int, Field(ge=0, le=100)] = 2
    """Extra attempts of a failed task, each on another agent when one exists."""
    timeout: Annotated[float, Field(gt=0, le=7 * 86400)] = 600.0
    """Seconds a task may run before it is cancelled."""
    stream: bool = False
    """Dispatch chunks as the source stage's results arrive, without waiting for it to end."""
    split_ports: Annotated[int, Field(gt=0, le=65535)] | None = None
    """Cut each host's port list into tasks of at most this many ports (one host per such task), so
    one heavy host spreads over the whole fleet (tcp_connect, and exec on ``host_ports`` targets whose
    argv uses ``{ports}``)."""

    speculate: bool = False
    """Copy a slow task onto an idle agent (first result wins). Off by default: a copy probes every
    target of the task a second time, from a second box; worth it only where doubled traffic is
    acceptable and a slow box would otherwise hold the stage up."""
    output: list[records.RecordType] | None = None
    """Result types this stage reports (defaults from the tool; needed to filter an exec/jsonl stage by type)."""

    @model_validator(mode="after")
    def _splittable(self) -> StageBase:
        """``split_ports`` cuts the stage's own ``ports`` parameter: only a tool that has one can split."""
        if self.split_ports is None or self.tool in SPLITTABLE_TOOLS:
            return self
        if self.tool == "exec":
            argv = [*self.with_.argv, *(self.with_.argv6 or ())]  # type: ignore[attr-defined]
            if self.targets.type == "host_ports" and "{ports}" in argv:
                return self
            raise ValueError("split_ports: an exec stage splits the {ports} of `type: host_ports` targets; "
                             "this one has none")
        raise ValueError(
            f"split_ports: {self.tool} has no port list to split (tcp_connect, or exec on host_ports {{ports}})"
        )

    @property
    def tool_spec(self) -> Tool:
        """What the master knows about the stage's tool."""
        return TOOLS[self.tool]

    @property
    def source(self) -> str:
        """Where the targets come from: ``input``, ``boxes`` or a stage id."""
        return self.targets.from_

    @property
    def depends(self) -> tuple[str, ...]:
        """The stages this one reads from (none for ``input`` and ``boxes``)."""
        source = self.targets.from_
        return () if source in SOURCES else (source,)

    @property
    def can_report(self) -> frozenset[str]:
        """What the tool, with these parameters, can report (an exec stage: what its parser gives)."""
        narrowed = self.with_.outputs()
        return self.tool_spec.reports if narrowed is None else narrowed

    @property
    def outputs(self) -> frozenset[str]:
        """The result types this stage reports: its ``output`` when given, else all it can report."""
        return frozenset(self.output) if self.output else self.can_report

    @cached_property
    def agent_params(self) -> dict[str, Any]:
        """The JSON ``params`` the agent receives for this stage's tasks (computed once: dispatch reads it)."""
        return self.with_.agent_params()


class _GeneratedStage(StageBase):
    """The base of the per-tool stage classes, which have no source to read docstrings from: their two
    fields carry a ``description`` and the rest inherit theirs."""


def _stage_model(tool: Tool) -> type[StageBase]:
    """The stage class of one tool: ``tool`` is its name, ``with`` its parameter model."""
    doc = "The tool's parameters (see SPEC's table of built-in tools)."
    with_default: Any = Field(alias="with", description=doc)
    if not tool.params_required:
        with_default = Field(default_factory=tool.params, alias="with", description=doc)
    fields: dict[str, Any] = {
        "tool": (Literal[tool.name], Field(description=tool.summary)),
        "with_": (tool.params, with_default),
    }
    if tool.boxes == "only":
        fields["targets"] = (TargetsSpec, Field(
            default_factory=lambda: TargetsSpec.model_validate({"from": "boxes"}),
            description=f"{tool.name} always reads `from: boxes` (the default here).",
        ))
    name = "".join(part.capitalize() for part in tool.name.split("_")) + "Stage"
    model: type[StageBase] = create_model(name, __base__=_GeneratedStage, __module__=__name__, **fields)
    model.__doc__ = tool.summary
    return model


#: the stage class of each tool, in the table's order
STAGE_MODELS: dict[str, type[StageBase]] = {name: _stage_model(tool) for name, tool in TOOLS.items()}


class _NoStage(BaseModel):
    """A union member no stage matches: keeps a one-tool union a tagged union (its error paths name the
    tool, ``stages.0.tcp_connect.with``, exactly as the union of every tool does)."""

    tool: Literal[""] = Field(description="Never matches: no tool has an empty name.")


def _stage_union(tools: Iterable[str]) -> Any:
    """The stage type over ``tools`` (in the table's order), discriminated by ``tool``."""
    models: tuple[type[BaseModel], ...] = tuple(m for name, m in STAGE_MODELS.items() if name in set(tools))
    if len(models) == 1:
        models += (_NoStage,)
    return Annotated[Union[models], Field(discriminator="tool")]  # noqa: UP007


if TYPE_CHECKING:
    Stage = StageBase
else:
    Stage = _stage_union(STAGE_MODELS)


class Workflow(StrictModel):
    """One named workflow: a list of stages, each reading from input, boxes or an earlier stage."""

    description: Annotated[str, Field(max_length=4096)] = ""
    """One line saying what the workflow finds."""
    stages: Annotated[list[Stage], Field(min_length=1, max_length=256)]
    """The stages, in order; a stage reads only from input, boxes, or a stage above it."""

    @model_validator(mode="after")
    def _graph(self, info: ValidationInfo) -> Workflow:
        """Graph checks, unless the context says they run elsewhere (:data:`SKIP_GRAPH_CHECKS`)."""
        if (info.context or {}).get("graph_checks", True):
            problem = check_workflow(self)
            if problem is not None:
                loc, message = problem
                raise ValueError(f"{yamlsrc.format_path(loc)}: {message}")
        return self

    def stage(self, stage_id: str) -> StageBase:
        for stage in self.stages:
            if stage.id == stage_id:
                return stage
        raise KeyError(stage_id)


W = TypeVar("W", bound=StrictModel)


def tools_in(stages: Any) -> frozenset[str] | None:
    """The tools a document's stage list names, when every stage names a known tool (else None)."""
    if not isinstance(stages, list) or not stages:
        return None
    names: set[str] = set()
    for stage in stages:
        tool = stage.get("tool") if isinstance(stage, Mapping) else None
        if not isinstance(tool, str) or tool not in TOOLS:
            return None
        names.add(tool)
    return frozenset(names)


@cache
def for_tools(model: type[W], tools: frozenset[str]) -> type[W]:
    """``model`` (a Workflow, or a class holding Workflows) whose stages may only be of ``tools``.

    Validating with it builds the validators of those tools only: a run of one noop stage no longer pays
    for every tool's schema at start. It validates exactly as ``model`` does for such a document (the
    same stage classes, fields, checks and messages); :func:`as_model` turns its result into ``model``'s
    own class. A document naming an unknown tool is validated by ``model`` itself, whose message lists
    every tool."""
    if issubclass(model, Workflow):
        stage: Any = _stage_union(tools)
        stages: Any = Annotated[list[stage], Field(min_length=1, max_length=256)]  # type: ignore[valid-type]
        return create_model(model.__name__, __base__=model, __module__=model.__module__, stages=(stages, ...))
    assert model is WorkflowFile
    inner: Any = for_tools(Workflow, tools)
    held: Any = Annotated[dict[StageId, inner], Field(min_length=1)]  # type: ignore[valid-type]
    return create_model(model.__name__, __base__=model, __module__=model.__module__, workflows=(held, ...))


def as_model(model: type[W], value: StrictModel) -> W:
    """A :func:`for_tools` result as an instance of ``model`` itself (equal to one ``model`` validates)."""
    if type(value) is model:
        return value  # type: ignore[return-value]
    values = dict(value)
    if model is WorkflowFile:
        values["workflows"] = {name: as_model(Workflow, w) for name, w in values["workflows"].items()}
    return model.model_construct(_fields_set=value.model_fields_set, **values)


def dump_workflow(workflow: Workflow) -> dict[str, Any]:
    """``workflow.model_dump(mode="json")``, serialized by the :func:`for_tools` class of its own tools."""
    tools = frozenset(stage.tool for stage in workflow.stages)
    model = for_tools(Workflow, tools)
    values = {name: getattr(workflow, name) for name in Workflow.model_fields}
    return model.model_construct(_fields_set=workflow.model_fields_set, **values).model_dump(mode="json")


def validating_model(model: type[W], stages: Any) -> type[W]:
    """The model to validate a document with: :func:`for_tools` of the tools its ``stages`` name, or
    ``model`` itself when they cannot be read."""
    tools = tools_in(stages)
    return model if tools is None else for_tools(model, tools)


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


# -- loading --------------------------------------------------------------------------


def default_workflows_path() -> Path:
    """``./workflows.yaml`` if present, else the packaged copy."""
    local = Path(DEFAULT_FILE)
    if local.is_file():
        return local
    from importlib import resources  # only for the packaged copy (with tempfile, zipfile: a few ms)

    return Path(str(resources.files("console").joinpath(f"data/{DEFAULT_FILE}")))


def parse_workflows(data: Any, smap: yamlsrc.SourceMap, base_dir: Path) -> WorkflowFile:
    """Validate a loaded document (with its source map) into a WorkflowFile, rules inlined."""
    model = WorkflowFile
    workflows = data.get("workflows") if isinstance(data, dict) else None
    if isinstance(workflows, dict) and workflows:
        stage_lists = [w.get("stages") if isinstance(w, dict) else None for w in workflows.values()]
        if all(isinstance(stages, list) for stages in stage_lists):
            model = validating_model(WorkflowFile, [s for stages in stage_lists for s in stages])  # type: ignore[union-attr]
    wf_file = as_model(WorkflowFile, yamlsrc.validate_document(
        model, data, smap, "expected a mapping with a `workflows:` key", context=SKIP_GRAPH_CHECKS,
        skip=tuple(TOOLS),
    ))
    for name, workflow in wf_file.workflows.items():
        base: tuple[Any, ...] = ("workflows", name)
        problem = check_workflow(workflow)
        if problem is not None:
            loc, message = problem
            raise yamlsrc.bad_input_at(smap, (*base, *loc), message)
        for index, stage in enumerate(workflow.stages):
            if isinstance(stage.with_, BaselineParams):
                where = (*base, "stages", index, "with")
                raw = data["workflows"][name]["stages"][index].get("with", {})
                stage.with_.resolve(raw, smap, where, base_dir)
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
            source = stage.source
            where = ""
            if stage.targets.where:
                where = " where " + ", ".join(f"{k}={v}" for k, v in stage.targets.where.items())
            stream = " (streamed)" if stage.stream else ""
            kinds = "hosts with their ports" if stage.targets.type == "host_ports" else f"{stage.targets.type}s"
            what = "each box" if source == "boxes" else f"{kinds} from {source}"
            lines.append(f"{' ' * width}    {stage.id}: {stage.tool} on {what}{where}{stream}")
    return lines


__all__ = [
    "SKIP_GRAPH_CHECKS",
    "STAGE_MODELS",
    "Stage",
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
