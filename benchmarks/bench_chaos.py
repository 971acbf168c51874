"""What faults and run control cost: kill -> re-dispatch, the wall time one kill adds, pause/stop latency.

    python -m benchmarks.bench_chaos

Everything goes through the real CLI (`fleetscan run|pause|stop` processes), real local
agents, and the chaos tool of tests/fixtures/chaos.py (one process per target, on
127.0.0.0/8 targets only, which it never contacts). Times come from polling /proc every
2 ms: a tool process appearing says its task reached an agent, its disappearance that it was
killed; intents are timed from their own event in the store (when the CLI wrote them).
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from tests.fixtures.chaos import (
    ChaosWorkflow,
    FleetscanProcess,
    busiest_agent,
    fleetscan,
    kill_quietly,
    only_run,
    query,
    run_state,
    seen_running,
    tool_processes,
    wait_until,
)

COMMAND = "python -m benchmarks.bench_chaos"
TRIALS = int(os.environ.get("BENCH_CHAOS_TRIALS", "5"))
KILL_TARGETS = "127.0.0.1-6"  # 6 one-target tasks over 3 agents: every agent keeps free slots


def _row(figure: str, value: str, goal: str) -> dict[str, str]:
    return {"figure": figure, "value": value, "goal": goal, "command": COMMAND}


def _run(workflow: ChaosWorkflow, targets: str, db: Path, agents: str) -> FleetscanProcess:
    return FleetscanProcess("run", workflow.name, "--targets", targets, "--workflows", str(workflow.path),
                            "--agents", agents, db=db)


def _kill_trial(tmp: Path, index: int, kill: bool) -> tuple[float, float | None]:
    """One `fleetscan run`, maybe with one agent killed mid-task: (run duration s, kill -> re-dispatch s).

    The duration is the run's own (started..ended in the store), without the CLI's start-up.
    """
    workflow = ChaosWorkflow(tmp / f"kill{index}-{int(kill)}", sleep=2.0, ports_stage=False)
    workflow.write()
    redispatch = None
    with _run(workflow, KILL_TARGETS, workflow.dir / "db", "local:3") as run:
        if kill:
            victim, tools = wait_until(lambda: busiest_agent(workflow.marker), 60, "tasks on an agent")
            time.sleep(1.0)  # mid-task: half of each 2 s task is lost work
            killed_at = time.monotonic()
            kill_quietly([victim, *(-pid for pid in tools)])
            moved = set(tools.values())
            again: set[str] = set()

            def landed() -> bool:
                again.update(t for t, agent in tool_processes(workflow.marker).values()
                             if t in moved and agent not in (victim, None))
                return again == moved

            wait_until(landed, 60, "the re-dispatch", every=0.002)
            redispatch = time.monotonic() - killed_at
        code = run.wait(120)
        if code != 0:
            raise RuntimeError(f"run failed ({code}): {run.stderr()[-500:]}")
    (times,) = query(workflow.dir / "db", "SELECT started, ended FROM runs")
    return times["ended"] - times["started"], redispatch


def _kill_rows(tmp: Path) -> list[dict[str, str]]:
    clean: list[float] = []
    killed: list[float] = []
    latencies: list[float] = []
    for index in range(TRIALS):  # interleaved pairs: the shared machine's load drifts
        clean.append(_kill_trial(tmp, index, kill=False)[0])
        duration, latency = _kill_trial(tmp, index, kill=True)
        killed.append(duration)
        if latency is not None:
            latencies.append(latency)
    latencies.sort()
    extra = statistics.median(k - c for k, c in zip(killed, clean, strict=True))
    return [
        _row(f"agent kill -9 -> its tasks start on another agent (p50 of {len(latencies)}, max)",
             f"{statistics.median(latencies) * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms", "< 2 s"),
        _row("6-task run (2 s tasks, local:3), duration fault-free vs one agent killed 1 s into its tasks "
             f"(medians of {TRIALS} pairs)",
             f"{statistics.median(clean):.2f} s vs {statistics.median(killed):.2f} s (+{extra:.2f} s)",
             "+ ~1 s (the lost work) + the re-dispatch"),
    ]


def _pause_rows(tmp: Path) -> list[dict[str, str]]:
    """`fleetscan pause` while 16 tasks run: when did the last task start after the command was launched?"""
    workflow = ChaosWorkflow(tmp / "pause", sleep=0.3, ports_stage=False)
    workflow.write()
    db = workflow.dir / "db"
    with _run(workflow, "127.0.0.1-127.0.1.144", db, "local:2") as run:
        run_id = wait_until(lambda: only_run(db), 60, "the run")
        wait_until(lambda: query(db, "SELECT count(*) AS n FROM tasks WHERE state = 'done'")[0]["n"] >= 32, 60,
                   "progress")
        seen: dict[int, float] = {}
        command = time.monotonic()
        paused = fleetscan("pause", run_id, db=db)
        command = time.monotonic() - command
        if paused.returncode != 0:
            raise RuntimeError(paused.stderr)
        watch_until = time.monotonic() + 3.0
        while time.monotonic() < watch_until:
            for pid in tool_processes(workflow.marker):
                seen.setdefault(pid, time.time())
            time.sleep(0.002)
        written = _event_ts(db, run_id, "pause")
        # `fleetscan run` waits for the run's end, not its pause: stop it so the run ends
        fleetscan("stop", run_id, db=db)
        run.wait(60)
    last = max((t - written for t in seen.values()), default=0.0)
    return [_row(f"pause written (`fleetscan pause`, itself {command * 1000:.0f} ms) -> last new task seen starting",
                 f"{max(last, 0.0) * 1000:.0f} ms" + (" (none after)" if last <= 0 else ""), "< 1 s")]


def _stop_rows(tmp: Path) -> list[dict[str, str]]:
    """`fleetscan stop` while 6 tool processes sleep 60 s: when are they gone, when is the run stopped?"""
    workflow = ChaosWorkflow(tmp / "stop", sleep=60.0, ports_stage=False)
    workflow.write()
    db = workflow.dir / "db"
    with _run(workflow, "127.0.0.1-6", db, "local:2") as run:
        run_id = wait_until(lambda: only_run(db), 60, "the run")
        wait_until(lambda: len(tool_processes(workflow.marker)) == 6, 60, "six tool processes")
        launched = time.monotonic()
        stopped = fleetscan("stop", run_id, db=db)
        command = time.monotonic() - launched
        if stopped.returncode != 0:
            raise RuntimeError(stopped.stderr)
        wait_until(lambda: not tool_processes(workflow.marker), 30, "tools gone", every=0.002)
        tools_gone = time.time()
        wait_until(lambda: run_state(db, run_id) == "stopped", 30, "stopped", every=0.002)
        state_stopped = time.time()
        run.wait(60)
        exited = time.time()
        written = _event_ts(db, run_id, "stop")
    return [
        _row(f"stop written (`fleetscan stop`, itself {command * 1000:.0f} ms) -> tool processes killed on the boxes",
             f"{(tools_gone - written) * 1000:.0f} ms", "< 1 s"),
        _row("stop written -> run state stopped / `fleetscan run` exited",
             f"{(state_stopped - written) * 1000:.0f} ms / {(exited - written) * 1000:.0f} ms", "< 1 s"),
    ]


def _event_ts(db: Path, run_id: str, kind: str) -> float:
    """When the intent was written (the CLI's own event, in the store's wall-clock time)."""
    rows = query(db, "SELECT min(ts) AS ts FROM events WHERE run_id = ? AND kind = ?", (run_id, kind))
    return float(rows[0]["ts"])


def _silent_rows(tmp: Path) -> list[dict[str, str]]:
    """SIGSTOP one agent while every agent is busy (no straggler copies): only the heartbeat can move its tasks."""
    workflow = ChaosWorkflow(tmp / "silent", sleep=20.0, ports_stage=False)
    workflow.write()
    db = workflow.dir / "db"
    with _run(workflow, KILL_TARGETS, db, "local:3") as run:
        victim, tools = wait_until(lambda: busiest_agent(workflow.marker, 2), 60, "tasks on an agent")
        stopped_at = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        try:
            wait_until(seen_running(workflow.marker, set(tools.values()), lambda _, agent: agent not in (victim, None)),
                       60, "the re-dispatch", every=0.002)
            moved = time.monotonic() - stopped_at
        finally:
            kill_quietly([victim], signal.SIGCONT)
        fleetscan("stop", wait_until(lambda: only_run(db), 10, "the run"), db=db)
        run.wait(60)
    return [_row("agent SIGSTOPped (silent, all agents busy) -> its tasks start on another agent",
                 f"{moved * 1000:.0f} ms", "~ heartbeat: 3 s of silence + 1 s ping period")]


def _sshd_rows(tmp: Path) -> list[dict[str, str]]:
    """A box's sshd and everything it forked SIGKILLed: when do its tasks start on the other box?"""
    from tests.fixtures.sshd import sshd_missing_reason, start_fleet

    figure = "box's sshd killed (2 SSH boxes, 4 slots each) -> its tasks start on the other box"
    reason = sshd_missing_reason()
    if reason:
        return [_row(figure, f"skipped: {reason}", "< 2 s")]
    fleet = start_fleet()  # its own root, removed on close
    try:
        inventory = tmp / "agents.yaml"
        inventory.write_text(yaml.safe_dump({"agents": fleet.inventory_entries(slots=4)}, sort_keys=False))
        workflow = ChaosWorkflow(tmp / "sshd-run", sleep=3.0, ports_stage=False)
        workflow.write()
        box1, box2 = fleet.box("box1"), fleet.box("box2")
        env = {"FLEETSCAN_KNOWN_HOSTS": str(fleet.known_hosts)}
        with FleetscanProcess("run", workflow.name, "--targets", "127.0.0.1-4", "--workflows", str(workflow.path),
                              "--agents", str(inventory), db=workflow.dir / "db", env=env) as run:
            def on_box1() -> set[str] | None:
                below = set(box1.descendants())
                found = {t for pid, (t, _) in tool_processes(workflow.marker).items() if pid in below}
                return found if len(found) == 2 else None

            lost = wait_until(on_box1, 60, "two tasks on box1")
            killed_at = time.monotonic()
            box1.kill()
            wait_until(seen_running(workflow.marker, lost, lambda pid, _: pid in set(box2.descendants())), 60,
                       "the re-dispatch", every=0.002)
            moved = time.monotonic() - killed_at
            run.wait(120)
    finally:
        fleet.close()
    return [_row(figure, f"{moved * 1000:.0f} ms", "< 2 s")]


def run() -> list[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as name:
        tmp = Path(name)
        return _kill_rows(tmp) + _silent_rows(tmp) + _sshd_rows(tmp) + _pause_rows(tmp) + _stop_rows(tmp)


if __name__ == "__main__":
    for row in run():
        print(f"{row['figure']:<100} {row['value']:>28}   goal {row['goal']}")
