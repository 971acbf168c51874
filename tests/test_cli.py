"""The `fleetscan` command end to end: real processes, real local agents, real loopback listeners."""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from console.workflow.models import load_workflows
from tests.fixtures.chaos import FleetscanProcess, fleetscan, query, record_set, wait_until, write_workflow

ROOT = Path(__file__).resolve().parents[1]
#: an address of our own inside 127/8: no other test or service listens here
SCAN_ADDR = "127.0.0.9"


def recon_ports() -> set[int]:
    """The ports the shipped recon workflow's connect stage scans."""
    recon = load_workflows(ROOT / "workflows.yaml").get("recon")
    spec = next(s for s in recon.stages if s.tool == "tcp_connect").agent_params["ports"]
    items = spec if isinstance(spec, list) else str(spec).split(",")
    ports: set[int] = set()
    for item in items:
        lo, _, hi = str(item).partition("-")
        ports.update(range(int(lo), int(hi or lo) + 1))
    return ports


def noop_stage(path: Path, name: str, sleep: float) -> Path:
    """A one-stage workflow of noop tasks (one target each) sleeping ``sleep`` seconds."""
    stage = {"id": "wait", "tool": "noop", "with": {"sleep": sleep}, "targets": {"from": "input", "type": "host"},
             "chunk": 1}
    return write_workflow(path, name, [stage])


def runs_in(db: Path) -> int:
    return len(query(db, "SELECT id FROM runs")) if db.exists() else 0


# -- listeners ---------------------------------------------------------------------------


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = b"<html><head><title>fleetscan test page</title></head><body>hi</body></html>"
        self.send_response(200)
        self.send_header("Server", "fleetscan-test/1.0")
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _banner_server(addr: str, port: int, banner: bytes) -> tuple[socket.socket, threading.Thread]:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            try:
                conn.sendall(banner)
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def _listening_ports(addr: str) -> set[int]:
    """Ports something on this machine accepts on ``addr`` (its own or a wildcard bind), from /proc."""
    wanted = {socket.inet_aton(addr)[::-1].hex().upper(), "00000000"}
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # LISTEN
                continue
            host, port = local.rsplit(":", 1)
            if host in wanted or host == "0" * 32:
                ports.add(int(port, 16))
    return ports


@pytest.fixture
def listeners() -> Iterator[dict[str, int]]:
    """An HTTP server and a banner service on SCAN_ADDR, on ports the shipped recon workflow scans."""
    scanned = recon_ports()
    busy = _listening_ports(SCAN_ADDR)
    http_port = next(p for p in (8080, 8000, 8081, 8888, 80) if p in scanned and p not in busy)
    banner_port = next(p for p in (21, 25, 110, 143, 2222) if p in scanned and p not in busy)
    httpd = ThreadingHTTPServer((SCAN_ADDR, http_port), _Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    srv, _ = _banner_server(SCAN_ADDR, banner_port, b"220 fleetscan-banner ready\r\n")
    try:
        yield {"http": http_port, "banner": banner_port}
    finally:
        httpd.shutdown()
        httpd.server_close()
        srv.close()


# -- bad input: exit 2, one line, nothing written ----------------------------------------------


def test_workflows_check_accepts_the_shipped_file(tmp_path: Path) -> None:
    out = fleetscan("workflows", "--check", db=tmp_path / "x.db")
    assert out.returncode == 0, out.stderr
    listing = fleetscan("workflows", db=tmp_path / "x.db")
    assert listing.returncode == 0
    for name in ("recon", "web", "baseline"):
        assert name in listing.stdout


def test_workflows_check_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "wf.yaml"
    bad.write_text(textwrap.dedent("""\
        workflows:
          recon:
            stages:
              - id: alive
                tool: tcp_ping
              - id: ports
                tool: tcp_connect
                chunk: 0
    """))
    out = fleetscan("workflows", "--check", "--workflows", str(bad), db=tmp_path / "x.db")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"{bad}:8:" in lines[0] and "chunk" in lines[0]


@pytest.mark.parametrize(
    "argv, field",
    [
        (["run", "recon", "--targets", "127.0.0.1;reboot"], "--targets"),
        (["run", "recon", "--targets=-oG/tmp/x"], "--targets"),
        (["run", "recon", "--targets", "127.0.0.1", "--priority", "high"], "--priority"),
        (["run", "recon"], "--targets"),
        (["run", "nosuchflow", "--targets", "127.0.0.1"], "workflow"),
        (["run", "recon", "--targets", "127.0.0.1", "--scope", "127.0.0.0/8,$(id)"], "--scope"),
        (["submit", "recon", "--targets", "127.0.0.1", "--agents", "local:0"], "agents"),
        (["status", "deadbeef"], "run"),
        (["submit", "recon", "--targets", "127.0.0.1", "--exclude", "127.0.0.1;id"], "--exclude"),
        (["submit", "recon", "--targets", "127.0.0.1", "--max-rate", "0"], "--max-rate"),
        (["submit", "recon", "--targets", "127.0.0.1", "--host-rate", "-5"], "--host-rate"),
        (["submit", "recon", "--targets", "127.0.0.1", "--notify", "ftp://127.0.0.1/x"], "--notify"),
        (["submit", "recon", "--targets", "127.0.0.1", "--notify", "http://"], "--notify"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, argv: list[str], field: str) -> None:
    db = tmp_path / "state.db"
    out = fleetscan(*argv, db=db)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert field in lines[0]
    assert runs_in(db) == 0


def test_submit_stores_the_whole_request_and_status_reports_it(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    out = fleetscan(
        "submit", "recon", "--targets", "127.0.0.1-3", "--scope", "127.0.0.0/29", "--exclude", "127.0.0.2",
        "--max-rate", "500", "--host-rate", "50", "--notify", "http://127.0.0.1:9/hook", "--priority", "3", db=db,
    )
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    status = json.loads(fleetscan("status", run_id, "--json", db=db).stdout)
    assert status["targets"] == "127.0.0.1-127.0.0.3" and status["scope"] == "127.0.0.0/29"
    assert status["exclude"] == "127.0.0.2"
    assert (status["max_rate"], status["host_rate"], status["priority"]) == (500, 50, 3)
    assert status["notify"] == "http://127.0.0.1:9/hook"
    assert "@" in status["submitted_by"]


# -- the real thing -------------------------------------------------------------------------


@pytest.mark.slow
def test_run_recon_finds_exactly_the_listeners(tmp_path: Path, listeners: dict[str, int]) -> None:
    db = tmp_path / "state.db"
    out = fleetscan("run", "recon", "--targets", SCAN_ADDR, "--agents", "local:2", "--json", db=db, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["state"] == "completed"
    assert {s["id"] for s in summary["stages"]} >= {"alive", "ports"}
    run_id = summary["run"]

    res = fleetscan("results", run_id, "--format", "jsonl", db=db)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    expected = _listening_ports(SCAN_ADDR) & recon_ports()
    assert {listeners["http"], listeners["banner"]} <= expected
    open_ports = {r["data"]["port"] for r in records if r["type"] == "port_open"}
    assert open_ports == expected

    hosts = {r["data"]["host"] for r in records if r["type"] == "host_up"}
    assert hosts == {SCAN_ADDR}
    http = [r for r in records if r["type"] == "http" and f":{listeners['http']}" in r["data"]["url"]]
    assert http and http[0]["data"]["status"] == 200
    assert http[0]["data"]["title"] == "fleetscan test page"
    assert http[0]["data"]["server"].startswith("fleetscan-test")
    banners = [r for r in records if r["type"] == "service" and r["data"]["port"] == listeners["banner"]]
    assert banners and "fleetscan-banner" in banners[0]["data"]["banner"]
    agents = {r["agent"] for r in records}
    assert agents and all(a.startswith("local") for a in agents)
    # every record is unique on (stage, type, key)
    keys = [(r["stage"], r["type"], r["key"]) for r in records]
    assert len(keys) == len(set(keys))

    # the same records in the other two formats
    as_json = fleetscan("results", run_id, "--format", "json", db=db)
    assert [(r["stage"], r["key"]) for r in json.loads(as_json.stdout)] == [(r["stage"], r["key"]) for r in records]
    as_csv = fleetscan("results", run_id, "--format", "csv", db=db)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["stage"], r["key"]) for r in rows] == [(r["stage"], r["key"]) for r in records]
    assert json.loads(rows[0]["data"]) == records[0]["data"]

    status = fleetscan("status", run_id, "--json", db=db)
    assert json.loads(status.stdout)["state"] == "completed"
    listing = fleetscan("status", "--json", db=db)
    assert [r["run"] for r in json.loads(listing.stdout)["runs"]] == [run_id]


SLOW_WORKFLOW = """\
workflows:
  sweep:
    description: many small paced tasks, to be interrupted
    stages:
      - id: ports
        tool: tcp_connect
        with: {{ports: [{ports}], timeout: 0.5, rate: {rate}}}
        targets: {{from: input, type: host}}
        chunk: 2
"""


@pytest.mark.slow
def test_kill9_then_resume_gives_the_same_records(tmp_path: Path) -> None:
    """kill -9 of `fleetscan run` mid-run, then `resume`: same set, no duplicate, done tasks not re-run."""
    srv = socket.socket()
    srv.bind(("0.0.0.0", 0))  # a wildcard listener answers on every 127/8 address we scan
    srv.listen(128)
    port = srv.getsockname()[1]
    try:
        ports = f"{port}, {port + 1 if port < 65535 else port - 1}"
        wf = tmp_path / "wf.yaml"
        wf.write_text(SLOW_WORKFLOW.format(ports=ports, rate=2))  # 2 hosts x 2 ports at 2/s: ~1.5 s a task
        targets = "127.0.1.1-48"  # 24 tasks: more than the two local agents' slots, so several waves

        clean_db = tmp_path / "clean.db"
        clean = fleetscan("run", "sweep", "--targets", targets, "--workflows", str(wf), "--agents", "local:2",
                          "--json", db=clean_db, timeout=300)
        assert clean.returncode == 0, clean.stderr
        expected = record_set(clean_db, json.loads(clean.stdout)["run"])
        assert len(expected) == 48

        db = tmp_path / "crash.db"
        with FleetscanProcess("run", "sweep", "--targets", targets, "--workflows", str(wf), "--agents", "local:2",
                              db=db) as proc:
            wait_until(lambda: db.exists() and query(db, "SELECT id FROM tasks WHERE state = 'done'"), 120,
                       "a first task done")
            proc.proc.kill()
            proc.proc.wait(timeout=30)
        run_id = query(db, "SELECT id FROM runs")[0]["id"]
        done_sql = "SELECT id, attempts, ended FROM tasks WHERE state = 'done'"
        done_before = {r["id"]: (r["attempts"], r["ended"]) for r in query(db, done_sql)}
        total = len(query(db, "SELECT id FROM tasks"))
        assert 0 < len(done_before) < total, "the kill should land mid-run"

        resumed = fleetscan("resume", run_id, "--json", "--workflows", str(wf), db=db, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["state"] == "completed"
        assert record_set(db, run_id) == expected  # record_set also checks that nothing came out twice
        after = {r["id"]: (r["attempts"], r["ended"]) for r in query(db, done_sql) if r["id"] in done_before}
        assert after == done_before, "completed tasks must not be re-run"
    finally:
        srv.close()


@pytest.mark.slow
def test_submit_is_served_by_a_running_master_and_controlled_from_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    wf = tmp_path / "wf.yaml"
    noop_stage(wf, "idle", sleep=30)
    noop_stage(tmp_path / "quick.yaml", "quick", sleep=0)
    with FleetscanProcess("master", "--agents", "local:2", "--workflows", str(wf), db=db):
        sub = fleetscan("submit", "quick", "--targets", "127.0.0.1", "--workflows", str(tmp_path / "quick.yaml"),
                        db=db)
        assert sub.returncode == 0, sub.stderr
        quick = sub.stdout.strip()
        assert len(quick.splitlines()) == 1

        def state_is(run: str, wanted: str) -> bool:
            return bool(query(db, "SELECT id FROM runs WHERE id = ? AND state = ?", (run, wanted)))

        wait_until(lambda: state_is(quick, "completed"), 60, "the submitted run to complete")
        slow = fleetscan("submit", "idle", "--targets", "127.0.0.1-4", "--workflows", str(wf), db=db).stdout.strip()
        wait_until(lambda: state_is(slow, "running"), 60, "the second run to start")
        assert fleetscan("pause", slow, db=db).returncode == 0
        wait_until(lambda: state_is(slow, "paused"), 5, "paused")
        assert fleetscan("stop", slow, db=db).returncode == 0
        wait_until(lambda: state_is(slow, "stopped"), 10, "stopped")
        live = query(db, "SELECT id FROM tasks WHERE run_id = ? AND state IN ('queued', 'leased')", (slow,))
        assert live == []


@pytest.mark.slow
def test_ctrl_c_exits_130_and_the_run_resumes(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    wf = tmp_path / "wf.yaml"
    noop_stage(wf, "idle", sleep=2)
    with FleetscanProcess("run", "idle", "--targets", "127.0.0.1-6", "--workflows", str(wf), db=db) as run:
        wait_until(lambda: db.exists() and query(db, "SELECT id FROM tasks WHERE state = 'leased'"), 60,
                   "tasks running")
        run.proc.send_signal(signal.SIGINT)
        assert run.wait(60) == 130, run.stderr()
        assert "resum" in run.stderr().splitlines()[-1]
    run_id = query(db, "SELECT id FROM runs")[0]["id"]
    assert json.loads(fleetscan("status", run_id, "--json", db=db).stdout)["state"] not in ("completed", "failed", "stopped")
    resumed = fleetscan("resume", run_id, "--json", db=db)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["state"] == "completed"
    assert summary["stages"][0]["tasks_done"] == 6
