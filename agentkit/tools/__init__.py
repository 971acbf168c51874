"""The built-in tools: ``REGISTRY`` maps a tool name to ``run(ctx, targets, params)``.

A tool emits records through its :class:`agentkit.context.TaskContext`, raises
:class:`agentkit.context.ToolError` for a clean failure, and checks
``ctx.should_stop()`` (or waits on ``ctx.cancelled``) so cancel and timeout act fast.

Tools are imported on first use, not at start: the agent's ``hello`` lists every
name without importing any tool, so a box pays for ``http.client``, ``ssl``,
``xml`` and the rest only when a task needs them (importing every tool was most
of the agent's start-to-hello time). A tool whose module cannot be imported on
some box (e.g. a Python built without ``_ssl``) fails its own tasks, not the agent.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, MutableMapping, Union

if TYPE_CHECKING:
    from agentkit.context import TaskContext

ToolFunction = Callable[["TaskContext", List[str], Dict[str, Any]], None]

#: tool name -> module whose ``run`` is the tool (the one list of built-in tools)
BUILTIN_TOOLS: Dict[str, str] = {
    "banner": "agentkit.tools.banner",
    "baseline": "agentkit.tools.baseline",
    "dns": "agentkit.tools.dns",
    "exec": "agentkit.tools.exec",
    "http_probe": "agentkit.tools.http_probe",
    "noop": "agentkit.tools.noop",
    "service": "agentkit.tools.service",
    "tcp_connect": "agentkit.tools.tcp_connect",
    "tcp_ping": "agentkit.tools.tcp_ping",
    "tls_cert": "agentkit.tools.tls_cert",
}


class ToolRegistry(MutableMapping[str, ToolFunction]):
    """Tool name -> function, where a built-in's module is imported when its function is first asked for.

    Membership, iteration and ``len`` never import anything; ``registry[name]`` imports the
    tool's module once (an ``ImportError`` propagates to the caller: the task fails with it).
    """

    def __init__(self, entries: Dict[str, str]) -> None:
        self._entries: Dict[str, Union[str, ToolFunction]] = dict(entries)
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> ToolFunction:
        entry = self._entries[name]
        if not isinstance(entry, str):
            return entry
        with self._lock:  # one import per tool even when its first tasks arrive together
            entry = self._entries[name]
            if isinstance(entry, str):
                function: ToolFunction = __import__(entry, fromlist=["run"]).run
                self._entries[name] = entry = function
        return entry

    def __setitem__(self, name: str, function: ToolFunction) -> None:
        self._entries[name] = function

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def add_module(self, name: str, module: str) -> None:
        """Register a tool by module path (its ``run`` is imported on first use, like the built-ins)."""
        self._entries[name] = module

    def loaded(self, name: str) -> bool:
        """Whether ``name``'s function is already imported (for tests of the lazy start)."""
        return not isinstance(self._entries.get(name, ""), str)


REGISTRY = ToolRegistry(BUILTIN_TOOLS)
