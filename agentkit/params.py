"""Typed reads of a task's ``params`` with one-line errors naming the field.

The master validates workflows before dispatch, but the agent never trusts a
message either: a wrong type is a ``done`` error naming ``params.<field>``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from agentkit.context import ToolError


def get_float(
    params: Dict[str, Any], name: str, default: float, low: float = 0.0, high: float = 86400.0
) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ToolError("params.%s: must be a number, got %r" % (name, value))
    if not low <= float(value) <= high:
        raise ToolError("params.%s: must be within %g..%g, got %r" % (name, low, high, value))
    return float(value)


def get_int(params: Dict[str, Any], name: str, default: int, low: int = 0, high: int = 1 << 30) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolError("params.%s: must be an integer, got %r" % (name, value))
    if not low <= value <= high:
        raise ToolError("params.%s: must be within %d..%d, got %r" % (name, low, high, value))
    return value


def get_bool(params: Dict[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ToolError("params.%s: must be true or false, got %r" % (name, value))
    return value


def get_str(params: Dict[str, Any], name: str, default: Optional[str] = None) -> str:
    value = params.get(name, default)
    if not isinstance(value, str):
        raise ToolError("params.%s: must be a string, got %r" % (name, value))
    return value


def parse_ports(value: Any, field: str = "params.ports") -> List[int]:
    """Ports from a list of ints/range strings or one string like ``"1-1024,8080"``; ordered, unique."""
    items: List[Any]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise ToolError("%s: must be a list or a range string, got %r" % (field, value))
    seen = set()
    ports: List[int] = []

    def add(port: int) -> None:
        if not 1 <= port <= 65535:
            raise ToolError("%s: port %d out of 1..65535" % (field, port))
        if port not in seen:
            seen.add(port)
            ports.append(port)

    for item in items:
        if isinstance(item, bool):
            raise ToolError("%s: not a port: %r" % (field, item))
        if isinstance(item, int):
            add(item)
            continue
        if not isinstance(item, str):
            raise ToolError("%s: not a port: %r" % (field, item))
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            low, sep, high = part.partition("-")
            try:
                first = int(low)
                last = int(high) if sep else first
            except ValueError:
                raise ToolError("%s: not a port range: %r" % (field, part)) from None
            if first > last:
                raise ToolError("%s: empty range: %r" % (field, part))
            for port in range(first, last + 1):
                add(port)
    if not ports:
        raise ToolError("%s: no ports" % field)
    return ports
