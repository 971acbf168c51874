"""A box reports only on what it was given; one bad record costs only itself; one host rule.

A fake box (tests/fixtures/fakebox.py) answers every task with a forged record about a host
it was never given (in scope, so only the new check stands in its way), an invalid record,
and the honest records, in that order: the honest ones are stored, the others refused with an
event naming the box, and the task is done. The agent and the master share one hostname and
address validator (agentkit.targets): they agree on every name, and refuse the numeric forms
the resolver would turn into addresses.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agentkit import targets as agent_targets
from console.errors import BadInput
from console.fleet.fleet import AgentHandle
from console.fleet.links import LocalLink
from console.master.scheduler import Master
from console.status import RunState
from console.store import open_store
from console.targets import values
from console.workflow.submit import prepare_run
from tests.fixtures.chaos import events, write_workflow
from tests.fixtures.fakebox import write_fakebox

NAMES = [
    "example.com", "Example.COM.", "a-b.example", "under_score.example", "_dmarc.example", "x.example..",
    "0x7f140001", "127.20.0.0x1", "127.1", "0177.0.0.1", "10.0.0.256", "-opt.example", "xn--bcher-kva.example",
    "ex ample.com", "a" * 64 + ".example", "localhost", "0x", "1.2.3.4", "::1", "[::1]", "fe80::1%eth0",
]


@pytest.mark.parametrize("name", NAMES)
def test_agent_and_master_agree_on_every_host(name: str) -> None:
    master_says = values._host_value(name)
    agent_says = agent_targets.valid_host(name)
    assert (master_says is not None) == agent_says, (name, master_says, agent_says)


@pytest.mark.parametrize("name", ["0x7f140001", "127.20.0.0x1", "127.1", "0177.0.0.1", "under_score.example"])
def test_numeric_and_odd_forms_are_refused_as_hostnames(name: str) -> None:
    assert not agent_targets.is_hostname(name)
    with pytest.raises(BadInput):
        values.validate_value("host", name)


def test_a_trailing_dot_is_the_same_name_on_both_sides() -> None:
    assert values.validate_value("host", "Example.COM.") == "example.com"
    assert agent_targets.normalize_hostname("Example.COM.") == "example.com"


def _only(box: Path) -> Callable[[str], list[AgentHandle]]:
    def handles(source: str) -> list[AgentHandle]:
        return [AgentHandle(name="fake", kind="local", slots=2, factory=lambda: LocalLink("fake", 2, python=str(box)))]

    return handles


async def test_forged_and_invalid_records_are_refused_and_logged_the_honest_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = [{"type": "host_up", "target": "{target}", "data": {"host": f"127.20.0.{n}", "via": "forged"}}
              for n in range(2, 8)]
    invalid = {"type": "host_up", "target": "{target}", "data": {"host": "no such; host", "via": "x"}}
    honest = [{"type": "host_up", "target": "{target}", "data": {"host": "{target}", "via": "fake"}},
              {"type": "port_open", "target": "{target}", "data": {"host": "{target}", "port": 22, "proto": "tcp"}}]
    box = write_fakebox(tmp_path / "box", {"records": [invalid, *forged, *honest]})
    monkeypatch.setattr("console.master.scheduler.handles_for", _only(box))
    workflow = write_workflow(tmp_path / "wf.yaml", "forge", [{
        "id": "scan", "tool": "exec", "retries": 0, "chunk": 1,
        "with": {"argv": ["true"], "parser": "jsonl"}, "targets": {"from": "input", "type": "host"},
    }])
    db = tmp_path / "forge.db"
    store = open_store(db)
    try:
        run_id = prepare_run(workflows_file=workflow, workflow="forge", targets="127.20.0.1",
                             scope="127.20.0.0/24", agents="local").create(store)
        state = await asyncio.wait_for(Master(store, "local").run_until_done(run_id), 120)
        keys = sorted((r["type"], r["key"]) for r in store.db.query("SELECT type, key FROM results"))
        task_states = [t["state"] for t in store.db.query("SELECT state FROM tasks")]
    finally:
        store.close()
    assert state == RunState.COMPLETED
    assert task_states == ["done"]
    assert keys == [("host_up", "127.20.0.1"), ("port_open", "127.20.0.1:22/tcp")]
    messages = [e["message"] for e in events(db, run_id)]
    assert sum("agent fake: host_up record about 127.20.0." in m and "not about its task's targets" in m
               for m in messages) == 6, messages
    assert any(m.startswith("agent fake: invalid record dropped") for m in messages), messages


async def test_one_odd_ptr_name_in_jsonl_output_does_not_fail_the_chunk(tmp_path: Path) -> None:
    """A real local agent running exec: the underscore name is refused alone, on both sides alike."""
    lines = [
        {"type": "host_up", "target": "127.0.0.1", "data": {"host": "127.0.0.1", "via": "exec", "name": "a"}},
        {"type": "host_up", "target": "127.0.0.2", "data": {"host": "odd_ptr.example", "via": "exec"}},
        {"type": "host_up", "target": "127.0.0.2", "data": {"host": "127.0.0.2", "via": "exec"}},
    ]
    output = tmp_path / "output.jsonl"
    output.write_text("".join(json.dumps(r) + "\n" for r in lines))
    program = "import sys; sys.stdout.write(open(sys.argv[1]).read())"
    workflow = write_workflow(tmp_path / "wf.yaml", "ptr", [{
        "id": "scan", "tool": "exec", "retries": 0, "chunk": 2,
        "with": {"argv": [sys.executable, "-c", program, str(output)], "parser": "jsonl"},
        "targets": {"from": "input", "type": "host"},
    }])
    db = tmp_path / "ptr.db"
    store = open_store(db)
    try:
        run_id = prepare_run(workflows_file=workflow, workflow="ptr", targets="127.0.0.1-2", agents="local").create(store)
        state = await asyncio.wait_for(Master(store, "local").run_until_done(run_id), 120)
        keys = sorted(r["key"] for r in store.db.query("SELECT key FROM results"))
    finally:
        store.close()
    assert state == RunState.COMPLETED
    assert keys == ["127.0.0.1", "127.0.0.2"]
    assert any("invalid record dropped" in e["message"] and "odd_ptr" in e["message"] for e in events(db, run_id))


NMAP_XML = b"""<?xml version="1.0"?><nmaprun><host><status state="up"/>
<address addr="127.0.0.9" addrtype="ipv4"/><hostnames><hostname name="box.example" type="user"/></hostnames>
<ports><port protocol="tcp" portid="22"><state state="open"/></port></ports></host></nmaprun>"""


def test_a_resolving_tool_reports_under_the_name_it_was_given_and_that_is_about_the_task() -> None:
    from agentkit.tools.parsers import nmap_xml
    from console.master.about import about_task
    from console.targets.records import validate

    records = nmap_xml(NMAP_XML, "port_open", "")
    assert [(r.type, r.target, r.data["host"]) for r in records] == [
        ("host_up", "box.example", "box.example"), ("port_open", "box.example", "box.example")]
    checked = [validate(r) for r in records]
    assert all(about_task(c, json.dumps(["box.example"])) for c in checked)
    assert not any(about_task(c, json.dumps(["other.example"])) for c in checked)
    # under the name, not the address it resolved to: a task that never named it is not what they are about
    assert not any(about_task(c, json.dumps(["127.0.0.0/29", "127.0.0.9:22"])) for c in checked)
    forged = validate({"type": "host_up", "target": "127.20.0.1", "data": {"host": "127.20.0.2", "via": "x"}})
    assert not about_task(forged, json.dumps(["127.20.0.1"]))
