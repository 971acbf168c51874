"""tcp_ping: host discovery by TCP connect, like nmap's TCP ping; optional ICMP through ``ping``.

A host is up when any probed port accepts OR actively refuses (a RST is an
answer); silence, timeouts and unreachable errors mean down. All ports of a
host are probed at once and the first answer wins (the rest are skipped).
params: ``ports`` (default [22, 80, 443, 3389]), ``timeout`` (s, default 1.0),
``icmp`` (bool: hosts still down after TCP are tried with the system
``ping -c1 -W`` when it exists, argv only), ``concurrency``, ``rate``.
Results: ``host_up {host, via: "tcp/<port>" | "icmp", rtt_ms}``.
"""

from __future__ import annotations

import math
import re
import shutil
import threading
from typing import Any, Dict, Iterator, List, Set, Tuple

from agentkit.context import TaskContext, TaskStopped
from agentkit.params import get_bool, get_float, get_int, parse_ports
from agentkit.tools.connect_engine import OPEN, REFUSED, probe
from agentkit.tools.fanout import for_each
from agentkit.tools.tcp_connect import resolve_hosts

_RTT = re.compile(rb"time[=<]\s*([\d.]+)\s*ms")


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    ports = parse_ports(params.get("ports", [22, 80, 443, 3389]))
    timeout = get_float(params, "timeout", 1.0, 0.001, 600.0)
    icmp = get_bool(params, "icmp", False)
    concurrency = get_int(params, "concurrency", 1024, 1, 1 << 20)
    rate = get_float(params, "rate", 0.0, 0.0, 10_000_000.0)
    hosts = resolve_hosts(ctx, targets)
    up: Set[str] = set()
    lock = threading.Lock()

    def pairs() -> Iterator[Tuple[str, int, int, str]]:
        for label, family, address in hosts:
            for port in ports:
                yield label, family, port, address

    def on_result(label: str, port: int, state: str, rtt_ms: float) -> None:
        if state in (OPEN, REFUSED) and label not in up:
            up.add(label)
            ctx.emit("host_up", label, {"host": label, "via": "tcp/%d" % port, "rtt_ms": round(rtt_ms, 3)})

    probe(ctx, pairs(), len(hosts) * len(ports), on_result, timeout, concurrency, rate, skip=up.__contains__)
    if not icmp:
        return
    ping = shutil.which("ping")
    if ping is None:
        return
    wait = str(max(1, int(math.ceil(timeout))))

    entries = {label: address for label, _, address in hosts}

    def icmp_probe(label: str) -> None:
        if ctx.should_stop():
            return
        try:
            code, out, _ = ctx.run_program(
                [ping, "-n", "-c", "1", "-W", wait, entries[label]], timeout=timeout + 2
            )
        except TaskStopped:
            return
        if code == 0:
            match = _RTT.search(out)
            with lock:
                if label in up:
                    return
                up.add(label)
            rtt = float(match.group(1)) if match else 0.0
            ctx.emit("host_up", label, {"host": label, "via": "icmp", "rtt_ms": rtt})

    for_each(ctx, [label for label in entries if label not in up], icmp_probe, 32)
