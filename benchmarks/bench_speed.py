"""Fleet speed and politeness, side by side in one run: fixed cost, nmap ratios, agents 1..8, budgets.

    python -m benchmarks.bench_speed

- a one-target no-op ``fleetscan run``: wall and CPU (the process and its agent), median, with the
  floor under it (Python, asyncio and pydantic imported alone) timed between its runs;
- the agent's full-range scan of 127.0.0.1 against ``nmap -sT -p- -T4`` with both pinned to one
  core (the agent subprocess and nmap get the same CPU), alternating, medians, same open set;
- a whole ``fleetscan run --agents local:2`` with ``split_ports`` against nmap's whole process,
  ``-T4`` and ``-T5``, whose times are bimodal on this machine: the ratio against each mode;
- a network-bound stage (every task paced by ``rate``, so the clock, not the CPU, bounds it)
  with 1, 2, 4 and 8 local agents: the stage's duration and the speed-up over one agent;
- ``--max-rate`` and ``--host-rate`` measured at the target: the most accepts in any sliding 1 s
  window, per run and per address, against the budget.

Every target is on 127.0.0.0/8; listeners are the benchmark's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_tcp_connect import agent_scan, listening_ports
from console.master.scheduler import Master
from console.runoptions import RunOptions
from console.store import open_store
from tests.fixtures.accepts import AcceptCounter

COMMAND = "python -m benchmarks.bench_speed"
ROUNDS = int(os.environ.get("BENCH_SPEED_ROUNDS", "5"))
WORKFLOWS = """\
workflows:
  nop:
    stages:
      - id: n
        tool: noop
  full:
    stages:
      - id: ports
        tool: tcp_connect
        with: {ports: "1-65535", timeout: 1.0}
        split_ports: 32768
"""
#: the network-bound stage: this many tasks of PACED_PORTS ports each, paced at PACED_RATE probes/s
PACED_TASKS, PACED_PORTS, PACED_RATE = 64, 200, 200.0


#: what every run imports before fleetscan does anything of its own (the design card's stack)
FLOOR = [sys.executable, "-c", "import asyncio; from pydantic import BaseModel"]


def _row(figure: str, value: str, goal: str, command: str = COMMAND) -> dict[str, str]:
    return {"figure": figure, "value": value, "goal": goal, "command": command}


def _bytecode_env() -> dict[str, str]:
    """The environment with Python's bytecode cache allowed, as in any pip install (this machine sets
    PYTHONDONTWRITEBYTECODE; without a cache every start compiles the project's modules again)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _fleetscan() -> list[str]:
    script = Path(sys.executable).parent / "fleetscan"
    return [str(script)] if script.exists() else [sys.executable, "-m", "console.cli.main"]


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall and CPU (the child and its children) of one command; its stdout."""
    before = os.times()
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - started
    after = os.times()
    if out.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {out.returncode}: {out.stderr.strip()[-300:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, out.stdout


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})"


def fixed_cost(tmp: Path) -> list[dict[str, str]]:
    """With Python's bytecode cache allowed (see :func:`_bytecode_env`)."""
    flow = tmp / "wf.yaml"
    base = [*_fleetscan(), "run", "nop", "--targets", "127.0.0.1", "--workflows", str(flow), "--db", str(tmp / "n.db")]
    env = _bytecode_env()
    _timed(base, env)  # first run: migrations, bytecode
    _timed(FLOOR, env)
    walls, cpus, floors = [], [], []
    for _ in range(ROUNDS):
        floors.append(_timed(FLOOR, env)[0])  # interleaved: the machine's pace at the same moment
        wall, cpu, _ = _timed(base, env)
        walls.append(wall)
        cpus.append(cpu)
    return [
        _row("no-op `fleetscan run` of one target: wall (median)", _median(walls), "<= 0.25 s",
             "fleetscan run nop --targets 127.0.0.1"),
        _row("no-op `fleetscan run` of one target: CPU incl. agent (median)", _median(cpus), "", COMMAND),
        _row("the floor under it: Python, asyncio and pydantic imported, nothing else (median)", _median(floors),
             "reference", f"python -c '{FLOOR[2]}'"),
        _row("no-op run minus that floor: fleetscan's own share (median of the pairs)",
             f"{statistics.median(w - f for w, f in zip(walls, floors, strict=True)):.3f} s", ""),
    ]


def _pin(pid: int) -> None:
    """Pin a process (and the threads it starts from now on) to CPU 0."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {0})


def one_core(nmap: str) -> list[dict[str, str]]:
    from agentkit.bootstrap import start_local_agent

    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(4)]
    mine = {s.getsockname()[1] for s in listeners}
    proc, _, _ = start_local_agent()
    _pin(proc.pid)
    nmap_walls: list[float] = []
    agent_walls: list[float] = []
    nmap_cpus: list[float] = []
    agent_cpus: list[float] = []
    same = True
    try:
        for round_number in range(ROUNDS):
            before = listening_ports()
            children = os.times()
            nmap_wall, nmap_open = _nmap(nmap, "-T4", pinned=True)
            after = os.times()
            nmap_cpus.append(after.children_user + after.children_system - children.children_user
                             - children.children_system)
            cpu = _process_cpu(proc.pid)
            agent_wall, agent_open = agent_scan(proc, f"speed-{round_number}")
            agent_cpus.append(_process_cpu(proc.pid) - cpu)
            stable = (before & listening_ports()) | mine
            same = same and not ((nmap_open ^ agent_open) & stable) and mine <= agent_open
            nmap_walls.append(nmap_wall)
            agent_walls.append(agent_wall)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        for sock in listeners:
            sock.close()
    ratio = statistics.median(agent_walls) / statistics.median(nmap_walls)
    cpu_ratio = statistics.median(agent_cpus) / statistics.median(nmap_cpus)
    return [
        _row("one core: nmap -sT -p- -T4 127.0.0.1 (median)", _median(nmap_walls), "reference",
             "taskset -c 0 nmap -sT -p- -T4 -n -Pn 127.0.0.1"),
        _row("one core: agent tcp_connect 1-65535 (median, agent subprocess)", _median(agent_walls), "", COMMAND),
        _row("one core: agent / nmap -T4, wall", f"{ratio:.2f}x (same open set: {'yes' if same else 'NO'})",
             "<= 1.0x"),
        _row("one core: CPU of the scan, agent / nmap -T4 (medians)",
             f"{statistics.median(agent_cpus):.2f} s / {statistics.median(nmap_cpus):.2f} s = {cpu_ratio:.2f}x",
             "<= 1.0x"),
    ]


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads), from /proc; 0 off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _nmap(nmap: str, timing: str, pinned: bool = False) -> tuple[float, set[int]]:
    argv = [nmap, "-sT", "-p-", timing, "-n", "-Pn", "127.0.0.1", "-oG", "-"]
    taskset = shutil.which("taskset")
    if pinned and taskset:
        argv = [taskset, "-c", "0", *argv]
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600).stdout
    wall = time.perf_counter() - started
    found: set[int] = set()
    for line in out.splitlines():
        if "Ports:" in line:
            for item in line.split("Ports:", 1)[1].split("\t")[0].split(","):
                fields = item.strip().split("/")
                if len(fields) > 1 and fields[1] == "open":
                    found.add(int(fields[0]))
    return wall, found


#: nmap's whole-process time on loopback is bimodal on this machine (~0.5-0.7 s, or ~1.7 s, by run):
#: a run under this many seconds counts in its fast mode
NMAP_FAST_MODE_S = 1.2


def _split_modes(walls: list[float]) -> tuple[list[float], list[float]]:
    """nmap's runs in its fast mode, and in its slow one."""
    return [w for w in walls if w < NMAP_FAST_MODE_S], [w for w in walls if w >= NMAP_FAST_MODE_S]


def _modes(walls: list[float]) -> str:
    """Median of each mode of nmap's runs (with how many runs fell in it)."""
    fast, slow = _split_modes(walls)
    part = lambda name, xs: f"{name} {statistics.median(xs):.2f} s (n={len(xs)})" if xs else f"{name} - (n=0)"  # noqa: E731
    return f"{part('fast', fast)}, {part('slow', slow)}"


def whole_run(nmap: str, tmp: Path) -> list[dict[str, str]]:
    argv = [*_fleetscan(), "run", "full", "--targets", "127.0.0.1", "--agents", "local:2", "--workflows",
            str(tmp / "wf.yaml"), "--db", str(tmp / "full.db"), "--json"]
    runs: list[float] = []
    t4: list[float] = []
    t5: list[float] = []
    for _ in range(ROUNDS):
        t4.append(_nmap(nmap, "-T4")[0])
        t5.append(_nmap(nmap, "-T5")[0])
        wall, _, out = _timed(argv, _bytecode_env())
        assert json.loads(out)["state"] == "completed"
        runs.append(wall)
    ours = statistics.median(runs)
    fast, slow = _split_modes(t4 + t5)
    ratio = lambda xs: f"{ours / statistics.median(xs):.2f}x" if xs else "-"  # noqa: E731
    return [
        _row("whole `fleetscan run` 1-65535, local:2, split_ports 32768 (median)", _median(runs), "",
             "fleetscan run full --targets 127.0.0.1 --agents local:2"),
        _row("whole nmap -sT -p- -T4 process (median; its two modes)", f"{_median(t4)}; {_modes(t4)}", "reference",
             "nmap -sT -p- -T4 -n -Pn 127.0.0.1"),
        _row("whole nmap -sT -p- -T5 process (median; its two modes)", f"{_median(t5)}; {_modes(t5)}", "reference",
             "nmap -sT -p- -T5 -n -Pn 127.0.0.1"),
        _row("fleetscan run / nmap -T4, / nmap -T5 (medians)",
             f"{ours / statistics.median(t4):.2f}x, {ours / statistics.median(t5):.2f}x", ""),
        _row("fleetscan run / nmap's fast mode, / its slow mode (-T4 and -T5 runs together)",
             f"{ratio(fast)}, {ratio(slow)}", "<= 1.0x against the fast mode"),
    ]


def _paced_stage() -> dict[str, Any]:
    return {"stages": [{
        "id": "paced", "tool": "tcp_connect", "targets": {"from": "input", "type": "host"}, "chunk": 1,
        "retries": 0, "timeout": 120.0, "split_ports": PACED_PORTS,
        "params": {"ports": f"20000-{20000 + PACED_TASKS * PACED_PORTS - 1}", "timeout": 1.0, "rate": PACED_RATE},
    }]}


def _stage_seconds(db: Path, run_id: str, stage: str) -> float:
    store = open_store(db)
    try:
        row = store.db.query("SELECT started, ended FROM stages WHERE run_id = ? AND id = ?", (run_id, stage))[0]
        return float(row["ended"] - row["started"])
    finally:
        store.close()


def scaling(tmp: Path) -> list[dict[str, str]]:
    seconds: dict[int, float] = {}
    for agents in (1, 2, 4, 8):
        db = tmp / f"paced{agents}.db"
        store = open_store(db)
        run_id = store.runs.create("paced", _paced_stage(), "127.0.0.1", None, f"local:{agents}", 0, None)
        asyncio.run(Master(store, f"local:{agents}").run_until_done(run_id))
        store.close()
        seconds[agents] = _stage_seconds(db, run_id, "paced")
    one = seconds[1]
    text = ", ".join(f"{n}: {s:.2f} s = {one / s:.2f}x" for n, s in seconds.items())
    return [_row(
        f"network-bound stage ({PACED_TASKS} tasks x {PACED_PORTS} ports at {PACED_RATE:.0f}/s, 8 slots per agent)"
        " by local agents", text, ">= 0.9 x N",
    )]


def _budgeted(tmp: Path, hosts: list[str], options: RunOptions) -> tuple[AcceptCounter, float]:
    """One split full scan of ``hosts`` (300 listening ports each) over 4 agents under ``options``."""
    farm = AcceptCounter(hosts, 300)
    store = open_store(tmp / "budget.db")
    try:
        definition = {"stages": [{
            "id": "p", "tool": "tcp_connect", "targets": {"from": "input", "type": "host"}, "chunk": 1,
            "retries": 0, "timeout": 120.0, "split_ports": 50,
            "params": {"ports": f"{farm.ports.start}-{farm.ports.stop - 1}", "timeout": 1.0},
        }]}
        run_id = store.runs.create("budget", definition, ",".join(hosts), None, "local:4", 0, None, options)
        started = time.perf_counter()
        asyncio.run(Master(store, "local:4").run_until_done(run_id))
        return farm, time.perf_counter() - started
    finally:
        farm.close()
        store.close()


def budgets(tmp: Path) -> list[dict[str, str]]:
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    max_rate, host_rate = 300, 100
    farm, wall = _budgeted(tmp, hosts, RunOptions(max_rate=max_rate))
    total = sum(len(v) for v in farm.accepts.values())
    rows = [_row(
        f"--max-rate {max_rate}: most accepts at the targets in any 1 s ({total} probes, 4 agents, {wall:.1f} s)",
        f"{farm.peak()} ({farm.peak() / max_rate:.2f} x budget)", "<= 1.25 x budget",
    )]
    farm, wall = _budgeted(tmp, hosts, RunOptions(host_rate=host_rate))
    per_host = ", ".join(f"{h}: {farm.peak(h)}" for h in hosts)
    worst = max(farm.peak(h) for h in hosts)
    rows.append(_row(
        f"--host-rate {host_rate}: most accepts at one address in any 1 s (4 agents, {wall:.1f} s)",
        f"{per_host} ({worst / host_rate:.2f} x budget)", "<= 1.25 x budget",
    ))
    return rows


def run() -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    nmap = shutil.which("nmap")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "wf.yaml").write_text(WORKFLOWS)
        rows += fixed_cost(tmp)
        if nmap is None:
            rows.append(_row("nmap ratios", "skipped: nmap not installed", ""))
        else:
            rows += one_core(nmap)
            rows += whole_run(nmap, tmp)
        rows += scaling(tmp)
        rows += budgets(tmp)
    return rows


def main() -> int:
    from benchmarks.run import table

    print(table(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
