"""Pause within 1 s, measured: pause written -> the run's running tool processes gone from the boxes,
resume written -> its cancelled tasks running again, and stop written -> tools gone, side by side in
the same runs.

    python -m benchmarks.bench_pause

Real `fleetscan run|pause|resume|stop` processes, two real local agents (16 slots), and the chaos
tool of tests/fixtures/chaos.py (one process per target, sleeping; it contacts nothing). Times come
from polling /proc every 2 ms; intents are timed from their own event in the store.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.fixtures.chaos import (
    ChaosWorkflow,
    FleetscanProcess,
    fleetscan,
    only_run,
    query,
    tool_processes,
    wait_until,
)

COMMAND = "python -m benchmarks.bench_pause"
TRIALS = int(os.environ.get("BENCH_PAUSE_TRIALS", "5"))
SLOTS = 16  # local:2, 8 slots each: every slot holds a task at the pause


def _row(figure: str, value: str, goal: str) -> dict[str, str]:
    return {"figure": figure, "value": value, "goal": goal, "command": COMMAND}


def _intent_ts(db: Path, run_id: str, message: str) -> float:
    rows = query(db, "SELECT max(ts) AS ts FROM events WHERE run_id = ? AND message = ?", (run_id, message))
    return float(rows[0]["ts"])


def _pause_resume_stop(tmp: Path, index: int) -> tuple[float, float, float]:
    """One run: pause while every slot is busy, resume, stop; each timed from its intent's event."""
    workflow = ChaosWorkflow(tmp / f"pause{index}", sleep=30.0, ports_stage=False)
    workflow.write()
    db = workflow.dir / "db"
    with FleetscanProcess("run", workflow.name, "--targets", "127.0.0.1-64", "--workflows", str(workflow.path),
                          "--agents", "local:2", db=db) as run:
        run_id = wait_until(lambda: only_run(db), 60, "the run")
        wait_until(lambda: len(tool_processes(workflow.marker)) == SLOTS or None, 60, "every slot busy")
        if fleetscan("pause", run_id, db=db).returncode != 0:
            raise RuntimeError("pause failed")
        wait_until(lambda: not tool_processes(workflow.marker), 30, "tools gone after pause", every=0.002)
        paused = time.time() - _intent_ts(db, run_id, "pause requested")
        # resume through the store's intent, as the console's `p` does (a `fleetscan resume` process would
        # wait for the run's end): the waiting `fleetscan run` serves it again
        from console.store import open_store

        with open_store(db) as store:
            store.runs.resume(run_id)
        wait_until(lambda: len(tool_processes(workflow.marker)) == SLOTS or None, 30, "slots busy again", every=0.002)
        resumed = time.time() - _intent_ts(db, run_id, "resume requested")
        if fleetscan("stop", run_id, db=db).returncode != 0:
            raise RuntimeError("stop failed")
        wait_until(lambda: not tool_processes(workflow.marker), 30, "tools gone after stop", every=0.002)
        stopped = time.time() - _intent_ts(db, run_id, "stop requested")
        run.wait(60)
    return paused, resumed, stopped


def run() -> list[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="bench-pause-") as name:
        trials = [_pause_resume_stop(Path(name), i) for i in range(TRIALS)]
    pause, resume, stop = (sorted(t[i] for t in trials) for i in range(3))

    def ms(values: list[float]) -> str:
        return f"p50 {statistics.median(values) * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms"

    return [
        _row(f"pause written -> the run's {SLOTS} running tools cancelled on the boxes ({TRIALS} runs)", ms(pause),
             "< 1 s"),
        _row(f"stop written -> its {SLOTS} tools killed, same runs", ms(stop), "< 1 s"),
        _row(f"resume written -> the {SLOTS} cancelled tasks running again", ms(resume), ""),
    ]


if __name__ == "__main__":
    for row in run():
        print(f"{row['figure']:<80} {row['value']:>28}   goal {row['goal']}")
