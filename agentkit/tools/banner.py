"""banner: what a service says first, before we say anything.

Connect, then read up to ``max_bytes`` (default 1024, at most 65536) until
the peer closes, the bytes run out, or ``timeout`` (default 3 s, measured
from the connect) passes. A silent service (nothing within the timeout) gives
NO record: ``port_open`` already says the port answers, and an empty banner
would only add noise to the ``service`` table. Text is decoded as UTF-8 with
replacement and bounded, never escaped here: the master escapes it once
(a CR LF is stored as ``\\r\\n``).
params: ``timeout``, ``max_bytes``, ``concurrency`` (default 64).
Results: ``service {host, port, banner}``.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Dict, List

from agentkit.context import TaskContext
from agentkit.params import get_float, get_int
from agentkit.targets import host_port
from agentkit.tools.fanout import for_each, parse_each
from agentkit.tools.text import decoded


def grab(ctx: TaskContext, host: str, port: int, timeout: float, max_bytes: int) -> bytes:
    """The first bytes the service sends within the timeout (b"" when silent or unreachable)."""
    ends = time.monotonic() + timeout
    try:
        sock = ctx.guard.create_connection((host, port), timeout=timeout)
    except OSError:
        return b""
    data = b""
    try:
        while len(data) < max_bytes and not ctx.should_stop():
            left = ends - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(min(left, 0.2))
            try:
                chunk = sock.recv(max_bytes - len(data))
            except socket.timeout:
                if data:
                    break  # it said something and paused: that is the banner
                continue
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return data


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    timeout = get_float(params, "timeout", 3.0, 0.01, 600.0)
    max_bytes = get_int(params, "max_bytes", 1024, 1, 65536)
    concurrency = get_int(params, "concurrency", 64, 1, 4096)
    parsed = parse_each(targets, host_port)

    def work(target: str) -> None:
        host, port = parsed[target]
        data = grab(ctx, host, port, timeout, max_bytes)
        if data:
            ctx.emit(
                "service", target, {"host": host, "port": port, "banner": decoded(data, max_bytes)}
            )

    for_each(ctx, targets, work, concurrency)
