"""A whole run over two real SSH boxes: the master spreads its chunks over both."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from console.master.scheduler import Master
from console.status import RunState
from console.store import open_store
from console.workflow.submit import prepare_run
from tests.fixtures.sshd import SshdFleet

pytestmark = [pytest.mark.ssh, pytest.mark.slow]

WORKFLOWS = """
workflows:
  spread:
    description: tcp_ping of many loopback hosts in small chunks, so every box gets some.
    stages:
      - id: alive
        tool: tcp_ping
        with: {{ports: [{port}], timeout: 2.0}}
        targets: {{from: input, type: host}}
        chunk: 2
"""


async def test_a_run_over_two_boxes_spreads_its_chunks_over_both(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # the other hosts refuse: a reset is "up" too
    workflows = tmp_path / "workflows.yaml"
    workflows.write_text(WORKFLOWS.format(port=listener.getsockname()[1]))
    inventory = sshd_boxes.write_inventory(tmp_path / "agents.yaml", slots=2)
    store = open_store(tmp_path / "fleetscan.db")
    try:
        prepared = prepare_run(
            workflows_file=workflows, workflow="spread", targets="127.0.0.1-24", agents=str(inventory)
        )
        run_id = prepared.create(store)
        master = Master(store, str(inventory), workflows_file=str(workflows))
        state = await asyncio.wait_for(master.run_until_done(run_id), 180)
        records = list(store.results.records(run_id))
    finally:
        store.close()
        listener.close()
    assert state == RunState.COMPLETED
    assert len(records) == 24
    assert {r["type"] for r in records} == {"host_up"}
    assert {r["agent"] for r in records} == {"box1", "box2"}


SLOW_WORKFLOW = """
workflows:
  slow:
    description: one-second noop tasks, so a box can die while it holds some.
    stages:
      - id: wait
        tool: noop
        with: {sleep: 1.0}
        targets: {from: input, type: host}
        chunk: 1
        retries: 2
"""


async def test_a_box_killed_mid_run_hands_its_tasks_to_the_other(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    workflows = tmp_path / "workflows.yaml"
    workflows.write_text(SLOW_WORKFLOW)
    inventory = sshd_boxes.write_inventory(tmp_path / "agents.yaml", slots=2)
    store = open_store(tmp_path / "fleetscan.db")
    try:
        run_id = prepare_run(
            workflows_file=workflows, workflow="slow", targets="127.0.0.1-12", agents=str(inventory)
        ).create(store)
        master = Master(store, str(inventory), workflows_file=str(workflows))
        running = asyncio.create_task(master.run_until_done(run_id))
        deadline = time.monotonic() + 120
        while store.runs.summary(run_id)["stages"][0]["tasks_done"] < 2:  # both boxes are busy by now
            assert time.monotonic() < deadline and not running.done()
            await asyncio.sleep(0.1)
        sshd_boxes.box("box1").kill()  # sshd, its connection and the agent: gone at once
        state = await asyncio.wait_for(running, 180)
        summary = store.runs.summary(run_id)
        tasks = store.db.query("SELECT agent, attempts, tried FROM tasks WHERE run_id = ?", (run_id,))
    finally:
        store.close()
    stage = summary["stages"][0]
    assert state == RunState.COMPLETED
    assert (stage["tasks_total"], stage["tasks_done"], stage["tasks_failed"]) == (12, 12, 0)
    retried = [t for t in tasks if t["attempts"] > 1]
    assert retried, "the tasks box1 held when it died were not re-dispatched"
    assert all(t["agent"] == "box2" for t in retried)
