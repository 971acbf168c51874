"""Races inside the master that chaos runs hit now and then, made to happen every time.

A slow store (the master's store thread stalled by a big batch, a busy disk) is simulated by
wrapping one store call with a sleep; everything else is the real master and real agents.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from console.master.scheduler import STRAGGLER_AFTER_S, Master
from console.status import RunState
from console.store import open_store
from console.store.sqlite.queue import SQLiteQueue

pytestmark = pytest.mark.slow


async def test_a_task_ending_while_its_straggler_copy_is_counted_keeps_one_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The straggler copy's attempt is counted in the store; if the task ends meanwhile, no copy runs
    and the count is given back (attempts must match the executions the events tell of)."""
    real_bump = SQLiteQueue.bump_attempt
    bumps: list[int] = []

    def slow_bump(self: SQLiteQueue, task_id: int) -> Any:
        time.sleep(1.5)  # the task (2.3 s) ends while the copy's attempt is being counted (from 2 s)
        bumps.append(task_id)
        return real_bump(self, task_id)

    monkeypatch.setattr(SQLiteQueue, "bump_attempt", slow_bump)
    store = open_store(tmp_path / "s.db")
    stage = {"id": "a", "tool": "noop", "params": {"sleep": STRAGGLER_AFTER_S + 0.3},
             "targets": {"from": "input", "type": "host"}, "chunk": 1, "retries": 0, "timeout": 60.0,
             "speculate": True}
    run_id = store.runs.create("race", {"stages": [stage]}, "127.0.0.1", None, "local:2", 0, None)
    state = await asyncio.wait_for(Master(store, "local:2").run_until_done(run_id), 120)
    assert state == RunState.COMPLETED
    assert bumps, "the straggler path was not taken: the race did not happen"
    (task,) = store.db.query("SELECT state, attempts, max_attempts FROM tasks")
    copies = [e for e in store.events.recent(run_id) if e.kind == "straggler"]
    assert not copies
    assert task == {"state": "done", "attempts": 1, "max_attempts": 1}
