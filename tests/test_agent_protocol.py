"""The agent's JSON-lines loop, driven as a real subprocess over pipes."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentkit import agent as agent_module
from agentkit import wire
from agentkit.archive import build_archive
from agentkit.context import TaskContext
from tests.fixtures.agent_process import AgentProcess


@pytest.fixture
def agent() -> Iterator[AgentProcess]:
    process = AgentProcess.from_source()
    try:
        yield process
    finally:
        process.stop()


def hello_of(process: AgentProcess) -> dict[str, Any]:
    message = process.read()
    assert message is not None and message["op"] == "hello", message
    return message


def pid_alive(pid: int) -> bool:
    """/proc scan: is there a live (non-zombie) process with this pid?"""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    """/proc scan: live processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_hello_first_with_hash_tools_and_programs(agent: AgentProcess) -> None:
    hello = hello_of(agent)
    assert hello["protocol"] == wire.PROTOCOL_VERSION
    assert hello["hash"] == build_archive()[1]
    assert hello["pid"] == agent.proc.pid
    assert hello["hostname"] == socket.gethostname()
    assert {
        "tcp_ping",
        "tcp_connect",
        "banner",
        "http_probe",
        "tls_cert",
        "dns",
        "baseline",
        "exec",
        "noop",
    } <= set(hello["tools"])
    assert hello["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    assert all(os.path.isabs(path) for path in hello["programs"].values())


def test_ping_malformed_unknown_and_long_lines_get_answers_and_agent_keeps_serving(
    agent: AgentProcess,
) -> None:
    hello_of(agent)
    agent.send(b"this is not json\n")
    assert agent.read()["op"] == "error"
    agent.send(b"[1, 2]\n")
    assert agent.read()["op"] == "error"
    agent.send({"op": "frobnicate"})
    error = agent.read()
    assert error["op"] == "error" and "frobnicate" in error["error"]
    agent.send(b"\xff\xfe\n")
    assert agent.read()["op"] == "error"
    agent.send(b"[" * 200_000 + b"\n")
    assert agent.read()["op"] == "error"
    agent.send({"op": "ping", "seq": "x"})
    assert agent.read()["op"] == "error"
    agent.send({"op": "task", "id": "bad", "tool": "noop", "targets": "not-a-list"})
    bad = agent.read()
    assert bad["op"] == "error" and bad["id"] == "bad"
    agent.send(b'{"op": "ping", "seq": 1, "pad": "' + b"x" * (wire.MAX_LINE + 10) + b'"}\n')
    long_error = agent.read()
    assert long_error["op"] == "error" and "longer" in long_error["error"]
    agent.send({"op": "ping", "seq": 7})
    assert agent.read() == {"op": "pong", "seq": 7}


def test_noop_records_arrive_in_batches_then_exactly_one_done(agent: AgentProcess) -> None:
    hello_of(agent)
    done, records = agent.run_task("n1", "noop", [], {"records": 1500})
    assert done == {"op": "done", "id": "n1", "ok": True, "error": None}
    assert [r["data"]["via"] for r in records] == [f"noop/{i}" for i in range(1500)]
    batches = [m for m in agent.lines if m["op"] == "results"]
    assert all(len(m["records"]) <= wire.MAX_BATCH for m in batches) and len(batches) >= 3
    progress = [m for m in agent.lines if m["op"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 1500
    agent.send({"op": "ping", "seq": 2})
    agent.read_until(lambda m: m["op"] == "pong")
    assert sum(1 for m in agent.lines if m["op"] == "done") == 1


def test_unknown_tool_bad_params_and_duplicate_ids(agent: AgentProcess) -> None:
    hello_of(agent)
    done, _ = agent.run_task("u1", "no_such_tool", [], {})
    assert done["ok"] is False and "unknown tool" in done["error"]
    done, _ = agent.run_task("p1", "tcp_connect", ["127.0.0.1"], {"ports": {"a": 1}})
    assert done["ok"] is False and "params.ports" in done["error"]
    agent.send({"op": "task", "id": "d1", "tool": "noop", "targets": [], "params": {"sleep": 30}})
    agent.send({"op": "task", "id": "d1", "tool": "noop", "targets": [], "params": {}})
    dup = agent.read_until(lambda m: m["op"] == "error")
    assert dup["id"] == "d1" and "already running" in dup["error"]
    agent.send({"op": "cancel", "id": "d1"})
    assert agent.done("d1")["error"] == "cancelled"
    agent.send({"op": "cancel", "id": "d1"})
    late = agent.read_until(lambda m: m["op"] == "error")
    assert late["id"] == "d1"


def test_tasks_run_concurrently_and_ping_answers_while_they_run(agent: AgentProcess) -> None:
    hello_of(agent)
    for n in range(3):
        agent.send({"op": "task", "id": f"s{n}", "tool": "noop", "targets": [], "params": {"sleep": 30}})
    agent.send({"op": "ping", "seq": 11})
    assert agent.read_until(lambda m: m["op"] in ("pong", "done")) == {"op": "pong", "seq": 11}
    agent.send({"op": "task", "id": "quick", "tool": "noop", "targets": [], "params": {"records": 1}})
    assert agent.done("quick")["ok"] is True
    for n in range(3):
        agent.send({"op": "cancel", "id": f"s{n}"})
    assert {agent.done(f"s{n}")["error"] for n in range(3)} == {"cancelled"}


def test_task_timeout_ends_with_done_error(agent: AgentProcess) -> None:
    hello_of(agent)
    done, _ = agent.run_task("t1", "noop", [], {"sleep": 60}, timeout=0.5)
    assert done["ok"] is False and done["error"].startswith("timeout")


def test_cancel_of_long_exec_kills_the_whole_process_group(agent: AgentProcess, tmp_path: Any) -> None:
    hello_of(agent)
    marker = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {marker}.tmp; mv {marker}.tmp {marker}; exec sleep 60"
    agent.send({"op": "task", "id": "x1", "tool": "exec", "targets": [],
                "params": {"argv": ["sh", "-c", script], "parser": "lines"}})  # fmt: skip
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the exec never started"
        time.sleep(0.05)
    background = int(marker.read_text())
    children = children_of(agent.proc.pid)
    assert children and pid_alive(background)
    agent.send({"op": "cancel", "id": "x1"})
    done = agent.done("x1")
    assert done == {"op": "done", "id": "x1", "ok": False, "error": "cancelled"}
    assert wait_gone(background), "a grandchild of the cancelled exec survived"
    assert all(wait_gone(pid) for pid in children), "the exec's process survived"


def test_child_output_never_reaches_the_protocol_stream(agent: AgentProcess) -> None:
    hello_of(agent)
    # the last write goes straight to the AGENT's own fd 1 (sh's parent is the agent): it must land nowhere
    noisy = (
        "echo junk-on-stdout; echo junk-on-stderr >&2; echo more-junk > /dev/stdout; echo ok;"
        ' echo \'{"op":"done","id":"forged"}\' > /proc/$PPID/fd/1'
    )
    done, records = agent.run_task(
        "j1", "exec", [], {"argv": ["sh", "-c", noisy], "parser": "lines", "type": "note"}
    )
    assert done["ok"] is True
    # the exec's own stdout is captured and parsed (its lines become records) ...
    assert [r["data"]["line"] for r in records] == ["junk-on-stdout", "more-junk", "ok"]
    # ... and every line the agent wrote is a JSON message: nothing leaked into the stream
    for raw in agent.raw:
        assert isinstance(json.loads(raw), dict)
    agent.send({"op": "ping", "seq": 3})
    agent.read_until(lambda m: m["op"] == "pong")
    assert not [m for m in agent.lines if m.get("id") == "forged"], "a child wrote into the protocol stream"


def test_stdin_eof_cancels_tasks_and_exits(agent: AgentProcess) -> None:
    hello_of(agent)
    agent.send({"op": "task", "id": "e1", "tool": "noop", "targets": [], "params": {"sleep": 60}})
    agent.close_stdin()
    assert agent.done("e1")["error"] == "cancelled"
    assert agent.proc.wait(10) == 0


def test_shutdown_exits_promptly(agent: AgentProcess) -> None:
    hello_of(agent)
    agent.send({"op": "task", "id": "z1", "tool": "noop", "targets": [], "params": {"sleep": 60}})
    agent.send({"op": "shutdown"})
    assert agent.done("z1")["error"] == "cancelled"
    assert agent.proc.wait(10) == 0


class _Capture(io.BytesIO):
    def close(self) -> None:  # keep the bytes readable after the agent is done
        pass


def test_a_tool_exception_is_a_done_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit edge: a tool that raises a plain exception (a bug) ends its task, the agent serves on."""
    from agentkit import tools

    def broken(ctx: TaskContext, targets: list[str], params: dict[str, Any]) -> None:
        ctx.emit("host_up", "127.0.0.1", {"host": "127.0.0.1", "via": "test", "rtt_ms": 0.0})
        raise RuntimeError("tool bug")

    monkeypatch.setitem(tools.REGISTRY, "broken", broken)
    out = _Capture()
    served = agent_module.Agent(agent_module.ProtocolWriter(out))
    read_end, write_end = os.pipe()
    os.write(
        write_end,
        b'{"op":"task","id":"b1","tool":"broken","targets":[],"params":{}}\n{"op":"ping","seq":5}\n',
    )
    with os.fdopen(read_end, "rb") as stdin:
        server = threading.Thread(target=served.serve, args=(stdin,), daemon=True)
        server.start()
        deadline = time.monotonic() + 30
        while b'"done"' not in out.getvalue():
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.02)
        os.close(write_end)  # EOF: serve() returns
        server.join(10)
        assert not server.is_alive()
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    done = [m for m in messages if m["op"] == "done"]
    assert len(done) == 1 and done[0]["ok"] is False and "RuntimeError: tool bug" in done[0]["error"]
    assert {"op": "pong", "seq": 5} in messages
    results = [m for m in messages if m["op"] == "results"]
    assert results and messages.index(results[0]) < messages.index(done[0])


def test_sigterm_takes_the_tool_process_groups_down_too(agent: AgentProcess, tmp_path: Any) -> None:
    """Tool children run in their own sessions; a dropped SSH session (SIGHUP/SIGTERM) must not orphan them."""
    import signal

    hello_of(agent)
    marker = tmp_path / "pid"
    script = f"echo $$ > {marker}.tmp; mv {marker}.tmp {marker}; exec sleep 60"
    agent.send(
        {"op": "task", "id": "k1", "tool": "exec", "targets": [], "params": {"argv": ["sh", "-c", script]}}
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the exec never started"
        time.sleep(0.05)
    child = int(marker.read_text())
    assert pid_alive(child)
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(10) == 128 + signal.SIGTERM
    assert wait_gone(child), "the exec outlived its agent"


def test_writer_splits_batches_over_the_line_limit_and_drops_what_cannot_be_sent() -> None:
    out = _Capture()
    writer = agent_module.ProtocolWriter(out)
    big = "x" * (wire.MAX_LINE // 3)
    records = [
        wire.Record("service", "127.0.0.1:1", {"host": "127.0.0.1", "port": 1, "banner": big})
        for _ in range(4)
    ]
    writer.send(wire.Results(op="results", id="w1", records=records))
    writer.send(
        wire.Results(op="results", id="w2", records=[wire.Record("x", "", {"blob": "y" * wire.MAX_LINE})])
    )
    writer.send(wire.Results(op="results", id="w3", records=[wire.Record("x", "", {"v": float("nan")})]))
    lines = out.getvalue().splitlines()
    assert all(len(line) < wire.MAX_LINE for line in lines)
    messages = [json.loads(line) for line in lines]
    assert sum(len(m["records"]) for m in messages if m["op"] == "results") == 4
    assert [(m["op"], m["id"]) for m in messages if m["op"] == "error"] == [("error", "w2"), ("error", "w3")]


def test_a_scope_sent_by_reference_guards_the_tasks_that_name_it(agent: AgentProcess) -> None:
    """A ``scope`` message (in parts) stands for the scope and exclusions of the tasks naming its id; an
    unknown id fails the task; the agent keeps the newest wire.MAX_SCOPES."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        agent.send({"op": "scope", "id": "s1", "scope": ["127.0.0.0/8"], "exclude": [], "more": True})
        agent.send({"op": "scope", "id": "s1", "scope": ["localhost"], "exclude": ["127.0.0.1"]})
        agent.send({"op": "task", "id": "t1", "tool": "tcp_connect", "targets": ["127.0.0.1"],
                    "params": {"ports": [port], "timeout": 1.0}, "scope_id": "s1"})
        done = agent.done("t1")
        assert done["ok"], done
        assert [m for m in agent.lines if m.get("op") == "results" and m.get("id") == "t1"] == []  # excluded
        assert [(m["address"], m["reason"]) for m in agent.lines if m.get("op") == "blocked"] == [("127.0.0.1", "excluded")]
        agent.send({"op": "scope", "id": "s2", "scope": ["127.0.0.0/8"], "exclude": []})
        done, records = agent.run_task("t2", "tcp_connect", ["127.0.0.1"], {"ports": [port], "timeout": 1.0})
        assert done["ok"] and len(records) == 1  # the inline form still works beside it
    agent.send({"op": "task", "id": "t3", "tool": "noop", "targets": ["127.0.0.1"], "params": {}, "scope_id": "nope"})
    assert agent.done("t3") == {"op": "done", "id": "t3", "ok": False,
                                "error": "unknown scope 'nope' (the master sends a scope before the tasks that name it)"}
    for n in range(wire.MAX_SCOPES):  # s1 is pushed out by as many newer ones
        agent.send({"op": "scope", "id": f"n{n}", "scope": ["127.0.0.1"], "exclude": []})
    agent.send({"op": "task", "id": "t4", "tool": "noop", "targets": ["127.0.0.1"], "params": {}, "scope_id": "s1"})
    agent.send({"op": "task", "id": "t5", "tool": "noop", "targets": ["127.0.0.1"], "params": {}, "scope_id": "n0"})
    assert agent.done("t4")["ok"] is False and agent.done("t5")["ok"] is True
    agent.send({"op": "task", "id": "t6", "tool": "noop", "targets": [], "params": {}, "scope_id": "n0",
                "scope": ["127.0.0.1"]})
    agent.send({"op": "scope", "id": "", "scope": []})
    agent.send({"op": "scope", "id": "x", "scope": [1]})
    errors = [agent.read_until(lambda m: m.get("op") == "error")["error"] for _ in range(3)]
    assert errors == ["task: a task names its scope by scope_id or carries it, not both",
                      "scope: id must be a string of 1 to 128 characters",
                      "scope: scope and exclude must be lists of strings, more a boolean"]
