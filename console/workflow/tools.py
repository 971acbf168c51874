"""What the operator side knows about each built-in tool: one entry per tool, here only.

The agent keeps its own list (``agentkit.tools.BUILTIN_TOOLS``: name -> module, what
it can run); this table is the master's side of the same names, and a test proves the
two lists are equal. Everything else reads from it: the workflow models (a stage class
per entry, its ``with:`` validated by ``params``), the stage-graph checks (``takes``,
``boxes``), the record checks (``reports``) and the master's scope check on records
(``host_is_box``, ``about_target_name``). Adding a tool is a parameter model in
:mod:`console.workflow.params`, an entry here, and the agent's module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from console.targets.records import RECORD_TYPES
from console.workflow.params import (
    BannerParams,
    BaselineParams,
    DnsParams,
    ExecParams,
    HttpProbeParams,
    NoopParams,
    ServiceParams,
    TcpConnectParams,
    TcpPingParams,
    TlsCertParams,
    ToolParams,
)

#: ``from: boxes`` for a tool: never, allowed, or the only source it reads
Boxes = Literal["never", "may", "only"]


@dataclass(frozen=True)
class Tool:
    """One built-in tool as the master sees it."""

    name: str
    #: one line: what the tool does (the description of the stage's ``tool`` field)
    summary: str
    #: the model of the stage's ``with:`` block
    params: type[ToolParams]
    #: what the tool reports: a record of another type from one of its tasks is refused
    #: (exec reports any type; its parser narrows what one stage reports)
    reports: frozenset[str]
    #: the target kinds a stage of it may ask for (``targets.type``); None: any
    takes: frozenset[str] | None = None
    #: whether it runs once per agent box (``from: boxes``)
    boxes: Boxes = "never"
    #: ``with:`` must be given (no usable defaults)
    params_required: bool = False
    #: its records are about the box it ran on (their host is the box's name, never a
    #: scanned host): the master sets that host and does not hold it against the scope
    host_is_box: bool = False
    #: a record is about the name the task asked for (its ``target``): that name being in
    #: scope is enough, wherever it resolved to
    about_target_name: bool = False


_ANY_RECORD = frozenset(RECORD_TYPES)

TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("tcp_ping", "Host discovery by TCP connect (an accept or a reset means up).", TcpPingParams,
             reports=frozenset({"host_up"}), takes=frozenset({"host"})),
        Tool("tcp_connect", "TCP connect scan.", TcpConnectParams,
             reports=frozenset({"port_open"}), takes=frozenset({"host"})),
        Tool("banner", "What a service says first.", BannerParams,
             reports=frozenset({"service"}), takes=frozenset({"port"})),
        Tool("service", "What answers on a port: greeting, TLS handshake, HTTP, protocol hellos.", ServiceParams,
             reports=frozenset({"service"}), takes=frozenset({"port"})),
        Tool("http_probe", "HTTP(S) GET: status, title, server.", HttpProbeParams,
             reports=frozenset({"http"}), takes=frozenset({"url", "port"})),
        Tool("tls_cert", "The peer certificate of a TLS port.", TlsCertParams,
             reports=frozenset({"tls_cert"}), takes=frozenset({"port"})),
        Tool("dns", "Resolve hostnames.", DnsParams,
             reports=frozenset({"host_up"}), takes=frozenset({"host"}), about_target_name=True),
        Tool("baseline", "Host hardening checks on the box itself (Elkeid baseline rules).", BaselineParams,
             reports=frozenset({"baseline"}), boxes="only", params_required=True, host_is_box=True),
        Tool("exec", "An external program run from an argv list (never a shell) with a named output parser.",
             ExecParams, reports=_ANY_RECORD, boxes="may", params_required=True),
        Tool("noop", "Does nothing (optionally sleeps, or emits synthetic records): for tests and benchmarks.",
             NoopParams, reports=frozenset({"host_up"}), boxes="may"),
    )
}

#: the tools that may run once per box, for messages
BOX_TOOLS: tuple[str, ...] = tuple(sorted(name for name, tool in TOOLS.items() if tool.boxes != "never"))
