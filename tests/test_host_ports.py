"""Target type ``host_ports``: one target per host with exactly its ports, for exec's ``{host}`` ``{ports}``.

Planner (store only), workflow checks, the agent's placeholder filling (a real agent process),
and end to end through the master with real listeners on loopback: the program is started once
per host with exactly the ports that were found open (its argv is logged by the program itself),
and with nmap -sV when nmap is installed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from console.errors import BadInput
from console.master.planner import RunPlanner
from console.master.scheduler import Master
from console.runoptions import RunOptions
from console.status import RunState
from console.store import open_store
from console.targets.hostports import format_host_ports, group_host_ports
from console.workflow.models import load_workflows
from tests.fixtures.agent_process import AgentProcess
from tests.test_planner import finish_all, stage, stage_row

# -- values and planning -----------------------------------------------------------------------


def test_values_group_ports_per_host_sorted_and_unique() -> None:
    values = ["127.0.0.1:443", "127.0.0.2:8080", "127.0.0.1:22", "127.0.0.1:443", "[::1]:80", "[::1]:22"]
    assert group_host_ports(values) == [["127.0.0.1:22,443"], ["127.0.0.2:8080"], ["[::1]:22,80"]]
    assert group_host_ports(values, 1) == [["127.0.0.1:22", "127.0.0.1:443"], ["127.0.0.2:8080"], ["[::1]:22", "[::1]:80"]]
    assert format_host_ports("127.0.0.1", range(1, 5000))[1].startswith("127.0.0.1:4097,")


def test_the_planner_gives_one_target_per_host_with_its_ports(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    stages = [stage("ports"), stage("svc", "ports", tool="exec", type="host_ports", chunk=1, where={"type": "port_open"},
                                    params={"argv": ["echo", "{host}", "{ports}"], "parser": "lines", "type": "host_up"})]  # fmt: skip
    run_id = store.runs.create("t", {"stages": stages}, "127.0.0.1-3", "127.0.0.0/24", "local", 0, None,
                               RunOptions(exclude="127.0.0.3"))  # fmt: skip
    store.queue.adopt_runs("m")
    (run,) = [r for r in store.queue.owned_runs("m") if r.id == run_id]
    planner = RunPlanner(store, run, [])
    planner.step()
    finish_all(store, run.id, "ports", [
        ("port_open", {"host": "127.0.0.1", "port": 443, "proto": "tcp"}),
        ("port_open", {"host": "127.0.0.2", "port": 8080, "proto": "tcp"}),
        ("port_open", {"host": "127.0.0.1", "port": 22, "proto": "tcp"}),
        ("port_open", {"host": "127.0.0.3", "port": 22, "proto": "tcp"}),  # excluded
        ("port_open", {"host": "127.0.1.1", "port": 22, "proto": "tcp"}),  # out of scope
        ("host_up", {"host": "127.0.0.2", "via": "tcp/1", "rtt_ms": 1.0}),  # not a port_open: filtered out
    ])
    planner.step()
    planner.step()
    tasks = [json.loads(r["targets"]) for r in store.db.query("SELECT targets FROM tasks WHERE stage_id = 'svc' ORDER BY id")]
    assert tasks == [["127.0.0.1:22,443"], ["127.0.0.2:8080"]]
    assert stage_row(store, run.id, "svc")["dropped"] == 2


def test_split_ports_cuts_a_heavy_hosts_ports_into_one_task_per_part(tmp_path: Path) -> None:
    """An exec stage on host_ports with split_ports: a host with more ports than N becomes one task per part
    (every port once, in order); hosts that fit one part are still chunked together."""
    store = open_store(tmp_path / "p.db")
    exec_params = {"argv": ["echo", "{host}", "{ports}"], "parser": "lines", "type": "host_up"}
    stages = [stage("ports"), stage("svc", "ports", tool="exec", type="host_ports", chunk=8, split_ports=2,
                                    where={"type": "port_open"}, params=exec_params)]  # fmt: skip
    run_id = store.runs.create("t", {"stages": stages}, "127.0.0.1-4", "127.0.0.0/24", "local", 0, None)
    store.queue.adopt_runs("m")
    (run,) = [r for r in store.queue.owned_runs("m") if r.id == run_id]
    planner = RunPlanner(store, run, [])
    planner.step()
    finish_all(store, run.id, "ports", [
        ("port_open", {"host": "127.0.0.1", "port": port, "proto": "tcp"}) for port in (443, 22, 80, 8080, 25)
    ] + [
        ("port_open", {"host": "127.0.0.2", "port": 8080, "proto": "tcp"}),
        ("port_open", {"host": "127.0.0.4", "port": 80, "proto": "tcp"}),
        ("port_open", {"host": "127.0.0.4", "port": 22, "proto": "tcp"}),
    ])  # fmt: skip
    planner.step()
    planner.step()
    tasks = [json.loads(r["targets"]) for r in store.db.query("SELECT targets FROM tasks WHERE stage_id = 'svc' ORDER BY id")]
    assert tasks == [
        ["127.0.0.2:8080", "127.0.0.4:22,80"],  # whole hosts, chunked
        ["127.0.0.1:22,25"], ["127.0.0.1:80,443"], ["127.0.0.1:8080"],  # the heavy host, one task per part
    ]
    assert stage_row(store, run.id, "svc")["state"] != "pending"


# -- workflow checks ---------------------------------------------------------------------------


def _workflow(tmp_path: Path, follow: dict[str, Any]) -> Path:
    ports = {"id": "ports", "tool": "tcp_connect", "with": {"ports": [22]}, "targets": {"from": "input", "type": "host"}}
    path = tmp_path / "workflows.yaml"
    path.write_text(yaml.safe_dump({"workflows": {"w": {"stages": [ports, follow]}}}, sort_keys=False))
    return path


NMAP = {"argv": ["nmap", "-p", "{ports}", "-oX", "-", "{host}"], "parser": "nmap_xml"}


@pytest.mark.parametrize(
    ("follow", "field", "why"),
    [
        ({"id": "s", "tool": "exec", "with": NMAP, "targets": {"from": "input", "type": "host_ports"}},
         "targets.type", "earlier stage"),
        ({"id": "s", "tool": "exec", "with": NMAP, "stream": True, "targets": {"from": "ports", "type": "host_ports"}},
         "stream", "cannot stream"),
        ({"id": "s", "tool": "exec", "with": NMAP, "targets": {"from": "ports", "type": "host"}},
         "with.argv.2", "{ports} needs"),
        ({"id": "s", "tool": "http_probe", "targets": {"from": "ports", "type": "host_ports"}},
         "targets.type", "http_probe takes"),
        ({"id": "s", "tool": "exec", "with": {**NMAP, "argv": ["nmap", "-p", "{port}", "{host}"]},
          "targets": {"from": "ports", "type": "host_ports"}}, "with.argv.2", "{port} needs"),
        ({"id": "s", "tool": "exec", "with": {**NMAP, "argv": ["nmap", "{host}"]}, "split_ports": 100,
          "targets": {"from": "ports", "type": "host_ports"}}, "", "split_ports: an exec stage splits"),
        ({"id": "s", "tool": "http_probe", "split_ports": 100, "targets": {"from": "ports", "type": "url"}},
         "", "split_ports: http_probe has no port list"),
    ],
)
def test_misused_host_ports_is_bad_input_with_the_line(tmp_path: Path, follow: dict[str, Any], field: str, why: str) -> None:
    with pytest.raises(BadInput) as info:
        load_workflows(_workflow(tmp_path, follow))
    assert info.value.line is not None and info.value.field == f"workflows.w.stages.1{'.' if field else ''}{field}"
    assert why in str(info.value)


def test_the_shipped_example_runs_nmap_per_host_on_its_open_ports() -> None:
    wf = load_workflows(Path(__file__).resolve().parents[1] / "workflows.yaml").get("nmap-open-ports")
    services = wf.stage("services")
    assert services.targets.type == "host_ports" and services.targets.where == {"type": "port_open"}
    argv = services.agent_params["argv"]
    assert argv[0] == "nmap" and "-sV" in argv and argv[argv.index("-p") + 1] == "{ports}" and argv[-1] == "{host}"


# -- the agent fills {host} and {ports} --------------------------------------------------------


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    with AgentProcess.serving() as process:
        yield process


def test_exec_fills_host_and_ports_as_whole_elements(agent: AgentProcess) -> None:
    params = {"argv": ["printf", "%s|%s\\n", "{host}", "{ports}"], "parser": "lines", "type": "host_up"}
    done, records = agent.run_task("hp", "exec", ["127.0.0.1:22,80,443", "[::1]:8080,9090", "localhost:7"], params)
    assert done["ok"], done
    # lines records carry the line; the fallback target of a host_ports target is its host
    assert [r["data"]["line"] for r in records] == ["127.0.0.1|22,80,443", "::1|8080,9090", "localhost|7"]
    assert [r["target"] for r in records[:2]] == ["127.0.0.1", "::1"]


@pytest.mark.parametrize("target", ["127.0.0.1:22,-80", "127.0.0.1:22,80-90", "-x:22,80", "127.0.0.1:22,,80",
                                    "127.0.0.1:22,70000", "::1:22,80", "127.0.0.1:22, 80"])  # fmt: skip
def test_exec_refuses_a_malformed_host_ports_target(agent: AgentProcess, target: str) -> None:
    params = {"argv": ["echo", "{host}", "{ports}"], "parser": "lines", "type": "host_up"}
    done, records = agent.run_task(f"bad-{target}", "exec", [target], params)
    assert done["ok"] is False and records == []


# -- end to end --------------------------------------------------------------------------------

ARGV_LOGGER = (  # one printable line, no braces: what an exec argv element may be
    "import json, sys; log, host, ports = sys.argv[1:4]; open(log, 'a').write(json.dumps(sys.argv[2:]) + chr(10)); "
    "[print('%s:%s' % (host, p)) for p in ports.split(',')]"
)


@pytest.fixture
def listeners() -> Iterator[list[int]]:
    """Three SSH-looking listeners (a greeting at once, so nmap -sV names them without waiting)."""
    socks = []
    for _ in range(3):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        socks.append(sock)
        threading.Thread(target=_greet, args=(sock,), daemon=True).start()
    try:
        yield sorted(s.getsockname()[1] for s in socks)
    finally:
        for sock in socks:
            sock.close()


def _greet(sock: socket.socket) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        try:
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        except OSError:
            pass
        conn.close()


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.mark.slow
async def test_one_program_per_host_on_exactly_its_open_ports(tmp_path: Path, listeners: list[int]) -> None:
    log = tmp_path / "argv.jsonl"
    scanned = [*listeners, _closed_port()]
    stages = [
        {"id": "ports", "tool": "tcp_connect", "with": {"ports": scanned, "timeout": 1.0},
         "targets": {"from": "input", "type": "host"}, "chunk": 8, "retries": 0, "timeout": 60.0},
        {"id": "svc", "tool": "exec", "targets": {"from": "ports", "type": "host_ports", "where": {"type": "port_open"}},
         "with": {"argv": [sys.executable, "-c", ARGV_LOGGER, str(log), "{host}", "{ports}"], "parser": "lines",
                  "type": "port_open"}, "chunk": 1, "retries": 0, "timeout": 60.0},
    ]  # fmt: skip
    store = open_store(tmp_path / "s.db")
    run_id = store.runs.create("hp", {"stages": stages}, "127.0.0.1-2", None, "local", 0, None)
    state = await asyncio.wait_for(Master(store, "local").run_until_done(run_id), 120)
    assert state == RunState.COMPLETED, [e.message for e in store.events.recent(run_id)]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [["127.0.0.1", ",".join(str(p) for p in listeners)]]  # 127.0.0.2 has none open
    keys = sorted(r["key"] for r in store.results.records(run_id) if r["stage"] == "svc")
    assert keys == sorted(f"127.0.0.1:{p}/tcp" for p in listeners)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")
async def test_the_shipped_nmap_example_scans_exactly_the_open_ports(tmp_path: Path, listeners: list[int]) -> None:
    wf = load_workflows(Path(__file__).resolve().parents[1] / "workflows.yaml").get("nmap-open-ports")
    definition = wf.model_dump(mode="json", by_alias=True, exclude_none=True)
    scanned = [*listeners, _closed_port()]
    definition["stages"][0]["with"]["ports"] = ",".join(str(p) for p in scanned)
    store = open_store(tmp_path / "s.db")
    run_id = store.runs.create("nmap-open-ports", definition, "127.0.0.1", None, "local", 0, None)
    state = await asyncio.wait_for(Master(store, "local").run_until_done(run_id), 300)
    assert state == RunState.COMPLETED, [e.message for e in store.events.recent(run_id)]
    services = [r for r in store.results.records(run_id) if r["stage"] == "services" and r["type"] == "port_open"]
    assert sorted(r["key"] for r in services) == sorted(f"127.0.0.1:{p}/tcp" for p in listeners)
    assert {r["data"].get("service") for r in services} == {"ssh"}  # what the listeners greet with
    (task,) = store.db.query("SELECT targets FROM tasks WHERE stage_id = 'services'")
    assert json.loads(task["targets"]) == ["127.0.0.1:" + ",".join(str(p) for p in listeners)]


@pytest.mark.slow
async def test_split_ports_spreads_one_hosts_program_over_the_fleet(tmp_path: Path, listeners: list[int]) -> None:
    """split_ports: 1 on the exec stage: one program per open port, each port exactly once, over two agents."""
    log = tmp_path / "argv.jsonl"
    stages = [
        {"id": "ports", "tool": "tcp_connect", "with": {"ports": [*listeners, _closed_port()], "timeout": 1.0},
         "targets": {"from": "input", "type": "host"}, "chunk": 8, "retries": 0, "timeout": 60.0},
        {"id": "svc", "tool": "exec", "targets": {"from": "ports", "type": "host_ports", "where": {"type": "port_open"}},
         "with": {"argv": [sys.executable, "-c", ARGV_LOGGER, str(log), "{host}", "{ports}"], "parser": "lines",
                  "type": "port_open"}, "chunk": 8, "split_ports": 1, "retries": 0, "timeout": 60.0},
    ]  # fmt: skip
    store = open_store(tmp_path / "s.db")
    run_id = store.runs.create("hp", {"stages": stages}, "127.0.0.1", None, "local:2", 0, None)
    state = await asyncio.wait_for(Master(store, "local:2").run_until_done(run_id), 120)
    assert state == RunState.COMPLETED, [e.message for e in store.events.recent(run_id)]
    calls = sorted(json.loads(line) for line in log.read_text().splitlines())
    assert calls == sorted(["127.0.0.1", str(p)] for p in listeners)
    tasks = store.db.query("SELECT targets FROM tasks WHERE stage_id = 'svc'")
    assert sorted(json.loads(t["targets"]) for t in tasks) == sorted([f"127.0.0.1:{p}"] for p in listeners)
    keys = sorted(r["key"] for r in store.results.records(run_id) if r["stage"] == "svc")
    assert keys == sorted(f"127.0.0.1:{p}/tcp" for p in listeners)
