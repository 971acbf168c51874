"""What the agent writes is what the master accepts: every line through console.fleet.protocol,
every record through console.targets.records, for each built-in tool against loopback servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentkit import wire
from console.workflow.tools import TOOLS
from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.servers import TlsService, closed_port, http_site, page, redirect, tcp_listeners

protocol = pytest.importorskip("console.fleet.protocol")
records_module = pytest.importorskip("console.targets.records")
ELKEID = Path(__file__).parent / "data" / "elkeid-baseline" / "1300.yaml"


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    process = AgentProcess.from_source()
    process.read()
    try:
        yield process
    finally:
        process.stop()


def check_lines(agent: AgentProcess, tool: str) -> int:
    """Parse every raw line written so far as the master does; validate this tool's records."""
    count = 0
    for raw in agent.raw:
        message = protocol.parse_agent_line(raw)
        if isinstance(message, wire.Results) and message.id.startswith(tool + "-"):
            for record in message.records:
                records_module.validate(record, TOOLS[tool].reports, box="box1")
                count += 1
    return count


def test_every_tool_speaks_the_masters_contract(agent: AgentProcess, tls_service: TlsService) -> None:
    import yaml

    with tcp_listeners(2, greeting=b"SSH-2.0-x\r\n") as listeners, http_site() as site:
        site.routes["/"] = page("T")
        site.routes["/r"] = redirect("http://127.0.0.9:1/")
        tasks: list[tuple[str, list[str], dict[str, Any]]] = [
            ("tcp_ping", ["127.0.0.1"], {"ports": [closed_port()]}),
            ("tcp_connect", ["127.0.0.1"], {"ports": [p.port for p in listeners]}),
            ("banner", [listeners[0].target], {"timeout": 1.0}),
            ("http_probe", [site.url("/"), site.url("/r")], {}),
            ("tls_cert", [tls_service.target], {}),
            ("dns", ["localhost"], {}),
            ("noop", [], {"records": 3}),
        ]
        if ELKEID.exists():
            tasks.append(
                ("baseline", [], {"rules": yaml.safe_load(ELKEID.read_text()), "root": "/nonexistent"})
            )
        for n, (tool, targets, params) in enumerate(tasks):
            done, got = agent.run_task(f"{tool}-{n}", tool, targets, params)
            assert done["ok"], done
            assert got, f"{tool} produced nothing"
    for tool, _, _ in tasks:
        if tool != "noop":
            assert check_lines(agent, tool) > 0, tool
