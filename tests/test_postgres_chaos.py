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
from tests.fixtures.chaos import parent, processes_with
from tests.test_scheduler import exec_params, stage, submit, wait_for

pytestmark = pytest.mark.slow

HEADLESS = (
    "import asyncio, sys; from console.store import open_store; from console.master.scheduler import Master; "
    "asyncio.run(Master(open_store(sys.argv[1]), 'local:2').serve())"
)
TARGETS = 40


def my_agents() -> set[int]:
    """The local agent processes this test process started (the master runs in it)."""
    me = os.getpid()
    return {pid for pid in processes_with("agentkit") if parent(pid) == me}


def expected_keys() -> list[str]:
    return sorted(f"127.0.0.{i}" for i in range(1, TARGETS + 1))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_two_masters_share_a_run_and_one_killed_loses_and_doubles_nothing(
    backend: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "s.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = open_store(url)
    run_id = submit(store, [stage("a", tool="exec", params=exec_params(1.5))], f"127.0.0.1-{TARGETS}")
    victim = subprocess.Popen([sys.executable, "-c", HEADLESS, url])
    survivor = Master(store, "local:2")
    task = asyncio.create_task(survivor.serve())
    try:
        def both_dispatched() -> bool:
            owners = {r["master"] for r in store.db.query("SELECT DISTINCT master FROM results WHERE run_id = ?", (run_id,))}
            return len(owners) >= 2

        await wait_for(both_dispatched, 90, "records from both masters")
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
    keys = [r["key"] for r in store.results.records(run_id)]
    assert sorted(keys) == expected_keys()  # every target once: nothing lost, nothing doubled
    summary = store.runs.summary(run_id)["stages"][0]
    assert summary["results"] == TARGETS and summary["tasks_done"] == TARGETS and summary["tasks_failed"] == 0
    masters = {r["master"] for r in store.results.records(run_id)}
    assert survivor.master_id in masters and len(masters) == 2
    assert [m.id for m in store.queue.masters()] == []  # the dead one reaped, the survivor unregistered


async def test_the_postgresql_server_restarted_mid_run_loses_nothing(postgres_server: Any, pg_url: str) -> None:
    store = open_store(pg_url)
    run_id = submit(store, [stage("a", tool="exec", params=exec_params(0.3))], f"127.0.0.1-{TARGETS}")
    master = Master(open_store(pg_url), "local:2")
    task = asyncio.create_task(master.run_until_done(run_id))

    def done() -> int:
        try:
            return int(store.runs.summary(run_id)["stages"][0]["tasks_done"])
        except Exception:  # noqa: BLE001 - the test's own connection dies with the server too
            return 0

    await wait_for(lambda: done() >= 5, 90, "progress before the restart")
    agents = my_agents()
    assert len(agents) == 2
    before = done()
    await asyncio.to_thread(postgres_server.restart, 2.0)
    assert before < TARGETS - 10  # mid-run: most of the work is left for after the restart
    await wait_for(lambda: done() >= before + 10, 90, "progress after the restart")
    assert my_agents() == agents  # the master kept its agents while it reconnected
    state = await asyncio.wait_for(task, 180)
    assert state == RunState.COMPLETED
    store = open_store(pg_url)
    keys = [r["key"] for r in store.results.records(run_id)]
    assert sorted(keys) == expected_keys()
    assert store.runs.summary(run_id)["stages"][0]["results"] == TARGETS
