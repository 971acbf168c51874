"""Local agents started early: adopted by their link with the same handshake, or ended unused."""

from __future__ import annotations

import os
import time

from agentkit.archive import build_archive
from console.fleet import prespawn
from console.fleet.links import LocalLink


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_a_started_agent_is_adopted_answers_tasks_and_ends_with_its_link() -> None:
    prespawn.spawn(1)
    (started,) = [proc.pid for _, proc in prespawn._SPARE]
    mine = os.sched_getaffinity(0)
    if len(mine) >= 2:  # starting, it leaves the master's first CPU alone; taken, it may use them all
        assert os.sched_getaffinity(started) == mine - {min(mine)}
    link = LocalLink("local")
    archive, sha = build_archive()
    hello = await link.start(archive, sha)
    assert link.pid == started and hello.hash == sha
    assert os.sched_getaffinity(started) == mine
    await link.send_raw(b'{"op":"task","id":"1.1","tool":"noop","params":{},"timeout":5.0,"scope":[],'
                        b'"targets":["127.0.0.1"]}\n')
    while True:
        message = await link.recv()
        assert message is not None
        if message.op == "done":
            assert message.ok
            break
    await link.close()
    assert not _alive(started)
    assert prespawn._SPARE == []


def test_agents_nobody_takes_end_when_discarded() -> None:
    prespawn.spawn(2)
    pids = [proc.pid for _, proc in prespawn._SPARE]
    assert all(_alive(pid) for pid in pids)
    prespawn.discard()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(pid) for pid in pids)
