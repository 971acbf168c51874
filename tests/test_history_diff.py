"""`fleetscan diff`: every record type, changes only in data, measured values ignored, exit codes 0/1/2,
and a real scan of loopback listeners changed between two runs."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.history.diff import MEASURED, merge_diff
from console.status import RunState
from console.store import open_store
from console.store.base import Store
from console.store.writes import IngestBatch
from console.targets.records import record_key
from tests.fixtures.chaos import fleetscan, write_workflow

# What the "servers" said in each run: (stage, type, data). Every record type, with the changes named.
OLD: list[tuple[str, str, dict[str, Any]]] = [
    ("alive", "host_up", {"host": "127.0.0.1", "via": "tcp/22", "rtt_ms": 0.4}),
    ("alive", "host_up", {"host": "127.0.0.2", "via": "tcp/80", "rtt_ms": 1.0}),  # gone in NEW
    ("ports", "port_open", {"host": "127.0.0.1", "port": 22, "proto": "tcp"}),
    ("ports", "port_open", {"host": "127.0.0.1", "port": 23, "proto": "tcp"}),  # closed in NEW
    ("svc", "service", {"host": "127.0.0.1", "port": 22, "banner": "SSH-2.0-OpenSSH_9.6\r\n"}),
    ("web", "http", {"url": "http://127.0.0.1:80/", "status": 200, "title": "Old title", "server": "x"}),
    ("tls", "tls_cert", {"host": "127.0.0.1", "port": 443, "subject": "CN=a", "issuer": "CN=ca",
                         "not_before": "2026-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z", "sans": ["a"]}),
    ("base", "baseline", {"host": "box1", "rule": "1001", "title": "ssh root login", "security": "high",
                          "status": "pass", "evidence": ""}),
    ("base", "baseline", {"host": "box1", "rule": "1002", "title": "umask", "security": "low",
                          "status": "pass", "evidence": ""}),
]
NEW: list[tuple[str, str, dict[str, Any]]] = [
    ("alive", "host_up", {"host": "127.0.0.1", "via": "tcp/80", "rtt_ms": 9.9}),  # measured only: no change
    ("alive", "host_up", {"host": "127.0.0.3", "via": "tcp/22", "rtt_ms": 1.0}),  # new host
    ("ports", "port_open", {"host": "127.0.0.1", "port": 22, "proto": "tcp"}),
    ("ports", "port_open", {"host": "127.0.0.1", "port": 8080, "proto": "tcp"}),  # opened
    ("svc", "service", {"host": "127.0.0.1", "port": 22, "banner": "SSH-2.0-OpenSSH_9.7\r\n"}),  # data only
    ("web", "http", {"url": "http://127.0.0.1:80/", "status": 200, "title": "New title", "server": "x"}),
    ("tls", "tls_cert", {"host": "127.0.0.1", "port": 443, "subject": "CN=a", "issuer": "CN=ca",
                         "not_before": "2026-01-01T00:00:00Z", "not_after": "2026-12-20T00:00:00Z", "sans": ["a"]}),
    ("base", "baseline", {"host": "box1", "rule": "1001", "title": "ssh root login", "security": "high",
                          "status": "fail", "evidence": "PermitRootLogin yes"}),
    ("base", "baseline", {"host": "box1", "rule": "1002", "title": "umask", "security": "low",
                          "status": "pass", "evidence": ""}),
]
STAGES = ["alive", "ports", "svc", "web", "tls", "base"]

EXPECTED = {
    ("removed", "alive", "host_up", "127.0.0.2"),
    ("added", "alive", "host_up", "127.0.0.3"),
    ("removed", "ports", "port_open", "127.0.0.1:23/tcp"),
    ("added", "ports", "port_open", "127.0.0.1:8080/tcp"),
    ("changed", "svc", "service", "127.0.0.1:22"),
    ("changed", "web", "http", "http://127.0.0.1:80/"),
    ("changed", "tls", "tls_cert", "127.0.0.1:443"),
    ("changed", "base", "baseline", "box1:1001"),
}


def make_run(store: Store, records: list[tuple[str, str, dict[str, Any]]], targets: str = "127.0.0.0/29",
             workflow: str = "fleet", state: RunState = RunState.COMPLETED) -> str:
    definition = {"stages": [{"id": s, "tool": "noop"} for s in STAGES]}
    run_id = store.runs.create(workflow, definition, targets, None, "local", 0, None)
    rows = [
        (run_id, stage, rtype, record_key(rtype, data), str(data.get("host") or data.get("url")), "box1", 1,
         "2026-12-03T00:00:00Z", json.dumps(data))
        for stage, rtype, data in records
    ]
    store.queue.apply_batch(IngestBatch(records=rows))
    store.queue.finish_run(run_id, state)
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "state.db")
    yield s
    s.close()


def _diff(db: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    out = fleetscan("diff", *args, "--format", "jsonl", db=db)
    return out.returncode, [json.loads(line) for line in out.stdout.splitlines() if line.strip()], out.stderr


def test_diff_over_every_record_type_ignores_measured_values(tmp_path: Path, store: Store) -> None:
    old, new = make_run(store, OLD), make_run(store, NEW)
    code, changes, err = _diff(tmp_path / "state.db", old, new)
    assert code == 1, err
    assert {(c["change"], c["stage"], c["type"], c["key"]) for c in changes} == EXPECTED
    by_key = {c["key"]: c for c in changes}
    assert by_key["127.0.0.1:22"]["old"]["banner"] == "SSH-2.0-OpenSSH_9.6\r\n"
    assert by_key["127.0.0.1:22"]["new"]["banner"] == "SSH-2.0-OpenSSH_9.7\r\n"
    assert by_key["box1:1001"]["new"]["status"] == "fail"
    assert by_key["127.0.0.2"]["new"] is None and by_key["127.0.0.3"]["old"] is None
    assert all(set(c) == {"change", "stage", "type", "key", "old", "new"} for c in changes)


def test_same_records_exit_0_and_formats(tmp_path: Path, store: Store) -> None:
    db = tmp_path / "state.db"
    a, b = make_run(store, OLD), make_run(store, list(reversed(OLD)))
    assert _diff(db, a, b)[:2] == (0, [])
    new = make_run(store, NEW)
    as_json = fleetscan("diff", a, new, "--format", "json", db=db)
    assert as_json.returncode == 1
    doc = json.loads(as_json.stdout)
    assert doc["old"] == a and doc["new"] == new and len(doc["changes"]) == len(EXPECTED)
    assert doc["counts"] == {"added": 2, "removed": 2, "changed": 4}
    text = fleetscan("diff", a, new, db=db)
    assert text.returncode == 1
    assert "+ ports port_open 127.0.0.1:8080/tcp" in text.stdout
    assert "status: 'pass' -> 'fail'" in text.stdout
    assert "2 added, 2 removed, 4 changed" in text.stdout


def test_diff_run_compares_with_the_latest_earlier_comparable_completed_run(tmp_path: Path, store: Store) -> None:
    db = tmp_path / "state.db"
    first = make_run(store, OLD)
    assert _diff(db, first)[0] == 2  # nothing earlier to compare with: bad input
    make_run(store, NEW, targets="127.0.0.8/29")  # other targets
    make_run(store, NEW, workflow="other")  # other workflow
    make_run(store, NEW, state=RunState.FAILED)  # not completed
    second = make_run(store, NEW)
    code, changes, _ = _diff(db, second)
    assert code == 1 and {(c["change"], c["stage"], c["type"], c["key"]) for c in changes} == EXPECTED
    third = make_run(store, NEW)
    assert _diff(db, third)[:2] == (0, [])


def test_runs_given_by_unique_prefixes_like_every_other_command(tmp_path: Path, store: Store) -> None:
    """`diff 3f2a 9c1e` and `diff 9c1e` take the same prefixes as status/results (README: RUN)."""
    db = tmp_path / "state.db"
    old, new = make_run(store, OLD), make_run(store, NEW)
    code, changes, err = _diff(db, old[:4], new[:5])
    assert code == 1, err
    assert {(c["change"], c["stage"], c["type"], c["key"]) for c in changes} == EXPECTED
    doc = json.loads(fleetscan("diff", new[:4], "--format", "json", db=db).stdout)
    assert (doc["old"], doc["new"]) == (old, new)
    short = fleetscan("diff", old[:3], new, db=db)
    assert short.returncode == 2 and short.stdout == "" and len(short.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["nope1234"], ["nope1234", "nope5678"], ["a", "b", "c"]])
def test_bad_input_exit_2(tmp_path: Path, store: Store, argv: list[str]) -> None:
    make_run(store, OLD)
    out = fleetscan("diff", *argv, db=tmp_path / "state.db")
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1


def test_measured_fields_are_named_in_one_place() -> None:
    base = {"host": "127.0.0.1", "via": "tcp/22", "rtt_ms": 1.0}
    rec = ("alive", "host_up", "127.0.0.1")
    for field in MEASURED["*"] | MEASURED["host_up"]:
        other = {**base, field: "different"}
        assert list(merge_diff([(*rec, json.dumps(base))], [(*rec, json.dumps(other))])) == []
    moved = {**base, "name": "box.example"}
    assert [c["change"] for c in merge_diff([(*rec, json.dumps(base))], [(*rec, json.dumps(moved))])] == ["changed"]


# -- a real scan, twice, with the listeners changed in between -----------------------------------------

ADDR = "127.0.0.31"


class Listener:
    """A TCP service on ADDR that greets with ``banner``."""

    def __init__(self, port: int, banner: bytes) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ADDR, port))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.banner = banner
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(self.banner)
                except OSError:
                    pass

    def close(self) -> None:
        # shutdown first: a close alone leaves the socket listening while the accept thread holds it
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def test_real_scans_diffed(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    a, b = Listener(0, b"220 alpha v1\r\n"), Listener(0, b"220 bravo\r\n")
    spare = socket.socket()  # a port reserved for the third service, refused (bound, not listening) in run 1
    spare.bind((ADDR, 0))
    c_port = spare.getsockname()[1]
    ports = [a.port, b.port, c_port]
    wf = write_workflow(tmp_path / "wf.yaml", "scan", [
        {"id": "ports", "tool": "tcp_connect", "with": {"ports": ports, "timeout": 1.0},
         "targets": {"from": "input", "type": "host"}},
        {"id": "banners", "tool": "banner", "with": {"timeout": 2.0},
         "targets": {"from": "ports", "type": "port", "where": {"type": "port_open"}}},
    ])
    argv = ["run", "scan", "--targets", ADDR, "--workflows", str(wf), "--agents", "local:1", "--json"]
    try:
        first = fleetscan(*argv, db=db, timeout=120)
        assert first.returncode == 0, first.stderr
        b.close()
        spare.close()
        c = Listener(c_port, b"220 charlie\r\n")
        a.banner = b"220 alpha v2\r\n"
        second = fleetscan(*argv, db=db, timeout=120)
        assert second.returncode == 0, second.stderr
    finally:
        a.close()
        b.close()
        spare.close()
    c.close()
    code, changes, err = _diff(db, json.loads(second.stdout)["run"])
    assert code == 1, err
    got = {(ch["change"], ch["type"], ch["key"]) for ch in changes}
    assert got == {
        ("removed", "port_open", f"{ADDR}:{b.port}/tcp"), ("added", "port_open", f"{ADDR}:{c_port}/tcp"),
        ("removed", "service", f"{ADDR}:{b.port}"), ("added", "service", f"{ADDR}:{c_port}"),
        ("changed", "service", f"{ADDR}:{a.port}"),
    }
    changed = next(ch for ch in changes if ch["change"] == "changed")
    # (how CR LF is escaped is the banner tool's business; the greeting's text is what the services said)
    assert changed["old"]["banner"].startswith("220 alpha v1") and changed["new"]["banner"].startswith("220 alpha v2")
