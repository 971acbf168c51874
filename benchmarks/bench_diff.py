"""`fleetscan diff` on big runs: two runs of 1M records each (FLEETSCAN_BENCH_DIFF_N), merged by key.

Side by side in one run: the diff, the key-ordered read it is built on (both runs, no comparing), and
exporting both runs as jsonl (what a diff by hand would start from). The records are strings in a
throwaway SQLite file: no traffic. A third of them are host_up with a different rtt_ms in each run (a
measured value: decoded and compared, never reported); 1% of the rest changed, added or removed.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path

from console.history.diff import diff_runs
from console.status import RunState
from console.store import open_store
from console.store.base import Store
from console.store.export import export_results
from console.store.writes import IngestBatch

COMMAND = "python -m benchmarks.bench_diff"
N = int(os.environ.get("FLEETSCAN_BENCH_DIFF_N", "1000000"))
BATCH = 50_000


def _host(i: int) -> str:
    return f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def _records(run_id: str, n: int, second: bool) -> list[tuple[str, str, str, str, str, str, int, str, str]]:
    out = []
    for i in range(n):
        if i % 3 == 0:
            host = _host(i)
            data = {"host": host, "via": "tcp/22", "rtt_ms": round((i % 97) * (1.7 if second else 1.1), 3)}
            out.append((run_id, "alive", "host_up", host, host, "box1", 1, "2026-12-03T00:00:00Z", json.dumps(data)))
            continue
        host, port = _host(i // 3), 1 + i % 1000
        if second and i % 100 == 1:
            port += 20_000  # closed one port, opened another: one removed, one added
        data = {"host": host, "port": port, "proto": "tcp"}
        if second and i % 100 == 2:
            data["name"] = "ssh"  # data-only change
        out.append((run_id, "ports", "port_open", f"{host}:{port}/tcp", host, "box1", 1, "2026-12-03T00:00:00Z",
                    json.dumps(data)))
    return out


def _make_run(store: Store, n: int, second: bool) -> str:
    run_id = store.runs.create("bench", {"stages": [{"id": "alive", "tool": "noop"}, {"id": "ports", "tool": "noop"}]},
                               "127.0.0.0/8")
    rows = _records(run_id, n, second)
    for start in range(0, n, BATCH):
        store.queue.apply_batch(IngestBatch(records=rows[start:start + BATCH]))
    store.queue.finish_run(run_id, RunState.COMPLETED)
    return run_id


def _timed(work: object) -> tuple[float, object]:
    started = time.perf_counter()
    value = work()  # type: ignore[operator]
    return time.perf_counter() - started, value


def run() -> list[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-diff-") as tmp:
        store = open_store(Path(tmp) / "bench.db")
        try:
            old, new = _make_run(store, N, False), _make_run(store, N, True)
            t_diff, changes = _timed(lambda: sum(1 for _ in diff_runs(store, old, new)))
            t_read, _ = _timed(lambda: sum(len(p) for r in (old, new) for p in store.history.keyed_pages(r)))
            sink = io.StringIO()

            def export_both() -> None:
                for r in (old, new):
                    export_results(store, r, "jsonl", sink)
                    sink.seek(0)
                    sink.truncate()

            t_export, _ = _timed(export_both)
        finally:
            store.close()
    label = f"{N:,} vs {N:,} records"
    return [
        {"figure": f"diff: {label} ({changes:,} changes)", "value": f"{t_diff:.2f} s", "goal": "<= 10 s",
         "command": COMMAND},
        {"figure": "diff: key-ordered read of both runs alone", "value": f"{t_read:.2f} s ({t_diff / t_read:.1f}x)",
         "goal": "the floor", "command": COMMAND},
        {"figure": "diff: jsonl export of both runs (by hand)", "value": f"{t_export:.2f} s ({t_diff / t_export:.1f}x)",
         "goal": "diff not slower", "command": COMMAND},
    ]


if __name__ == "__main__":
    from benchmarks.run import table

    print(table(run()))
