"""A run whose start failed ends failed with its reason; nothing starts it later unasked;
``resume --retry-failed`` re-runs a failed run's failed tasks when the operator asks.

Real processes throughout: `fleetscan run` against a real sshd whose host key nobody trusted,
a later `fleetscan master --agents local` on the same database, and `resume`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.chaos import FleetscanProcess, fleetscan, query, write_workflow
from tests.fixtures.sshd import SshdFleet

TOOL = """\
import json, os, sys
target, flag, kind = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "alive" and target.endswith(".2") and not os.path.exists(flag):
    sys.exit("not yet")
if kind == "alive":
    print(json.dumps({"type": "host_up", "target": target, "data": {"host": target, "via": "exec"}}))
else:
    print(json.dumps({"type": "port_open", "target": target, "data": {"host": target, "port": 22, "proto": "tcp"}}))
"""


def _workflow(tmp_path: Path, flag: Path) -> Path:
    script = tmp_path / "tool.py"
    script.write_text(TOOL)

    def argv(kind: str) -> list[str]:
        return [sys.executable, str(script), "{target}", str(flag), kind]

    return write_workflow(tmp_path / "wf.yaml", "two", [
        {"id": "alive", "tool": "exec", "retries": 0, "chunk": 1, "targets": {"from": "input", "type": "host"},
         "with": {"argv": argv("alive"), "parser": "jsonl"}},
        {"id": "ports", "tool": "exec", "retries": 0, "chunk": 1,
         "targets": {"from": "alive", "type": "host", "where": {"type": "host_up"}},
         "with": {"argv": argv("ports"), "parser": "jsonl"}},
    ])


def _status(db: Path, run_id: str) -> dict[str, object]:
    done = fleetscan("status", run_id, "--json", db=db)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _records(db: Path, run_id: str) -> set[tuple[str, str]]:
    return {(r["type"], r["key"]) for r in query(db, "SELECT type, key FROM results WHERE run_id = ?", (run_id,))}


@pytest.mark.slow
def test_a_run_no_agent_came_up_for_ends_failed_and_no_master_runs_it_unasked(
    sshd_boxes: SshdFleet, tmp_path: Path
) -> None:
    untrusted = tmp_path / "known_hosts"
    untrusted.write_text("")  # the box's host key was never trusted
    inventory = sshd_boxes.write_inventory(tmp_path / "agents.yaml", sshd_boxes.boxes[:1])
    flag = tmp_path / "flag"
    flag.touch()
    workflow = _workflow(tmp_path, flag)
    db = tmp_path / "fleet.db"
    env = {"FLEETSCAN_KNOWN_HOSTS": str(untrusted)}
    done = fleetscan("run", "two", "--targets", "127.0.0.1-3", "--workflows", str(workflow),
                     "--agents", str(inventory), db=db, env=env)
    assert done.returncode == 1
    assert "no agent came up" in done.stderr and "Traceback" not in done.stderr
    run_id = done.stderr.split("run ", 1)[1].split()[0]
    status = _status(db, run_id)
    assert status["state"] == "failed"
    assert str(status["error"]).startswith("start failed: ") and "host key" in str(status["error"])

    with FleetscanProcess("master", "--agents", "local", db=db) as master:
        time.sleep(4.0)  # several control rounds: a pending run would have been adopted and run by now
        master.interrupt()
    assert _status(db, run_id)["state"] == "failed"
    assert _records(db, run_id) == set()

    plain = fleetscan("resume", run_id, "--agents", "local", db=db)
    assert plain.returncode == 1 and _status(db, run_id)["state"] == "failed"  # not without being asked

    retried = fleetscan("resume", run_id, "--retry-failed", "--agents", "local", db=db)
    assert retried.returncode == 0, retried.stderr
    hosts = [f"127.0.0.{n}" for n in (1, 2, 3)]
    assert _records(db, run_id) == {("host_up", h) for h in hosts} | {("port_open", f"{h}:22/tcp") for h in hosts}


def test_retry_failed_reruns_only_the_failed_tasks_and_reopens_the_later_stages(tmp_path: Path, store_url: str) -> None:
    flag = tmp_path / "flag"
    workflow = _workflow(tmp_path, flag)
    db = store_url  # a fresh SQLite file or PostgreSQL database
    done = fleetscan("run", "two", "--targets", "127.0.0.1-3", "--workflows", str(workflow),
                     "--agents", "local", "--json", db=db)
    assert done.returncode == 1, done.stderr
    run_id = json.loads(done.stdout)["run"]
    assert _status(db, run_id)["state"] == "failed"
    before = {r["id"]: r for r in query(db, "SELECT id, state, attempts FROM tasks WHERE run_id = ?", (run_id,))}
    failed = {i for i, r in before.items() if r["state"] == "failed"}
    assert len(failed) == 1
    assert ("host_up", "127.0.0.2") not in _records(db, run_id)

    flag.touch()  # what was wrong is fixed: the operator asks for the failed part again
    retried = fleetscan("resume", run_id, "--retry-failed", "--json", db=db)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["state"] == "completed"
    after = {r["id"]: r for r in query(db, "SELECT id, state, attempts FROM tasks WHERE run_id = ?", (run_id,))}
    for task_id, row in before.items():
        if task_id not in failed:
            assert after[task_id] == row  # a done task is never run again
    assert all(after[i]["state"] == "done" and after[i]["attempts"] == 1 for i in failed)
    hosts = [f"127.0.0.{n}" for n in (1, 2, 3)]
    assert _records(db, run_id) == {("host_up", h) for h in hosts} | {("port_open", f"{h}:22/tcp") for h in hosts}
