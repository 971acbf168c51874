"""Peak RSS of the master while a fake box floods it: 200,000 distinct records of 4 KB.

The master (a child process per row: ``python -m benchmarks.bench_flood --child LIMIT``) runs one
exec stage on four targets against a fake box (tests/fixtures/fakebox.py) that answers its one
task with the whole flood as fast as the pipe takes it. Side by side in one run: the read gate
at its default bound, and the gate switched off (what the master did before backpressure).
Figures: peak RSS of the master (ru_maxrss), records stored, seconds.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = "python -m benchmarks.bench_flood"
RECORDS = 200_000
SIZE = 4000
GOAL_MB = 250


def _child(limit: int) -> None:
    from console.fleet import gate
    from console.fleet.fleet import AgentHandle
    from console.fleet.links import LocalLink
    from console.master import scheduler
    from console.master.scheduler import Master
    from console.store import open_store
    from console.workflow.submit import prepare_run
    from tests.fixtures.chaos import write_workflow
    from tests.fixtures.fakebox import write_fakebox

    gate.LIMIT_BYTES = limit
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        root = Path(tmp)
        box = write_fakebox(root / "box", {"flood": [RECORDS, SIZE]})
        scheduler.handles_for = lambda source: [  # type: ignore[assignment]
            AgentHandle(name="flood", kind="local", slots=1, factory=lambda: LocalLink("flood", 1, python=str(box)))
        ]
        workflow = write_workflow(root / "wf.yaml", "flood", [{
            "id": "scan", "tool": "exec", "retries": 0, "chunk": 4, "timeout": 3600,
            "with": {"argv": ["true"], "parser": "jsonl"}, "targets": {"from": "input", "type": "host"},
        }])
        store = open_store(root / "flood.db")
        run_id = prepare_run(workflows_file=workflow, workflow="flood", targets="127.0.0.1-4", agents="local").create(store)
        started = time.perf_counter()
        state = asyncio.run(Master(store, "local").run_until_done(run_id))
        seconds = time.perf_counter() - started
        stored = store.results.count(run_id)
        store.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"state": str(state), "stored": stored, "seconds": seconds, "peak_mb": peak_mb}))


def _measure(limit: int) -> dict[str, float | str]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_flood", "--child", str(limit)],
                          capture_output=True, text=True, timeout=3600, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run() -> list[dict[str, str]]:
    from console.fleet.gate import LIMIT_BYTES

    rows = []
    results = {}
    for name, limit in (("read gate on (32 MB bound)", LIMIT_BYTES), ("read gate off", 1 << 62)):
        result = results[name] = _measure(limit)
        rows.append({
            "figure": f"master peak RSS, flood of {RECORDS:,} x 4 KB records, {name}",
            "value": f"{result['peak_mb']:.0f} MB ({result['stored']:,} stored in {result['seconds']:.1f} s, {result['state']})",
            "goal": f"<= {GOAL_MB} MB" if "on" in name else "(before backpressure)",
            "command": COMMAND,
        })
    on, off = results["read gate on (32 MB bound)"], results["read gate off"]
    rows.append({"figure": "peak RSS ratio, gate off / gate on", "value": f"{float(off['peak_mb']) / float(on['peak_mb']):.2f}x",
                 "goal": "", "command": COMMAND})
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]))
    else:
        from benchmarks.run import table

        print(table(run()))
