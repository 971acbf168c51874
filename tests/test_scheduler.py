"""The master end to end, with real local agent subprocesses bootstrapped from the real archive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from console.master.scheduler import Master
from console.status import RunState
from console.store import open_store
from console.store.base import Store

TOOL_SCRIPT = (
    "import sys, json, time; time.sleep(float(sys.argv[1])); "
    "print(json.dumps(dict(type='host_up', target=sys.argv[2], data=dict(host=sys.argv[2], via='exec', rtt_ms=0.0))))"
)


def stage(sid: str, source: str = "input", **extra: Any) -> dict[str, Any]:
    return {
        "id": sid, "tool": extra.pop("tool", "noop"), "params": extra.pop("params", {}),
        "targets": {"from": source, "type": "host", "where": extra.pop("where", None)},
        "chunk": extra.pop("chunk", 1), "retries": extra.pop("retries", 0), "timeout": extra.pop("timeout", 60.0),
        "stream": extra.pop("stream", False), "speculate": extra.pop("speculate", False),
    }


def exec_params(sleep: float, marker: str = "x") -> dict[str, Any]:
    """A real child process per target that sleeps, then prints one host_up record for its target."""
    return {"argv": [sys.executable, "-c", TOOL_SCRIPT, str(sleep), "{target}", marker], "parser": "jsonl"}


def submit(store: Store, stages: list[dict[str, Any]], targets: str) -> str:
    return store.runs.create("test", {"stages": stages}, targets, None, "local", 0, None)


async def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def serving(master: Master, body: Callable[[], Awaitable[None]], **serve: Any) -> None:
    task = asyncio.create_task(master.serve(**serve))
    try:
        await body()
    finally:
        master.shutdown()
        await asyncio.wait_for(task, 30)


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


async def test_run_completes_over_two_agents(store_url: str) -> None:
    store = open_store(store_url)
    run_id = submit(store, [stage("a", params={"records": 2}), stage("b", "a")], "127.0.0.1-8")
    state = await asyncio.wait_for(Master(store, "local:2").run_until_done(run_id), 120)
    assert state == RunState.COMPLETED
    summary = store.runs.summary(run_id)
    assert [s["state"] for s in summary["stages"]] == ["completed", "completed"]
    assert summary["stages"][0]["tasks_done"] == 8 and summary["stages"][1]["tasks_total"] == 1
    agents = {r["agent"] for r in store.db.query("SELECT agent FROM tasks WHERE stage_id = 'a'")}
    assert agents == {"local-1", "local-2"}
    (record,) = list(store.results.records(run_id))
    assert record["type"] == "host_up" and record["key"] == "127.0.0.1" and record["agent"] in agents
    # the master reported its agents down as it left; being its subprocesses, they leave the list with it
    stored = {r["name"]: r["state"] for r in store.db.query("SELECT name, state FROM agents")}
    assert stored == {"local-1": "down", "local-2": "down"}
    assert store.agents.all() == []
    assert store.runs.get(run_id).owner is None


async def test_failed_task_is_retried_on_another_agent(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    # the agent's own timeout fails the task every time; one retry, which must go to the other box
    run_id = submit(store, [stage("a", params={"sleep": 30}, timeout=0.5, retries=1)], "127.0.0.1")
    state = await asyncio.wait_for(Master(store, "local:2").run_until_done(run_id), 120)
    assert state == RunState.FAILED
    (task,) = store.db.query("SELECT state, attempts, tried, agent, error FROM tasks")
    assert task["state"] == "failed" and task["attempts"] == 2
    (first,) = json.loads(task["tried"])
    assert task["agent"] != first and {first, task["agent"]} == {"local-1", "local-2"}
    assert any(e.kind == "retry" for e in store.events.recent(run_id))


async def test_an_invalid_record_is_dropped_and_logged_never_stored_and_the_task_goes_on(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    bad = ("import json; print(json.dumps(dict(type='host_up', target='127.0.0.1', data=dict(host='no such; host'))));"
           " print(json.dumps(dict(type='host_up', target='127.0.0.1', data=dict(host='127.0.0.1', via='x'))))")
    run_id = submit(store, [stage("a", tool="exec", params={"argv": [sys.executable, "-c", bad], "parser": "jsonl"})],
                    "127.0.0.1")
    state = await asyncio.wait_for(Master(store, "local").run_until_done(run_id), 120)
    assert state == RunState.COMPLETED
    assert [r["key"] for r in store.db.query("SELECT key FROM results")] == ["127.0.0.1"]
    (task,) = store.db.query("SELECT state, error FROM tasks")
    assert task["state"] == "done"
    assert any(e.kind == "protocol" and "agent local: invalid record dropped" in e.message
               for e in store.events.recent(run_id))


@pytest.mark.slow
async def test_agent_killed_mid_task_completes_elsewhere_with_the_same_records(tmp_path: Path) -> None:
    stages = [stage("a", tool="exec", params=exec_params(0.8), retries=1)]
    clean_store = open_store(tmp_path / "clean.db")
    clean_id = submit(clean_store, stages, "127.0.0.1-6")
    assert await asyncio.wait_for(Master(clean_store, "local:2").run_until_done(clean_id), 120) == RunState.COMPLETED
    clean = sorted(r["key"] for r in clean_store.results.records(clean_id))

    store = open_store(tmp_path / "chaos.db")
    run_id = submit(store, stages, "127.0.0.1-6")
    master = Master(store, "local:2")
    killed: dict[str, Any] = {}

    async def chaos() -> None:
        ex = await wait_for(lambda: next(iter(master.flight.execs.values()), None), what="a running task")
        await asyncio.sleep(0.3)
        link = ex.agent.link
        killed["agent"], killed["task"] = ex.agent.name, ex.task.task_id
        os.kill(link.pid, signal.SIGKILL)
        await wait_for(lambda: store.runs.get(run_id).state == "completed", 120, "the run to complete")

    await serving(master, chaos, run_ids=[run_id])
    assert sorted(r["key"] for r in store.results.records(run_id)) == clean == [f"127.0.0.{i}" for i in range(1, 7)]
    task = store.db.query("SELECT state, tried, agent FROM tasks WHERE id = ?", (killed["task"],))[0]
    assert task["state"] == "done" and killed["agent"] in json.loads(task["tried"])
    assert any("lost" in e.message for e in store.events.recent(limit=1000))


@pytest.mark.slow
async def test_stop_cancels_running_tasks_and_their_processes(store_url: str) -> None:
    marker = f"fleetscan-stop-{uuid.uuid4().hex}"
    store = open_store(store_url)
    run_id = submit(store, [stage("a", tool="exec", params=exec_params(60, marker))], "127.0.0.1-10")
    master = Master(store, "local:2")

    async def stop() -> None:
        await wait_for(lambda: len(processes_with(marker)) >= 2, what="tool processes")
        other = open_store(store_url)  # the intent comes from another connection
        other.runs.stop(run_id)
        await wait_for(lambda: store.runs.get(run_id).state == "stopped", 30, "the run to stop")
        await wait_for(lambda: not processes_with(marker), 10, "tool processes to go")

    await serving(master, stop, run_ids=[run_id])
    states = {r["state"] for r in store.db.query("SELECT state FROM tasks")}
    assert states == {"cancelled"}
    assert not processes_with(marker)


@pytest.mark.slow
async def test_pause_stops_dispatch_and_resume_continues(store_url: str) -> None:
    store = open_store(store_url)
    run_id = submit(store, [stage("a", params={"sleep": 0.2})], "127.0.0.1-40")
    master = Master(store, "local")

    async def pause_then_resume() -> None:
        await wait_for(lambda: store.runs.summary(run_id)["stages"][0]["tasks_done"] >= 2, what="progress")
        store.runs.pause(run_id)
        await wait_for(lambda: not master.flight.execs and master.runs[run_id].state == "paused", 30, "running tasks to end")
        dispatched = master.dispatched_total
        await asyncio.sleep(1.0)
        leased = store.db.query("SELECT count(*) AS n FROM tasks WHERE state = 'leased'")[0]["n"]
        assert master.dispatched_total == dispatched and leased == 0
        assert store.runs.get(run_id).state == "paused"
        assert store.runs.summary(run_id)["stages"][0]["tasks_done"] < 40
        store.runs.resume(run_id)
        await wait_for(lambda: store.runs.get(run_id).state == "completed", 60, "the run to complete")

    await serving(master, pause_then_resume)
    assert store.runs.summary(run_id)["stages"][0]["tasks_done"] == 40


async def test_run_submitted_from_another_process_is_picked_up(store_url: str) -> None:
    db = store_url
    store = open_store(db)
    master = Master(store, "local")
    code = (
        "import sys; from console.store import open_store; s = open_store(sys.argv[1]); "
        "print(s.runs.create('t', dict(stages=[dict(id='a', tool='noop', params=dict(), "
        "targets=dict(type='host'), chunk=1)]), '127.0.0.1-3', None, 'local', 0, None))"
    )

    async def submit_elsewhere() -> None:
        await wait_for(lambda: any(a.state == "up" for a in store.agents.all()), what="the agent")
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True
        )
        run_id = out.stdout.strip()
        await wait_for(lambda: store.runs.get(run_id).state == "completed", 60, "the run to complete")

    await serving(master, submit_elsewhere)


@pytest.mark.slow
async def test_master_killed_then_resumed_loses_and_duplicates_nothing(store_url: str) -> None:
    db = store_url
    store = open_store(db)
    run_id = submit(store, [stage("a", tool="exec", params=exec_params(0.5))], "127.0.0.1-60")
    code = (
        "import asyncio, sys; from console.store import open_store; from console.master.scheduler import Master; "
        "asyncio.run(Master(open_store(sys.argv[1]), 'local:2').run_until_done(sys.argv[2]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), run_id])
    try:
        await wait_for(lambda: store.runs.summary(run_id)["stages"][0]["tasks_done"] >= 1, 120, "progress")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    done_before = {
        r["id"]: r["ended"] for r in store.db.query("SELECT id, ended FROM tasks WHERE state = 'done'")
    }
    assert done_before and store.runs.get(run_id).state == "running"
    state = await asyncio.wait_for(Master(store, "local:2").run_until_done(run_id), 120)
    assert state == RunState.COMPLETED
    after = {r["id"]: r["ended"] for r in store.db.query("SELECT id, ended FROM tasks WHERE state = 'done'")}
    assert all(after[i] == ended for i, ended in done_before.items()), "a completed task was re-run"
    keys = [r["key"] for r in store.results.records(run_id)]
    assert sorted(keys) == sorted(f"127.0.0.{i}" for i in range(1, 61))
    assert store.runs.summary(run_id)["stages"][0]["results"] == 60


@pytest.mark.slow
async def test_a_silent_agent_loses_its_task_to_another(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    run_id = submit(store, [stage("a", tool="exec", params=exec_params(1.0), retries=1)], "127.0.0.1-4")
    master = Master(store, "local:2")
    frozen: list[int] = []

    async def freeze() -> None:
        ex = await wait_for(lambda: next(iter(master.flight.execs.values()), None), what="a running task")
        frozen.append(ex.agent.link.pid)
        os.kill(frozen[0], signal.SIGSTOP)  # alive but silent: only the heartbeat can tell
        await wait_for(lambda: store.runs.get(run_id).state == "completed", 120, "the run to complete")

    try:
        await serving(master, freeze, run_ids=[run_id])
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert sorted(r["key"] for r in store.results.records(run_id)) == [f"127.0.0.{i}" for i in range(1, 5)]
    assert any("no answer" in e.message for e in store.events.recent(limit=1000))


@pytest.mark.slow
async def test_straggler_is_copied_to_an_idle_agent_and_records_stay_unique(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    run_id = submit(store, [stage("a", tool="exec", params=exec_params(4.0), speculate=True)], "127.0.0.1")
    state = await asyncio.wait_for(Master(store, "local:2").run_until_done(run_id), 120)
    assert state == RunState.COMPLETED
    (task,) = store.db.query("SELECT state, attempts FROM tasks")
    assert task == {"state": "done", "attempts": 2}  # the copy had an attempt number of its own
    assert [r["key"] for r in store.results.records(run_id)] == ["127.0.0.1"]
    assert any(e.kind == "straggler" for e in store.events.recent(run_id))


async def test_cancelled_serve_leaves_the_run_resumable(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    run_id = submit(store, [stage("a", params={"sleep": 0.3})], "127.0.0.1-60")
    master = Master(store, "local")
    task = asyncio.create_task(master.run_until_done(run_id))
    await wait_for(lambda: store.runs.summary(run_id)["stages"][0]["tasks_done"] >= 1, what="progress")
    task.cancel()  # what Ctrl-C does to the CLI's asyncio.run
    with pytest.raises(asyncio.CancelledError):
        await task
    run = store.runs.get(run_id)
    assert run.state == "running" and run.owner is None
    assert store.db.query("SELECT count(*) AS n FROM tasks WHERE state = 'leased'")[0]["n"] == 0
    assert await asyncio.wait_for(Master(store, "local").run_until_done(run_id), 120) == RunState.COMPLETED
    assert store.runs.summary(run_id)["stages"][0]["tasks_done"] == 60


def test_lines_for_unknown_or_finished_executions_are_dropped_with_an_event(tmp_path: Path) -> None:
    from agentkit import wire
    from console.fleet.fleet import AgentHandle
    from console.fleet.links import LocalLink

    master = Master(open_store(tmp_path / "s.db"), "local")
    box = AgentHandle(name="box", kind="local", slots=1, factory=lambda: LocalLink("box"))
    record = wire.Record(type="host_up", target="127.0.0.1", data={"host": "127.0.0.1", "via": "tcp/22", "rtt_ms": 1.0})
    master.flight.on_message(box, wire.Results(op="results", id="999.1", records=[record]))
    master.flight.on_message(box, wire.Done(op="done", id="999.1", ok=True))
    master.flight.on_message(box, wire.Progress(op="progress", id="nope", done=1, total=2))
    assert master.flight.batch.records == [] and master.flight.batch.completions == []
    kinds = [kind for _, _, kind, _ in master.flight.batch.events]
    assert kinds == ["protocol", "protocol"]


async def test_a_higher_priority_run_overtakes_a_long_one(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    low = submit(store, [stage("a", params={"sleep": 0.1})], "127.0.0.1-100")
    master = Master(store, "local")

    async def overtake() -> None:
        await wait_for(lambda: store.runs.summary(low)["stages"][0]["tasks_done"] >= 1, what="the long run to start")
        high = store.runs.create("urgent", {"stages": [stage("a", params={"sleep": 0.1})]}, "127.0.0.1-5", None,
                                "local", 10, None)
        await wait_for(lambda: store.runs.get(high).state == "completed", 60, "the urgent run")
        assert store.runs.get(low).state == "running"
        await wait_for(lambda: store.runs.get(low).state == "completed", 120, "the long run")

    await serving(master, overtake)


async def test_a_record_about_a_host_outside_the_scope_is_never_stored(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    script = (
        "import json, sys; [print(json.dumps(dict(type='host_up', target=h, data=dict(host=h, via='exec', rtt_ms=0.0))))"
        " for h in (sys.argv[1], '127.0.0.250')]"
    )
    params = {"argv": [sys.executable, "-c", script, "{target}"], "parser": "jsonl"}
    run_id = submit(store, [stage("a", tool="exec", params=params)], "127.0.0.1-2")
    assert await asyncio.wait_for(Master(store, "local").run_until_done(run_id), 120) == RunState.COMPLETED
    assert sorted(r["key"] for r in store.results.records(run_id)) == ["127.0.0.1", "127.0.0.2"]
    assert any("127.0.0.250" in e.message and e.kind == "protocol" for e in store.events.recent(run_id))


async def test_a_stream_stage_starts_before_its_source_ends(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    script = (
        "import json, sys, time; h = sys.argv[1]; time.sleep(3.0 if h.endswith('.2') else 0.0); "
        "print(json.dumps(dict(type='host_up', target=h, data=dict(host=h, via='exec', rtt_ms=0.0))))"
    )
    params = {"argv": [sys.executable, "-c", script, "{target}"], "parser": "jsonl"}
    stages = [stage("a", tool="exec", params=params), stage("b", "a", chunk=10, stream=True)]
    stages[1]["targets"]["where"] = {"type": "host_up"}
    run_id = submit(store, stages, "127.0.0.1-2")
    assert await asyncio.wait_for(Master(store, "local").run_until_done(run_id), 120) == RunState.COMPLETED
    a_ended = store.db.query("SELECT ended FROM stages WHERE id = 'a'")[0]["ended"]
    b_tasks = store.db.query("SELECT started, targets FROM tasks WHERE stage_id = 'b' ORDER BY id")
    assert b_tasks[0]["started"] < a_ended and json.loads(b_tasks[0]["targets"]) == ["127.0.0.1"]
    assert sorted(t for row in b_tasks for t in json.loads(row["targets"])) == ["127.0.0.1", "127.0.0.2"]


def test_task_line_template_encodes_exactly_the_wire_task() -> None:
    from agentkit import wire
    from console.fleet.protocol import TaskEncoder, decode_master_line
    from console.workflow.definition import load_definition

    definition = {"stages": [stage("ports", tool="tcp_connect", params={"ports": "1-1024", "timeout": 0.5})]}
    spec = load_definition(definition).stage("ports")
    assert {"ports": "1-1024", "timeout": 0.5}.items() <= spec.agent_params.items()
    template = TaskEncoder(spec.tool, spec.agent_params, spec.timeout, ["127.0.0.0/8", "localhost"])
    targets = ["127.0.0.1", "127.0.0.2"]
    for stored in (json.dumps(targets), json.dumps(targets, indent=1)):  # a multi-line JSON text is re-encoded
        line = template.line("12.3", stored)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert decode_master_line(line) == wire.Task(
            op="task", id="12.3", tool="tcp_connect", params=spec.agent_params, targets=targets,
            timeout=60.0, scope=["127.0.0.0/8", "localhost"],
        )
