"""What the master pays per record and per target: validation, agent lines, target planning, scope checks.

Every record a box sends is parsed (console.fleet.protocol) and validated (console.targets.records); every derived
target goes through derive_target + Scope.contains; input targets are cut into chunks lazily. These
rates bound the master's ingest and planning throughput, independent of the network.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable

from agentkit import wire
from console.fleet.protocol import parse_agent_line
from console.targets.records import derive_target, validate
from console.targets.sets import parse_scope, parse_targets
from console.workflow.tools import TOOLS

COMMAND = "python -m benchmarks.bench_records"


def _rate(count: int, work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def run() -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    n = 50_000
    records = [
        wire.Record("port_open", "127.0.0.1", {"host": "127.0.0.1", "port": 1 + i % 65535, "proto": "tcp"})
        for i in range(n)
    ]

    reports = TOOLS["tcp_connect"].reports

    def validate_all() -> None:
        for record in records:
            validate(record, reports)

    rows.append(
        {
            "figure": "records.validate (port_open)",
            "value": f"{_rate(n, validate_all):,.0f} records/s",
            "goal": ">= 20,000 records/s",
            "command": COMMAND,
        }
    )

    batch = json.dumps(
        {
            "op": "results",
            "id": "1.1",
            "records": [
                {
                    "type": "port_open",
                    "target": "127.0.0.1",
                    "data": {"host": "127.0.0.1", "port": p, "proto": "tcp"},
                }
                for p in range(1, wire.MAX_BATCH + 1)
            ],
        }
    ).encode()
    lines = 100

    def parse_all() -> None:
        for _ in range(lines):
            parse_agent_line(batch)

    rows.append(
        {
            "figure": f"protocol.parse_agent_line ({wire.MAX_BATCH}-record batches)",
            "value": f"{_rate(lines * wire.MAX_BATCH, parse_all):,.0f} records/s",
            "goal": ">= 100,000 records/s",
            "command": COMMAND,
        }
    )

    stored = [
        {"type": "port_open", "data": {"host": f"127.0.{i // 256 % 256}.{i % 256}", "port": 443}}
        for i in range(n)
    ]
    scope = parse_scope("127.0.0.0/16,127.168.0.0/16,app.example")

    def derive_all() -> None:
        for record in stored:
            value = derive_target(record, "url")
            assert value is not None and scope.contains(value)

    rows.append(
        {
            "figure": "derive_target(url) + Scope.contains",
            "value": f"{_rate(n, derive_all):,.0f} targets/s",
            "goal": ">= 20,000 targets/s",
            "command": COMMAND,
        }
    )

    targets = parse_targets("127.0.0.0/8")

    def plan() -> None:
        planned = 0
        for chunk in targets.chunks(256, start=len(targets) // 2):
            planned += len(chunk)
            if planned >= 1_000_000:
                break

    rate = _rate(1_000_000, plan)
    tracemalloc.start()
    plan()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rows.append(
        {
            "figure": "TargetSet /8 chunks(256) from the middle",
            "value": f"{rate:,.0f} targets/s",
            "goal": ">= 300,000 targets/s",
            "command": COMMAND,
        }
    )
    rows.append(
        {
            "figure": "TargetSet /8 (16.7M) peak memory while chunking",
            "value": f"{peak / 1024:,.0f} KiB",
            "goal": "< 1 MiB (constant)",
            "command": COMMAND,
        }
    )
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['figure']:<55} {row['value']:>22}   goal {row['goal']}")
