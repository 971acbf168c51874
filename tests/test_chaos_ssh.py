"""Chaos over real SSH boxes (sshd on 127.0.0.2 and 127.0.0.3): a box dies, a box keeps failing,
a box cannot start its agent, the master is killed mid-run and resumed.

Every run is a real `fleetscan run|resume --agents INVENTORY` process; the faults are real
(sshd and everything it forked SIGKILLed, a tool that fails on one box only because that
box's sshd exports ``FLEETSCAN_TEST_BOX``, a python that is /bin/false), and every run is
judged against a fault-free run of the same workflow.
"""

from __future__ import annotations

import functools
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.chaos import (
    STAGE0_MARKER,
    ChaosWorkflow,
    FleetscanProcess,
    alive,
    events,
    fault_free,
    fleetscan,
    kill_quietly,
    only_run,
    processes_with,
    query,
    record_set,
    seen_running,
    straggler_copies,
    tasks,
    tool_processes,
    wait_until,
    write_workflow,
)
from tests.fixtures.sshd import SshdBox, SshdFleet

pytestmark = [pytest.mark.ssh, pytest.mark.slow]


def _inventory(path: Path, fleet: SshdFleet, slots: int = 2, extra: list[dict[str, Any]] | None = None) -> Path:
    entries = fleet.inventory_entries(slots=slots) + (extra or [])
    path.write_text(yaml.safe_dump({"agents": entries}, sort_keys=False))
    return path


def _on_box(box: SshdBox, marker: str, count: int) -> dict[int, str] | None:
    """The tool processes (pid -> target) running on ``box`` (below its sshd), once there are ``count``."""
    below = set(box.descendants())
    found = {pid: target for pid, (target, _) in tool_processes(marker).items() if pid in below}
    return found if len(found) == count else None


def _agents_on(box: SshdBox) -> list[int]:
    below = set(box.descendants())
    return [pid for pid in processes_with(STAGE0_MARKER) if pid in below]


def _agent_states(db: Path) -> dict[str, str]:
    try:
        return {r["name"]: r["state"] for r in query(db, "SELECT name, state FROM agents")}
    except AssertionError:
        return {}


def _run(workflow: ChaosWorkflow, targets: str, db: Path, inventory: Path) -> FleetscanProcess:
    return FleetscanProcess("run", workflow.name, "--targets", targets, "--workflows", str(workflow.path),
                            "--agents", str(inventory), "--json", db=db)


def test_a_box_whose_sshd_dies_hands_its_tasks_to_the_other(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    workflow = ChaosWorkflow(tmp_path, sleep=2.0)
    workflow.write()
    inventory = _inventory(tmp_path / "agents.yaml", sshd_boxes)
    targets = "127.0.0.1-8"
    expected = fault_free(workflow, targets, tmp_path / "clean.db", agents=str(inventory))
    box1, box2 = sshd_boxes.box("box1"), sshd_boxes.box("box2")

    db = tmp_path / "chaos.db"
    with _run(workflow, targets, db, inventory) as run:
        lost = wait_until(lambda: _on_box(box1, workflow.marker, 2), 60, "two tasks running on box1")
        box1.kill()  # sshd, its sessions, the agent and its tools: the box is gone
        moved = set(lost.values())
        wait_until(seen_running(workflow.marker, moved, lambda pid, _: pid in set(box2.descendants())), 60,
                   "box1's targets on box2")
        # the agents table shows the lost box down while the run goes on without it
        wait_until(lambda: _agent_states(db).get("box1") == "down" and _agent_states(db).get("box2") == "up",
                   30, "box1 shown down in the agents table")
        assert run.wait(120) == 0, run.stderr()
        run_id = json.loads(run.stdout())["run"]

    assert record_set(db, run_id) == expected
    run_events = events(db, run_id)
    for task in tasks(db, run_id):
        assert task["state"] == "done"
        if task["stage_id"] == "alive" and task["targets"][0] in moved:
            assert task["tried"] == ["box1"] and task["agent"] == "box2"
            assert task["attempts"] == 2 + straggler_copies(run_events, task["id"])
    (box1_row,) = query(db, "SELECT state, error FROM agents WHERE name = 'box1'")
    assert box1_row["state"] == "down" and box1_row["error"], box1_row
    assert any(e["message"].startswith("agent box1 lost") for e in events(db))


def test_a_box_that_keeps_failing_is_set_aside_and_the_run_goes_on(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    """Every task fails on box1 (the tool exits 1 there): box1 is set aside, box2 does the work."""
    workflow = ChaosWorkflow(tmp_path, sleep=0.3, retries=4, options=("fail_on=box1",))
    workflow.write()
    inventory = _inventory(tmp_path / "agents.yaml", sshd_boxes)
    targets = "127.0.0.1-16"
    expected = fault_free(workflow, targets, tmp_path / "clean.db")  # local agents: no box fails there

    db = tmp_path / "chaos.db"
    seen: set[str] = set()
    with _run(workflow, targets, db, inventory) as run:
        def set_aside() -> bool:
            seen.add(_agent_states(db).get("box1", ""))
            return "set_aside" in seen

        wait_until(set_aside, 60, "box1 shown set aside in the agents table")
        assert run.wait(120) == 0, run.stderr()
        run_id = json.loads(run.stdout())["run"]

    assert record_set(db, run_id) == expected
    all_tasks = tasks(db, run_id)
    assert all(t["state"] == "done" and t["agent"] == "box2" for t in all_tasks), all_tasks
    failed_on_box1 = [t for t in all_tasks if "box1" in t["tried"]]
    assert len(failed_on_box1) >= 5
    assert all(set(t["tried"]) == {"box1"} for t in failed_on_box1)
    messages = [e["message"] for e in events(db)]
    assert any(m.startswith("agent box1 set aside after 5 failures") for m in messages), messages
    assert any("failing on purpose on box1" in e["message"] for e in events(db, run_id) if e["kind"] == "retry")


def test_a_box_that_cannot_start_its_agent_does_not_stop_the_run(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    """A box whose python is /bin/false never comes up: shown down with the reason, the others do the run."""
    workflow = ChaosWorkflow(tmp_path, sleep=0.2)
    workflow.write()
    box2 = sshd_boxes.box("box2")
    broken = {**sshd_boxes.inventory_entries([box2])[0], "name": "broken", "python": "/bin/false"}
    inventory = _inventory(tmp_path / "agents.yaml", sshd_boxes, extra=[broken])
    targets = "127.0.0.1-6"
    expected = fault_free(workflow, targets, tmp_path / "clean.db")

    db = tmp_path / "chaos.db"
    done = fleetscan("run", workflow.name, "--targets", targets, "--workflows", str(workflow.path),
                     "--agents", str(inventory), "--json", db=db, timeout=180)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run"]
    assert record_set(db, run_id) == expected
    assert {t["agent"] for t in tasks(db, run_id)} <= {"box1", "box2"}
    assert all(t["tried"] == [] for t in tasks(db, run_id))
    (row,) = query(db, "SELECT state, error, tasks_done FROM agents WHERE name = 'broken'")
    assert row["state"] == "down" and row["error"] and row["tasks_done"] == 0, row
    assert any(e["message"].startswith("agent broken down") for e in events(db))


def test_master_killed_mid_run_then_resume_finishes_without_rerunning_done_tasks(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    """kill -9 of `fleetscan run` over SSH boxes: its agents exit by themselves; `resume` completes the run."""
    workflow = ChaosWorkflow(tmp_path, sleep=0.6)
    workflow.write()
    inventory = _inventory(tmp_path / "agents.yaml", sshd_boxes)
    targets = "127.0.0.1-16"
    expected = fault_free(workflow, targets, tmp_path / "clean.db")
    boxes = sshd_boxes.boxes

    db = tmp_path / "crash.db"
    with _run(workflow, targets, db, inventory) as run:
        run_id = wait_until(lambda: only_run(db), 60, "the run")
        wait_until(lambda: len(query(db, "SELECT id FROM tasks WHERE state = 'done'")) >= 3, 60, "some tasks done")
        agents = wait_until(lambda: [p for box in boxes for p in _agents_on(box)], 10, "the agents on the boxes")
        os.kill(run.pid, signal.SIGKILL)
        run.wait(30)
    done_before = {r["id"]: (r["attempts"], r["ended"]) for r in
                   query(db, "SELECT id, attempts, ended FROM tasks WHERE run_id = ? AND state = 'done'", (run_id,))}
    assert query(db, "SELECT state FROM runs")[0]["state"] == "running"
    # no master: the agents' stdin closes (the SSH connection is gone), they exit, their tools die
    wait_until(lambda: not any(alive(pid) for pid in agents), 30, "the dead master's agents to exit")
    wait_until(lambda: not tool_processes(workflow.marker), 30, "the dead master's tools to exit")
    assert not [p for box in boxes for p in _agents_on(box)]

    resumed = fleetscan("resume", run_id, "--json", db=db, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["state"] == "completed"
    assert record_set(db, run_id) == expected
    after = {r["id"]: (r["attempts"], r["ended"]) for r in
             query(db, "SELECT id, attempts, ended FROM tasks WHERE run_id = ?", (run_id,))}
    assert {i: after[i] for i in done_before} == done_before, "a task done before the crash was run again"
    assert any(e["kind"] == "adopt" and "(gone)" in e["message"] for e in events(db, run_id))
    kill_quietly(agents)


def test_a_hung_agent_on_a_box_is_dropped_and_waking_it_later_changes_nothing(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    """SIGSTOP the agent on box1 (sshd stays up): heartbeats drop it, box2 does its tasks; after SIGCONT
    the old agent finds its channel closed and exits, and whatever it still had to say is not stored."""
    workflow = ChaosWorkflow(tmp_path, sleep=2.0)
    workflow.write()
    inventory = _inventory(tmp_path / "agents.yaml", sshd_boxes)
    targets = "127.0.0.1-4"
    expected = fault_free(workflow, targets, tmp_path / "clean.db", agents=str(inventory))
    box1, box2 = sshd_boxes.box("box1"), sshd_boxes.box("box2")

    db = tmp_path / "chaos.db"
    frozen: list[int] = []
    try:
        with _run(workflow, targets, db, inventory) as run:
            hung = wait_until(lambda: _on_box(box1, workflow.marker, 2), 60, "two tasks running on box1")
            (agent,) = _agents_on(box1)
            os.kill(agent, signal.SIGSTOP)
            frozen.append(agent)
            moved = set(hung.values())
            wait_until(seen_running(workflow.marker, moved, lambda pid, _: pid in set(box2.descendants())), 60,
                       "box1's targets on box2")
            wait_until(lambda: [e for e in events(db) if e["message"].startswith("agent box1 lost: no answer")], 60,
                       "the heartbeat to drop box1's agent")
            os.kill(agent, signal.SIGCONT)
            assert run.wait(120) == 0, run.stderr()
            run_id = json.loads(run.stdout())["run"]
    finally:
        kill_quietly(frozen, signal.SIGCONT)
    wait_until(lambda: not alive(agent), 30, "the woken agent to exit (its channel is closed)")
    assert record_set(db, run_id) == expected
    run_events = events(db, run_id)
    for task in tasks(db, run_id):
        assert task["state"] == "done"
        if task["stage_id"] == "alive" and task["targets"][0] in moved:
            assert task["agent"] == "box2" and task["tried"] in ([], ["box1"])
            assert task["attempts"] == 1 + len(task["tried"]) + straggler_copies(run_events, task["id"])
    assert not tool_processes(workflow.marker)


def test_stop_kills_the_tools_on_the_boxes_and_leaves_no_agent_there(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    """`fleetscan stop` of a run over SSH: the tools die on the boxes, the run ends stopped, no agent stays."""
    workflow = ChaosWorkflow(tmp_path, sleep=60.0)
    workflow.write()
    inventory = _inventory(tmp_path / "agents.yaml", sshd_boxes)
    db = tmp_path / "stop.db"
    with _run(workflow, "127.0.0.1-4", db, inventory) as run:
        run_id = wait_until(lambda: only_run(db), 60, "the run")
        for box in sshd_boxes.boxes:
            wait_until(functools.partial(_on_box, box, workflow.marker, 2), 60, f"two tasks running on {box.name}")
        stopped = fleetscan("stop", run_id, db=db)
        assert stopped.returncode == 0, stopped.stderr
        assert run.wait(60) == 1, run.stderr()
        assert json.loads(run.stdout())["state"] == "stopped"
    assert {t["state"] for t in tasks(db, run_id)} == {"cancelled"}
    wait_until(lambda: not tool_processes(workflow.marker), 15, "no tool process left on the boxes")
    wait_until(lambda: not [p for box in sshd_boxes.boxes for p in _agents_on(box)], 15, "no agent left on the boxes")


def test_a_task_pinned_to_a_box_that_dies_fails_with_the_reason(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    """`from: boxes` tasks cannot move: when box1's sshd dies for good, its task fails (after the
    reconnect attempts) with the reason, box2's completes, and `fleetscan run` exits 1."""
    workflow = write_workflow(tmp_path / "wf.yaml", "pin", [{
        "id": "each", "tool": "noop", "with": {"sleep": 4}, "targets": {"from": "boxes"}, "retries": 1,
        "timeout": 60,
    }])
    inventory = _inventory(tmp_path / "agents.yaml", sshd_boxes)
    db = tmp_path / "pinned.db"
    with FleetscanProcess("run", "pin", "--workflows", str(workflow), "--agents", str(inventory), "--json",
                          db=db) as run:
        run_id = wait_until(lambda: only_run(db), 60, "the run")
        wait_until(lambda: len(query(db, "SELECT id FROM tasks WHERE state = 'leased'")) == 2, 60, "both tasks leased")
        wait_until(lambda: all(_agents_on(box) for box in sshd_boxes.boxes), 30, "an agent on each box")
        sshd_boxes.box("box1").kill()
        assert run.wait(120) == 1, run.stderr()
        assert json.loads(run.stdout())["state"] == "failed"
    by_box = {t["targets"][0]: t for t in tasks(db, run_id)}
    assert by_box["box2"]["state"] == "done" and by_box["box2"]["agent"] == "box2"
    assert by_box["box1"]["state"] == "failed" and "not reachable" in (by_box["box1"]["error"] or "")
    assert by_box["box1"]["tried"] == ["box1"]




def test_a_box_hung_at_start_does_not_hold_the_run(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    workflow = ChaosWorkflow(tmp_path, sleep=0.2, ports_stage=False)
    workflow.write()
    inventory = _inventory(tmp_path / "agents.yaml", sshd_boxes)
    sshd_boxes.box("box1").freeze()  # sshd and all it forked SIGSTOPped: TCP connects, nothing answers
    db = tmp_path / "hung.db"
    done = fleetscan("run", workflow.name, "--targets", "127.0.0.1-4", "--workflows", str(workflow.path),
                     "--agents", str(inventory), "--json", db=db, timeout=180)
    sshd_boxes.box("box1").thaw()
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run"]
    ended = [r["ended"] for r in query(db, "SELECT ended FROM tasks WHERE run_id = ?", (run_id,))]
    assert ended and all(t["agent"] == "box2" for t in tasks(db, run_id))
    # box2 was up at once: its work must not wait for box1's login to time out. box1 is declared
    # down only when its login deadline passes, so every task must have ended before any such event.
    box1_down = [e["ts"] for e in events(db) if e["message"].startswith("agent box1 down")]
    assert all(max(ended) < ts for ts in box1_down)




def test_a_box_down_at_start_is_not_silently_left_out_of_a_boxes_stage(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    workflow = write_workflow(tmp_path / "wf.yaml", "pin", [{
        "id": "each", "tool": "noop", "with": {"sleep": 0.1}, "targets": {"from": "boxes"}, "timeout": 60,
    }])
    box2 = sshd_boxes.box("box2")
    broken = {**sshd_boxes.inventory_entries([box2])[0], "name": "broken", "python": "/bin/false"}
    inventory = _inventory(tmp_path / "agents.yaml", sshd_boxes, extra=[broken])
    db = tmp_path / "pinned.db"
    done = fleetscan("run", "pin", "--workflows", str(workflow), "--agents", str(inventory), "--json", db=db,
                     timeout=180)
    run_id = json.loads(done.stdout)["run"]
    covered = {t["targets"][0]: t["state"] for t in tasks(db, run_id)}
    assert covered.get("broken") == "failed", covered  # one task per box, the unreachable one failed
    assert done.returncode == 1
