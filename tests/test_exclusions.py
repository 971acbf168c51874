"""``--exclude``: never planned, never contacted, not even through a name that resolves to it.

Planner: excluded input and derived targets are dropped, counted in the stage's ``dropped`` and
logged. Agent (a real agent process): every tool goes through the task's guard, so a name
resolving to an excluded or out-of-scope address is not contacted (counted at real listeners on
loopback) and the refusal is reported (``blocked``). End to end: the master logs it as an event.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from console.master.planner import RunPlanner
from console.master.scheduler import Master
from console.runoptions import RunOptions
from console.status import RunState
from console.store import open_store
from console.store.base import Store
from console.store.rows import OwnedRun
from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.netns import inside, isolated_agent, socket_in
from tests.test_planner import finish_all, stage, stage_row


def make_run(store: Store, stages: list[dict[str, Any]], targets: str, exclude: str, scope: str | None = None) -> OwnedRun:
    run_id = store.runs.create("t", {"stages": stages}, targets, scope, "local", 0, None, RunOptions(exclude=exclude))
    store.queue.adopt_runs("m")
    (run,) = [r for r in store.queue.owned_runs("m") if r.id == run_id]
    return run


# -- planner ---------------------------------------------------------------------------------


def test_excluded_input_targets_are_never_planned(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    run = make_run(store, [stage("a", chunk=10)], "127.0.0.1-6,localhost", exclude="127.0.0.2-3,LOCALHOST")
    RunPlanner(store, run, []).step()
    (row,) = store.db.query("SELECT targets FROM tasks")
    assert json.loads(row["targets"]) == ["127.0.0.1", "127.0.0.4", "127.0.0.5", "127.0.0.6"]
    assert stage_row(store, run.id, "a")["dropped"] == 3
    (note,) = [e.message for e in store.events.recent(run.id) if e.kind == "scope"]
    assert "3 excluded target(s)" in note and "127.0.0.2" in note and "localhost" in note


def test_excluded_derived_targets_are_dropped_and_counted(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    stages = [stage("alive"), stage("web", "alive", type="url", where={"type": "port_open"})]
    run = make_run(store, stages, "127.0.0.1", scope="127.0.0.0/24", exclude="127.0.0.7")
    planner = RunPlanner(store, run, [])
    planner.step()
    finish_all(store, run.id, "alive", [
        ("port_open", {"host": "127.0.0.1", "port": 80, "proto": "tcp"}),
        ("port_open", {"host": "127.0.0.7", "port": 80, "proto": "tcp"}),  # excluded
        ("port_open", {"host": "127.0.0.7", "port": 443, "proto": "tcp"}),  # excluded, other port
        ("port_open", {"host": "127.0.1.1", "port": 80, "proto": "tcp"}),  # out of scope
    ])
    planner.step()
    planner.step()
    planned = [t for r in store.db.query("SELECT targets FROM tasks WHERE stage_id = 'web'") for t in json.loads(r["targets"])]
    assert planned == ["http://127.0.0.1/"]
    assert stage_row(store, run.id, "web")["dropped"] == 3
    (note,) = [e.message for e in store.events.recent(run.id) if e.kind == "scope"]
    assert "1 out-of-scope" in note and "2 excluded" in note and "127.0.0.7" in note


# -- the agent's guard, tool by tool -----------------------------------------------------------


class Listener:
    """A TCP listener on loopback that counts the connections it gets (in the agent's namespace
    when it has one of its own, so that nothing else on the machine is counted)."""

    def __init__(self, host: str = "127.0.0.1", where: Any = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket_in(*where, family) if where is not None else socket.socket(family)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            try:
                conn.sendall(b"HELLO\r\n")
            except OSError:
                pass
            conn.close()

    def close(self) -> int:
        """Stop, after taking every connection still in the accept queue; the count."""
        time.sleep(0.3)
        self._stop = True
        time.sleep(0.2)
        self.sock.setblocking(False)
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                break
            self.accepted += 1
            conn.close()
        self.sock.close()
        return self.accepted


@pytest.fixture(scope="module")
def isolated() -> Iterator[tuple[AgentProcess, bool]]:
    process, own_namespace = isolated_agent()
    try:
        yield process, own_namespace
    finally:
        process.stop()


@pytest.fixture
def agent(isolated: tuple[AgentProcess, bool]) -> AgentProcess:
    return isolated[0]


def blocked(agent: AgentProcess, task_id: str) -> list[tuple[str, str, str]]:
    return [(m["host"], m["address"], m["reason"]) for m in agent.lines if m.get("op") == "blocked" and m.get("id") == task_id]


def localhost_v4_only() -> None:
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", None, 0, socket.SOCK_STREAM)}
    if addresses != {"127.0.0.1"}:
        pytest.skip(f"localhost resolves to {sorted(addresses)} here")


TOOLS = [
    ("tcp_connect", lambda port: ["localhost"], lambda port: {"ports": [port], "timeout": 1.0}),
    ("tcp_ping", lambda port: ["localhost"], lambda port: {"ports": [port], "timeout": 1.0}),
    ("banner", lambda port: [f"localhost:{port}"], lambda port: {"timeout": 1.0}),
    ("tls_cert", lambda port: [f"localhost:{port}"], lambda port: {"timeout": 1.0}),
    ("http_probe", lambda port: [f"http://localhost:{port}/"], lambda port: {"timeout": 1.0}),
    ("service", lambda port: [f"localhost:{port}"], lambda port: {"timeout": 1.0}),
]


@pytest.mark.parametrize(("tool", "targets", "params"), TOOLS, ids=[t[0] for t in TOOLS])
@pytest.mark.parametrize(
    ("scope", "exclude", "reason"),
    [(["127.0.0.0/8", "localhost"], ["127.0.0.1"], "excluded"), (["127.0.0.2", "localhost"], [], "out of scope")],
    ids=["excluded", "out-of-scope"],
)
def test_a_name_resolving_to_a_refused_address_is_never_contacted(
    agent: AgentProcess, isolated: Any, tool: str, targets: Any, params: Any, scope: list[str], exclude: list[str], reason: str
) -> None:
    localhost_v4_only()
    listener = Listener(where=isolated)
    task_id = f"guard-{tool}-{reason}"
    done, records = agent.run_task(task_id, tool, targets(listener.port), params(listener.port), scope=scope, exclude=exclude)
    assert listener.close() == 0  # not one connection reached the address
    assert done["ok"] is True, done
    assert records == []
    assert blocked(agent, task_id) == [("localhost", "127.0.0.1", reason)]


def test_the_same_tools_do_contact_the_address_when_nothing_refuses_it(agent: AgentProcess, isolated: Any) -> None:
    """The guard's counterpart: the listener does count connections (the test above can fail)."""
    localhost_v4_only()
    for tool, targets, params in TOOLS:
        listener = Listener(where=isolated)
        agent.run_task(f"allowed-{tool}", tool, targets(listener.port), params(listener.port),
                       scope=["127.0.0.0/8", "localhost"], exclude=["127.0.0.2"])  # fmt: skip
        assert listener.close() >= 1, tool
        assert blocked(agent, f"allowed-{tool}") == []


def test_an_excluded_address_given_as_a_target_is_not_contacted(agent: AgentProcess, isolated: Any) -> None:
    listener = Listener(where=isolated)
    done, records = agent.run_task("guard-ip", "tcp_connect", ["127.0.0.1"], {"ports": [listener.port]},
                                   scope=["127.0.0.0/8"], exclude=["127.0.0.1-127.0.0.1"])  # fmt: skip
    assert listener.close() == 0 and done["ok"] and records == []
    assert blocked(agent, "guard-ip") == [("127.0.0.1", "127.0.0.1", "excluded")]


def test_exec_never_starts_a_program_on_a_refused_host(agent: AgentProcess) -> None:
    localhost_v4_only()
    done, records = agent.run_task("guard-exec", "exec", ["localhost", "127.0.0.3"],
                                   {"argv": ["echo", "{host}"], "parser": "lines", "type": "note"},
                                   scope=["127.0.0.0/8", "localhost"], exclude=["127.0.0.1"])  # fmt: skip
    assert done["ok"], done
    assert [r["data"]["line"] for r in records] == ["127.0.0.3"]
    assert blocked(agent, "guard-exec") == [("localhost", "127.0.0.1", "excluded")]


def test_dns_never_reports_a_refused_address(agent: AgentProcess) -> None:
    localhost_v4_only()
    done, records = agent.run_task("guard-dns", "dns", ["localhost"], {}, scope=["localhost", "127.0.0.0/8"],
                                   exclude=["127.0.0.1"])  # fmt: skip
    assert done["ok"] and records == []
    assert blocked(agent, "guard-dns") == [("localhost", "127.0.0.1", "excluded")]


class _Redirect(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.server.hits += 1  # type: ignore[attr-defined]
        location = self.server.location  # type: ignore[attr-defined]
        self.send_response(302 if location else 200)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def http_server(host: str, location: str | None, where: Any) -> ThreadingHTTPServer:
    make = lambda: ThreadingHTTPServer((host, 0), _Redirect)  # noqa: E731
    server = inside(*where, make) if where is not None else make()
    server.hits = 0  # type: ignore[attr-defined]
    server.location = location  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_redirect_to_an_excluded_address_is_not_followed(agent: AgentProcess, isolated: Any) -> None:
    final = http_server("127.10.0.7", None, isolated)
    start = http_server("127.10.0.1", f"http://127.10.0.7:{final.server_address[1]}/", isolated)
    try:
        done, records = agent.run_task("guard-redirect", "http_probe", [f"http://127.10.0.1:{start.server_address[1]}/"],
                                       {"timeout": 2}, scope=["127.10.0.0/24"], exclude=["127.10.0.7"])  # fmt: skip
        assert done["ok"]
        assert start.hits == 1 and final.hits == 0  # type: ignore[attr-defined]
        assert blocked(agent, "guard-redirect") == [("127.10.0.7", "127.10.0.7", "excluded")]
        (record,) = records
        assert record["data"]["status"] == 302 and record["data"]["redirect_blocked"] == "excluded"
    finally:
        for server in (start, final):
            server.shutdown()
            server.server_close()


# -- end to end: the master counts and logs what the agents refused -----------------------------


#: a scope too large for every task line (sent to each agent once, by reference): scattered addresses
LARGE_SCOPE = ",".join(f"127.60.{n // 250}.{n % 250 * 1 + 1}" for n in range(0, 6000, 2))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["plain", "split_ports", "large_scope"])
async def test_a_run_with_exclusions_plans_around_them_and_logs_agent_refusals(tmp_path: Path, how: str) -> None:
    """Also for tasks with their own parameters (a split_ports part) and for a scope sent by reference:
    the agent holds every task against the run's exclusions."""
    localhost_v4_only()
    listener = Listener()
    store = open_store(tmp_path / "s.db")
    tcp = {"id": "ports", "tool": "tcp_connect", "with": {"ports": [listener.port, listener.port + 1], "timeout": 1.0},
           "targets": {"from": "input", "type": "host"}, "chunk": 8, "retries": 0, "timeout": 60.0}  # fmt: skip
    if how == "split_ports":
        tcp["split_ports"] = 1
    scope = f"127.0.0.1-3,localhost,{LARGE_SCOPE}" if how == "large_scope" else None
    # scope bounds addresses, and localhost (listed by name) resolves to the excluded 127.0.0.1
    run_id = store.runs.create("x", {"stages": [tcp]}, "127.0.0.1-3,localhost", scope, "local", 0, None,
                               RunOptions(exclude="127.0.0.1"))  # fmt: skip
    state = await asyncio.wait_for(Master(store, "local").run_until_done(run_id), 120)
    listener.close()  # (on the shared loopback: its count could include other scanners; the records cannot)
    assert state == RunState.COMPLETED
    assert list(store.results.records(run_id)) == []  # localhost:port is open: contacted, it would be a record
    assert store.db.query("SELECT dropped FROM stages WHERE id = 'ports'")[0]["dropped"] == 1
    messages = [e.message for e in store.events.recent(run_id) if e.kind == "scope"]
    assert any("1 excluded target(s): 127.0.0.1" in m for m in messages), messages
    assert any("did not contact 127.0.0.1 (localhost resolved to it): excluded" in m for m in messages), messages


@pytest.mark.slow
def test_fleetscan_run_with_exclude_never_scans_the_excluded_addresses(tmp_path: Path) -> None:
    """The user's path: `fleetscan run --exclude` (a range and a name), local agent, real listeners."""
    from tests.fixtures.chaos import fleetscan, query, write_workflow

    open_on = [http_server(host, None, None) for host in ("127.11.0.1", "127.11.0.2", "127.11.0.3")]
    ports = sorted({s.server_address[1] for s in open_on})
    workflows = write_workflow(tmp_path / "workflows.yaml", "scan", [
        {"id": "ports", "tool": "tcp_connect", "with": {"ports": ports, "timeout": 1.0},
         "targets": {"from": "input", "type": "host"}, "chunk": 2},
        {"id": "web", "tool": "http_probe", "targets": {"from": "ports", "type": "url", "where": {"type": "port_open"}}},
    ])  # fmt: skip
    db = tmp_path / "x.db"
    try:
        out = fleetscan("run", "scan", "--targets", "127.11.0.1-3", "--exclude", "127.11.0.2-127.11.0.2,localhost",
                        "--workflows", str(workflows), "--json", db=db)  # fmt: skip
    finally:
        for server in open_on:
            server.shutdown()
            server.server_close()
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["exclude"] == "127.11.0.2,localhost"
    hosts = {json.loads(r["data"])["host"] for r in query(db, "SELECT data FROM results WHERE type = 'port_open'")}
    assert hosts == {"127.11.0.1", "127.11.0.3"}
    web = {json.loads(r["data"])["url"] for r in query(db, "SELECT data FROM results WHERE type = 'http'")}
    assert all("127.11.0.2" not in url for url in web) and len(web) == 2
    dropped = query(db, "SELECT id, dropped FROM stages ORDER BY id")
    assert dropped == [{"id": "ports", "dropped": 1}, {"id": "web", "dropped": 0}]
