"""noop: does nothing, on purpose: the master's benchmarks and chaos tests drive the agent with it.

params: ``sleep`` (seconds, waits on the cancel event so cancel is instant),
``records`` (N synthetic ``host_up`` records for 127.0.0.1, via ``noop/<i>``).
"""

from __future__ import annotations

from typing import Any, Dict, List

from agentkit.context import TaskContext, TaskStopped
from agentkit.params import get_float, get_int


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    sleep = get_float(params, "sleep", 0.0, 0.0, 7 * 86400.0)
    count = get_int(params, "records", 0, 0, 10_000_000)
    for index in range(count):
        if index % 1024 == 0:
            ctx.check()
        ctx.emit("host_up", "127.0.0.1", {"host": "127.0.0.1", "via": "noop/%d" % index, "rtt_ms": 0.0})
        ctx.progress(index + 1, count)
    if sleep and ctx.cancelled.wait(sleep):
        raise TaskStopped("cancelled")
