"""Untrusted agent output: a real misbehaving agent process next to a real one, under the real master.

The only test seam is which agents the master's fleet gets (``console.master.scheduler.handles_for``):
one ``LocalLink`` whose "python" is the misbehaving program of tests/fixtures/chaos_agent.py,
one ordinary local agent. Everything after the hello — framing, validation, task
bookkeeping, retries, the store — is the path users run. Whatever the bad agent sends, the
master keeps going, the run ends with exactly the fault-free record set, and the bad line
either fails its task with a reason or is dropped with an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from console.fleet.fleet import AgentHandle
from console.fleet.links import LocalLink
from console.master.scheduler import Master
from console.status import RunState
from console.store import open_store
from console.workflow.submit import prepare_run
from tests.fixtures.chaos import ChaosWorkflow, RecordId, events, fault_free, record_set, tasks
from tests.fixtures.chaos_agent import MISBEHAVIOURS, write_misbehaving_agent

pytestmark = pytest.mark.slow

TARGETS = "127.0.0.1-8"

#: what each misbehaviour must leave in the store: an event (kind, text) or a retry reason
EXPECTED_TRACE: dict[str, tuple[str, str]] = {
    "malformed": ("protocol", "protocol line is not JSON"),
    "overlong": ("protocol", "line longer than"),
    "wrongshape": ("protocol", "invalid results message"),
    "invalidrecord": ("retry", "invalid record from bad"),
    "unknownid": ("protocol", "results for unknown or finished task '999999.1' dropped"),
    "foreignresults": ("protocol", "results for unknown or finished task"),
    "foreigndone": ("protocol", "done for unknown task"),
    "flood": ("agent", "agent bad lost: too many protocol errors"),
    "outofscope": ("protocol", "127.0.0.250"),
    "hostileerror": ("agent", "agent bad reports: \\x1b]0;owned\\x07\\x1b[2J" + "z" * 4000),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> set[RecordId]:
    """The fault-free record set, once for every misbehaviour (the workflow is the same)."""
    base = tmp_path_factory.mktemp("reference")
    workflow = ChaosWorkflow(base, sleep=0.1)
    workflow.write()
    return fault_free(workflow, TARGETS, base / "clean.db")


def _fleet(bad_python: Path) -> Callable[[str], list[AgentHandle]]:
    def handles(source: str) -> list[AgentHandle]:
        return [
            AgentHandle(name="bad", kind="local", slots=3, factory=lambda: LocalLink("bad", 3, python=str(bad_python))),
            AgentHandle(name="good", kind="local", slots=3, factory=lambda: LocalLink("good", 3)),
        ]

    return handles


@pytest.mark.parametrize("mode", MISBEHAVIOURS)
async def test_a_misbehaving_agent_never_corrupts_the_run(
    mode: str, reference: set[RecordId], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = ChaosWorkflow(tmp_path, sleep=0.1)
    workflow.write()
    monkeypatch.setattr("console.master.scheduler.handles_for", _fleet(write_misbehaving_agent(tmp_path, mode)))
    db = tmp_path / "chaos.db"
    store = open_store(db)
    try:
        prepared = prepare_run(workflows_file=workflow.path, workflow=workflow.name, targets=TARGETS, agents="local:2")
        run_id = prepared.create(store)
        state = await asyncio.wait_for(Master(store, "local:2").run_until_done(run_id), 120)
    finally:
        store.close()

    assert state == RunState.COMPLETED
    assert record_set(db, run_id) == reference  # nothing invalid, stray or foreign was stored
    run_tasks = tasks(db, run_id)
    assert all(t["state"] == "done" for t in run_tasks)
    assert "bad" in {a for t in run_tasks for a in [t["agent"], *t["tried"]]}, "the bad agent never got a task"
    kind, text = EXPECTED_TRACE[mode]
    trace = [e for e in events(db) if e["kind"] == kind and text in e["message"]]
    assert trace, [(e["kind"], e["message"]) for e in events(db)]
    if mode in ("invalidrecord", "flood"):
        # the task failed on the bad agent (with the reason) and was done again by the good one
        moved = [t for t in run_tasks if "bad" in t["tried"]]
        assert moved and all(t["agent"] == "good" for t in moved)
    else:
        # a dropped line costs the task nothing: the bad agent's own done stands
        assert any(t["agent"] == "bad" for t in run_tasks)
    assert not any(e["kind"] == "master" for e in events(db)), "a message handler raised"
    assert not any("\x1b" in e["message"] for e in events(db)), "an escape sequence from a box reached an event"
