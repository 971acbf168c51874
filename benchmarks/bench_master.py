"""The embedded master's figures: throughput, per-task overhead, pickup latency, ingest, failover.

    python -m benchmarks.bench_master

Everything runs against real local agent subprocesses (the real archive, the
real stage-0 bootstrap) and a throwaway SQLite file; tasks are ``noop`` (or
``exec`` of the running Python) and only 127.0.0.1 ever appears as a target.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
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

COMMAND = "python -m benchmarks.bench_master"
NOOP_TASKS = int(os.environ.get("BENCH_MASTER_TASKS", "20000"))


def _stage(sid: str, tool: str = "noop", params: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": sid, "tool": tool, "params": params or {}, "targets": {"from": "input", "type": "host"},
        "chunk": extra.get("chunk", 1), "retries": extra.get("retries", 0), "timeout": 60.0, "stream": False,
    }


def _targets(count: int) -> str:
    """``count`` loopback addresses (127.0.0.0/8 only)."""
    last = count  # 127.0.0.1 .. 127.x.y.z: count addresses
    return f"127.0.0.1-127.{(last >> 16) & 255}.{(last >> 8) & 255}.{last & 255}" if count > 1 else "127.0.0.1"


def _row(figure: str, value: str, goal: str) -> dict[str, str]:
    return {"figure": figure, "value": value, "goal": goal, "command": COMMAND}


async def _throughput(tmp: Path) -> list[dict[str, str]]:
    store = open_store(tmp / "throughput.db")
    run_id = store.runs.create("bench", {"stages": [_stage("a")]}, _targets(NOOP_TASKS), None, "local:4", 0, None)
    build_archive()
    master = Master(store, "local:4")
    cpu = time.process_time()
    children = _children_cpu()
    await master.run_until_done(run_id)
    cpu = time.process_time() - cpu
    children = _children_cpu() - children
    run = store.runs.get(run_id)
    done = store.runs.summary(run_id)["stages"][0]["tasks_done"]
    assert run.ended is not None and run.started is not None
    rate = done / (run.ended - run.started)
    return [
        _row(f"no-op tasks/s through the master, 4 local agents ({done} tasks)", f"{rate:,.0f}", ">= 5,000"),
        _row("master CPU per task (process time incl. store thread)", f"{cpu / done * 1e6:,.0f} us", "small"),
        _row("agent CPU per task (the 4 agent processes, incl. their start-up)",
             f"{children / done * 1e6:,.0f} us", "(context: 2 cores bound tasks/s)"),
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _pickup_latency(tmp: Path, rounds: int = 5) -> list[dict[str, str]]:
    db = tmp / "latency.db"
    store = open_store(db)
    master = Master(store, "local")
    serve = asyncio.create_task(master.serve())
    code = (
        "import sys, time; from console.store import open_store; s = open_store(sys.argv[1]); "
        "r = s.runs.create('b', dict(stages=[dict(id='a', tool='noop', params=dict(), targets=dict(type='host'),"
        " chunk=1)]), '127.0.0.1', None, 'local', 0, None); print(r, time.time())"
    )
    latencies = []
    try:
        while not any(a.state == "up" for a in store.agents.all()):
            await asyncio.sleep(0.05)
        for _ in range(rounds):
            out = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True
            )
            run_id, submitted = out.stdout.split()
            while run_id not in master.first_dispatch:
                await asyncio.sleep(0.002)
            latencies.append(master.first_dispatch[run_id] - float(submitted))
            await asyncio.sleep(0.2)
    finally:
        master.shutdown()
        await serve
    return [_row(
        "submit (another process) -> first dispatch, median of 5",
        f"{statistics.median(latencies) * 1000:.0f} ms (max {max(latencies) * 1000:.0f})", "<= 200 ms",
    )]


def _ingest(tmp: Path, total: int = 200_000, batch: int = 2000) -> list[dict[str, str]]:
    """``store.queue.apply_batch`` alone (what the master calls), batches prepared beforehand."""
    store = open_store(tmp / "ingest.db")
    run_id = store.runs.create("bench", {"stages": [_stage("a")]}, "127.0.0.1", None, "local", 0, None)
    batches = [
        IngestBatch(records=[
            (run_id, "a", "port_open", f"127.{i >> 16}.{(i >> 8) & 255}.{i & 255}:80/tcp", "127.0.0.1",
                      "local", 1, "2026-01-01T00:00:00.000Z",
                      json.dumps({"host": f"127.{i >> 16}.{(i >> 8) & 255}.{i & 255}", "port": 80, "proto": "tcp"}))
            for i in range(offset, offset + batch)
        ])
        for offset in range(0, total, batch)
    ]
    started = time.perf_counter()
    for prepared in batches:
        store.queue.apply_batch(prepared)
    elapsed = time.perf_counter() - started
    assert store.results.count(run_id) == total
    return [_row(f"result ingest into the store ({total:,} records, batches of {batch})",
                 f"{total / elapsed:,.0f} records/s", ">= 50,000/s")]


async def _run_with_kill(tmp: Path, name: str, kill: bool) -> tuple[float, float | None]:
    """40 tasks of 0.25 s on 2 agents; optionally SIGKILL one agent mid-run. (wall, kill -> re-dispatch)"""
    store = open_store(tmp / f"{name}.db")
    script = "import time; time.sleep(0.25); print('')"
    params = {"argv": [sys.executable, "-c", script], "parser": "jsonl"}
    run_id = store.runs.create("bench", {"stages": [_stage("a", "exec", params, retries=1)]}, _targets(40), None,
                              "local:2", 0, None)
    master = Master(store, "local:2")
    serve = asyncio.create_task(master.serve(run_ids=[run_id], stop_when_idle=True))
    redispatch: float | None = None
    while not master.first_dispatch:
        await asyncio.sleep(0.005)
    started = time.monotonic()
    if kill:
        await asyncio.sleep(1.0)
        victim = next(iter(master.flight.execs.values()))
        task_id, agent = victim.task.task_id, victim.agent
        killed_at = time.monotonic()
        os.kill(agent.link.pid, signal.SIGKILL)  # type: ignore[union-attr]
        while redispatch is None:
            for ex in list(master.flight.execs.values()):
                if ex.task.task_id == task_id and ex.agent is not agent:
                    redispatch = time.monotonic() - killed_at
            await asyncio.sleep(0.002)
    await serve
    return time.monotonic() - started, redispatch


async def _failover(tmp: Path) -> list[dict[str, str]]:
    clean, _ = await _run_with_kill(tmp, "clean", kill=False)
    chaos, redispatch = await _run_with_kill(tmp, "chaos", kill=True)
    return [
        _row("agent kill -9 -> task re-dispatched to another agent", f"{(redispatch or 0) * 1000:.0f} ms", "<= 2 s"),
        _row("extra wall time one agent kill costs a 40 x 0.25 s run on 2 agents",
             f"{chaos - clean:+.2f} s (clean {clean:.2f} s)", "small"),
    ]


def run() -> list[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="bench-master-") as name:
        tmp = Path(name)
        rows = asyncio.run(_throughput(tmp))
        rows += asyncio.run(_pickup_latency(tmp))
        rows += _ingest(tmp)
        rows += asyncio.run(_failover(tmp))
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['figure']:<75} {row['value']:>24}   goal {row['goal']}")
