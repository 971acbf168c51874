"""The CLI's run handling: id prefixes, merged target specs, results filters, one-line usage errors,
help for every argument, `agents --json`, `status` showing the request, failures and baseline counts.

Every command is a real `fleetscan` process on a throwaway store; the runs that execute use real local
agents and send nothing beyond 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
from pathlib import Path

import pytest

from console.cli.main import build_parser
from tests.fixtures.chaos import FleetscanProcess, fleetscan, query, wait_until, write_workflow

NOOP = [{"id": "wait", "tool": "noop", "targets": {"from": "input", "type": "host"}, "chunk": 1}]


def submit(tmp_path: Path, db: Path, *options: str, workflow: str = "quiet") -> str:
    wf = write_workflow(tmp_path / "wf.yaml", workflow, NOOP)
    out = fleetscan("--workflows", str(wf), "submit", workflow, *options, db=db)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def rename_run(db: Path, old: str, new: str) -> None:
    """Test setup: give a run an id of our choosing (ids are random; ambiguity needs a shared prefix)."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        for table, column in (("runs", "id"), ("stages", "run_id"), ("events", "run_id"), ("tasks", "run_id")):
            conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new, old))


def test_a_unique_prefix_names_the_run_everywhere_and_a_bad_one_exits_2(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    first, second = submit(tmp_path, db, "--targets", "127.0.0.1"), submit(tmp_path, db, "--targets", "127.0.0.2")
    rename_run(db, first, "abcd1111")
    rename_run(db, second, "abcd2222")
    # a unique prefix works for status, results, events, pause, stop
    assert json.loads(fleetscan("status", "abcd1", "--json", db=db).stdout)["run"] == "abcd1111"
    assert fleetscan("results", "abcd2", db=db).returncode == 0
    events = fleetscan("events", "abcd2", "--json", db=db)
    assert events.returncode == 0 and {json.loads(line)["run"] for line in events.stdout.splitlines()} == {"abcd2222"}
    assert fleetscan("pause", "abcd1", db=db).returncode == 0
    assert query(db, "SELECT state FROM runs WHERE id = 'abcd1111'")[0]["state"] == "paused"
    assert fleetscan("stop", "abcd22", db=db).returncode == 0
    assert query(db, "SELECT state FROM runs WHERE id = 'abcd2222'")[0]["state"] == "stopped"
    stopped = json.loads(fleetscan("status", "abcd2222", "--json", db=db).stdout)
    assert [s["state"] for s in stopped["stages"]] == ["stopped"]  # not "pending" for a run that ended
    # ambiguous: exit 2 naming both candidates, nothing changed
    out = fleetscan("pause", "abcd", db=db)
    assert out.returncode == 2 and "abcd1111" in out.stderr and "abcd2222" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    # unknown, and too short
    for bad in ("ffff", "abc"):
        for argv in (("status", bad), ("results", bad), ("events", bad), ("resume", bad), ("stop", bad)):
            out = fleetscan(*argv, db=db)
            assert out.returncode == 2 and out.stderr.startswith("fleetscan: ") and bad in out.stderr, (argv, out)
            assert len(out.stderr.strip().splitlines()) == 1
    assert query(db, "SELECT state FROM runs WHERE id = 'abcd1111'")[0]["state"] == "paused"


def test_repeated_target_specs_are_merged(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    run = submit(tmp_path, db, "--targets", "127.0.0.1", "--targets", "127.0.0.7", "--exclude", "127.0.0.3",
                 "--exclude", "127.0.0.4", "--scope", "127.0.0.1", "--scope", "127.0.0.0/24")
    status = json.loads(fleetscan("status", run, "--json", db=db).stdout)
    assert "127.0.0.1" in status["targets"] and "127.0.0.7" in status["targets"]
    assert "127.0.0.3" in status["exclude"] and "127.0.0.4" in status["exclude"]
    assert "127.0.0.0/24" in status["scope"]
    help_text = fleetscan("submit", "--help", db=db).stdout
    assert "repeatable: merged" in help_text


def test_results_refuses_an_unknown_stage_or_type_naming_the_known_ones(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    wf = write_workflow(tmp_path / "wf.yaml", "pair", [
        {"id": "alive", "tool": "tcp_ping", "with": {"ports": [9], "timeout": 0.2},
         "targets": {"from": "input", "type": "host"}},
        {"id": "ports", "tool": "tcp_connect", "with": {"ports": [9], "timeout": 0.2},
         "targets": {"from": "alive", "type": "host", "where": {"type": "host_up"}}},
    ])
    run = fleetscan("--workflows", str(wf), "submit", "pair", "--targets", "127.0.0.1", db=db).stdout.strip()
    out = fleetscan("results", run, "--stage", "port", db=db)
    assert out.returncode == 2 and out.stdout == ""
    assert "--stage" in out.stderr and "'port'" in out.stderr and "alive, ports" in out.stderr
    out = fleetscan("results", run, "--type", "port_opne", db=db)
    assert out.returncode == 2 and out.stdout == "" and "port_open" in out.stderr and "host_up" in out.stderr
    ok = fleetscan("results", run, "--stage", "ports", "--type", "port_open", db=db)
    assert ok.returncode == 0, ok.stderr


def test_a_usage_error_has_one_fleetscan_prefix(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    for argv, head in ((["status", "--bogus"], "fleetscan: unrecognized arguments: --bogus"),
                       (["results"], "fleetscan: results: the following arguments are required: RUN"),
                       (["nosuchcommand"], "fleetscan: argument COMMAND: invalid choice")):
        out = fleetscan(*argv, db=db)
        assert out.returncode == 2 and out.stderr.startswith(head), out.stderr
        assert out.stderr.count("fleetscan:") == 1 and len(out.stderr.strip().splitlines()) == 1


def test_every_argument_of_every_command_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {action.dest}"
        for name, command in [("fleetscan", parser), *sub.choices.items()]
        for action in command._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()
    ]
    assert not missing, missing
    assert {"events", "status", "results", "agents"} <= set(sub.choices)


def test_agents_json_lists_local_agents_and_inventory_boxes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    local = json.loads(fleetscan("--agents", "local:3", "agents", "--json", db=db).stdout)
    assert [a["name"] for a in local["agents"]] == ["local-1", "local-2", "local-3"]
    assert {a["kind"] for a in local["agents"]} == {"local"}
    inventory = tmp_path / "boxes.yaml"
    inventory.write_text(
        "agents:\n"
        "  - {name: alpha, host: 127.0.0.1, port: 2222, user: scan, slots: 3}\n"
        "  - {name: beta, host: 127.0.0.2, port: 22, slots: 5}\n"
    )
    out = fleetscan("--agents", str(inventory), "agents", "--json", db=db, env={"HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    boxes = {a["name"]: a for a in json.loads(out.stdout)["agents"]}
    assert boxes["alpha"]["slots"] == 3 and boxes["beta"]["slots"] == 5
    assert boxes["alpha"]["kind"] == "ssh" and "2222" in boxes["alpha"]["address"]
    assert boxes["alpha"]["host_key"] == "unknown"


def test_agents_check_json_keeps_the_listing_keys(tmp_path: Path) -> None:
    """docs/COMMANDS.md: --json objects carry name, kind, address, slots (host_key for SSH), and --check
    adds ok, error, python ...: a script reads the same keys with or without --check."""
    db = tmp_path / "s.db"
    out = fleetscan("--agents", "local:2", "agents", "--check", "--json", db=db)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["agents"]
    assert [(a["name"], a["kind"], a["ok"]) for a in rows] == [("local-1", "local", True), ("local-2", "local", True)]
    assert all(a["slots"] >= 1 and a["python"] == platform.python_version() for a in rows)
    with socket.socket() as sock:  # a loopback port nobody listens on: the check fails fast
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inventory = tmp_path / "boxes.yaml"
    inventory.write_text(f"agents:\n  - {{name: alpha, host: 127.0.0.1, port: {port}, user: scan, slots: 3}}\n")
    out = fleetscan("--agents", str(inventory), "agents", "--check", "--json", db=db, env={"HOME": str(tmp_path)})
    assert out.returncode == 1, out.stderr
    (alpha,) = json.loads(out.stdout)["agents"]
    assert (alpha["kind"], alpha["slots"], alpha["host_key"], alpha["ok"]) == ("ssh", 3, "unknown", False)


def test_status_shows_the_request_and_a_run_no_master_serves(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    run = submit(tmp_path, db, "--targets", "127.0.0.1-3", "--scope", "127.0.0.0/29", "--exclude", "127.0.0.2",
                 "--priority", "7", "--max-rate", "40", "--host-rate", "9", "--agents", "local:2")
    text = fleetscan("status", run, db=db)
    assert text.returncode == 0, text.stderr
    for field, value in (("targets", "127.0.0.1"), ("scope", "127.0.0.0/29"), ("exclude", "127.0.0.2"),
                         ("agents", "local:2"), ("priority", "7"), ("rate budget", "40/s"),
                         ("rate budget", "9/s"), ("submitted", "@")):
        line = next((ln for ln in text.stdout.splitlines() if ln.strip().startswith(field)), "")
        assert value in line, (field, text.stdout)
    assert "waiting for a master" in text.stdout
    assert json.loads(fleetscan("status", run, "--json", db=db).stdout)["waiting_for_master"] is True
    listing = fleetscan("status", db=db).stdout
    row = next(ln for ln in listing.splitlines() if ln.startswith(run))
    assert "quiet" in row and "127.0.0.1" in row and "waiting for a master" in row


def test_a_failed_run_names_its_failing_task_and_the_whole_reason(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    program = "no-such-program-" + "x" * 3000  # far past the old 100-character cut
    wf = write_workflow(tmp_path / "wf.yaml", "boom", [
        {"id": "probe", "tool": "exec", "with": {"argv": [program, "{host}"], "parser": "lines", "type": "host_up"},
         "targets": {"from": "input", "type": "host"}, "retries": 0},
    ])
    out = fleetscan("--workflows", str(wf), "run", "boom", "--targets", "127.0.0.1", "--json", db=db)
    assert out.returncode == 1, out.stderr
    summary = json.loads(out.stdout)
    (task,) = query(db, "SELECT id FROM tasks")
    assert summary["failures"] == [
        {"task": task["id"], "stage": "probe", "agent": "local", "error": f"program not found: {program}"}
    ]
    assert f"task {task['id']} of stage probe failed on local: program not found: {program}" in summary["error"]
    assert summary["waiting_for_master"] is False
    text = fleetscan("status", summary["run"][:6], db=db).stdout
    assert f"program not found: {program}" in text and f"task {task['id']}" in text
    events = fleetscan("events", summary["run"], db=db).stdout
    assert f"program not found: {program}\n" in events


def test_a_baseline_summary_counts_pass_fail_and_error(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    root = tmp_path / "tree"
    (root / "etc").mkdir(parents=True)
    for name, mode in (("tight", 0o600), ("loose", 0o666), ("tight2", 0o640)):
        (root / "etc" / name).write_text("x\n")
        os.chmod(root / "etc" / name, mode)

    def check(n: int, rule: dict[str, object]) -> dict[str, object]:
        return {"check_id": n, "title": f"check {n}", "security": "low", "check": {"rules": [rule]}}

    rules = [
        check(1, {"type": "file_permission", "param": ["/etc/tight", "644"]}),    # pass
        check(2, {"type": "file_permission", "param": ["/etc/tight2", "644"]}),   # pass
        check(3, {"type": "file_permission", "param": ["/etc/loose", "644"]}),    # fail
        check(4, {"type": "file_md5_check", "param": ["/etc/missing", "0" * 32]}),  # error
    ]
    wf = write_workflow(tmp_path / "wf.yaml", "harden", [
        {"id": "base", "tool": "baseline", "with": {"rules": rules, "root": str(root)},
         "targets": {"from": "boxes"}},
    ])
    out = fleetscan("--workflows", str(wf), "run", "harden", "--json", db=db)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["baseline"] == {"pass": 2, "fail": 1, "error": 1}
    text = fleetscan("status", summary["run"], db=db).stdout
    assert "baseline     2 pass, 1 fail, 1 error" in text


@pytest.mark.parametrize("argv", [["status", "--json"], ["status"]])
def test_status_of_an_empty_store(tmp_path: Path, argv: list[str]) -> None:
    out = fleetscan(*argv, db=tmp_path / "s.db")
    assert out.returncode == 0 and ("no runs" in out.stdout or json.loads(out.stdout) == {"runs": []})


def test_a_running_run_whose_master_died_waits_for_a_master(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    wf = write_workflow(tmp_path / "wf.yaml", "sleepy", [
        {"id": "wait", "tool": "noop", "with": {"sleep": 5}, "targets": {"from": "input", "type": "host"}, "chunk": 1},
    ])
    with FleetscanProcess("--workflows", str(wf), "run", "sleepy", "--targets", "127.0.0.1-4", db=db) as run:
        run_id = wait_until(
            lambda: next((r["id"] for r in query(db, "SELECT id, state FROM runs") if r["state"] == "running"), None),
            60, "the run running",
        )
        served = json.loads(fleetscan("status", run_id, "--json", db=db).stdout)
        assert served["state"] == "running" and served["waiting_for_master"] is False
        run.kill()  # SIGKILL: the master is gone without a word
    orphan = json.loads(fleetscan("status", run_id, "--json", db=db).stdout)
    assert orphan["state"] == "running" and orphan["waiting_for_master"] is True
    assert "waiting for a master" in fleetscan("status", run_id, db=db).stdout


def test_one_sub_commands_parser_parses_exactly_as_the_whole_parser() -> None:
    """A command's own parser (built alone for a fast start) reads every command line as the full one."""
    from console.cli.main import command_named, parse_args

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    lines = [
        ["run", "nop", "--targets", "127.0.0.1", "--targets", "127.0.0.2", "--max-rate", "9", "--json"],
        ["--db", "x.db", "status", "abcd", "--json"],
        ["--db=x.db", "--agents", "local:2", "master"],
        ["schedule", "add", "quick", "--targets", "127.0.0.1", "--every", "1h"],
        ["diff", "abcd", "efgh", "--format", "json"],
        ["masters", "--json"],
        ["events", "-f"],
    ]
    for argv in lines:
        assert command_named(argv) in sub.choices, argv
        assert parse_args(argv) == build_parser().parse_args(argv), argv
    for argv in (["--help"], [], ["--db", "x.db"], ["-x", "run"]):
        assert command_named(argv) is None, argv
    assert command_named(["nosuch"]) == "nosuch"  # not a command: parse_args builds every parser to say so
