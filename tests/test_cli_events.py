"""`fleetscan events`: the whole log oldest first, one run's or everyone's, followed live.

Expected events come from the store as another process reads it (tests/fixtures/chaos.query),
never from the command's own output.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.fixtures.chaos import FleetscanProcess, fleetscan, query, wait_until, write_workflow

NOOP = [{"id": "wait", "tool": "noop", "with": {"sleep": 0.2}, "targets": {"from": "input", "type": "host"},
         "chunk": 1}]


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_events_prints_every_event_oldest_first_one_runs_or_all(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    wf = write_workflow(tmp_path / "wf.yaml", "quiet", NOOP)
    first = fleetscan("--workflows", str(wf), "run", "quiet", "--targets", "127.0.0.1-2", "--json", db=db)
    second = fleetscan("--workflows", str(wf), "run", "quiet", "--targets", "127.0.0.3", "--json", db=db)
    assert first.returncode == 0 and second.returncode == 0
    run = json.loads(first.stdout)["run"]
    stored = query(db, "SELECT id, run_id, level, kind, message FROM events ORDER BY id")
    everything = lines(fleetscan("events", "--json", db=db).stdout)
    assert [(e["id"], e["run"], e["level"], e["kind"], e["message"]) for e in everything] == [
        (r["id"], r["run_id"], r["level"], r["kind"], r["message"]) for r in stored
    ]
    assert {e["run"] for e in everything} >= {run, json.loads(second.stdout)["run"]}
    one = lines(fleetscan("events", run, "--json", db=db).stdout)
    assert [e["id"] for e in one] == [r["id"] for r in stored if r["run_id"] == run]
    assert one[-1]["kind"] == "run" and "completed" in str(one[-1]["message"])
    text = fleetscan("events", run, db=db).stdout.splitlines()
    assert len(text) == len(one) and all(run in line for line in text)


def test_follow_with_a_run_prints_new_events_and_ends_with_the_run(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    wf = write_workflow(tmp_path / "wf.yaml", "quiet", NOOP)
    run = fleetscan("--workflows", str(wf), "submit", "quiet", "--targets", "127.0.0.1-4", db=db).stdout.strip()
    with FleetscanProcess("events", run, "--follow", "--json", db=db) as follower:
        wait_until(lambda: follower.stdout().strip() or None, 30, "the submit event printed")
        with FleetscanProcess("--agents", "local:2", "master", db=db) as master:
            assert follower.wait(60) == 0, follower.stderr()
            master.interrupt()
        printed = lines(follower.stdout())
    stored = query(db, "SELECT id FROM events WHERE run_id = ? ORDER BY id", (run,))
    assert [e["id"] for e in printed] == [r["id"] for r in stored][: len(printed)]
    assert printed[-1]["kind"] == "run" and "completed" in str(printed[-1]["message"])
    assert any(e["kind"] == "adopt" for e in printed)  # came while following


def test_follow_without_a_run_shows_new_runs_until_ctrl_c(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    wf = write_workflow(tmp_path / "wf.yaml", "quiet", NOOP)
    fleetscan("--workflows", str(wf), "submit", "quiet", "--targets", "127.0.0.1", db=db)
    with FleetscanProcess("events", "--follow", db=db) as follower:
        wait_until(lambda: "submitted" in follower.stdout() or None, 30, "the first run's event")
        later = fleetscan("--workflows", str(wf), "submit", "quiet", "--targets", "127.0.0.2", db=db).stdout.strip()
        wait_until(lambda: later in follower.stdout() or None, 10, "the new run's event")
        follower.proc.send_signal(signal.SIGINT)
        assert follower.wait(30) == 130
        assert "Traceback" not in follower.stderr()
