"""`fleetscan amend RUN --workflows FILE`: a stage that has not started takes the new definition (and the
serving master uses it), a stage already started keeps its own; logged; bad input changes nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.chaos import FleetscanProcess, fleetscan, query, wait_until, write_workflow

#: one host_up per target, carrying the marker the stage was defined with, after ``sleep`` seconds
TOOL = (
    "import sys, json, time; time.sleep(float(sys.argv[1])); "
    "print(json.dumps(dict(type='host_up', target=sys.argv[2], "
    "data=dict(host=sys.argv[2], via='exec', marker=sys.argv[3]))))"
)


def stages(marker: str, first_sleep: float = 2.0) -> list[dict[str, Any]]:
    def stage(sid: str, source: str, sleep: float) -> dict[str, Any]:
        return {"id": sid, "tool": "exec",
                "with": {"argv": [sys.executable, "-c", TOOL, str(sleep), "{target}", marker], "parser": "jsonl"},
                "targets": {"from": source, "type": "host"}, "chunk": 1}
    return [stage("first", "input", first_sleep), stage("second", "first", 0)]


def definition(db: Path, run_id: str) -> dict[str, Any]:
    return json.loads(query(db, "SELECT definition FROM runs WHERE id = ?", (run_id,))[0]["definition"])


def markers(db: Path, run_id: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for row in query(db, "SELECT stage_id, data FROM results WHERE run_id = ?", (run_id,)):
        found.setdefault(row["stage_id"], set()).add(json.loads(row["data"])["marker"])
    return found


def test_amend_before_and_after_a_stage_starts(tmp_path: Path, store_url: str) -> None:
    db = store_url  # a fresh SQLite file or PostgreSQL database
    old = write_workflow(tmp_path / "old.yaml", "chain", stages("old"))
    new = write_workflow(tmp_path / "new.yaml", "chain", stages("new"))
    with FleetscanProcess("master", "--agents", "local:2", db=db):
        sub = fleetscan("submit", "chain", "--targets", "127.0.0.1-2", "--workflows", str(old), db=db)
        run_id = sub.stdout.strip()
        wait_until(lambda: query(db, "SELECT 1 FROM tasks WHERE run_id = ? AND stage_id = 'first' AND state = 'leased'",
                                 (run_id,)), 60, "the first stage to run")
        out = fleetscan("amend", run_id, "--workflows", str(new), db=db)
        assert out.returncode == 0, out.stderr
        assert "amended stage(s) second" in out.stderr and "first already started" in out.stderr
        wait_until(lambda: query(db, "SELECT 1 FROM runs WHERE id = ? AND state = 'completed'", (run_id,)), 90,
                   "the run to complete")
    # the started stage kept its definition; the one that had not started ran with the new one
    assert markers(db, run_id) == {"first": {"old"}, "second": {"new"}}
    stored = {s["id"]: s["with"]["argv"][-1] for s in definition(db, run_id)["stages"]}
    assert stored == {"first": "old", "second": "new"}
    logged = query(db, "SELECT message FROM events WHERE run_id = ? AND kind = 'amend'", (run_id,))
    assert len(logged) == 1 and "second" in logged[0]["message"] and str(new) in logged[0]["message"]


def _pending_run(tmp_path: Path) -> tuple[Path, str]:
    db = tmp_path / "state.db"
    old = write_workflow(tmp_path / "old.yaml", "chain", stages("old"))
    out = fleetscan("submit", "chain", "--targets", "127.0.0.1", "--workflows", str(old), db=db)
    assert out.returncode == 0, out.stderr
    return db, out.stdout.strip()


def test_amend_a_pending_run_changes_every_stage(tmp_path: Path) -> None:
    db, run_id = _pending_run(tmp_path)
    new = write_workflow(tmp_path / "new.yaml", "chain", stages("new"))
    out = fleetscan("amend", run_id[:4], "--workflows", str(new), db=db)  # RUN: a unique prefix, as everywhere
    assert out.returncode == 0, out.stderr
    assert f"run {run_id}: amended" in out.stderr
    assert {s["id"]: s["with"]["argv"][-1] for s in definition(db, run_id)["stages"]} == {"first": "new", "second": "new"}
    again = fleetscan("amend", run_id, "--workflows", str(new), db=db)
    assert again.returncode == 0 and "nothing changed" in again.stderr
    assert len(query(db, "SELECT 1 FROM events WHERE run_id = ? AND kind = 'amend'", (run_id,))) == 1


BAD_FILES: dict[str, str] = {
    "unknown key": "workflows:\n  chain:\n    stages:\n      - id: first\n        tool: noop\n        colour: red\n",
    "not yaml": "workflows: [\n",
    "other workflow only": "workflows:\n  other:\n    stages:\n      - id: first\n        tool: noop\n"
                           "        targets: {from: input}\n",
    "other stages": "workflows:\n  chain:\n    stages:\n      - id: first\n        tool: noop\n"
                    "        targets: {from: input}\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_exit_2_nothing_changed(tmp_path: Path, name: str) -> None:
    db, run_id = _pending_run(tmp_path)
    before = definition(db, run_id)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_FILES[name])
    out = fleetscan("amend", run_id, "--workflows", str(bad), db=db)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "bad.yaml" in out.stderr
    assert definition(db, run_id) == before
    assert query(db, "SELECT 1 FROM events WHERE kind = 'amend'") == []


def test_unknown_or_ended_run_exit_2(tmp_path: Path) -> None:
    db, run_id = _pending_run(tmp_path)
    new = write_workflow(tmp_path / "new.yaml", "chain", stages("new"))
    out = fleetscan("amend", "feedbeef", "--workflows", str(new), db=db)
    assert out.returncode == 2 and "feedbeef" in out.stderr
    assert fleetscan("stop", run_id, db=db).returncode == 0
    before = definition(db, run_id)
    ended = fleetscan("amend", run_id, "--workflows", str(new), db=db)
    assert ended.returncode == 2 and "ended" in ended.stderr
    assert definition(db, run_id) == before
