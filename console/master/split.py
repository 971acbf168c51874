"""``split_ports``: one heavy host's port list cut into parts, one task per host and part.

A full-range scan of a few hosts is otherwise one task per host, so adding boxes does not
help the case that most needs them. The planner asks :func:`stage_parts` once per stage;
``None`` means the stage plans as usual (``chunk`` hosts per task), a list means every host
becomes one task per part, each carrying its part as a parameter override (the task's
``params``), so records, retries and the agent's tool are unchanged. The cut itself
(:func:`port_parts`) works on any port-range text, so any stage whose tool reads a port list
can use it.
"""

from __future__ import annotations

import json

from console.workflow.models import StageBase
from console.workflow.params import format_ports, port_spans

#: the parameter a split cuts
SPLIT_PARAM = "ports"


def port_parts(ports: object, size: int) -> list[str]:
    """``ports`` (``"1-1024,8080"``, a list, ...) as consecutive parts of at most ``size`` ports each,
    every part as range text; together they hold every port exactly once, in order."""
    if size <= 0:
        raise ValueError("split size must be positive")
    parts: list[str] = []
    current: list[tuple[int, int]] = []
    room = size
    for first, last in port_spans(ports):
        while first <= last:
            take = min(room, last - first + 1)
            current.append((first, first + take - 1))
            first += take
            room -= take
            if room == 0:
                parts.append(format_ports(current))
                current, room = [], size
    if current:
        parts.append(format_ports(current))
    return parts


def stage_parts(spec: StageBase) -> list[str] | None:
    """The parameter overrides (JSON objects) of one host's tasks, or None when the stage does not split
    (no ``split_ports``, or its ports fit in one part)."""
    if spec.split_ports is None:
        return None
    ports = spec.agent_params.get(SPLIT_PARAM)
    if ports is None:
        return None
    parts = port_parts(ports, spec.split_ports)
    if len(parts) <= 1:
        return None
    return [json.dumps({SPLIT_PARAM: part}, separators=(",", ":")) for part in parts]
