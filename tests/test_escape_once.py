"""A banner is escaped exactly once: the agent sends what the service said, the master escapes it.

Before, the agent escaped and the master escaped again, so a CR LF was stored as the
six characters ``\\\\r\\\\n``. Here a real listener sends CR, LF, NUL, an ANSI escape,
backslashes and invalid UTF-8; a real agent reads it; the master's record check
(``console.targets.records.validate``) gives what is stored.
"""

from __future__ import annotations

from agentkit import wire
from console.targets.records import validate
from console.workflow.tools import TOOLS
from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.servers import tcp_listeners

GREETING = b"220 mail\\box ready\r\n\x00\x1b[2J\x1b]0;pwned\x07 caf\xc3\xa9 \xff\xfe end\n"
#: what the operator sees stored: each CR, LF, NUL, ESC and BEL escaped once, each backslash
#: doubled once (so a sender cannot forge an escape), the invalid bytes as U+FFFD, é kept
STORED = "220 mail\\\\box ready\\r\\n\\x00\\x1b[2J\\x1b]0;pwned\\x07 caf\u00e9 \ufffd\ufffd end\\n"


def stored_banner(tool: str, params: dict[str, object]) -> str:
    agent = AgentProcess.from_source()
    try:
        assert agent.read()["op"] == "hello"
        with tcp_listeners(1, greeting=GREETING) as talkers:
            done, records = agent.run_task(f"{tool}-1", tool, [talkers[0].target], params)
    finally:
        agent.stop()
    assert done["ok"] is True, done
    [record] = records
    checked = validate(wire.Record("service", record["target"], record["data"]), TOOLS[tool].reports)
    return str(checked.data["banner"])


def test_banner_tool_stores_cr_lf_once() -> None:
    banner = stored_banner("banner", {"timeout": 1.0})
    assert banner == STORED
    assert "\\\\r" not in banner and "\r" not in banner and "\x1b" not in banner


def test_service_tool_stores_its_greeting_once() -> None:
    assert stored_banner("service", {"timeout": 1.0, "intensity": 0}) == STORED
