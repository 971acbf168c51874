"""tcp_connect: a connect() port scan, as fast as ``nmap -sT`` on the same box.

params: ``ports`` (list of ints/ranges, or ``"1-1024,8080"``; default 1-1024),
``timeout`` (s per probe, default 1.0), ``concurrency`` (probes in flight;
default 4096, bounded by the file descriptor limit, raised soft -> hard),
``rate`` (probes/s over the whole task, 0 = unbounded; paced evenly).
Targets: hosts (names are resolved once; small CIDRs and ranges expand).
Results: ``port_open {host, port, proto: "tcp", addr}`` where ``host`` is the
target as given (so derived targets stay in the master's scope) and ``addr``
the address actually probed.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Tuple

from agentkit.context import TaskContext, ToolError
from agentkit.params import get_float, get_int, parse_ports
from agentkit.targets import TargetError, iter_hosts
from agentkit.tools.connect_engine import OPEN, probe


def resolve_hosts(ctx: TaskContext, targets: List[str]) -> List[Tuple[str, int, str]]:
    """(label, family, address) per host; an unresolvable name is skipped (it cannot be up)."""
    hosts: List[Tuple[str, int, str]] = []
    for target in targets:
        try:
            labels = list(iter_hosts(target))
        except TargetError as err:
            raise ToolError("target %s" % err) from None
        for label in labels:
            ctx.check()
            try:
                family, address = ctx.guard.first_address(label)  # Blocked (an OSError): skipped
            except (OSError, UnicodeError):
                continue
            hosts.append((label, family, address))
    return hosts


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    ports = parse_ports(params.get("ports", "1-1024"))
    timeout = get_float(params, "timeout", 1.0, 0.001, 600.0)
    concurrency = get_int(params, "concurrency", 4096, 1, 1 << 20)
    rate = get_float(params, "rate", 0.0, 0.0, 10_000_000.0)
    hosts = resolve_hosts(ctx, targets)
    addresses = {label: address for label, _, address in hosts}

    def pairs() -> Iterator[Tuple[str, int, int, str]]:
        for label, family, address in hosts:
            for port in ports:
                yield label, family, port, address

    def on_result(label: str, port: int, state: str, rtt_ms: float) -> None:
        if state == OPEN:
            ctx.emit(
                "port_open",
                label,
                {"host": label, "port": port, "proto": "tcp", "addr": addresses.get(label, label)},
            )

    probe(ctx, pairs(), len(hosts) * len(ports), on_result, timeout, concurrency, rate, only_open=True)
