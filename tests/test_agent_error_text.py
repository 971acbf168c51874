"""A task's error text is kept whole up to 4,096 characters on the agent, and never more: a missing
program's long name and a failing program's long stderr reach the master in full (they used to be
cut at 100 and 300 characters)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.fixtures.agent_process import AgentProcess


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    with AgentProcess.serving() as process:
        yield process


def test_a_missing_programs_name_is_kept_whole(agent: AgentProcess) -> None:
    name = "no-such-program-" + "n" * 1500
    done, _ = agent.run_task("missing", "exec", ["127.0.0.1"], {"argv": [name, "{host}"]})
    assert done["ok"] is False and done["error"] == f"program not found: {name}"


def test_a_huge_error_is_cut_at_4096_characters_keeping_its_end(agent: AgentProcess) -> None:
    script = "import sys; sys.stderr.write('start ' + 'e' * 9000 + ' the-real-reason'); sys.exit(3)"
    done, _ = agent.run_task("loud", "exec", ["127.0.0.1"], {"argv": [sys.executable, "-c", script, "{host}"]})
    assert done["ok"] is False
    assert len(done["error"]) <= 4096 and len(done["error"]) > 3000
    assert "exited 3" in done["error"] and done["error"].endswith("the-real-reason")
