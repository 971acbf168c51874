"""The CLI end to end on both backends: every command works against a postgresql:// store exactly
as against a file, several `fleetscan master` processes share one run, and `fleetscan masters`
lists them from their heartbeats."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from console.store import open_store
from tests.fixtures.chaos import FleetscanProcess, fleetscan, wait_until, write_workflow
from tests.test_scheduler import TOOL_SCRIPT

pytestmark = pytest.mark.slow


def noop_workflow(tmp_path: Path, sleep: float) -> Path:
    stage = {"id": "wait", "tool": "noop", "with": {"sleep": sleep}, "targets": {"from": "input", "type": "host"},
             "chunk": 1}
    return write_workflow(tmp_path / "wf.yaml", "idle", [stage])


def masters_json(db: Any) -> list[dict[str, Any]]:
    out = fleetscan("masters", "--json", db=db)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout)["masters"])


def test_run_results_status_and_masters_work_on_either_store(store_url: str, tmp_path: Path) -> None:
    workflow = noop_workflow(tmp_path, 0.0)
    done = fleetscan("run", "idle", "--targets", "127.0.0.1-6", "--workflows", str(workflow), "--agents", "local:2",
                     db=store_url)  # type: ignore[arg-type]
    assert done.returncode == 0, done.stderr
    status = fleetscan("status", "--json", db=store_url)  # type: ignore[arg-type]
    (run,) = json.loads(status.stdout)["runs"]
    assert run["state"] == "completed" and run["stages"][0]["tasks_done"] == 6
    assert masters_json(store_url) == []  # `run` served as a master and left


def exec_workflow(tmp_path: Path, sleep: float) -> Path:
    """One real child process per target, printing one host_up record for its target."""
    stage = {"id": "probe", "tool": "exec", "with": {"argv": [sys.executable, "-c", TOOL_SCRIPT, str(sleep), "{target}"],
             "parser": "jsonl"}, "targets": {"from": "input", "type": "host"}, "chunk": 1}
    return write_workflow(tmp_path / "exec.yaml", "probe", [stage])


def test_two_masters_share_a_submitted_run_and_are_listed(store_url: str, tmp_path: Path) -> None:
    workflow = exec_workflow(tmp_path, 0.5)
    common = ("--agents", "local:2", "--workflows", str(workflow))
    with FleetscanProcess("master", *common, db=store_url) as first, \
            FleetscanProcess("master", *common, db=store_url) as second:  # type: ignore[arg-type]
        def both_up() -> list[dict[str, Any]] | None:
            found = masters_json(store_url)
            return found if len(found) == 2 and all(m["agents"] == 2 for m in found) else None

        listed = wait_until(both_up, 60, "both masters with their agents")
        assert {m["host"] for m in listed} == {socket.gethostname()}
        assert {m["pid"] for m in listed} == {first.pid, second.pid}
        assert set(listed[0]) >= {"id", "host", "agents", "in_flight", "heartbeat"}
        table = fleetscan("masters", db=store_url)  # type: ignore[arg-type]
        assert table.returncode == 0 and table.stdout.splitlines()[0].split() == ["ID", "HOST", "AGENTS", "IN", "FLIGHT", "HEARTBEAT"]
        assert sorted(line.split()[0] for line in table.stdout.splitlines()[1:]) == sorted(m["id"] for m in listed)
        submitted = fleetscan("submit", "probe", "--targets", "127.0.0.1-60", "--workflows", str(workflow),
                              db=store_url)  # type: ignore[arg-type]
        run_id = submitted.stdout.strip()
        assert submitted.returncode == 0 and run_id, submitted.stderr
        wait_until(
            lambda: json.loads(fleetscan("status", run_id, "--json", db=store_url).stdout)["state"] == "completed",  # type: ignore[arg-type]
            120, "the run to complete",
        )
    out = fleetscan("results", run_id, "--format", "jsonl", db=store_url)  # type: ignore[arg-type]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(r["key"] for r in records) == sorted(f"127.0.0.{i}" for i in range(1, 61))  # each once
    assert {r["master"] for r in records} == {m["id"] for m in listed}  # both masters did part of the work
    status = json.loads(fleetscan("status", run_id, "--json", db=store_url).stdout)  # type: ignore[arg-type]
    assert status["stages"][0]["tasks_done"] == 60 and status["stages"][0]["tasks_failed"] == 0


async def test_the_console_serves_and_shows_a_run_on_either_store(store_url: str) -> None:
    """The console on a postgresql:// URL: its master runs a submitted run, its screen shows it,
    and its title names the store without a password."""
    from console.tui.app import FleetscanApp
    from console.tui.panels import RunsTable

    store = open_store(store_url)
    run_id = store.runs.create("idle", {"stages": [{"id": "a", "tool": "noop", "params": {},
                                "targets": {"from": "input", "type": "host"}, "chunk": 1}]}, "127.0.0.1-5")
    # trust authentication ignores the password: it is here to be kept out of the title
    address = store_url.replace("fleetscan@", "fleetscan:hunter2@")
    app = FleetscanApp(address, agents_source="local", start_master=True, poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(600):
            if store.runs.get(run_id).state == "completed" and app.view and app.view.runs[0].state == "completed":
                break
            await pilot.pause(0.05)
        assert store.runs.get(run_id).state == "completed"
        assert app.query_one(RunsTable).row_count == 1
        assert str(app.sub_title).startswith(Path(store_url).name if "://" not in store_url else store_url)
        assert "hunter2" not in str(app.sub_title)
    assert store.runs.summary(run_id)["stages"][0]["tasks_done"] == 5
