"""What the agent's guard costs: tcp_connect over 4,096 loopback hosts, with and without a big scope.

Side by side in one run, through a real agent subprocess: the same task (127.12.0.0/20, one
closed port) with (a) no scope sent (the targets stand in for it), (b) a scope of 20,096
addresses and ranges (about 16,000 wire entries once merged) plus 2,000 exclusions that do not
touch the targets (every address is checked against both), and (c) the same scope repeated in a second task (parsed once per agent,
then cached). Rounds alternate; medians compared. Also: the master's Scope.wire() and the
agent's parse of it for that scope.

    python -m benchmarks.bench_guard
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from typing import Any

from agentkit.bootstrap import start_local_agent
from agentkit.targets import Scope as AgentScope
from console.targets.sets import parse_scope

ROUNDS = 5
TARGETS = ["127.12.0.0/20"]
PARAMS: dict[str, Any] = {"ports": [9], "timeout": 0.5, "concurrency": 2048}


def big_scope() -> tuple[list[str], list[str]]:
    entries = [f"127.12.{i // 256}.{i % 256}" for i in range(4096)]  # the targets, one by one
    entries += [f"10.{i // 256 % 256}.{i % 256}.0-10.{i // 256 % 256}.{i % 256}.9" for i in range(16_000)]
    excluded = [f"192.0.2.{i % 256}" if i < 256 else f"fd00::{i:x}" for i in range(2000)]
    scope = parse_scope(",".join(entries)).wire()
    return scope, parse_scope(",".join(excluded)).wire()


def task(proc: subprocess.Popen[bytes], task_id: str, scope: list[str], exclude: list[str]) -> float:
    assert proc.stdin is not None and proc.stdout is not None
    message = {"op": "task", "id": task_id, "tool": "tcp_connect", "targets": TARGETS, "params": PARAMS,
               "scope": scope, "exclude": exclude}  # fmt: skip
    started = time.perf_counter()
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the agent exited")
        reply = json.loads(line)
        if reply.get("id") == task_id and reply["op"] == "done":
            if not reply["ok"]:
                raise RuntimeError(reply["error"])
            return time.perf_counter() - started


def run() -> list[dict[str, str]]:
    command = "python -m benchmarks.bench_guard"
    started = time.perf_counter()
    scope, exclude = big_scope()
    wire_s = time.perf_counter() - started
    started = time.perf_counter()
    AgentScope(scope)
    parse_s = time.perf_counter() - started
    proc, _, _ = start_local_agent()
    plain: list[float] = []
    first: list[float] = []
    cached: list[float] = []
    try:
        for n in range(ROUNDS):
            plain.append(task(proc, f"plain-{n}", [], []))
            big = scope + [f"127.13.0.{n}"]  # a new scope each round: the first task parses it
            first.append(task(proc, f"first-{n}", big, exclude))
            cached.append(task(proc, f"cached-{n}", big, exclude))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(10)
    base = statistics.median(plain)
    rows = [
        {"figure": "guard: tcp_connect 4,096 hosts, no scope (s, median)", "value": f"{base:.3f}", "goal": "",
         "command": command},
        {"figure": f"guard: same, {len(scope):,}-entry scope + {len(exclude):,} exclusions, first task (x no scope)",
         "value": f"{statistics.median(first) / base:.2f}x", "goal": "", "command": command},
        {"figure": "guard: same scope, later task of the run (x no scope)",
         "value": f"{statistics.median(cached) / base:.2f}x", "goal": "~1x", "command": command},
        {"figure": f"scope wire form: master Scope.wire() / agent parse, {len(scope):,} entries (s)",
         "value": f"{wire_s:.3f} / {parse_s:.3f}", "goal": "", "command": command},
    ]  # fmt: skip
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['figure']}: {row['value']}")
