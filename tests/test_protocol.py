"""The master's view of the wire: every agent line validated, master messages encoded."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkit import wire
from console.errors import AgentError
from console.fleet.protocol import decode_master_line, encode, parse_agent_line


def line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_each_agent_message_parses_to_its_dataclass() -> None:
    hello = parse_agent_line(line({"op": "hello", "protocol": 1, "hash": "ab" * 32, "python": "3.8.10",
                                   "pid": 42, "tools": ["noop"], "programs": {"nmap": "/usr/bin/nmap"}}))
    assert isinstance(hello, wire.Hello) and hello.programs == {"nmap": "/usr/bin/nmap"} and hello.hostname == ""
    results = parse_agent_line(line({"op": "results", "id": "7.1", "records": [
        {"type": "host_up", "target": "127.0.0.1", "data": {"host": "127.0.0.1"}}]}))
    assert isinstance(results, wire.Results) and isinstance(results.records[0], wire.Record)
    assert parse_agent_line(line({"op": "progress", "id": "7.1", "done": 3, "total": 9})) == wire.Progress(
        op="progress", id="7.1", done=3, total=9)
    assert parse_agent_line(line({"op": "done", "id": "7.1", "ok": False, "error": "cancelled"})) == wire.Done(
        op="done", id="7.1", ok=False, error="cancelled")
    assert parse_agent_line(b'{"op":"pong","seq":5}') == wire.Pong(op="pong", seq=5)
    assert parse_agent_line(line({"op": "error", "error": "bad line"})) == wire.Error(op="error", error="bad line")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"\n", "empty"),
        (b"not json\n", "not JSON"),
        (b'{"op": "done", "id": "1", "ok": true', "not JSON"),
        (b"[1, 2]\n", "not a JSON object"),
        (b'"hello"\n', "not a JSON object"),
        (b'{"id": "1"}\n', "no op"),
        (b'{"op": "task", "id": "1"}\n', "unknown message op"),
        (b'{"op": "launch"}\n', "unknown message op"),
        (b'{"op": "done", "id": "1", "ok": "yes"}\n', "ok"),
        (b'{"op": "done", "id": 1, "ok": true}\n', "id"),
        (b'{"op": "progress", "id": "1", "done": 1.5, "total": 2}\n', "done"),
        (b'{"op": "progress", "id": "1", "done": -1, "total": 2}\n', "negative"),
        (b'{"op": "pong", "seq": "5"}\n', "seq"),
        (b'{"op": "results", "id": "1", "records": [{"type": "host_up"}]}\n', "records"),
        (b'{"op": "results", "id": "1", "records": {}}\n', "records"),
        (b'{"op": "hello", "protocol": 1}\n', "hash"),
        (b'{"op": "done", "id": "1", "ok": true, "error": NaN}\n', "not JSON"),
        (b"\xff\xfe{}\n", "UTF-8"),
        (b'{"op": "done", "id": "' + b"x" * 500 + b'", "ok": true}\n', "task id"),
    ],
)
def test_bad_lines_raise_agent_error_with_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(AgentError) as info:
        parse_agent_line(raw)
    assert reason in str(info.value)
    assert len(str(info.value)) < 400


def test_oversized_line_is_refused_without_parsing() -> None:
    with pytest.raises(AgentError, match="too long"):
        parse_agent_line(b"{" + b" " * wire.MAX_LINE + b"}")


def test_batch_limit() -> None:
    records = [{"type": "host_up", "target": "127.0.0.1", "data": {"host": "127.0.0.1"}}] * (wire.MAX_BATCH + 1)
    with pytest.raises(AgentError, match="records"):
        parse_agent_line(line({"op": "results", "id": "1.1", "records": records}))


def test_encode_master_messages() -> None:
    task = wire.Task(op="task", id="3.1", tool="tcp_connect", params={"ports": "1-1024"}, targets=["127.0.0.1"],
                     timeout=60.0, scope=["127.0.0.0/8"])
    data = encode(task)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data) == {"op": "task", "id": "3.1", "tool": "tcp_connect", "params": {"ports": "1-1024"},
                                "targets": ["127.0.0.1"], "timeout": 60.0, "scope": ["127.0.0.0/8"],
                                "exclude": []}
    assert decode_master_line(data) == task
    for msg in (wire.Cancel(op="cancel", id="3.1"), wire.Ping(op="ping", seq=9), wire.Shutdown(op="shutdown")):
        assert decode_master_line(encode(msg)) == msg


def test_a_large_scope_goes_by_reference_in_parts_each_entry_once() -> None:
    from console.fleet.protocol import SCOPE_PART_BYTES, ScopeRef, TaskEncoder

    scope = [f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(1, 400_000, 2)]
    exclude = ["127.0.0.9", "localhost"]
    assert ScopeRef.needed(scope, exclude) and not ScopeRef.needed(["127.0.0.0/8"], [])
    ref = ScopeRef(scope, exclude)
    parts = [decode_master_line(line) for line in ref.lines.splitlines()]
    assert len(parts) > 1 and all(isinstance(p, wire.Scope) and p.id == ref.id for p in parts)
    assert [p.more for p in parts] == [True] * (len(parts) - 1) + [False]
    assert [e for p in parts for e in p.scope] == scope and [e for p in parts for e in p.exclude] == exclude
    assert all(len(line) < SCOPE_PART_BYTES + 4096 < wire.MAX_LINE for line in ref.lines.splitlines())
    assert ScopeRef(scope, exclude).id == ref.id != ScopeRef(scope, []).id  # the id is the content's
    line = TaskEncoder("tcp_connect", {"ports": [22]}, 60.0, scope, exclude, ref).line("4.1", '["127.0.0.1"]')
    task = decode_master_line(line)
    assert isinstance(task, wire.Task) and task.scope_id == ref.id and task.scope == task.exclude == []
    assert len(line) < 300


def test_encode_refuses_agent_messages_and_bad_shapes() -> None:
    with pytest.raises(TypeError):
        encode(wire.Pong(op="pong", seq=1))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode(wire.Task(op="task", id="1", tool="noop", params={"x": float("nan")}, targets=[]))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    try:
        msg = parse_agent_line(raw)
    except AgentError:
        return
    assert isinstance(msg, wire.AGENT_MESSAGES)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30), st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_progress_round_trip(ident: str, done: int, total: int) -> None:
    raw = json.dumps({"op": "progress", "id": ident, "done": done, "total": total}).encode()
    try:
        msg = parse_agent_line(raw)
    except AgentError:
        assert not ident.isprintable() or len(ident) > 200
        return
    assert msg == wire.Progress(op="progress", id=ident, done=done, total=total)
