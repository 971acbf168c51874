"""dns: resolve host names with the box's own resolver (getaddrinfo).

Each name is resolved on a worker thread so ``timeout`` (default 5 s) holds
even though getaddrinfo itself has none; an unresolvable name yields nothing.
params: ``timeout``, ``concurrency`` (default 16).
Results: one ``host_up {host: address, name, via: "dns", rtt_ms}`` per address.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Dict, List

from agentkit.context import TaskContext, ToolError
from agentkit.params import get_float, get_int
from agentkit.targets import valid_host
from agentkit.tools.fanout import for_each


def resolve_all(name: str, timeout: float) -> List[str]:
    found: List[str] = []
    ready = threading.Event()

    def lookup() -> None:
        try:
            for _, _, _, _, sockaddr in socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM):
                address = str(sockaddr[0])
                if address not in found:
                    found.append(address)
        except (OSError, UnicodeError):
            pass
        finally:
            ready.set()

    threading.Thread(target=lookup, daemon=True, name="dns-" + name[:32]).start()
    return list(found) if ready.wait(timeout) else []


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    timeout = get_float(params, "timeout", 5.0, 0.01, 600.0)
    concurrency = get_int(params, "concurrency", 16, 1, 1024)
    for target in targets:
        if not valid_host(target):
            raise ToolError("target: not a host name: %r" % target[:100])

    def work(name: str) -> None:
        started = time.monotonic()
        addresses = resolve_all(name, min(timeout, max(ctx.remaining(), 0.01)))
        rtt = round((time.monotonic() - started) * 1000.0, 3)
        for address in addresses:
            if not ctx.guard.allowed(name, address):
                continue  # excluded or out of scope: reported to the master, never a result
            ctx.emit("host_up", name, {"host": address, "name": name, "via": "dns", "rtt_ms": rtt})

    for_each(ctx, targets, work, concurrency)
