"""Transport framing and bootstrap, and the fleet's choice of boxes and health tracking."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from typing import Any

import pytest

from agentkit import wire
from agentkit.archive import build_archive
from console.errors import AgentError, TransportError
from console.fleet.fleet import AgentHandle, Fleet, handles_for
from console.fleet.links import AgentLink, ByteReader, ByteWriter, LocalLink


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None


class PipeLink(AgentLink):
    """A link over an in-memory pipe: the framing is exercised without a process (a unit edge)."""

    def __init__(self, feed: bytes) -> None:
        super().__init__("mem", 1)
        self.reader = asyncio.StreamReader()
        self.reader.feed_data(feed)
        self.reader.feed_eof()
        self.sink = _Sink()

    async def _open(self, sha256: str, size: int) -> tuple[ByteReader, ByteWriter]:
        return self.reader, self.sink

    async def _terminate(self, grace: float) -> None:
        return None

    def kill(self) -> None:
        return None


def hello_line(sha: str) -> bytes:
    return (
        b'{"op":"hello","protocol":%d,"hash":"%s","python":"3.11","pid":1,"tools":["noop"]}\n'
        % (wire.PROTOCOL_VERSION, sha.encode())
    )


async def test_framing_survives_bad_and_overlong_lines() -> None:
    sha = "a" * 64
    long_line = b"x" * (wire.MAX_LINE + 10) + b"\n"
    feed = (
        b"NEED\n" + hello_line(sha) + b"not json\n" + long_line + b'{"op":"pong","seq":7}\n' + b'{"op":"pong","seq":8}'
    )
    link = PipeLink(feed)
    hello = await link.start(b"ARCHIVE", sha)
    assert hello.hash == sha and link.pushed and bytes(link.sink.data) == b"ARCHIVE"
    with pytest.raises(AgentError, match="JSON"):
        await link.recv()
    with pytest.raises(AgentError, match="longer"):
        await link.recv()
    assert await link.recv() == wire.Pong(op="pong", seq=7)
    assert await link.recv() is None  # a partial last line is not a message


async def test_wrong_hash_or_protocol_in_hello_is_refused() -> None:
    with pytest.raises(AgentError, match="archive"):
        await PipeLink(hello_line("b" * 64)).start(b"", "a" * 64)
    bad_protocol = hello_line("a" * 64).replace(b'"protocol":%d' % wire.PROTOCOL_VERSION, b'"protocol":99')
    with pytest.raises(AgentError, match="protocol"):
        await PipeLink(bad_protocol).start(b"", "a" * 64)
    with pytest.raises(AgentError, match="bootstrap failed"):
        await PipeLink(b"ERROR python too old 2.7\n").start(b"", "a" * 64)


async def test_local_link_bootstraps_the_real_archive() -> None:
    archive, sha = build_archive()
    link = LocalLink("box")
    hello = await link.start(archive, sha)
    try:
        assert hello.hash == sha and "noop" in hello.tools
        await link.send(wire.Task(op="task", id="1.1", tool="noop", params={"records": 1}, targets=["127.0.0.1"]))
        seen: list[Any] = []
        while not any(isinstance(m, wire.Done) for m in seen):
            message = await asyncio.wait_for(link.recv(), 30)
            assert message is not None
            seen.append(message)
        done = seen[-1]
        assert done.id == "1.1" and done.ok
        records = [r for m in seen if isinstance(m, wire.Results) for r in m.records]
        assert records and records[0].type == "host_up"
    finally:
        await link.close()
    assert link.process is not None and link.process.returncode is not None


async def test_tampered_archive_is_refused_by_stage0() -> None:
    archive, _ = build_archive()
    wrong = hashlib.sha256(b"something else").hexdigest()
    link = LocalLink("box")
    with pytest.raises((AgentError, TransportError)):
        await link.start(archive, wrong)


async def test_fleet_goes_on_without_an_unreachable_box() -> None:
    events: list[Any] = []
    good = AgentHandle(name="good", kind="local", slots=2, factory=lambda: LocalLink("good", 2))
    bad = AgentHandle(
        name="bad", kind="local", slots=2, factory=lambda: LocalLink("bad", 2, python="/nonexistent/python3")
    )
    fleet = Fleet([good, bad], on_message=lambda h, m: events.append(m), on_lost=lambda h, r: None)
    await fleet.start(*build_archive())
    try:
        assert good.state == "up" and bad.state == "down" and "nonexistent" in (bad.error or "")
        assert any("bad down" in message for _, _, message in fleet.drain_events())
        rows = {r.name: r for r in fleet.rows("m")}
        assert rows["bad"].state == "down" and rows["good"].hash == build_archive()[1]
    finally:
        await fleet.close()


async def test_no_agent_up_is_a_transport_error_with_every_reason() -> None:
    handles = [
        AgentHandle(name=n, kind="local", slots=1, factory=lambda n=n: LocalLink(n, python=f"/nonexistent/{n}"))
        for n in ("b1", "b2")
    ]
    fleet = Fleet(handles, on_message=lambda h, m: None, on_lost=lambda h, r: None)
    with pytest.raises(TransportError, match="b1.*b2"):
        await fleet.start(*build_archive())
    await fleet.close()


def test_pick_prefers_least_loaded_and_untried_boxes() -> None:
    handles = handles_for("local:3")
    fleet = Fleet(handles, on_message=lambda h, m: None, on_lost=lambda h, r: None)
    for handle in handles:
        handle.state = "up"
        handle.slots = 4
    handles[0].busy = {"1.1", "2.1"}
    handles[1].busy = {"3.1"}
    assert fleet.pick().name == "local-3"
    assert fleet.pick(avoid=["local-3"]).name == "local-2"
    handles[2].busy = {"4.1", "5.1", "6.1", "7.1"}  # full
    assert fleet.pick(avoid=["local-2"]).name == "local-1"
    assert fleet.pick(pinned="local-3") is None
    assert fleet.free_slots() == 2 + 3 + 0


@pytest.mark.slow
async def test_a_frozen_agent_is_declared_dead_and_restarted() -> None:
    lost: list[str] = []
    handles = handles_for("local")
    fleet = Fleet(handles, on_message=lambda h, m: None, on_lost=lambda h, r: lost.append(r))
    await fleet.start(*build_archive())
    beat = asyncio.create_task(fleet.heartbeat())
    (handle,) = handles
    assert isinstance(handle.link, LocalLink) and handle.link.pid is not None
    frozen = handle.link.pid
    os.kill(frozen, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 30
        while not lost and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert lost and "no answer" in lost[0]
        while handle.state != "up" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert handle.state == "up" and isinstance(handle.link, LocalLink) and handle.link.pid != frozen
    finally:
        try:
            os.kill(frozen, signal.SIGKILL)
        except ProcessLookupError:
            pass
        beat.cancel()
        await fleet.close()


async def test_killing_a_local_agent_kills_its_tool_processes_too() -> None:
    import sys
    import uuid

    from tests.test_scheduler import processes_with

    marker = f"fleetscan-kill-{uuid.uuid4().hex}"
    archive, sha = build_archive()
    link = LocalLink("box")
    await link.start(archive, sha)
    params = {"argv": [sys.executable, "-c", "import time; time.sleep(60)", marker], "parser": "jsonl"}
    await link.send(wire.Task(op="task", id="1.1", tool="exec", params=params, targets=["127.0.0.1"]))
    deadline = time.monotonic() + 30
    while not processes_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert processes_with(marker), "the tool process never started"
    link.kill()
    while processes_with(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await link.close(grace=0.5)
    assert not processes_with(marker)


def test_a_box_failing_in_a_row_is_set_aside_only_when_others_can_work() -> None:
    from console.fleet.fleet import SET_ASIDE_AFTER

    handles = handles_for("local:2")
    fleet = Fleet(handles, on_message=lambda h, m: None, on_lost=lambda h, r: None)
    for handle in handles:
        handle.state = "up"
    bad, good = handles
    for _ in range(SET_ASIDE_AFTER - 1):
        fleet.task_failed(bad)
    fleet.task_ok(bad)  # a success resets the streak
    for _ in range(SET_ASIDE_AFTER - 1):
        fleet.task_failed(bad)
    assert bad.state == "up"
    fleet.task_failed(bad)
    assert bad.state == "set_aside" and fleet.pick() is good
    assert any("set aside" in message for _, _, message in fleet.drain_events())
    # the last box standing is never set aside: a failing tool would otherwise stall the run
    alone = handles_for("local")
    solo = Fleet(alone, on_message=lambda h, m: None, on_lost=lambda h, r: None)
    alone[0].state = "up"
    for _ in range(SET_ASIDE_AFTER * 2):
        solo.task_failed(alone[0])
    assert alone[0].state == "up"
