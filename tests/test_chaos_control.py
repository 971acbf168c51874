"""Run control from another process, through the CLI: pause, resume, stop — and nothing left behind.

The intents are separate `fleetscan pause|resume|stop` processes acting on a run that a
`fleetscan run` or `fleetscan master` process drives; every check is on the store, the
record set, and /proc. Deadlines are generous (the machine is shared); the real latencies
are measured in benchmarks/bench_chaos.py.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.fixtures.chaos import (
    ChaosWorkflow,
    FleetscanProcess,
    agent_children,
    alive,
    busiest_agent,
    events,
    fault_free,
    fleetscan,
    kill_quietly,
    only_run,
    query,
    record_set,
    run_state,
    straggler_copies,
    tasks,
    tool_processes,
    tools_running,
    wait_until,
)

pytestmark = pytest.mark.slow


def _done(db: Path, run_id: str) -> dict[int, float]:
    return {r["id"]: r["ended"] for r in query(db, "SELECT id, ended FROM tasks WHERE run_id = ? AND state = 'done'",
                                              (run_id,))}


def test_pause_stops_dispatch_and_resume_finishes_with_the_same_records(tmp_path: Path, store_url: str) -> None:
    workflow = ChaosWorkflow(tmp_path, sleep=0.5, ports_stage=False)
    workflow.write()
    targets = "127.0.0.1-64"
    expected = fault_free(workflow, targets, tmp_path / "clean.db")

    db = store_url  # a fresh SQLite file or PostgreSQL database
    with FleetscanProcess("run", workflow.name, "--targets", targets, "--workflows", str(workflow.path),
                          "--agents", "local:2", "--json", db=db) as run:
        run_id = wait_until(lambda: _run_id(db), 60, "the run")
        wait_until(lambda: len(_done(db, run_id)) >= 4, 60, "some tasks done")
        paused = fleetscan("pause", run_id, db=db)
        assert paused.returncode == 0, paused.stderr
        assert run_state(db, run_id) == "paused"
        # the running tasks finish, nothing new starts; `fleetscan run` waits for the END, not the pause
        leased = "SELECT id FROM tasks WHERE run_id = ? AND state = 'leased'"
        wait_until(lambda: not tool_processes(workflow.marker) and not query(db, leased, (run_id,)), 30,
                   "the running tasks to end and be recorded")
        before = _done(db, run_id)
        time.sleep(1.5)  # nothing may start while paused
        assert not tool_processes(workflow.marker)
        assert _done(db, run_id) == before
        assert query(db, "SELECT count(*) AS n FROM tasks WHERE run_id = ? AND state = 'leased'", (run_id,))[0]["n"] == 0
        assert 4 <= len(before) < 64
        assert run.proc.poll() is None, "`fleetscan run` must wait while its run is paused"

        # `resume` from another process: the waiting `run` serves the run to its end
        resumed = fleetscan("resume", run_id, "--json", db=db, timeout=180)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["state"] == "completed"
        assert run.wait(60) == 0, run.stderr()
        assert json.loads(run.stdout())["state"] == "completed"
    assert record_set(db, run_id) == expected
    after = _done(db, run_id)
    assert {i: after[i] for i in before} == before, "a task done before the pause was run again"
    run_events = events(db, run_id)
    for task in tasks(db, run_id):
        # a claimed but undispatched task got its attempt back at the pause
        assert task["state"] == "done" and task["attempts"] == 1 + straggler_copies(run_events, task["id"]), task
    kinds = [e["kind"] for e in run_events]
    assert "pause" in kinds and "resume" in kinds


def test_stop_cancels_running_tasks_on_the_boxes_while_the_master_serves_on(tmp_path: Path, store_url: str) -> None:
    """`fleetscan stop` against a `fleetscan master`: the tools die, the agents stay, the run ends stopped."""
    workflow = ChaosWorkflow(tmp_path, sleep=60.0)
    workflow.write()
    db = store_url  # a fresh SQLite file or PostgreSQL database
    with FleetscanProcess("master", "--agents", "local:2", "--workflows", str(workflow.path), db=db) as master:
        submitted = fleetscan("submit", workflow.name, "--targets", "127.0.0.1-6", "--workflows",
                              str(workflow.path), db=db)
        assert submitted.returncode == 0, submitted.stderr
        run_id = submitted.stdout.strip()
        tools = wait_until(lambda: tools_running(workflow.marker, 6), 60, "six tool processes")
        agents = agent_children(master.pid)
        assert len(agents) == 2
        stopped = fleetscan("stop", run_id, db=db)
        assert stopped.returncode == 0, stopped.stderr
        wait_until(lambda: run_state(db, run_id) == "stopped", 30, "the run to end stopped")
        wait_until(lambda: not any(alive(pid) for pid in tools), 30, "the tool processes to be killed")
        assert master.proc.poll() is None and all(alive(pid) for pid in agents), "the master and agents serve on"
        assert master.interrupt() == 130, master.stderr()
    assert {t["state"] for t in tasks(db, run_id)} == {"cancelled"}
    assert record_set(db, run_id) == set()
    wait_until(lambda: not any(alive(pid) for pid in agents), 10, "the agents to exit with the master")


def test_stop_ends_fleetscan_run_with_nothing_left_behind(tmp_path: Path, store_url: str) -> None:
    """`fleetscan stop` against `fleetscan run`: exit 1, run stopped, no agent or tool process remains."""
    workflow = ChaosWorkflow(tmp_path, sleep=60.0)
    workflow.write()
    db = store_url  # a fresh SQLite file or PostgreSQL database
    with FleetscanProcess("run", workflow.name, "--targets", "127.0.0.1-6", "--workflows", str(workflow.path),
                          "--agents", "local:2", "--json", db=db) as run:
        run_id = wait_until(lambda: _run_id(db), 60, "the run")
        wait_until(lambda: len(tool_processes(workflow.marker)) == 6, 60, "six tool processes")
        agents = agent_children(run.pid)
        assert len(agents) == 2
        stopped = fleetscan("stop", run_id, db=db)
        assert stopped.returncode == 0, stopped.stderr
        assert run.wait(60) == 1, run.stderr()
        assert json.loads(run.stdout())["state"] == "stopped"
    assert run_state(db, run_id) == "stopped"
    assert {t["state"] for t in tasks(db, run_id)} == {"cancelled"}
    wait_until(lambda: not tool_processes(workflow.marker), 10, "no tool process left")
    wait_until(lambda: not any(alive(pid) for pid in agents), 10, "no agent process left")
    assert any(e["kind"] == "stop" for e in events(db, run_id))


def _run_id(db: Path) -> str | None:
    return only_run(db)


def test_stop_while_an_agent_hangs_still_ends_the_run_and_leaves_nothing(tmp_path: Path) -> None:
    """One agent SIGSTOPped (it cannot answer the cancel): the stop still ends the run, every tool dies."""
    workflow = ChaosWorkflow(tmp_path, sleep=60.0)
    workflow.write()
    db = tmp_path / "stop.db"
    frozen: list[int] = []
    try:
        with FleetscanProcess("run", workflow.name, "--targets", "127.0.0.1-6", "--workflows", str(workflow.path),
                              "--agents", "local:2", "--json", db=db) as run:
            run_id = wait_until(lambda: _run_id(db), 60, "the run")
            tools = wait_until(lambda: tools_running(workflow.marker, 6), 60, "six tool processes")
            agents = agent_children(run.pid)
            victim, _ = wait_until(lambda: busiest_agent(workflow.marker), 10, "an agent with tasks")
            os.kill(victim, signal.SIGSTOP)
            frozen.append(victim)
            stopped = fleetscan("stop", run_id, db=db)
            assert stopped.returncode == 0, stopped.stderr
            assert run.wait(60) == 1, run.stderr()
            assert json.loads(run.stdout())["state"] == "stopped"
    finally:
        kill_quietly(frozen, signal.SIGCONT)
    assert {t["state"] for t in tasks(db, run_id)} == {"cancelled"}
    wait_until(lambda: not any(alive(pid) for pid in tools), 15, "every tool process killed, the hung agent's too")
    wait_until(lambda: not any(alive(pid) for pid in agents), 15, "no agent process left")


def test_two_resumes_of_one_interrupted_run_share_it_without_duplicates(tmp_path: Path, store_url: str) -> None:
    """Two `fleetscan resume` at once after a crash: one master owns the run, nothing runs twice."""
    workflow = ChaosWorkflow(tmp_path, sleep=0.5)
    workflow.write()
    targets = "127.0.0.1-24"
    expected = fault_free(workflow, targets, tmp_path / "clean.db")
    db = store_url  # a fresh SQLite file or PostgreSQL database
    with FleetscanProcess("run", workflow.name, "--targets", targets, "--workflows", str(workflow.path),
                          "--agents", "local:2", db=db) as run:
        run_id = wait_until(lambda: _run_id(db), 60, "the run")
        wait_until(lambda: _done(db, run_id), 60, "a task done")
        kill_quietly([run.pid])
        run.wait(30)
    with FleetscanProcess("resume", run_id, "--json", db=db) as first, \
            FleetscanProcess("resume", run_id, "--json", db=db) as second:
        assert first.wait(180) == 0, first.stderr()
        assert second.wait(180) == 0, second.stderr()
        assert json.loads(first.stdout())["state"] == json.loads(second.stdout())["state"] == "completed"
    assert record_set(db, run_id) == expected
    run_events = events(db, run_id)
    for task in tasks(db, run_id):
        assert task["state"] == "done" and task["attempts"] == 1 + straggler_copies(run_events, task["id"]), task


def test_stop_of_a_run_whose_master_died_ends_it_at_once(tmp_path: Path) -> None:
    """No live owner to cancel anything: `fleetscan stop` ends the run itself; resume then reports it stopped."""
    workflow = ChaosWorkflow(tmp_path, sleep=60.0)
    workflow.write()
    db = tmp_path / "orphan.db"
    with FleetscanProcess("run", workflow.name, "--targets", "127.0.0.1-4", "--workflows", str(workflow.path),
                          "--agents", "local:2", db=db) as run:
        run_id = wait_until(lambda: _run_id(db), 60, "the run")
        wait_until(lambda: tools_running(workflow.marker, 4), 60, "four tool processes")
        agents = agent_children(run.pid)
        kill_quietly([run.pid])
        run.wait(30)
    wait_until(lambda: not any(alive(pid) for pid in agents), 30, "the orphaned agents to exit")
    assert not tool_processes(workflow.marker)
    stopped = fleetscan("stop", run_id, db=db)
    assert stopped.returncode == 0, stopped.stderr
    assert run_state(db, run_id) == "stopped"
    assert {t["state"] for t in tasks(db, run_id)} == {"cancelled"}
    resumed = fleetscan("resume", run_id, "--json", db=db)
    assert resumed.returncode == 1 and json.loads(resumed.stdout)["state"] == "stopped", resumed.stderr
