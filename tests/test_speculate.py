"""No target is probed more often than the stage asks: straggler copies only with ``speculate: true``.

The probes are counted at the target: a real HTTP server on loopback that answers slowly (longer
than the master's straggler threshold) and counts the requests it receives.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from console.master.scheduler import STRAGGLER_AFTER_S, Master
from console.status import RunState
from console.store import open_store

pytestmark = pytest.mark.slow


class SlowCounter(ThreadingHTTPServer):
    daemon_threads = True
    requests_seen = 0
    lock = threading.Lock()
    #: only requests for this path are counted (the machine's loopback is shared with other scanners)
    path = "/" + uuid.uuid4().hex


class _Slow(BaseHTTPRequestHandler):
    server: SlowCounter

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        with self.server.lock:
            if self.path == self.server.path:
                self.server.requests_seen += 1
        time.sleep(STRAGGLER_AFTER_S + 1.5)
        body = b"<title>slow</title>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[SlowCounter]:
    server = SlowCounter(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _probe_stage(speculate: bool | None) -> dict[str, Any]:
    stage: dict[str, Any] = {
        "id": "web", "tool": "http_probe", "with": {"timeout": 20.0},
        "targets": {"from": "input", "type": "url"}, "chunk": 1, "retries": 0, "timeout": 60.0,
    }
    if speculate is not None:
        stage["speculate"] = speculate
    return stage


@pytest.mark.parametrize(("speculate", "expected"), [(None, 1), (False, 1), (True, 2)])
async def test_a_slow_task_is_copied_only_in_a_speculating_stage(
    tmp_path: Path, slow_server: SlowCounter, speculate: bool | None, expected: int
) -> None:
    store = open_store(tmp_path / "s.db")
    port = slow_server.server_address[1]
    url = f"http://127.0.0.1:{port}{slow_server.path}"
    run_id = store.runs.create("web", {"stages": [_probe_stage(speculate)]}, url, None, "local:2", 0, None)
    state = await asyncio.wait_for(Master(store, "local:2").run_until_done(run_id), 120)
    assert state == RunState.COMPLETED
    # the server saw the URL fetched once (twice only when the stage asked for a copy)
    assert slow_server.requests_seen == expected
    copies = [e for e in store.events.recent(run_id) if e.kind == "straggler"]
    assert len(copies) == expected - 1
    assert [r["key"] for r in store.results.records(run_id)] == [url]
