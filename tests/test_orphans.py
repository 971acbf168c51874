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
from tests.fixtures.chaos import processes_with, wait_until

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
