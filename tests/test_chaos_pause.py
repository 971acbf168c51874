"""Pause within 1 s, measured at the target: after `fleetscan pause` no connection of the run
reaches the scanned address more than 1 s later; resume ends with exactly the records of a run
never paused, every task done once with its one attempt.

The targets are real listeners on loopback addresses of our own (127.0.0.160-183); the probes
are real tcp_connect tasks on real local agents, paced so that tasks are in flight at the pause.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.chaos import FleetscanProcess, fleetscan, query, run_state, wait_until, write_workflow

pytestmark = pytest.mark.slow

#: one task per address (chunk 1), its PORTS probed at RATE per second: each task lasts ~2.5 s
ADDRS = [f"127.0.0.{n}" for n in range(160, 184)]
PORTS, RATE = 5, 2


class Target:
    """Listeners on PORTS consecutive ports of every address; each accepted connection logged with its time."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []
        self.accepts: list[tuple[float, str]] = []
        self.selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        first = self._free_run()
        for addr in ADDRS:
            for port in range(first, first + PORTS):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, port))
                s.listen(64)
                s.setblocking(False)
                self.selector.register(s, selectors.EVENT_READ, f"{addr}:{port}")
                self.socks.append(s)
        self.ports = range(first, first + PORTS)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _free_run() -> int:
        """A first port such that PORTS ports from it are free on every address."""
        for first in range(20000, 60000, PORTS):
            probes = []
            try:
                for addr in ADDRS:
                    for port in range(first, first + PORTS):
                        s = socket.socket()
                        probes.append(s)
                        s.bind((addr, port))
                return first
            except OSError:
                continue
            finally:
                for s in probes:
                    s.close()
        raise RuntimeError("no free port run")

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(0.05):
                try:
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                self.accepts.append((time.time(), str(key.data)))
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target()
    try:
        yield t
    finally:
        t.close()


def test_no_probe_reaches_the_target_1s_after_pause_and_resume_ends_exact(tmp_path: Path, target: Target) -> None:
    db = tmp_path / "pause.db"
    ports = f"{target.ports[0]}-{target.ports[-1]}"
    wf = write_workflow(tmp_path / "wf.yaml", "slowscan", [{
        "id": "ports", "tool": "tcp_connect", "with": {"ports": ports, "timeout": 1.0, "rate": RATE},
        "targets": {"from": "input", "type": "host"}, "chunk": 1,
    }])
    with FleetscanProcess("--workflows", str(wf), "--agents", "local:2", "run", "slowscan", "--targets",
                          f"{ADDRS[0]}-{ADDRS[-1].rsplit('.', 1)[1]}",
                          "--json", db=db) as run:
        wait_until(lambda: len(target.accepts) >= 10 or None, 60, "probes at the target")
        run_id = str(query(db, "SELECT id FROM runs")[0]["id"])
        paused = fleetscan("pause", run_id[:6], db=db)
        assert paused.returncode == 0, paused.stderr
        (pause_event,) = query(db, "SELECT ts FROM events WHERE run_id = ? AND kind = 'pause' AND message = "
                                   "'pause requested'", (run_id,))
        requested = float(pause_event["ts"])
        # hold the pause long enough that any task left running would have probed again
        time.sleep(3.0)
        late = [(round(ts - requested, 3), where) for ts, where in target.accepts if ts > requested + 1.0]
        assert not late, f"probes arrived more than 1 s after the pause: {late[:10]}"
        leased = query(db, "SELECT count(*) AS n FROM tasks WHERE run_id = ? AND state = 'leased'", (run_id,))
        assert leased[0]["n"] == 0, "a paused run holds no task on a box"
        status = json.loads(fleetscan("status", run_id, "--json", db=db).stdout)
        assert status["state"] == "paused" and {s["state"] for s in status["stages"]} == {"paused"}
        frozen = status["duration_s"]
        time.sleep(1.0)
        assert json.loads(fleetscan("status", run_id, "--json", db=db).stdout)["duration_s"] == frozen
        done_at_pause = query(db, "SELECT count(*) AS n FROM tasks WHERE run_id = ? AND state = 'done'", (run_id,))
        assert done_at_pause[0]["n"] < len(ADDRS)

        resumed = fleetscan("resume", run_id, "--json", db=db, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert run.wait(120) == 0, run.stderr()
        summary = json.loads(run.stdout())
    assert summary["state"] == "completed"
    keys = [r["key"] for r in query(db, "SELECT key FROM results WHERE run_id = ?", (run_id,))]
    expected = [f"{addr}:{port}/tcp" for addr in ADDRS for port in target.ports]
    assert sorted(keys) == sorted(expected), "records lost or doubled"
    rows = query(db, "SELECT state, attempts FROM tasks WHERE run_id = ?", (run_id,))
    assert len(rows) == len(ADDRS)
    assert all(r["state"] == "done" and r["attempts"] == 1 for r in rows), rows
    assert run_state(db, run_id) == "completed"
    assert {where for _, where in target.accepts} == {f"{a}:{p}" for a in ADDRS for p in target.ports}
