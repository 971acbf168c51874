"""split_ports: a host's port list cut into tasks of at most N ports, each port planned exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from console.errors import BadInput
from console.master.planner import RunPlanner
from console.master.scheduler import Master
from console.master.split import port_parts
from console.status import RunState
from console.store import open_store
from console.store.base import Store
from console.workflow.models import load_workflows
from console.workflow.params import port_spans
from tests.test_planner import finish_all, make_run


def ports_of(text: str) -> list[int]:
    return [p for first, last in port_spans(text) for p in range(first, last + 1)]


def split_stage(sid: str, ports: str, split: int, source: str = "input", **extra: Any) -> dict[str, Any]:
    return {
        "id": sid, "tool": "tcp_connect", "params": {"ports": ports, "timeout": 1.0},
        "targets": {"from": source, "type": "host", "where": extra.pop("where", None)},
        "chunk": extra.pop("chunk", 4), "retries": 0, "timeout": 60.0, "split_ports": split, **extra,
    }


def tasks_of(store: Store, run_id: str, stage_id: str) -> list[tuple[list[str], dict[str, Any] | None]]:
    rows = store.db.query("SELECT targets, params FROM tasks WHERE run_id = ? AND stage_id = ? ORDER BY id",
                          (run_id, stage_id))
    return [(json.loads(r["targets"]), json.loads(r["params"]) if r["params"] else None) for r in rows]


@pytest.mark.parametrize(("ports", "size"), [
    ("1-65535", 4096), ("1-1024,8080,8443", 100), ("22", 1), ("1-10,12,14-20", 3), ("100-200", 101),
])
def test_parts_hold_every_port_exactly_once_in_order(ports: str, size: int) -> None:
    parts = port_parts(ports, size)
    flat = [p for part in parts for p in ports_of(part)]
    assert flat == ports_of(ports)
    assert all(len(ports_of(part)) <= size for part in parts)
    assert all(len(ports_of(part)) == size for part in parts[:-1])


def test_each_host_becomes_one_task_per_part_and_the_parts_cover_its_ports(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    run = make_run(store, [split_stage("p", "1-1000,2000", 100, chunk=8)], "127.0.0.1-3")
    RunPlanner(store, run, []).step()
    tasks = tasks_of(store, run.id, "p")
    assert len(tasks) == 3 * 11
    for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        mine = [params for targets, params in tasks if targets == [host]]
        assert len(mine) == 11
        flat = sorted(p for params in mine for p in ports_of(params["ports"]))  # type: ignore[index]
        assert flat == [*range(1, 1001), 2000]
    assert all(len(targets) == 1 for targets, _ in tasks)


def test_input_splits_are_planned_lazily_within_the_window(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    run = make_run(store, [split_stage("p", "1-1000", 100)], "127.0.0.0/24")
    planner = RunPlanner(store, run, [], window=25)
    planner.step()
    tasks = tasks_of(store, run.id, "p")
    assert len(tasks) == 20  # two whole hosts of ten parts: never half a host
    assert {t[0][0] for t in tasks} == {"127.0.0.0", "127.0.0.1"}


def test_ports_that_fit_one_part_keep_chunking_hosts(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    run = make_run(store, [split_stage("p", "1-100", 100, chunk=2)], "127.0.0.1-4")
    RunPlanner(store, run, []).step()
    assert tasks_of(store, run.id, "p") == [
        (["127.0.0.1", "127.0.0.2"], None), (["127.0.0.3", "127.0.0.4"], None),
    ]


def test_a_derived_split_stage_gets_one_task_per_host_and_part(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    alive = {"id": "a", "tool": "noop", "params": {}, "targets": {"from": "input", "type": "host"}, "chunk": 4,
             "retries": 0, "timeout": 30.0}
    run = make_run(store, [alive, split_stage("p", "1-300", 100, source="a")], "127.0.0.1-2")
    planner = RunPlanner(store, run, [])
    planner.step()
    finish_all(store, run.id, "a", [("host_up", {"host": "127.0.0.1"}), ("host_up", {"host": "127.0.0.2"})])
    planner.step()
    planner.step()
    tasks = tasks_of(store, run.id, "p")
    assert sorted((t[0][0], t[1]["ports"]) for t in tasks) == [  # type: ignore[index]
        (h, part) for h in ("127.0.0.1", "127.0.0.2") for part in ("1-100", "101-200", "201-300")
    ]
    planner.step()  # planned once: another step adds nothing
    assert len(tasks_of(store, run.id, "p")) == 6
    assigned = store.db.query("SELECT task_id FROM stage_targets WHERE run_id = ? AND stage_id = 'p'", (run.id,))
    assert len(assigned) == 2 and all(r["task_id"] for r in assigned)


def test_split_ports_on_a_tool_without_a_port_list_is_bad_input_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("workflows:\n  w:\n    stages:\n      - id: x\n        tool: noop\n        split_ports: 10\n")
    with pytest.raises(BadInput, match="split_ports") as caught:
        load_workflows(path)
    assert "wf.yaml" in str(caught.value) and ":4" in str(caught.value)


def test_a_split_full_scan_over_two_agents_finds_exactly_the_open_ports(tmp_path: Path) -> None:
    listeners = []
    for _ in range(6):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        listeners.append(sock)
    opened = {s.getsockname()[1] for s in listeners}
    low, high = min(opened) - 500, max(opened) + 500
    store = open_store(tmp_path / "s.db")
    try:
        run_id = store.runs.create(
            "t", {"stages": [split_stage("p", f"{low}-{high}", max(1, (high - low) // 7))]}, "127.0.0.1", None,
            "local:2", 0, None,
        )
        state = asyncio.run(Master(store, "local:2").run_until_done(run_id))
        assert state == RunState.COMPLETED
        tasks = store.db.query("SELECT agent FROM tasks WHERE run_id = ?", (run_id,))
        assert len(tasks) >= 7
        assert len({t["agent"] for t in tasks}) == 2  # the one host spread over both agents
        found = {json.loads(r["data"])["port"] for r in store.db.query("SELECT data FROM results WHERE run_id = ?",
                                                                         (run_id,))}
        listening = {p for p in found if p in opened}
        assert listening == opened
        # anything else found was another process's listener on this shared machine, never a duplicate
        keys = store.db.query("SELECT count(*) AS n, count(DISTINCT key) AS k FROM results WHERE run_id = ?", (run_id,))
        assert keys[0]["n"] == keys[0]["k"]
    finally:
        for sock in listeners:
            sock.close()
        store.close()


async def test_a_split_task_whose_agent_dies_is_retried_with_its_own_part_and_loses_nothing(tmp_path: Path) -> None:
    from tests.fixtures.accepts import AcceptCounter
    from tests.test_scheduler import serving, wait_for

    farm = AcceptCounter(["127.0.0.5"], 200)
    store = open_store(tmp_path / "s.db")
    definition = {"stages": [{
        **split_stage("p", f"{farm.ports.start}-{farm.ports.stop - 1}", 50), "retries": 2,
        "params": {"ports": f"{farm.ports.start}-{farm.ports.stop - 1}", "timeout": 1.0, "rate": 40.0},
    }]}
    run_id = store.runs.create("t", definition, "127.0.0.5", None, "local:2", 0, None)
    master = Master(store, "local:2")
    killed: dict[str, Any] = {}

    async def chaos() -> None:
        ex = await wait_for(lambda: next(iter(master.flight.execs.values()), None), what="a running task")
        await asyncio.sleep(0.4)
        killed["task"], killed["agent"] = ex.task.task_id, ex.agent.name
        os.kill(ex.agent.link.pid, signal.SIGKILL)
        await wait_for(lambda: store.runs.get(run_id).state == "completed", 120, "the run to complete")

    try:
        await serving(master, chaos, run_ids=[run_id])
    finally:
        farm.close()
    rows = store.db.query("SELECT data FROM results WHERE run_id = ?", (run_id,))
    assert sorted(json.loads(r["data"])["port"] for r in rows) == list(farm.ports)  # each once, none lost
    task = store.db.query("SELECT state, tried, attempts, params FROM tasks WHERE id = ?", (killed["task"],))[0]
    assert task["state"] == "done" and killed["agent"] in json.loads(task["tried"]) and task["attempts"] == 2
    # the retry probed its own part again: the part's ports were accepted at the target on both attempts
    part = ports_of(json.loads(task["params"])["ports"])
    assert len(farm.accepts["127.0.0.5"]) > len(farm.ports) and len(part) == 50
    store.close()
