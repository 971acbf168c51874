"""Chaos on local agents: kill -9, SIGSTOP, per-task timeouts, stragglers — through `fleetscan run`.

Each test hurts a real `fleetscan run` process from outside (signals to the pids /proc
shows), then compares what `fleetscan results` prints with a fault-free run of the same
workflow, and checks the task-level facts the store keeps (attempts, who ran what, events).
"""

from __future__ import annotations

import json
import os
import signal
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
    seen_running,
    straggler_copies,
    tasks,
    tool_processes,
    wait_until,
    write_workflow,
)

pytestmark = pytest.mark.slow


def _run(workflow: ChaosWorkflow, targets: str, db: Path, agents: str) -> FleetscanProcess:
    return FleetscanProcess("run", workflow.name, "--targets", targets, "--workflows", str(workflow.path),
                            "--agents", agents, "--json", db=db)


def test_agent_killed_mid_task_goes_to_another_agent_with_the_same_records(tmp_path: Path, store_url: str) -> None:
    """kill -9 of one local agent and its tool children: its tasks run again on a DIFFERENT agent."""
    workflow = ChaosWorkflow(tmp_path, sleep=2.0)
    workflow.write()
    targets = "127.0.0.1-6"  # 6 tasks over 3 agents of 4 slots: every agent keeps free slots (4+ each)
    expected = fault_free(workflow, targets, tmp_path / "clean.db", agents="local:3")

    db = store_url  # a fresh SQLite file or PostgreSQL database
    with _run(workflow, targets, db, "local:3") as run:
        victim, tools = wait_until(lambda: busiest_agent(workflow.marker, 2), 60,
                                   "an agent running two tasks")
        kill_quietly([victim])
        for pid in tools:  # the tool children live in process groups of their own
            kill_quietly([-pid])
        moved = set(tools.values())

        wait_until(seen_running(workflow.marker, moved, lambda _, agent: agent not in (victim, None)), 60,
                   "the killed agent's targets to run under another agent")
        assert run.wait(120) == 0, run.stderr()
        run_id = json.loads(run.stdout())["run"]

    assert record_set(db, run_id) == expected
    alive_tasks = [t for t in tasks(db, run_id) if t["stage_id"] == "alive"]
    retried = [t for t in alive_tasks if t["targets"][0] in moved]
    assert len(retried) == len(moved) == 2
    victim_names = {t["tried"][0] for t in retried}
    assert len(victim_names) == 1, retried
    (victim_name,) = victim_names
    run_events = events(db, run_id)
    for task in retried:
        # a straggler copy (the re-run is the slowest task once the queue is empty) is an attempt too
        assert task["state"] == "done" and task["attempts"] == 2 + straggler_copies(run_events, task["id"])
        assert task["tried"] == [victim_name]
        assert any(e["kind"] == "retry" and e["message"].startswith(f"task {task['id']} (alive) attempt 1/")
                   and f"agent {victim_name} lost" in e["message"] for e in run_events), run_events
    for task in alive_tasks:
        if task not in retried:
            assert task["state"] == "done" and task["attempts"] == 1 + straggler_copies(run_events, task["id"])
            assert task["tried"] == []
    messages = [e["message"] for e in events(db)]
    assert any(m.startswith(f"agent {victim_name} lost") for m in messages), messages
    assert not tool_processes(workflow.marker)


def test_a_silent_agent_loses_its_tasks_and_waking_it_duplicates_nothing(tmp_path: Path) -> None:
    """SIGSTOP one agent mid-task: heartbeats notice, its tasks run elsewhere; SIGCONT adds nothing."""
    workflow = ChaosWorkflow(tmp_path, sleep=2.0)
    workflow.write()
    targets = "127.0.0.1-6"
    expected = fault_free(workflow, targets, tmp_path / "clean.db", agents="local:3")

    db = tmp_path / "chaos.db"
    with _run(workflow, targets, db, "local:3") as run:
        victim, tools = wait_until(lambda: busiest_agent(workflow.marker, 2), 60,
                                   "an agent running two tasks")
        os.kill(victim, signal.SIGSTOP)  # alive but silent: only the heartbeat can tell
        try:
            moved = set(tools.values())
            # its tasks run elsewhere: re-dispatched once it is declared lost, or copied as stragglers first
            wait_until(seen_running(workflow.marker, moved, lambda _, agent: agent not in (victim, None)), 60,
                       "the silent agent's targets to run under another agent")
            lost = wait_until(lambda: [e for e in events(db) if "lost: no answer for" in e["message"]], 60,
                              "the heartbeat to declare the silent agent lost")
        finally:
            kill_quietly([victim], signal.SIGCONT)  # whatever it still had to say must change nothing
        assert run.wait(120) == 0, run.stderr()
        run_id = json.loads(run.stdout())["run"]

    assert record_set(db, run_id) == expected
    # the fleet's own "agent NAME lost: ..." (a retried task's event quotes the same reason)
    (victim_name,) = {e["message"].split()[1] for e in lost if e["message"].startswith("agent ")}
    run_events = events(db, run_id)
    retried = [t for t in tasks(db, run_id) if t["stage_id"] == "alive" and t["targets"][0] in moved]
    assert len(retried) == 2
    for task in retried:
        assert task["state"] == "done" and task["agent"] != victim_name
        assert task["tried"] in ([], [victim_name])  # [] when a straggler copy had already won
        assert task["attempts"] == 1 + len(task["tried"]) + straggler_copies(run_events, task["id"])
    wait_until(lambda: not alive(victim), 10, "the silent agent to be killed")
    assert not tool_processes(workflow.marker)


def test_task_timeout_fails_the_task_after_its_retries_and_the_run(tmp_path: Path) -> None:
    """noop sleep 60 with a 1 s stage timeout: every attempt times out, the reason is kept, exit code 1."""
    workflow = write_workflow(tmp_path / "wf.yaml", "hang", [{
        "id": "wait", "tool": "noop", "with": {"sleep": 60}, "targets": {"from": "input", "type": "host"},
        "chunk": 1, "retries": 1, "timeout": 1,
    }])
    db = tmp_path / "timeout.db"
    done = fleetscan("run", "hang", "--targets", "127.0.0.1", "--workflows", str(workflow), "--agents", "local:2",
                     "--json", db=db, timeout=120)
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"] == "failed"
    assert summary["stages"][0]["tasks_failed"] == 1 and summary["results"] == 0
    (task,) = tasks(db, summary["run"])
    assert task["state"] == "failed" and task["attempts"] == 2
    assert "timeout" in (task["error"] or ""), task
    (first,) = task["tried"]
    assert task["agent"] != first  # the retry went to the other agent
    retries = [e for e in events(db, summary["run"]) if e["kind"] == "retry"]
    assert len(retries) == 1 and "timeout" in retries[0]["message"]
    assert only_run(db) == summary["run"]


def test_straggler_copy_first_done_wins_and_the_loser_is_cancelled(tmp_path: Path) -> None:
    """One task hangs (60 s) the first time only; once nothing is queued, a copy runs on the idle agent,
    finishes first and wins; the hung original is cancelled on its box (its tool process killed)."""
    workflow = ChaosWorkflow(
        tmp_path, sleep=0.3, options=("slow_once=127.0.0.1", "slow_s=60", f"state_dir={tmp_path}"), speculate=True
    )
    workflow.write()
    targets = "127.0.0.1-4"
    plain = ChaosWorkflow(tmp_path / "plain", sleep=0.3)
    plain.write()
    expected = fault_free(plain, targets, tmp_path / "clean.db")

    db = tmp_path / "straggler.db"
    # a master that outlives the run, so only the cancel can have killed the loser's tool
    with FleetscanProcess("master", "--agents", "local:2", "--workflows", str(workflow.path), db=db) as master:
        submitted = fleetscan("submit", workflow.name, "--targets", targets, "--workflows", str(workflow.path), db=db)
        assert submitted.returncode == 0, submitted.stderr
        run_id = submitted.stdout.strip()
        original = wait_until(
            lambda: next((p for p, (t, _) in tool_processes(workflow.marker).items() if t == "127.0.0.1"), None),
            60, "the slow task to start",
        )
        wait_until(lambda: run_state(db, run_id) == "completed", 60, "the run to complete through the copy")
        assert original is not None
        wait_until(lambda: not alive(original), 20, "the losing original's tool process to be killed")
        assert master.proc.poll() is None, master.stderr()
        agents = agent_children(master.pid)
        assert len(agents) == 2
        assert master.interrupt() == 130, master.stderr()  # SPEC: 130 interrupted by Ctrl-C

    assert record_set(db, run_id) == expected
    run_events = events(db, run_id)
    slow = next(t for t in tasks(db, run_id) if t["targets"] == ["127.0.0.1"] and t["stage_id"] == "alive")
    (copy,) = [e["message"] for e in run_events if e["kind"] == "straggler"]
    assert copy.startswith(f"task {slow['id']} slow on ")
    loser, winner = copy.split(" slow on ")[1].split(": copy on ")
    assert slow["state"] == "done" and slow["agent"] == winner != loser
    assert slow["attempts"] == 2 and slow["tried"] == []  # a copy is an attempt, not a failure
    others = [t for t in tasks(db, run_id) if t["id"] != slow["id"]]
    assert all(t["state"] == "done" and t["attempts"] == 1 for t in others)
    assert not tool_processes(workflow.marker)
    wait_until(lambda: not any(alive(pid) for pid in agents), 10, "the master's agents to exit")


def test_master_killed_its_local_agents_exit_and_resume_completes(tmp_path: Path, store_url: str) -> None:
    """kill -9 of `fleetscan run` (local agents): stdin EOF ends the agents and their tools; resume finishes."""
    workflow = ChaosWorkflow(tmp_path, sleep=1.0)
    workflow.write()
    targets = "127.0.0.1-24"
    expected = fault_free(workflow, targets, tmp_path / "clean.db")

    db = store_url  # a fresh SQLite file or PostgreSQL database
    with _run(workflow, targets, db, "local:2") as run:
        run_id = wait_until(lambda: only_run(db), 60, "the run")
        wait_until(lambda: len(tasks_in(db, run_id, "done")) >= 3 and bool(tool_processes(workflow.marker)), 60,
                   "tasks done and others running")
        agents = agent_children(run.pid)
        assert len(agents) == 2
        kill_quietly([run.pid])
        run.wait(30)
    done_before = {t["id"]: t["attempts"] for t in tasks(db, run_id) if t["state"] == "done"}
    wait_until(lambda: not any(alive(pid) for pid in agents), 30, "the orphaned agents to exit")
    wait_until(lambda: not tool_processes(workflow.marker), 30, "the orphaned agents' tools to be killed")

    resumed = fleetscan("resume", run_id, "--json", db=db, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["state"] == "completed"
    assert record_set(db, run_id) == expected
    after = {t["id"]: t for t in tasks(db, run_id)}
    assert all(after[i]["attempts"] == n for i, n in done_before.items()), "a task done before the crash ran again"
    assert all(t["state"] == "done" for t in after.values())


def tasks_in(db: Path, run_id: str, state: str) -> list[dict[str, object]]:
    return [t for t in tasks(db, run_id) if t["state"] == state]


def test_partial_results_of_a_killed_attempt_are_neither_lost_nor_duplicated(tmp_path: Path, store_url: str) -> None:
    """A 3-target task whose agent dies after its first record: the retry redoes all three, each record once."""
    workflow = ChaosWorkflow(tmp_path, sleep=0.8, chunk=3, ports_stage=False)
    workflow.write()
    targets = "127.0.0.1-6"  # two tasks of three targets, one per agent
    expected = fault_free(workflow, targets, tmp_path / "clean.db")

    db = store_url  # a fresh SQLite file or PostgreSQL database
    with _run(workflow, targets, db, "local:2") as run:
        run_id = wait_until(lambda: only_run(db), 60, "the run")
        first = wait_until(lambda: query(db, "SELECT task_id, target FROM results WHERE run_id = ? LIMIT 1", (run_id,)),
                           60, "a first record")[0]
        (task,) = [t for t in tasks(db, run_id) if t["id"] == first["task_id"]]
        victim = wait_until(
            lambda: next((a for t, a in tool_processes(workflow.marker).values() if t in task["targets"][1:]), None),
            30, "the task's next target running",
        )
        kill_quietly([victim, *(-pid for pid, (_, a) in tool_processes(workflow.marker).items() if a == victim)])
        assert run.wait(120) == 0, run.stderr()

    assert record_set(db, run_id) == expected
    (again,) = [t for t in tasks(db, run_id) if t["id"] == task["id"]]
    assert again["state"] == "done" and len(again["tried"]) == 1 and again["agent"] not in again["tried"]
    rows = query(db, "SELECT target, agent FROM results WHERE run_id = ? AND task_id = ?", (run_id, task["id"]))
    assert sorted(r["target"] for r in rows) == sorted(task["targets"])  # each once
    by_target = {r["target"]: r["agent"] for r in rows}
    assert by_target[first["target"]] == again["tried"][0]  # the dead attempt's record was kept, not re-added
