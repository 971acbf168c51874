"""The master's own stall is never blamed on its agents (SIGSTOP of `fleetscan run`, a suspend).

Unit: the stall detector on a hand-driven clock. Chaos (slow): `fleetscan run` is stopped for
6 s mid-run with retries: 0; after SIGCONT no agent is lost, no task failed, and the record set is
exactly the one the tool is written to print (one host_up per target, ports 22 and 80 on each).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from console.fleet.stall import STALL_AFTER_S, StallDetector
from tests.fixtures.chaos import (
    ChaosWorkflow,
    FleetscanProcess,
    events,
    record_set,
    tasks,
    tool_processes,
    wait_until,
)


def test_the_detector_reports_a_gap_once_and_only_a_long_one() -> None:
    now = [100.0]
    detector = StallDetector(clock=lambda: now[0])
    gaps: list[float] = []
    detector.listeners.append(gaps.append)
    now[0] += STALL_AFTER_S * 0.9
    assert detector.poll() == 0.0
    now[0] += 6.0
    assert detector.poll() == pytest.approx(6.0)
    assert detector.poll() == 0.0  # the clock restarted from the stall's end
    assert gaps == [pytest.approx(6.0)] and detector.stalls == 1


@pytest.mark.slow
def test_sigstop_of_the_run_for_6_s_loses_no_agent_and_no_record(tmp_path: Path) -> None:
    workflow = ChaosWorkflow(tmp_path, sleep=2.0, retries=0)
    workflow.write()
    hosts = [f"127.0.0.{i}" for i in range(1, 17)]
    db = tmp_path / "stall.db"
    with FleetscanProcess("run", workflow.name, "--targets", "127.0.0.1-16", "--workflows", str(workflow.path),
                          "--agents", "local:3", "--json", db=db) as run:
        wait_until(lambda: len(tool_processes(workflow.marker)) >= 3 or None, 60, "tools running")
        os.kill(run.pid, signal.SIGSTOP)
        try:
            time.sleep(6.0)
        finally:
            os.kill(run.pid, signal.SIGCONT)
        assert run.wait(180) == 0, run.stderr()
        summary = json.loads(run.stdout())
    run_id = summary["run"]
    assert summary["state"] == "completed"
    expected = {("alive", "host_up", h) for h in hosts}
    assert {r for r in record_set(db, run_id) if r[0] == "alive"} == expected
    ports = {r for r in record_set(db, run_id) if r[0] == "ports"}
    assert len(ports) == 2 * len(hosts) and {r[1] for r in ports} == {"port_open"}
    assert all(t["state"] == "done" and t["attempts"] == 1 for t in tasks(db, run_id))
    messages = [e["message"] for e in events(db)]
    assert not [m for m in messages if " lost" in m], messages
    assert any(m.startswith("master stalled for") for m in messages), messages
