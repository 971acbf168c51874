"""Tools die with their agent: kill -9 of the agent, cancel, stop (EOF) and timeout leave no tool
process behind, including one that called setsid and one that double-forked away from its parent.

Each test starts a real agent subprocess and an exec task whose program starts two escapees
(a setsid'd child and a double-forked, setsid'd grandchild) and sleeps; every process carries a
per-test marker in its argv, so /proc says what is still alive afterwards.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.chaos import (
    STAGE0_MARKER,
    FleetscanProcess,
    argv_of,
    fleetscan,
    parent,
    processes_with,
    wait_until,
    write_workflow,
)
from tests.fixtures.sshd import SshdFleet

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")

ESCAPER = '''\
import os, subprocess, sys, time
marker = sys.argv[1]
subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(3000)", marker])
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(3000)", marker])
    os._exit(0)
time.sleep(3000)
'''


def _start(tmp_path: Path) -> tuple[AgentProcess, str, dict[str, object]]:
    marker = f"escaper-{uuid.uuid4().hex[:12]}"
    script = tmp_path / "escaper.py"
    script.write_text(ESCAPER)
    agent = AgentProcess.from_source()
    assert agent.read()["op"] == "hello"
    task = {"op": "task", "id": "t1", "tool": "exec", "targets": ["127.0.0.1"], "timeout": 60,
            "params": {"argv": [sys.executable, str(script), marker], "parser": "lines"}}
    agent.send(task)
    wait_until(lambda: len(processes_with(marker)) >= 3 or None, 30, "the tool and its two escapees")
    return agent, marker, task


def _nothing_left(marker: str) -> None:
    wait_until(lambda: not processes_with(marker), 10, f"every process of {marker} gone")


def test_kill_9_of_the_agent_takes_setsid_escapees_with_it(tmp_path: Path) -> None:
    agent, marker, _ = _start(tmp_path)
    try:
        os.kill(agent.proc.pid, signal.SIGKILL)
        _nothing_left(marker)
    finally:
        agent.stop()


def test_cancel_kills_the_setsid_escapees_of_its_task(tmp_path: Path) -> None:
    agent, marker, _ = _start(tmp_path)
    try:
        agent.send({"op": "cancel", "id": "t1"})
        done = agent.done("t1", 30)
        assert done["ok"] is False and done["error"] == "cancelled"
        _nothing_left(marker)
        assert agent.proc.poll() is None  # the agent itself lives on
    finally:
        agent.stop()


def test_stop_and_eof_sweep_every_escapee(tmp_path: Path) -> None:
    agent, marker, _ = _start(tmp_path)
    try:
        agent.close_stdin()  # what the master's kill -9 looks like to a local agent
        assert agent.proc.wait(20) == 0
        _nothing_left(marker)
    finally:
        agent.stop()


def test_timeout_kills_the_escapees(tmp_path: Path) -> None:
    marker = f"escaper-{uuid.uuid4().hex[:12]}"
    script = tmp_path / "escaper.py"
    script.write_text(ESCAPER)
    agent = AgentProcess.from_source()
    try:
        assert agent.read()["op"] == "hello"
        done, _ = agent.run_task("t2", "exec", ["127.0.0.1"], {"argv": [sys.executable, str(script), marker]},
                                 timeout=1.5)
        assert done["ok"] is False and done["error"].startswith("timeout")
        _nothing_left(marker)
    finally:
        agent.stop()


def test_sigterm_of_the_agent_sweeps_the_escapees(tmp_path: Path) -> None:
    agent, marker, _ = _start(tmp_path)
    try:
        os.kill(agent.proc.pid, signal.SIGTERM)
        agent.proc.wait(20)
        _nothing_left(marker)
    finally:
        agent.stop()


# -- through `fleetscan run`: the master killed or stopping, local and over SSH -------------------


def _escaper_workflow(tmp_path: Path, marker: str) -> Path:
    script = tmp_path / "escaper.py"
    script.write_text(ESCAPER)
    return write_workflow(tmp_path / "wf.yaml", "escape", [{
        "id": "alive", "tool": "exec", "retries": 0, "chunk": 1, "timeout": 600,
        "with": {"argv": [sys.executable, str(script), marker, "{target}"], "parser": "jsonl"},
        "targets": {"from": "input", "type": "host"},
    }])


def _master_dies_and_nothing_is_left(tmp_path: Path, agents: str, how: str) -> None:
    marker = f"escaper-{uuid.uuid4().hex[:12]}"
    workflow = _escaper_workflow(tmp_path, marker)
    db = tmp_path / "fleet.db"
    with FleetscanProcess("run", "escape", "--targets", "127.0.0.1-2", "--workflows", str(workflow),
                          "--agents", agents, db=db) as run:
        # two tasks, each a tool with its two escapees
        wait_until(lambda: len(processes_with(marker)) >= 6 or None, 60, "both tools and their escapees")
        if how == "kill":
            os.kill(run.pid, signal.SIGKILL)
        else:
            run_id = run.stderr().split("run ", 1)[1].split()[0]
            assert fleetscan("stop", run_id, db=db).returncode == 0
            assert run.wait(60) is not None
        _nothing_left(marker)


@pytest.mark.slow
def test_kill_9_of_the_master_leaves_no_tool_on_a_local_box(tmp_path: Path) -> None:
    _master_dies_and_nothing_is_left(tmp_path, "local:1", "kill")


@pytest.mark.slow
def test_stop_of_the_run_leaves_no_tool_on_a_local_box(tmp_path: Path) -> None:
    _master_dies_and_nothing_is_left(tmp_path, "local:1", "stop")


@pytest.mark.slow
def test_kill_9_of_the_master_leaves_no_tool_on_an_ssh_box(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    inventory = sshd_boxes.write_inventory(tmp_path / "agents.yaml", sshd_boxes.boxes[:1], slots=2)
    _master_dies_and_nothing_is_left(tmp_path, str(inventory), "kill")


@pytest.mark.slow
def test_kill_9_of_an_ssh_agent_leaves_no_tool_behind(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    """The agent behind sshd is killed with -9: its tools and their setsid escapees go too."""
    marker = f"escaper-{uuid.uuid4().hex[:12]}"
    workflow = _escaper_workflow(tmp_path, marker)
    inventory = sshd_boxes.write_inventory(tmp_path / "agents.yaml", sshd_boxes.boxes[:1], slots=2)
    db = tmp_path / "fleet.db"
    with FleetscanProcess("run", "escape", "--targets", "127.0.0.1", "--workflows", str(workflow),
                          "--agents", str(inventory), db=db) as run:
        script = [str(tmp_path / "escaper.py")]

        def settled() -> list[int] | None:
            """The tool alone with its script's argv, once both escapees run: the tool's fork child has the
            same argv until it has forked the second escapee and exited."""
            found = processes_with(marker)
            tools = [p for p in found if argv_of(p)[1:2] == script]
            escapees = [p for p in found if argv_of(p)[1:2] == ["-c"]]
            return tools if len(tools) == 1 and len(escapees) == 2 else None

        tool = wait_until(settled, 60, "the tool and its two escapees")
        agent = parent(tool[0])
        assert agent is not None and STAGE0_MARKER in Path(f"/proc/{agent}/cmdline").read_bytes()
        os.kill(agent, signal.SIGKILL)
        _nothing_left(marker)
        run.kill()
