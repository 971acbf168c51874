"""Backpressure: a box flooding records is simply not read while its records wait for the store.

Unit: the read gate closes past its bound and opens at half of it. Real: a fake box floods
5,000 distinct 4 KB records with a 256 KB bound: the gate closes (the master stopped reading),
the box is never declared lost for the silence that causes, and every record is stored once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from console.fleet import gate as gate_module
from console.fleet.fleet import AgentHandle
from console.fleet.gate import ReadGate
from console.fleet.links import LocalLink
from console.master.scheduler import Master
from console.status import RunState
from console.store import open_store
from console.workflow.submit import prepare_run
from tests.fixtures.chaos import events, write_workflow
from tests.fixtures.fakebox import write_fakebox


async def test_the_gate_closes_past_its_bound_and_opens_at_half() -> None:
    gate = ReadGate(limit=1000)
    opened: list[int] = []
    gate.on_open.append(lambda: opened.append(gate.pending))
    gate.hold(900)
    assert gate.is_open
    gate.hold(200)
    assert not gate.is_open and gate.closures == 1
    waiter = asyncio.ensure_future(gate.wait())
    gate.release(500)  # 600 left: above half the bound, still closed
    await asyncio.sleep(0)
    assert not waiter.done()
    gate.release(100)
    await asyncio.wait_for(waiter, 1)
    assert gate.is_open and opened == [500] and gate.peak == 1100


async def test_a_flood_is_throttled_not_dropped_and_the_box_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gates: list[ReadGate] = []

    class Recording(ReadGate):
        def __init__(self, limit: int | None = None) -> None:
            super().__init__(limit)
            gates.append(self)

    monkeypatch.setattr(gate_module, "LIMIT_BYTES", 256 * 1024)
    monkeypatch.setattr("console.fleet.fleet.ReadGate", Recording)
    box = write_fakebox(tmp_path / "box", {"flood": [5000, 4000]})
    monkeypatch.setattr("console.master.scheduler.handles_for", lambda source: [
        AgentHandle(name="flood", kind="local", slots=1, factory=lambda: LocalLink("flood", 1, python=str(box)))
    ])
    workflow = write_workflow(tmp_path / "wf.yaml", "flood", [{
        "id": "scan", "tool": "exec", "retries": 0, "chunk": 4,
        "with": {"argv": ["true"], "parser": "jsonl"}, "targets": {"from": "input", "type": "host"},
    }])
    db = tmp_path / "flood.db"
    store = open_store(db)
    try:
        run_id = prepare_run(workflows_file=workflow, workflow="flood", targets="127.0.0.1-4", agents="local").create(store)
        state = await asyncio.wait_for(Master(store, "local").run_until_done(run_id), 300)
        stored = store.results.count(run_id)
    finally:
        store.close()
    assert state == RunState.COMPLETED
    assert stored == 5000
    (gate,) = gates
    assert gate.closures >= 1  # the master stopped reading at least once
    assert gate.peak <= 256 * 1024 + 512 * 4400  # the bound, plus at most one message of records
    assert not [e for e in events(db) if " lost" in e["message"]]
