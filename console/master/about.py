"""Is a record about one of its task's targets? A box reports only on what it was given.

Why: the scope check alone let a box that was given 127.20.0.1 report host_up for .2 to .7
(in scope, and the first writer of a key wins): a hostile box could pre-empt honest ones and
feed later stages hosts nobody confirmed. So a record's host (its url's host) must be one of
its task's targets, or inside one of them (a CIDR or range target, a host:port or URL target's
host). A tool that resolves a hostname reports under that name: a record whose ``target`` is
one of the task's hostnames is about it, wherever the name resolved to.

Not held to it: tools whose records are about the box they ran on (``host_is_box``), tasks
pinned to a box (``from: boxes``), and ``noop`` (synthetic records for benchmarks).
The matching is :class:`agentkit.targets.Scope`, the agent's own: one rule on both sides.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from agentkit.targets import (
    Scope,
    TargetError,
    is_host_ports,
    split_host_port,
    split_host_ports,
    url_host_port,
)
from console.targets.values import host_of, normalize_hostname
from console.workflow.tools import Tool


def _host_part(target: str) -> str:
    """A task target without its port or URL parts (CIDRs and ranges stay as they are)."""
    if "://" in target:
        return url_host_port(target)[0]
    if "/" in target:
        return target
    if is_host_ports(target):  # a host_ports target: host:p1,p2,...
        return split_host_ports(target)[0]
    host, _ = split_host_port(target)
    return host


@lru_cache(maxsize=4096)
def task_scope(targets_json: str) -> Scope | None:
    """The hosts a task (its stored JSON list of targets) is about; None when they do not parse."""
    try:
        targets = json.loads(targets_json)
        return Scope([_host_part(str(t)) for t in targets])
    except (ValueError, TargetError):
        return None


def exempt(tool: Tool, pinned: str | None) -> bool:
    """Tasks whose records are not about their targets (see the module docstring)."""
    return tool.host_is_box or pinned is not None or tool.name == "noop"


def about_task(record: Any, targets_json: str) -> bool:
    """Whether a validated record is about one of the task's targets."""
    scope = task_scope(targets_json)
    if scope is None:
        return False
    data = record.data
    host = data.get("host") or host_of(str(data.get("url") or "")) or ""
    if host and scope.contains(host):
        return True
    target = host_of(record.target) if record.target else None
    return bool(target) and normalize_hostname(target or "") is not None and scope.contains(target or "")
