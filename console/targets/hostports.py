"""``host_ports`` targets: one target per host carrying that host's ports from the source records.

The value is ``host:p1,p2,...`` (``[v6]:p1,p2``), ports ascending and unique, so it is one
string the store deduplicates and the agent splits (``agentkit.targets.split_host_ports``)
into the ``{host}`` and ``{ports}`` argv placeholders. The host is a validated host value and
every port an integer 1-65535: neither can start with ``-`` or carry a shell character.
"""

from __future__ import annotations

from collections.abc import Iterable

from console.targets.values import split_hostport

#: a host with more open ports than this is cut into several targets (nmap's -p stays a sane length)
MAX_PORTS_PER_TARGET = 4096


def format_host_ports(host: str, ports: Iterable[int], size: int = MAX_PORTS_PER_TARGET) -> list[str]:
    """The ``host_ports`` value(s) for one host: ``host:p1,p2,...``, at most ``size`` ports each (a
    ``split_ports`` stage's N, else MAX_PORTS_PER_TARGET)."""
    ordered = sorted(set(ports))
    shown = f"[{host}]" if ":" in host else host
    size = max(1, min(size, MAX_PORTS_PER_TARGET))
    return [
        shown + ":" + ",".join(str(p) for p in ordered[start : start + size])
        for start in range(0, len(ordered), size)
    ]


def group_host_ports(values: Iterable[str], size: int = MAX_PORTS_PER_TARGET) -> list[list[str]]:
    """Validated ``host:port`` values -> per host (in first-seen order), its ``host_ports`` values: one,
    or several when the host has more than ``size`` ports (a split host)."""
    by_host: dict[str, set[int]] = {}
    for value in values:
        split = split_hostport(value)
        if split is not None:
            by_host.setdefault(split[0], set()).add(split[1])
    return [format_host_ports(host, ports, size) for host, ports in by_host.items()]
