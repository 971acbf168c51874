"""Several masters on one store, under faults: a master killed with SIGKILL mid-run, the
PostgreSQL server restarted mid-run. The record set must equal what the targets say (every
target's one host_up record, each once), however the work was split or interrupted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from console.master.scheduler import Master
from console.status import RunState
from console.store import open_store
from tests.fixtures.chaos import parent, processes_with, straggler_copies
from tests.test_scheduler import exec_params, stage, submit, wait_for

pytestmark = pytest.mark.slow

HEADLESS = (
    "import asyncio, sys; from console.store import open_store; from console.master.scheduler import Master; "
    "asyncio.run(Master(open_store(sys.argv[1]), 'local:2', master_id=sys.argv[2]).serve())"
)
TARGETS = 40
#: the kill test's run: several rounds of claims per master, so the victim is seen holding leases while
#: its first records are stored (with one round each, all of a master's tasks can end in one flush)
SHARED_TARGETS = 120


def my_agents() -> set[int]:
    """The local agent processes this test process started (the master runs in it)."""
    me = os.getpid()
    return {pid for pid in processes_with("agentkit") if parent(pid) == me}


def expected_keys(targets: int = TARGETS) -> list[str]:
    return sorted(f"127.0.0.{i}" for i in range(1, targets + 1))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_two_masters_share_a_run_and_one_killed_loses_and_doubles_nothing(
    backend: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "s.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = open_store(url)
    victim = subprocess.Popen([sys.executable, "-c", HEADLESS, url, "victim"])
    survivor = Master(store, "local:2", master_id="survivor")
    task = asyncio.create_task(survivor.serve())
    try:
        # both masters up with their agents, then the run: both claim from its start
        await wait_for(lambda: len([m for m in store.queue.masters() if m.agents >= 2]) == 2, 90, "both masters")
        run_id = submit(store, [stage("a", tool="exec", params=exec_params(1.0))], f"127.0.0.1-{SHARED_TARGETS}")

        def victim_busy() -> bool:
            held = store.db.query("SELECT count(*) AS n FROM tasks WHERE lease_owner = 'victim'")[0]["n"]
            done = store.db.query("SELECT count(*) AS n FROM results WHERE master = 'victim'")[0]["n"]
            return bool(held and done)

        await wait_for(victim_busy, 90, "the victim to have records and leased tasks")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        await wait_for(lambda: store.runs.get(run_id).state == RunState.COMPLETED, 120, "the run to complete")
        assert time.monotonic() - killed_at < 60
    finally:
        if victim.poll() is None:
            victim.kill()
        survivor.shutdown()
        await asyncio.wait_for(task, 30)
    records = list(store.results.records(run_id))
    assert sorted(r["key"] for r in records) == expected_keys(SHARED_TARGETS)  # every target once: nothing lost or doubled
    assert {r["master"] for r in records} == {"victim", "survivor"}
    summary = store.runs.summary(run_id)["stages"][0]
    assert summary["results"] == summary["tasks_done"] == SHARED_TARGETS and summary["tasks_failed"] == 0
    # the tasks the victim held were given back with their attempt: each task done at its first attempt
    run_events = [{"kind": e.kind, "message": e.message} for e in store.events.recent(run_id, limit=100_000)]
    for row in store.db.query("SELECT id, attempts FROM tasks"):
        assert row["attempts"] == 1 + straggler_copies(run_events, row["id"]), row
    assert "survivor" not in [m.id for m in store.queue.masters()]  # it left; the victim's row goes once noticed


async def test_the_postgresql_server_restarted_mid_run_loses_nothing(postgres_server: Any, pg_url: str) -> None:
    store = open_store(pg_url)
    run_id = submit(store, [stage("a", tool="exec", params=exec_params(0.3))], f"127.0.0.1-{TARGETS}")
    # a serving master keeps its agents once the run is done, so they can be compared after it
    master = Master(open_store(pg_url), "local:2")
    task = asyncio.create_task(master.serve())

    def done() -> int:
        try:
            return int(store.runs.summary(run_id)["stages"][0]["tasks_done"])
        except Exception:  # noqa: BLE001 - the test's own connection dies with the server too
            return 0

    def state() -> RunState | None:
        try:
            return store.runs.get(run_id).state
        except Exception:  # noqa: BLE001 - as above
            return None

    try:
        await wait_for(lambda: done() >= 5, 90, "progress before the restart")
        agents = my_agents()
        assert len(agents) == 2
        before = done()
        await asyncio.to_thread(postgres_server.restart, 2.0)
        assert before < TARGETS - 10  # mid-run: most of the work is left for after the restart
        await wait_for(lambda: state() == RunState.COMPLETED, 180, "the run to complete after the restart")
        assert my_agents() == agents  # the master kept its agents while it reconnected
    finally:
        master.shutdown()
        await asyncio.wait_for(task, 30)
    store = open_store(pg_url)
    keys = [r["key"] for r in store.results.records(run_id)]
    assert sorted(keys) == expected_keys()
    assert store.runs.summary(run_id)["stages"][0]["results"] == TARGETS
    events = store.events.recent(None, limit=1000)
    assert not [e.message for e in events if e.kind == "agent" and (" lost" in e.message or " down" in e.message)]
