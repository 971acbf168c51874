"""`--notify URL`: one POST per finished run with the SPEC's JSON (changes inside), to a loopback receiver;
a receiver that fails and then recovers (retried by a serving master, outcomes logged as events); one
that redirects (never followed); a bounded answer; bad URLs (exit 2, nothing written)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from console.history.notify import post_json
from console.runoptions import RunOptions
from console.status import RunState
from console.store import open_store
from tests.fixtures.chaos import FleetscanProcess, fleetscan, query, wait_until, write_workflow

ADDR = "127.0.0.32"


class Receiver:
    """A loopback HTTP endpoint: records every POST; answers ``fail_first`` of them 500, or redirects."""

    def __init__(self, fail_first: int = 0, redirect_to: str | None = None, body: bytes = b"ok") -> None:
        self.posts: list[dict[str, Any]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                outer.posts.append({"path": self.path, "type": self.headers.get("Content-Type"),
                                    "body": json.loads(self.rfile.read(length) or b"null")})
                if redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                failing = len(outer.posts) <= outer.fail_first
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((ADDR, 0), Handler)
        self.url = f"http://{ADDR}:{self.server.server_address[1]}/hook?team=ops"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def port_workflow(path: Path, port: int) -> Path:
    return write_workflow(path, "ports", [
        {"id": "ports", "tool": "tcp_connect", "with": {"ports": [port], "timeout": 1.0},
         "targets": {"from": "input", "type": "host"}},
    ])


def events(db: Path, run_id: str) -> list[dict[str, Any]]:
    return query(db, "SELECT level, message FROM events WHERE run_id = ? AND kind = 'notify' ORDER BY id", (run_id,))


def test_run_notify_posts_once_before_exiting_with_the_changes(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "state.db"
    service = socket.socket()
    service.bind((ADDR, 0))
    service.listen(8)
    port = service.getsockname()[1]
    wf = port_workflow(tmp_path / "wf.yaml", port)
    argv = ["run", "ports", "--targets", ADDR, "--workflows", str(wf), "--agents", "local:1", "--json",
            "--notify", receiver.url]
    first = fleetscan(*argv, db=db, timeout=120)
    assert first.returncode == 0, first.stderr
    run1 = json.loads(first.stdout)["run"]
    assert len(receiver.posts) == 1  # delivered before `run` exited
    post = receiver.posts[0]
    assert post["path"] == "/hook?team=ops" and post["type"] == "application/json"
    body = post["body"]
    assert {"run", "workflow", "state", "summary", "changes"} <= set(body)
    assert (body["run"], body["workflow"], body["state"]) == (run1, "ports", "completed")
    assert body["summary"]["run"] == run1 and body["summary"]["results"] == 1
    assert body["changes"] == []  # nothing earlier to compare with
    service.close()  # the port the first run found open is closed for the second
    second = fleetscan(*argv, db=db, timeout=120)
    assert second.returncode == 0, second.stderr
    run2 = json.loads(second.stdout)["run"]
    assert len(receiver.posts) == 2
    changes = receiver.posts[1]["body"]["changes"]
    assert [(c["change"], c["stage"], c["type"], c["key"], c["new"]) for c in changes] == [
        ("removed", "ports", "port_open", f"{ADDR}:{port}/tcp", None)]
    assert {k: changes[0]["old"][k] for k in ("host", "port", "proto")} == {"host": ADDR, "port": port, "proto": "tcp"}
    assert [e["level"] for e in events(db, run2)] == ["info"] and "delivered" in events(db, run2)[0]["message"]
    time.sleep(1.5)
    assert len(receiver.posts) == 2  # one POST per run, never again


def test_a_failing_receiver_is_retried_by_a_serving_master_until_it_recovers(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    failing = Receiver(fail_first=2)
    try:
        wf = port_workflow(tmp_path / "wf.yaml", 9)
        out = fleetscan("run", "ports", "--targets", ADDR, "--workflows", str(wf), "--agents", "local:1", "--json",
                        "--notify", failing.url, db=db, timeout=120)
        assert out.returncode == 0, out.stderr  # the receiver's trouble never changes the run's outcome
        run_id = json.loads(out.stdout)["run"]
        assert len(failing.posts) == 1 and "retries" in out.stderr
        with FleetscanProcess("master", "--agents", "local:1", db=db):
            wait_until(lambda: query(db, "SELECT 1 FROM runs WHERE id = ? AND notify_done = 'delivered'", (run_id,)),
                       30, "the notification to be delivered")
            time.sleep(1.5)
        assert len(failing.posts) == 3 and all(p["body"]["run"] == run_id for p in failing.posts)
        logged = events(db, run_id)
        assert [e["level"] for e in logged] == ["warning", "warning", "info"]
        assert "HTTP 500" in logged[0]["message"] and "delivered" in logged[2]["message"]
    finally:
        failing.close()


def test_redirects_are_not_followed(tmp_path: Path, receiver: Receiver) -> None:
    db = tmp_path / "state.db"
    redirecting = Receiver(redirect_to=receiver.url)
    try:
        wf = port_workflow(tmp_path / "wf.yaml", 9)
        out = fleetscan("run", "ports", "--targets", ADDR, "--workflows", str(wf), "--agents", "local:1", "--json",
                        "--notify", redirecting.url, db=db, timeout=120)
        assert out.returncode == 0, out.stderr
        run_id = json.loads(out.stdout)["run"]
        assert len(redirecting.posts) == 1 and receiver.posts == []
        assert "redirect not followed" in events(db, run_id)[0]["message"]
    finally:
        redirecting.close()


def test_the_answer_is_read_bounded_and_unreachable_receivers_fail_cleanly() -> None:
    huge = Receiver(body=b"x" * (8 * 1024 * 1024))
    try:
        started = time.monotonic()
        assert post_json(huge.url, {"run": "x"}) == (True, "HTTP 200")
        assert time.monotonic() - started < 5
    finally:
        huge.close()
    closed = socket.socket()
    closed.bind((ADDR, 0))  # bound, never listening: refused
    ok, detail = post_json(f"http://{ADDR}:{closed.getsockname()[1]}/", {"run": "x"})
    closed.close()
    assert not ok and "ConnectionRefused" in detail
    assert post_json("file:///etc/passwd", {}) == (False, "not an http(s) URL")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http://", "javascript:alert(1)", "http://127.0.0.1:99999/",
                                 "http://127.0.0.1/ a"])
@pytest.mark.parametrize("command", ["run", "submit"])
def test_bad_url_exit_2_nothing_written(tmp_path: Path, command: str, url: str) -> None:
    db = tmp_path / "state.db"
    wf = port_workflow(tmp_path / "wf.yaml", 9)
    out = fleetscan(command, "ports", "--targets", ADDR, "--workflows", str(wf), "--notify", url, db=db)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "--notify" in out.stderr
    assert not db.exists() or query(db, "SELECT id FROM runs") == []


def test_submitted_and_scheduled_runs_are_notified_by_the_serving_master(
    tmp_path: Path, receiver: Receiver, store_url: str
) -> None:
    """submit --notify and schedule add --notify: the master that serves them posts once per run; a
    schedule's second run carries its changes against the schedule's first (SQLite and PostgreSQL)."""
    db = store_url  # a fresh SQLite file or PostgreSQL database
    service = socket.socket()
    service.bind((ADDR, 0))
    service.listen(8)
    port = service.getsockname()[1]
    wf = port_workflow(tmp_path / "wf.yaml", port)
    sub = fleetscan("submit", "ports", "--targets", ADDR, "--workflows", str(wf), "--notify", receiver.url, db=db)
    assert sub.returncode == 0, sub.stderr
    submitted = sub.stdout.strip()
    added = fleetscan("schedule", "add", "ports", "--targets", ADDR, "--every", "1d", "--workflows", str(wf),
                      "--notify", receiver.url, db=db)
    assert added.returncode == 0, added.stderr
    sid = added.stdout.strip()

    def posted_for(run_id: str) -> list[dict[str, Any]]:
        return [p["body"] for p in receiver.posts if p["body"]["run"] == run_id]

    def scheduled() -> list[str]:
        return [r["id"] for r in query(db, "SELECT id FROM runs WHERE schedule_id = ? ORDER BY created", (sid,))]

    with FleetscanProcess("master", "--agents", "local:1", db=db):
        wait_until(lambda: posted_for(submitted) and scheduled() and posted_for(scheduled()[0]), 60,
                   "the submitted and the first scheduled run to be notified")
        service.close()
        with open_store(db) as store:
            store.schedules.set_paused(sid, False, time.time() - 1)  # due again now
        wait_until(lambda: len(scheduled()) == 2 and posted_for(scheduled()[1]), 60, "the second scheduled run")
        time.sleep(1.5)
    first, second = scheduled()
    assert [len(posted_for(r)) for r in (submitted, first, second)] == [1, 1, 1]
    body = posted_for(second)[0]
    assert body["previous"] == first
    assert [(c["change"], c["key"]) for c in body["changes"]] == [("removed", f"{ADDR}:{port}/tcp")]


def test_eight_processes_claiming_one_notification_make_one_attempt(store_url: str) -> None:
    """Each attempt is claimed by compare-and-set: masters racing for a due notification make it once
    (on SQLite and PostgreSQL)."""
    db = store_url
    with open_store(db) as store:
        run_id = store.runs.create("w", {"stages": [{"id": "a", "tool": "noop"}]}, "127.0.0.1",
                                   options=RunOptions(notify="http://127.0.0.1:9/"))
        store.queue.finish_run(run_id, RunState.COMPLETED)
    now = time.time()
    barrier = threading.Barrier(8)
    attempts: list[int] = []

    def claim() -> None:
        with open_store(db) as own:
            barrier.wait()
            attempts.append(own.history.notify_claim(run_id, now, 60.0))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(attempts) == [0] * 7 + [1]
    with open_store(db) as store:
        assert store.history.notify_due(now + 1) == []  # leased
        assert [r.id for r in store.history.notify_due(now + 61)] == [run_id]  # a dead claimer's lease ran out
        store.history.notify_outcome(run_id, 1, "delivered", None, "info", "delivered")
        assert store.history.notify_due(now + 61) == [] and store.history.notify_claim(run_id, now + 61, 60.0) == 0
