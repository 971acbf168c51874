"""Blocking store work runs off the loop on threads that never keep the process alive, and a store
call stuck in a reconnect gives up when its store is interrupted."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from console.offloop import DaemonExecutor
from console.store import open_store
from tests.fixtures.daemons import free_port

STUCK_AT_EXIT = """
import threading, time
from console.offloop import DaemonExecutor
started = threading.Event()
ex = DaemonExecutor("stuck")
ex.submit(lambda: (started.set(), time.sleep(600)))
started.wait(10)
ex.shutdown(wait=False)
print("leaving", flush=True)
"""


def test_a_call_stuck_on_its_thread_does_not_keep_the_process_alive() -> None:
    done = subprocess.run([sys.executable, "-c", STUCK_AT_EXIT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "leaving\n", done.stderr


def test_calls_run_in_order_and_errors_reach_the_caller() -> None:
    ex = DaemonExecutor("order")
    seen: list[int] = []
    futures = [ex.submit(seen.append, n) for n in range(50)]
    failing = ex.submit(lambda: 1 / 0)
    for f in futures:
        f.result(10)
    with pytest.raises(ZeroDivisionError):
        failing.result(10)
    assert seen == list(range(50))
    ex.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        ex.submit(seen.append, 99)


def test_a_queued_close_runs_after_the_call_in_flight() -> None:
    ex = DaemonExecutor("close")
    gate, order = threading.Event(), []
    ex.submit(lambda: (gate.wait(10), order.append("read")))
    closed = ex.submit(order.append, "close")
    ex.shutdown(wait=False)
    gate.set()
    closed.result(10)
    assert order == ["read", "close"]


@pytest.mark.slow
def test_a_reconnect_to_a_gone_server_gives_up_when_interrupted(pg_url: str) -> None:
    store: Any = open_store(pg_url)
    db = store.db
    # the server "moves" to a loopback port nobody listens on: every connect is refused, and the
    # reconnect would back off for a minute
    db.url = pg_url.replace(pg_url.split("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{free_port('127.0.0.1')}")
    db.raw.close()
    outcome: list[bool] = []
    worker = threading.Thread(target=lambda: outcome.append(db.reconnect()), daemon=True)
    worker.start()
    worker.join(1.0)
    assert worker.is_alive()  # still backing off
    store.interrupt()
    worker.join(10)
    assert not worker.is_alive() and outcome == [False]
