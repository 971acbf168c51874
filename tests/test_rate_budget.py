"""--max-rate and --host-rate, measured where they matter: accepts at the target, per 1 s window."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from console.master.planner import RunPlanner
from console.master.scheduler import Master
from console.runoptions import RunOptions
from console.status import RunState, TaskState
from console.store import open_store
from console.store.base import Store
from console.store.grants import RunBudget, grant
from console.store.writes import Completion, IngestBatch, Requeue
from tests.fixtures.accepts import AcceptCounter

HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def scan(ports: range, split: int) -> dict[str, object]:
    return {"stages": [{
        "id": "p", "tool": "tcp_connect", "params": {"ports": f"{ports.start}-{ports.stop - 1}", "timeout": 1.0},
        "targets": {"from": "input", "type": "host"}, "chunk": 1, "retries": 0, "timeout": 120.0,
        "split_ports": split,
    }]}


def test_the_budget_holds_at_the_target_per_host_and_per_run(tmp_path: Path) -> None:
    max_rate, host_rate = 100, 45
    farm = AcceptCounter(HOSTS, 120)
    store = open_store(tmp_path / "b.db")
    try:
        run_id = store.runs.create(
            "t", scan(farm.ports, 30), ",".join(HOSTS), None, "local:4", 0, None,
            RunOptions(max_rate=max_rate, host_rate=host_rate),
        )
        state = asyncio.run(Master(store, "local:4").run_until_done(run_id))
        assert state == RunState.COMPLETED
        found = {(json.loads(r["data"])["host"], json.loads(r["data"])["port"])
                 for r in store.db.query("SELECT data FROM results WHERE run_id = ?", (run_id,))}
        assert found == {(h, p) for h in HOSTS for p in farm.ports}
    finally:
        farm.close()
        store.close()
    assert sum(len(v) for v in farm.accepts.values()) == 3 * 120
    assert farm.peak() <= max_rate * 1.25, farm.peak()
    for host in HOSTS:
        assert farm.peak(host) <= host_rate * 1.25, (host, farm.peak(host))


def test_two_masters_sharing_a_store_share_one_budget(store_url: str) -> None:
    max_rate = 60
    farm = AcceptCounter(HOSTS[:2], 90)
    db = store_url  # a fresh SQLite file or PostgreSQL database
    store = open_store(db)
    try:
        run_id = store.runs.create(
            "t", scan(farm.ports, 15), ",".join(HOSTS[:2]), None, "local:2", 0, None, RunOptions(max_rate=max_rate),
        )
        others: list[BaseException] = []

        def second() -> None:
            other = open_store(db)
            try:
                asyncio.run(Master(other, "local:2").serve(stop_when_idle=True, run_ids=[run_id]))
            except BaseException as err:  # noqa: BLE001 - reported below
                others.append(err)
            finally:
                other.close()

        thread = threading.Thread(target=second)
        thread.start()
        state = asyncio.run(Master(store, "local:2").run_until_done(run_id))
        thread.join(120)
        assert not others
        assert state == RunState.COMPLETED
        masters = {r["lease_owner"] for r in store.db.query("SELECT lease_owner FROM tasks")}
        assert masters == {None}
    finally:
        farm.close()
        store.close()
    assert sum(len(v) for v in farm.accepts.values()) == 2 * 90
    assert farm.peak() <= max_rate * 1.25, farm.peak()


def test_grants_never_exceed_what_is_left_and_share_a_host() -> None:
    budget = RunBudget(max_rate=100.0, host_rate=30.0)
    budget.hold(["127.0.0.9"], 40.0)
    grants = grant(budget, [(1, '["127.0.0.1"]'), (2, '["127.0.0.1"]'), (3, '["127.0.0.2"]')], 3)
    assert grants == {1: 15.0, 2: 15.0, 3: 30.0}
    assert budget.granted == 100.0
    assert grant(budget, [(4, '["127.0.0.3"]')], 1) == {}  # nothing left: it waits


def _budgeted_run(store: Store, hosts: str, split: int, options: RunOptions) -> str:
    run_id = store.runs.create("t", scan(range(1000, 1400), split), hosts, None, "local", 0, None, options)
    store.queue.adopt_runs("m")
    (run,) = [r for r in store.queue.owned_runs("m") if r.id == run_id]
    RunPlanner(store, run, []).step()
    return run_id


def test_claims_grant_what_leased_tasks_leave_and_take_it_back_when_they_end(store_url: str) -> None:
    store = open_store(store_url)
    run_id = _budgeted_run(store, "127.0.0.1", 100, RunOptions(max_rate=100))  # 4 tasks of 100 ports
    first = store.queue.claim_tasks("m", 10, 60.0, budget_slots=2)
    assert [t.rate for t in first] == [50.0, 50.0]
    assert store.queue.claim_tasks("m", 10, 60.0, budget_slots=2) == []  # nothing left: nothing claimed
    # one ends, one is re-queued (a retry): both grants come back and are shared by what starts now
    store.queue.apply_batch(IngestBatch(
        completions=[Completion(first[0].id, run_id, "p", TaskState.DONE, "box")],
        requeues=[Requeue(first[1].id, 0.0, ("box",))],
    ))
    again = store.queue.claim_tasks("m", 10, 60.0, budget_slots=4)
    all_ids = [r["id"] for r in store.db.query("SELECT id FROM tasks WHERE run_id = ? ORDER BY id", (run_id,))]
    assert sorted(t.id for t in again) == [i for i in all_ids if i != first[0].id]
    assert [round(t.rate or 0, 6) for t in again] == [round(100 / 3, 6)] * 3
    store.close()


def test_a_second_master_gets_only_what_the_first_left(store_url: str) -> None:
    store = open_store(store_url)
    run_id = _budgeted_run(store, "127.0.0.1-2", 100, RunOptions(max_rate=90, host_rate=40))
    mine = store.queue.claim_tasks("m", 10, 60.0, budget_slots=3)
    # the run moves to another master (this one presumed gone); its leases stay held until they end
    store.db.conn.execute("UPDATE runs SET owner = 'other' WHERE id = ?", (run_id,))
    theirs = store.queue.claim_tasks("other", 10, 60.0, budget_slots=8)
    granted = [*mine, *theirs]
    assert sum(t.rate or 0 for t in granted) <= 80.0 + 1e-9  # two hosts at 40 each bind before 90
    for host in ("127.0.0.1", "127.0.0.2"):
        assert sum(t.rate or 0 for t in granted if host in t.targets) <= 40.0 + 1e-9
    store.close()


def test_a_task_whose_host_share_is_taken_is_passed_over_for_one_that_can_start() -> None:
    budget = RunBudget(max_rate=None, host_rate=30.0)
    budget.hold(["127.0.0.1"], 30.0)
    assert grant(budget, [(1, '["127.0.0.1"]'), (2, '["127.0.0.1"]'), (3, '["127.0.0.2"]')], 1) == {3: 30.0}
