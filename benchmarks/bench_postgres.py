"""Several masters on one PostgreSQL store, side by side with one master on SQLite.

    python -m benchmarks.bench_postgres

A throwaway PostgreSQL server (tests/fixtures/postgres.py: initdb + pg_ctl on 127.0.0.1, a
scratch directory, ``fsync=off`` because the data is thrown away) and real headless masters
(``Master.serve`` in subprocesses, each with its own local agents). Tasks are ``noop`` and only
loopback addresses ever appear as targets. Figures:

* no-op tasks/s with 1, 2 and 4 masters on PostgreSQL against one master on SQLite;
* submit (another process) -> first dispatch, woken by NOTIFY;
* record ingest into PostgreSQL (``apply_batch``: COPY into staging, INSERT … ON CONFLICT DO NOTHING);
* a killed master's leased tasks running on another (heartbeat path: the victim is made to look
  like a master on another host, so its pid cannot be checked).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentkit.archive import build_archive
from console.master.scheduler import Master
from console.store import open_store
from console.store.writes import IngestBatch
from tests.fixtures.postgres import PostgresServer, postgres_missing_reason, start_server, stop_server

COMMAND = "python -m benchmarks.bench_postgres"
NOOP_TASKS = int(os.environ.get("BENCH_PG_TASKS", "6000"))
AGENTS_PER_MASTER = "local:2"
HEADLESS = (
    "import asyncio, sys; from console.store import open_store; from console.master.scheduler import Master; "
    "asyncio.run(Master(open_store(sys.argv[1]), sys.argv[2], master_id=sys.argv[3]).serve())"
)


def _row(figure: str, value: str, goal: str) -> dict[str, str]:
    return {"figure": figure, "value": value, "goal": goal, "command": COMMAND}


def _stage(tool: str = "noop", params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "a", "tool": tool, "params": params or {}, "targets": {"from": "input", "type": "host"},
        "chunk": 1, "retries": 0, "timeout": 60.0, "stream": False,
    }


def _targets(count: int) -> str:
    return f"127.0.0.1-127.{(count >> 16) & 255}.{(count >> 8) & 255}.{count & 255}" if count > 1 else "127.0.0.1"


def _start_masters(url: str, n: int, prefix: str) -> list[subprocess.Popen[bytes]]:
    procs = [
        subprocess.Popen([sys.executable, "-c", HEADLESS, url, AGENTS_PER_MASTER, f"{prefix}-{i}"],
                         stderr=subprocess.DEVNULL)
        for i in range(n)
    ]
    store = open_store(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = [m for m in store.queue.masters() if m.id.startswith(prefix) and m.agents >= 2]
        if len(ready) == n:
            break
        time.sleep(0.1)
    store.close()
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _throughput(url: str, masters: int, tasks: int) -> float:
    """Tasks/s of one no-op run served by ``masters`` headless masters already up."""
    procs = _start_masters(url, masters, f"tp{masters}")
    try:
        store = open_store(url)
        started = time.perf_counter()
        run_id = store.runs.create("bench", {"stages": [_stage()]}, _targets(tasks), None, AGENTS_PER_MASTER, 0, None)
        while store.runs.get(run_id).state not in ("completed", "failed", "stopped"):
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        assert store.results.count(run_id) == 0 and store.runs.summary(run_id)["stages"][0]["tasks_done"] == tasks
        store.close()
        return tasks / elapsed
    finally:
        _stop(procs)


async def _notify_latency(url: str, rounds: int = 15) -> list[float]:
    store = open_store(url)
    master = Master(store, "local")
    serve = asyncio.create_task(master.serve())
    code = (
        "import sys, time; from console.store import open_store; s = open_store(sys.argv[1]); "
        "r = s.runs.create('b', dict(stages=[dict(id='a', tool='noop', params=dict(), targets=dict(type='host'),"
        " chunk=1)]), '127.0.0.1', None, 'local', 0, None); print(r, time.time())"
    )
    latencies: list[float] = []
    try:
        while not any(a.state == "up" for a in store.agents.all()):
            await asyncio.sleep(0.05)
        for _ in range(rounds):
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", code, url], capture_output=True, text=True, check=True
            )
            run_id, submitted = out.stdout.split()
            while run_id not in master.first_dispatch:
                await asyncio.sleep(0.002)
            latencies.append(master.first_dispatch[run_id] - float(submitted))
            await asyncio.sleep(0.3)
    finally:
        master.shutdown()
        await serve
    return latencies


def _ingest(where: str, total: int = 200_000, batch: int = 2000) -> float:
    store = open_store(where)
    run_id = store.runs.create("bench", {"stages": [_stage()]}, "127.0.0.1", None, "local", 0, None)
    batches = [
        IngestBatch(records=[
            (run_id, "a", "port_open", f"127.{i >> 16}.{(i >> 8) & 255}.{i & 255}:80/tcp", "127.0.0.1", "local", 1,
             "2026-01-01T00:00:00.000Z",
             json.dumps({"host": f"127.{i >> 16}.{(i >> 8) & 255}.{i & 255}", "port": 80, "proto": "tcp"}))
            for i in range(offset, offset + batch)
        ], master="bench")
        for offset in range(0, total, batch)
    ]
    started = time.perf_counter()
    for prepared in batches:
        store.queue.apply_batch(prepared)
    elapsed = time.perf_counter() - started
    assert store.results.count(run_id) == total
    store.close()
    return total / elapsed


def _failover(url: str) -> float:
    """Seconds from SIGKILL of a master holding leases to all of them leased again by the other."""
    script = "import time; time.sleep(30); print('')"
    params = {"argv": [sys.executable, "-c", script], "parser": "jsonl"}
    victim = _start_masters(url, 1, "victim")
    store = open_store(url)
    try:
        store.db.conn.execute("UPDATE masters SET host = 'another-host' WHERE id = 'victim-0'")
        run_id = store.runs.create("bench", {"stages": [_stage("exec", params)]}, _targets(8), None, "local", 0, None)
        while len(store.db.query("SELECT id FROM tasks WHERE lease_owner = 'victim-0'")) < 8:
            time.sleep(0.05)
        survivor = _start_masters(url, 1, "survivor")
        held = [r["id"] for r in store.db.query("SELECT id FROM tasks WHERE lease_owner = 'victim-0'")]
        victim[0].send_signal(signal.SIGKILL)
        victim[0].wait(10)
        killed = time.perf_counter()
        while True:
            moved = store.db.query(
                "SELECT count(*) AS n FROM tasks WHERE lease_owner = 'survivor-0' AND attempts >= 1"
                f" AND id IN ({','.join('?' * len(held))})", held,
            )[0]["n"]
            if moved == len(held):
                break
            if time.perf_counter() - killed > 60:
                raise RuntimeError("the survivor never took the tasks over")
            time.sleep(0.05)
        elapsed = time.perf_counter() - killed
        store.runs.stop(run_id)
        return elapsed
    finally:
        store.close()
        _stop(victim)
        _stop(locals().get("survivor", []))


def run() -> list[dict[str, str]]:
    reason = postgres_missing_reason()
    if reason:
        return [_row("PostgreSQL benchmarks", f"skipped: {reason}", "")]
    build_archive()
    server: PostgresServer = start_server()
    tmp = Path(tempfile.mkdtemp(prefix="fleetscan-bench-pg-"))
    rows: list[dict[str, str]] = []
    try:
        sqlite_rate = _throughput(str(tmp / "tp.db"), 1, NOOP_TASKS)
        rates = {n: _throughput(server.create_database(f"tp{n}"), n, NOOP_TASKS) for n in (1, 2, 4)}
        rows.append(_row(f"no-op tasks/s, 1 master on SQLite ({NOOP_TASKS:,} tasks, {AGENTS_PER_MASTER} per master)",
                         f"{sqlite_rate:,.0f}/s", "reference"))
        for n, rate in rates.items():
            rows.append(_row(f"no-op tasks/s, {n} master(s) on PostgreSQL", f"{rate:,.0f}/s ({rate / rates[1]:.2f}x one)",
                             ">= 1.7x one master with 2" if n == 2 else ""))
        latencies = asyncio.run(_notify_latency(server.create_database("notify")))
        rows.append(_row(f"submit (another process) -> first dispatch on PostgreSQL, p50 of {len(latencies)}",
                         f"{statistics.median(latencies) * 1000:.0f} ms (max {max(latencies) * 1000:.0f})",
                         "<= 100 ms"))
        pg_ingest = _ingest(server.create_database("ingest"))
        sqlite_ingest = _ingest(str(tmp / "ingest.db"))
        rows.append(_row("record ingest (200,000 records, batches of 2,000), PostgreSQL vs SQLite",
                         f"{pg_ingest:,.0f}/s vs {sqlite_ingest:,.0f}/s", ">= 100,000/s on PostgreSQL"))
        rows.append(_row("a killed master's leased tasks running on another (heartbeat, other host)",
                         f"{_failover(server.create_database('failover')):.1f} s", "<= 12 s"))
    finally:
        stop_server(server)
    return rows


if __name__ == "__main__":
    from benchmarks.run import table

    print(table(run()))
