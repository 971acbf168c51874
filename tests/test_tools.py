"""The one table of what the operator side knows about each tool, and what reads it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from agentkit.tools import BUILTIN_TOOLS
from console.master.executions import RunContext
from console.targets.records import validate
from console.targets.sets import parse_scope
from console.workflow.models import STAGE_MODELS, Workflow
from console.workflow.tools import TOOLS

#: the smallest valid ``with`` of the tools that have no usable defaults
REQUIRED_WITH: dict[str, dict[str, Any]] = {
    "exec": {"argv": ["prog", "{target}"], "parser": "jsonl"},
    "baseline": {"rules": [{"check_id": 1, "title": "t", "check": {"rules": [{"type": "if_file_exist"}]}}]},
}


def test_the_console_knows_exactly_the_agents_tools() -> None:
    assert set(TOOLS) == set(BUILTIN_TOOLS) == set(STAGE_MODELS)


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_each_stage_class_is_made_from_its_entry(name: str) -> None:
    tool, model = TOOLS[name], STAGE_MODELS[name]
    assert model.model_fields["with_"].annotation is tool.params
    assert model.model_fields["with_"].is_required() == tool.params_required
    if tool.params_required:
        with pytest.raises(ValidationError):
            tool.params()
    else:
        tool.params()
    assert all(field.description for field in model.model_fields.values())
    stage = model.model_validate({"id": "s", "tool": name, "with": REQUIRED_WITH.get(name, {})})
    assert stage.tool_spec is tool and stage.can_report <= tool.reports
    assert stage.source == ("boxes" if tool.boxes == "only" else "input")


def _graph_error(stage: dict[str, Any]) -> str | None:
    stage = {"id": "s", **stage, "with": REQUIRED_WITH.get(stage["tool"], {})}
    try:
        Workflow.model_validate({"stages": [stage]})
    except ValueError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_graph_checks_follow_the_table(name: str) -> None:
    tool = TOOLS[name]
    for kind in ("host", "port", "url"):
        source = "boxes" if tool.boxes == "only" else "input"
        error = _graph_error({"tool": name, "targets": {"from": source, "type": kind}})
        accepted = tool.takes is None or kind in tool.takes
        assert (error is None) == accepted, (kind, error)
    per_box = _graph_error({"tool": name, "targets": {"from": "boxes"}})
    assert (per_box is None) == (tool.boxes != "never"), per_box
    if tool.boxes == "only":
        assert "from: boxes" in str(_graph_error({"tool": name, "targets": {"from": "input"}}))


def test_records_are_checked_against_what_the_tool_reports() -> None:
    record = {"type": "port_open", "target": "127.0.0.1", "data": {"host": "127.0.0.1", "port": 22}}
    for name, tool in TOOLS.items():
        if "port_open" in tool.reports:
            assert validate(record, tool.reports).key == "127.0.0.1:22/tcp", name
        else:
            with pytest.raises(Exception, match="cannot report port_open"):
                validate(record, tool.reports)


def test_scope_facts() -> None:
    """A record about the name asked (dns) is in scope by that name; any other needs its host in scope."""
    ctx = RunContext(run_id="r", priority=0, state="running", stages={}, planner=SimpleNamespace(  # type: ignore[arg-type]
        scope=parse_scope("localhost")), scope=["localhost"])
    answer = SimpleNamespace(target="localhost", data={"host": "127.0.0.1", "name": "localhost"})
    assert ctx.in_scope(answer, TOOLS["dns"])
    assert not ctx.in_scope(answer, TOOLS["tcp_ping"])
    assert [n for n, t in TOOLS.items() if t.about_target_name] == ["dns"]
    assert [n for n, t in TOOLS.items() if t.host_is_box] == ["baseline"]
