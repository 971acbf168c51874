"""--max-rate and --host-rate, measured where they matter: accepts at the target, per 1 s window."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from console.master.scheduler import Master
from console.runoptions import RunOptions
from console.status import RunState
from console.store import open_store
from console.store.grants import RunBudget, grant
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


def test_two_masters_sharing_a_store_share_one_budget(tmp_path: Path) -> None:
    max_rate = 60
    farm = AcceptCounter(HOSTS[:2], 90)
    db = tmp_path / "shared.db"
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
