"""Export of 1 million results (goal <= 10 s), through the real CLI into /dev/null, per format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from console.store import open_store
from console.store.writes import IngestBatch

N = 1_000_000
BATCH = 20_000


def fill(db: Path, n: int = N) -> str:
    store = open_store(db)
    definition = {"stages": [{"id": "ports", "tool": "tcp_connect", "params": {}, "targets": {"from": "input"}}]}
    run_id = store.runs.create("bench", definition, "127.0.0.0/8")
    ts = "2026-11-25T00:00:00Z"
    for start in range(0, n, BATCH):
        rows = []
        for i in range(start, min(n, start + BATCH)):
            host = f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            port = 1 + (i % 1024)
            data = json.dumps({"host": host, "port": port, "proto": "tcp"})
            rows.append((run_id, "ports", "port_open", f"{host}:{port}/tcp", host, "local", 1, ts, data))
        store.queue.apply_batch(IngestBatch(records=rows))
    store.close()
    return run_id


def run() -> list[dict[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        started = time.perf_counter()
        run_id = fill(db)
        fill_s = time.perf_counter() - started
        rows.append({"figure": "store 1M results (queue.apply_batch, 20k per batch)", "value": f"{N / fill_s:,.0f} results/s",
                     "goal": ">= 50,000 results/s", "command": "python -m benchmarks.bench_export"})
        env = {**os.environ, "FLEETSCAN_DB": str(db)}
        for fmt in ("jsonl", "csv", "json"):
            started = time.perf_counter()
            with open(os.devnull, "w") as sink:
                subprocess.run([sys.executable, "-m", "console.cli", "results", run_id, "--format", fmt],
                               stdout=sink, env=env, check=True)
            took = time.perf_counter() - started
            rows.append({"figure": f"export 1M results ({fmt})", "value": f"{took:.1f} s", "goal": "<= 10 s",
                         "command": f"fleetscan results RUN --format {fmt} > /dev/null"})
    return rows


if __name__ == "__main__":
    from benchmarks.run import table

    print(table(run()))
