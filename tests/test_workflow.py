"""workflows.yaml: the shipped file, malformed samples, graph checks, baseline rules, round trips."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.errors import BadInput
from console.workflow.models import (
    Workflow,
    default_workflows_path,
    describe,
    load_workflows,
)
from console.workflow.params import PLACEHOLDERS, ExecParams, TcpConnectParams, load_rules_file

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "samples" / "workflows"
ELKEID = Path(__file__).parent / "data" / "elkeid-baseline"
ELKEID_FILES = sorted(ELKEID.glob("*.yaml")) if ELKEID.is_dir() else []


def _write(tmp_path: Path, text: str, name: str = "workflows.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the shipped file -----------------------------------------------------------------


def test_shipped_workflows_validate() -> None:
    wf_file = load_workflows(ROOT / "workflows.yaml")
    assert {"recon", "web", "baseline"} <= set(wf_file.workflows)
    recon = wf_file.get("recon")
    assert [s.id for s in recon.stages] == ["alive", "ports", "services", "http", "tls"]
    assert recon.stage("ports").targets.where == {"type": "host_up"}
    ports = TcpConnectParams.model_validate({"ports": recon.stage("ports").agent_params["ports"]})
    assert ports.ports.startswith("1-1024,")
    assert recon.stage("tls").targets.type == "port"
    web = wf_file.get("web")
    assert {s.targets.from_ for s in web.stages} == {"input"}
    baseline = wf_file.get("baseline")
    params = baseline.stage("checks").agent_params
    titles = " ".join(rule["title"] for rule in params["rules"])
    for topic in ("root login", "password authentication", "PermitEmptyPasswords", "MaxAuthTries",
                  "X11", "/etc/passwd", "/etc/shadow", "/etc/ssh/sshd_config", "expiration", "UID 0"):
        assert topic in titles


def test_packaged_copies_are_identical() -> None:
    for name in ("workflows.yaml", "baseline-rules.yaml"):
        assert (ROOT / "console" / "data" / name).read_bytes() == (ROOT / name).read_bytes(), name


def test_packaged_file_loads_standalone() -> None:
    wf_file = load_workflows(ROOT / "console" / "data" / "workflows.yaml")
    assert len(wf_file.get("baseline").stage("checks").agent_params["rules"]) >= 10


def test_default_path_prefers_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    packaged = default_workflows_path()
    assert packaged.name == "workflows.yaml" and packaged.parent.name == "data"
    assert load_workflows().get("recon")
    _write(tmp_path, "workflows:\n  mine:\n    stages: [{id: a, tool: noop}]\n")
    assert default_workflows_path() == Path("workflows.yaml")
    assert set(load_workflows().workflows) == {"mine"}


def test_unknown_workflow_lists_known() -> None:
    wf_file = load_workflows(ROOT / "workflows.yaml")
    with pytest.raises(BadInput, match=r"no workflow 'recno'.*known: baseline, "):
        wf_file.get("recno")


def test_describe_lines() -> None:
    lines = describe(load_workflows(ROOT / "workflows.yaml"))
    assert lines[0].startswith("recon ")
    assert any("ports: tcp_connect on hosts from alive" in line for line in lines)
    assert all("\n" not in line for line in lines)


# -- malformed samples: one line, the right line --------------------------------------


def _samples() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*.yaml") if p.read_text().startswith("# expect:"))


@pytest.mark.parametrize("sample", _samples(), ids=lambda p: p.stem)
def test_malformed_sample_gives_one_located_line(sample: Path) -> None:
    expect = re.match(r"# expect: (?:(\S+?):)?(\d+): (.*)", sample.read_text().splitlines()[0])
    assert expect, "sample header must be '# expect: [FILE:]LINE: fragment'"
    other_file, line, fragment = expect.groups()
    with pytest.raises(BadInput) as info:
        load_workflows(sample)
    text = str(info.value)
    assert "\n" not in text
    assert info.value.line == int(line), text
    assert info.value.file is not None and info.value.file.endswith(other_file or sample.name), text
    assert text.startswith(f"{info.value.file}:{line}:{info.value.col}: "), text
    assert fragment in text, text
    assert info.value.exit_code == 2


def test_enough_samples() -> None:
    assert len(_samples()) >= 40


def test_field_path_in_message(tmp_path: Path) -> None:
    path = _write(tmp_path, (
        "workflows:\n"
        "  recon:\n"
        "    stages:\n"
        "      - id: alive\n"
        "        tool: tcp_ping\n"
        "      - id: ports\n"
        "        tool: tcp_connect\n"
        "        targets: {from: alive}\n"
        "        with: {ports: '1-99999'}\n"
    ))
    with pytest.raises(BadInput) as info:
        load_workflows(path)
    assert info.value.field == "workflows.recon.stages.1.with.ports"
    assert (info.value.line, info.value.col) == (9, 16)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        load_workflows(tmp_path / "none.yaml")
    with pytest.raises(BadInput, match="directory"):
        load_workflows(tmp_path)


# -- graph ----------------------------------------------------------------------------


def test_sources_and_dependencies() -> None:
    recon = load_workflows(ROOT / "workflows.yaml").get("recon")
    assert recon.stage("alive").source == "input" and recon.stage("alive").depends == ()
    assert recon.stage("ports").depends == ("alive",) and recon.stage("tls").depends == ("ports",)
    checks = load_workflows(ROOT / "workflows.yaml").get("baseline").stages[0]
    assert checks.source == "boxes" and checks.depends == ()


def test_model_validate_runs_graph_checks_without_a_file() -> None:
    with pytest.raises(ValueError, match="comes later"):
        Workflow.model_validate({"stages": [
            {"id": "b", "tool": "tcp_ping", "targets": {"from": "a"}},
            {"id": "a", "tool": "tcp_ping"},
        ]})


# -- round trip and params ------------------------------------------------------------


@pytest.mark.parametrize("name", ["recon", "web", "baseline", "nmap"])
def test_model_round_trip_through_json(name: str) -> None:
    workflow = load_workflows(ROOT / "workflows.yaml").get(name)
    stored = json.dumps(workflow.model_dump(mode="json"))
    again = Workflow.model_validate(json.loads(stored))
    assert again == workflow
    assert again.model_dump(mode="json") == workflow.model_dump(mode="json")
    for stage in workflow.stages:
        assert again.stage(stage.id).agent_params == stage.agent_params
        json.dumps(stage.agent_params)  # agent params are plain JSON


def test_stored_baseline_does_not_follow_file_edits(tmp_path: Path) -> None:
    shutil.copy(ROOT / "baseline-rules.yaml", tmp_path / "rules.yaml")
    path = _write(tmp_path, (
        "workflows:\n  b:\n    stages:\n"
        "      - {id: checks, tool: baseline, with: {rules_file: rules.yaml, checks: [1, 9]}, targets: {from: boxes}}\n"
    ))
    workflow = load_workflows(path).get("b")
    stored = workflow.model_dump(mode="json")
    before = workflow.stage("checks").agent_params
    assert before["checks"] == ["1", "9"] and before["root"] == "/"
    assert len(before["rules"]) == 15
    (tmp_path / "rules.yaml").write_text("garbage: [")
    assert Workflow.model_validate(stored).stage("checks").agent_params == before


def test_inline_rules(tmp_path: Path) -> None:
    path = _write(tmp_path, (
        "workflows:\n  b:\n    stages:\n"
        "      - id: checks\n        tool: baseline\n        targets: {from: boxes}\n"
        "        with:\n          root: /srv/tree\n          rules:\n"
        "            - check_id: perm\n              title: passwd mode\n"
        "              check: {rules: [{type: file_permission, param: [/etc/passwd, 644]}]}\n"
    ))
    params = load_workflows(path).get("b").stage("checks").agent_params
    assert params["root"] == "/srv/tree"
    assert params["rules"][0]["check"]["rules"][0]["param"] == ["/etc/passwd", "644"]


@pytest.mark.skipif(not ELKEID_FILES, reason="Elkeid sample rules not present")
@pytest.mark.parametrize("rules", ELKEID_FILES, ids=lambda p: p.name)
def test_elkeid_rule_files_load_via_rules_file(tmp_path: Path, rules: Path) -> None:
    path = _write(tmp_path, (
        "workflows:\n  b:\n    stages:\n"
        f"      - {{id: checks, tool: baseline, with: {{rules_file: {rules}}}, targets: {{from: boxes}}}}\n"
    ))
    params = load_workflows(path).get("b").stage("checks").agent_params
    raw = rules.read_text()
    assert len(params["rules"]) == raw.count("check_id:")
    assert all("title" in rule for rule in params["rules"])


def test_rules_file_relative_to_workflow_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy(ROOT / "baseline-rules.yaml", tmp_path / "sub" / "r.yaml")
    path = _write(tmp_path / "sub", (
        "workflows:\n  b:\n    stages:\n"
        "      - {id: c, tool: baseline, with: {rules_file: r.yaml}, targets: {from: boxes}}\n"
    ))
    monkeypatch.chdir(tmp_path)
    assert load_workflows(path).get("b").stage("c").agent_params["rules"]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("check_list: nope\n", 1, "check_list"),
        ("check_list:\n  - title: no id\n", 2, "check_id"),
        ("check_list:\n  - check_id: 1\n    title: t\n    check: {rules: [{param: [x]}]}\n", 4, "type"),
        ("check_list:\n  - check_id: 1\n    title: t\n    check:\n      rules:\n        - type: x\n"
         "          filter: '(unclosed'\n", 6, "regex"),
        ("check_list:\n  - {check_id: 1, title: a}\n  - {check_id: 1, title: b}\n", 3, "duplicate check_id"),
        ("- just a list\n", 1, "check_list"),
        ("check_list:\n  - check_id: 1\n    title: t\n    check: {condition: most, rules: [{type: x}]}\n", 4,
         "condition"),
    ],
)
def test_garbage_rule_files_are_bad_input_with_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = _write(tmp_path, text, "rules.yaml")
    with pytest.raises(BadInput) as info:
        load_rules_file(path)
    assert info.value.line == line, str(info.value)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


# -- exec placeholders and ports (properties) -----------------------------------------

argv_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(argv_text, st.sampled_from(PLACEHOLDERS)), min_size=0, max_size=6))
def test_exec_placeholders_are_whole_elements(args: list[str]) -> None:
    argv = ["prog", *args]
    bad = [a for a in args if ("{" in a or "}" in a) and a not in PLACEHOLDERS]
    try:
        params = ExecParams.model_validate({"argv": argv, "parser": "jsonl"})
    except ValueError:
        assert bad
        return
    assert not bad
    assert params.argv == argv


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 300)), min_size=1, max_size=10))
def test_port_ranges_round_trip(spans: list[tuple[int, int]]) -> None:
    text = ",".join(f"{a}-{min(a + n, 65535)}" if n else str(a) for a, n in spans)
    params = TcpConnectParams.model_validate({"ports": text})
    expected = {p for a, n in spans for p in range(a, min(a + n, 65535) + 1)}
    got: set[int] = set()
    for part in params.ports.split(","):
        first, _, last = part.partition("-")
        got.update(range(int(first), int(last or first) + 1))
    assert got == expected
    assert TcpConnectParams.model_validate({"ports": params.ports}).ports == params.ports


@pytest.mark.parametrize("ports", ["0", "65536", "1-70000", "22,x", "", [], [True], "5-1", 3.5])
def test_bad_ports(ports: object) -> None:
    with pytest.raises(ValueError):
        TcpConnectParams.model_validate({"ports": ports})


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_stage_graphs_fail_on_the_first_bad_reference(tmp_path_factory: pytest.TempPathFactory,
                                                             data: st.DataObject) -> None:
    count = data.draw(st.integers(min_value=1, max_value=6))
    ids = [data.draw(st.sampled_from([f"s{i}", f"s{i}", f"s{i}", "s0"])) for i in range(count)]
    sources = [data.draw(st.sampled_from(["input", *(f"s{k}" for k in range(count + 1))])) for _ in range(count)]
    lines = ["workflows:", "  w:", "    stages:"]
    for stage_id, source in zip(ids, sources, strict=True):
        lines += [f"      - id: {stage_id}", "        tool: tcp_ping", "        targets:", f"          from: {source}"]
    path = tmp_path_factory.mktemp("graph") / "w.yaml"
    path.write_text("\n".join(lines) + "\n")

    expected: tuple[int, str] | None = None
    seen: dict[str, int] = {}
    for index, stage_id in enumerate(ids):
        if stage_id in seen and expected is None:
            expected = (4 + 4 * index, "duplicate stage id")
        seen.setdefault(stage_id, index)
    if expected is None:
        for index, source in enumerate(sources):
            if source == "input":
                continue
            if source == ids[index]:
                expected = (7 + 4 * index, "cycle")
            elif source not in seen:
                expected = (7 + 4 * index, "no stage")
            elif seen[source] > index:
                expected = (7 + 4 * index, "")  # comes later, or a cycle through later stages
            if expected:
                break
    if expected is None:
        assert load_workflows(path).get("w")
        return
    with pytest.raises(BadInput) as info:
        load_workflows(path)
    assert info.value.line == expected[0], str(info.value)
    assert expected[1] in str(info.value)
    assert "\n" not in str(info.value)


def test_every_file_format_field_is_documented() -> None:
    from pydantic import BaseModel

    from console.fleet import inventory
    from console.workflow import models as workflow
    from console.workflow import params as toolparams

    models = [m for mod in (workflow, toolparams, inventory) for m in vars(mod).values()
              if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == mod.__name__]
    assert len(models) > 20
    undocumented = [f"{m.__name__}.{name}" for m in models for name, f in m.model_fields.items() if not f.description]
    assert undocumented == []
    assert workflow.WorkflowFile.model_json_schema(by_alias=True)["properties"]["workflows"]


def test_baseline_reads_boxes_by_default(tmp_path: Path) -> None:
    path = _write(tmp_path, (
        "workflows:\n  b:\n    stages:\n"
        f"      - {{id: c, tool: baseline, with: {{rules_file: {ROOT / 'baseline-rules.yaml'}}}}}\n"
    ))
    workflow = load_workflows(path).get("b")
    assert workflow.stages[0].targets.from_ == "boxes"
    assert Workflow.model_validate(workflow.model_dump(mode="json")) == workflow


PORTED = {"tcp_connect", "banner", "tls_cert", "http_probe"}  # tools whose records carry a port


@st.composite
def workflows(draw: st.DrawFn) -> dict[str, object]:
    stages: list[dict[str, object]] = []
    for index in range(draw(st.integers(min_value=1, max_value=5))):
        tool = draw(st.sampled_from(["tcp_ping", "tcp_connect", "banner", "http_probe", "tls_cert", "dns", "noop"]))
        kinds = {"tcp_ping": ["host"], "tcp_connect": ["host"], "dns": ["host"], "banner": ["port"],
                 "tls_cert": ["port"], "http_probe": ["url", "port"], "noop": ["host", "port", "url"]}[tool]
        kind = draw(st.sampled_from(kinds))
        sources = ["input"] + [str(s["id"]) for s in stages if kind == "host" or s["tool"] in PORTED]
        source = draw(st.sampled_from(sources))
        stage: dict[str, object] = {"id": f"s{index}", "tool": tool, "targets": {"from": source, "type": kind},
                                    "chunk": draw(st.integers(1, 5000)), "retries": draw(st.integers(0, 5)),
                                    "timeout": draw(st.floats(0.5, 3600)), "stream": source != "input"
                                    and draw(st.booleans())}
        if tool == "tcp_connect":
            stage["with"] = {"ports": draw(st.sampled_from(["1-1024", [22, 80], "8080,1-10"])),
                             "rate": draw(st.integers(0, 1000))}
        elif tool == "tcp_ping":
            stage["with"] = {"ports": draw(st.lists(st.integers(1, 65535), min_size=1, max_size=5)),
                             "icmp": draw(st.booleans())}
        elif tool == "noop":
            stage["with"] = {"sleep": draw(st.floats(0, 10)), "records": draw(st.integers(0, 100))}
        if source != "input" and draw(st.booleans()):
            source_tool = next(s["tool"] for s in stages if s["id"] == source)
            rtype = {"tcp_ping": "host_up", "dns": "host_up", "noop": "host_up", "tcp_connect": "port_open",
                     "banner": "service", "tls_cert": "tls_cert", "http_probe": "http"}[str(source_tool)]
            where: dict[str, object] = {"type": draw(st.sampled_from([rtype, [rtype]]))}
            if rtype != "http":
                where["host"] = draw(st.sampled_from(["127.0.0.1", ["127.0.0.1", "::1"]]))
            stage["targets"]["where"] = where  # type: ignore[index]
        stages.append(stage)
    return {"description": draw(st.text(alphabet="abc xyz.", max_size=30)), "stages": stages}


@settings(max_examples=100, deadline=None)
@given(workflows())
def test_generated_workflows_round_trip_through_yaml_and_json(tmp_path_factory: pytest.TempPathFactory,
                                                              raw: dict[str, object]) -> None:
    import yaml

    path = tmp_path_factory.mktemp("gen") / "workflows.yaml"
    path.write_text(yaml.safe_dump({"workflows": {"gen": raw}}, sort_keys=False))
    loaded = load_workflows(path).get("gen")
    dumped = loaded.model_dump(mode="json")
    assert Workflow.model_validate(dumped) == loaded
    path.write_text(yaml.safe_dump({"workflows": {"gen": dumped}}, sort_keys=False))
    assert load_workflows(path).get("gen") == loaded
    for stage in loaded.stages:
        assert json.loads(json.dumps(stage.agent_params)) == stage.agent_params


def test_every_agent_tool_has_a_stage_model_and_no_other() -> None:
    """The workflow file accepts exactly the tools the agent has (one list, agentkit.tools.BUILTIN_TOOLS)."""
    import typing

    from agentkit.tools import BUILTIN_TOOLS
    from console.workflow import models as workflow
    from console.workflow.tools import TOOLS

    models = typing.get_args(typing.get_args(workflow.Stage)[0])
    names = {typing.get_args(m.model_fields["tool"].annotation)[0] for m in models}
    assert names == set(BUILTIN_TOOLS) == set(TOOLS)
