"""The built-in tools: ``REGISTRY`` maps a tool name to ``run(ctx, targets, params)``.

A tool emits records through its :class:`agentkit.context.TaskContext`, raises
:class:`agentkit.context.ToolError` for a clean failure, and checks
``ctx.should_stop()`` (or waits on ``ctx.cancelled``) so cancel and timeout act fast.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from agentkit.context import TaskContext
from agentkit.tools import banner, baseline, dns, http_probe, noop, tcp_connect, tcp_ping, tls_cert
from agentkit.tools import exec as exec_tool

ToolFunction = Callable[[TaskContext, List[str], Dict[str, Any]], None]

REGISTRY: Dict[str, ToolFunction] = {
    "banner": banner.run,
    "baseline": baseline.run,
    "dns": dns.run,
    "exec": exec_tool.run,
    "http_probe": http_probe.run,
    "noop": noop.run,
    "tcp_connect": tcp_connect.run,
    "tcp_ping": tcp_ping.run,
    "tls_cert": tls_cert.run,
}
