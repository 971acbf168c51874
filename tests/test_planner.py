"""The planner: lazy windows over huge inputs, derived targets, scope drops, streaming, completion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from console.master.planner import RunPlanner
from console.status import RunState, StageState, TaskState
from console.store import open_store
from console.store.base import Store
from console.store.rows import OwnedRun
from console.store.writes import Completion, IngestBatch


def stage(sid: str, source: str = "input", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": sid, "tool": extra.pop("tool", "noop"), "params": extra.pop("params", {}),
        "targets": {"from": source, "type": extra.pop("type", "host"), "where": extra.pop("where", None)},
        "chunk": extra.pop("chunk", 4), "retries": extra.pop("retries", 0), "timeout": 30.0,
        "stream": extra.pop("stream", False),
    }
    base.update(extra)
    return base


def make_run(store: Store, stages: list[dict[str, Any]], targets: str, scope: str | None = None) -> OwnedRun:
    run_id = store.runs.create("t", {"stages": stages}, targets, scope, "local", 0, None)
    store.queue.adopt_runs("m")
    (run,) = [r for r in store.queue.owned_runs("m") if r.id == run_id]
    return run


def finish_all(store: Store, run_id: str, stage_id: str, records: list[tuple[str, dict[str, Any]]] = ()) -> None:
    """Play a master: claim the stage's tasks, store records, complete them."""
    tasks = store.db.query("SELECT id FROM tasks WHERE run_id = ? AND stage_id = ? AND state = 'queued'", (run_id, stage_id))
    store.db.conn.execute("UPDATE tasks SET state = 'leased' WHERE run_id = ? AND stage_id = ?", (run_id, stage_id))
    rows = [
        (run_id, stage_id, rtype, f"{rtype}:{data.get('host')}:{data.get('port')}", data.get("host", ""), "box",
                  0, "ts", json.dumps(data))
        for rtype, data in records
    ]
    store.queue.apply_batch(IngestBatch(
        records=rows,
        completions=[Completion(t["id"], run_id, stage_id, TaskState.DONE, "box") for t in tasks],
    ))


def stage_row(store: Store, run_id: str, sid: str) -> dict[str, Any]:
    return store.db.query("SELECT * FROM stages WHERE run_id = ? AND id = ?", (run_id, sid))[0]


def test_a_slash_8_is_planned_in_a_bounded_window(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    run = make_run(store, [stage("a", chunk=256)], "127.0.0.0/8")
    planner = RunPlanner(store, run, [], window=50)
    planner.step()
    planner.step()  # nothing drained: nothing more planned
    assert store.db.conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 50
    row = stage_row(store, run.id, "a")
    assert row["cursor"] == 50 * 256 and row["planned"] == 0 and row["state"] == StageState.RUNNING
    first = json.loads(store.db.query("SELECT targets FROM tasks ORDER BY id LIMIT 1")[0]["targets"])
    assert first[0] == "127.0.0.0" and len(first) == 256
    # drain 20 tasks -> 20 more planned, continuing exactly where the cursor was
    store.db.conn.execute("UPDATE tasks SET state = 'done' WHERE id <= 20")
    planner.step()
    assert store.db.conn.execute("SELECT count(*) FROM tasks WHERE state = 'queued'").fetchone()[0] == 50
    seqs = [r[0] for r in store.db.conn.execute("SELECT seq FROM tasks ORDER BY id")]
    assert seqs == list(range(70))
    last = json.loads(store.db.query("SELECT targets FROM tasks ORDER BY id DESC LIMIT 1")[0]["targets"])
    assert last[-1] == "127.0.69.255"
    assert stage_row(store, run.id, "a")["tasks_total"] == 70


def test_a_restarted_planner_never_plans_twice(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    run = make_run(store, [stage("a", chunk=3)], "127.0.0.1-10")
    RunPlanner(store, run, [], window=2).step()
    # a new planner (a master restart) continues from the stored cursor
    store.db.conn.execute("UPDATE tasks SET state = 'done'")
    RunPlanner(store, run, [], window=10).step()
    targets = [t for (raw,) in store.db.conn.execute("SELECT targets FROM tasks ORDER BY id") for t in json.loads(raw)]
    assert targets == [f"127.0.0.{i}" for i in range(1, 11)]
    assert stage_row(store, run.id, "a")["planned"] == 1


def test_derived_targets_are_deduplicated_and_out_of_scope_ones_dropped(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    stages = [stage("alive"), stage("ports", "alive", chunk=2, where={"type": "host_up"})]
    run = make_run(store, stages, "127.0.0.1-3")
    planner = RunPlanner(store, run, [])
    planner.step()
    records = [
        ("host_up", {"host": "127.0.0.1", "via": "tcp/22", "rtt_ms": 1.0}),
        ("host_up", {"host": "127.0.0.2", "via": "tcp/22", "rtt_ms": 1.0}),
        ("host_up", {"host": "127.0.0.9", "via": "tcp/22", "rtt_ms": 1.0}),  # a box lied: out of scope
        ("port_open", {"host": "127.0.0.3", "port": 22, "proto": "tcp"}),  # filtered out by where
    ]
    finish_all(store, run.id, "alive", records)
    planner.step()  # completes alive
    planner.step()  # plans ports from alive's results
    tasks = store.db.query("SELECT targets FROM tasks WHERE stage_id = 'ports'")
    planned = sorted(t for row in tasks for t in json.loads(row["targets"]))
    assert planned == ["127.0.0.1", "127.0.0.2"]
    row = stage_row(store, run.id, "ports")
    assert row["dropped"] == 1 and row["planned"] == 1
    events = [e.message for e in store.events.recent(run.id) if e.kind == "scope"]
    assert events and "127.0.0.9" in events[0]
    # the dropped value is never planned, even when it comes again
    planner.step()
    assert stage_row(store, run.id, "ports")["dropped"] == 1


def test_explicit_scope_narrower_than_input_drops_input_targets(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    run = make_run(store, [stage("a", chunk=10)], "127.0.0.1-4", scope="127.0.0.1-2")
    RunPlanner(store, run, []).step()
    targets = json.loads(store.db.query("SELECT targets FROM tasks")[0]["targets"])
    assert targets == ["127.0.0.1", "127.0.0.2"]
    assert stage_row(store, run.id, "a")["dropped"] == 2


def test_stream_stage_plans_before_its_source_ends(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    stages = [stage("a", chunk=1), stage("b", "a", chunk=2, stream=True), stage("c", "a", chunk=2)]
    run = make_run(store, stages, "127.0.0.1-4")
    planner = RunPlanner(store, run, [])
    planner.step()
    # two of a's four tasks finish with two hosts: b (stream) gets a full chunk now, c waits
    store.db.conn.execute("UPDATE tasks SET state = 'leased' WHERE id IN (1, 2)")
    rows = [
        (run.id, "a", "host_up", f"127.0.0.{i}", f"127.0.0.{i}", "box", i, "ts",
                  json.dumps({"host": f"127.0.0.{i}", "via": "tcp/80", "rtt_ms": 0.1}))
        for i in (1, 2)
    ]
    store.queue.apply_batch(IngestBatch(records=rows, completions=[
        Completion(i, run.id, "a", TaskState.DONE, "box") for i in (1, 2)
    ]))
    planner.step()
    assert stage_row(store, run.id, "a")["state"] == StageState.RUNNING
    assert stage_row(store, run.id, "b")["tasks_total"] == 1
    assert stage_row(store, run.id, "c")["tasks_total"] == 0


def test_boxes_stage_pins_one_task_per_box(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    rules = [{"check_id": 1, "title": "t", "check": {"rules": [{"type": "if_file_exist", "param": ["/"]}]}}]
    run = make_run(store, [stage("base", "boxes", tool="baseline", params={"rules": rules})], "")
    RunPlanner(store, run, ["box1", "box2"]).step()
    rows = store.db.query("SELECT pinned, targets FROM tasks ORDER BY id")
    assert rows == [{"pinned": "box1", "targets": '["box1"]'}, {"pinned": "box2", "targets": '["box2"]'}]


def test_stage_failure_fails_the_run_after_the_other_stages(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    run = make_run(store, [stage("a", chunk=1), stage("b", chunk=1)], "127.0.0.1")
    planner = RunPlanner(store, run, [])
    planner.step()
    tasks = {r["stage_id"]: r["id"] for r in store.db.query("SELECT id, stage_id FROM tasks")}
    store.db.conn.execute("UPDATE tasks SET state = 'leased'")
    store.queue.apply_batch(IngestBatch(completions=[
        Completion(tasks["a"], run.id, "a", TaskState.FAILED, "box", "boom"),
    ]))
    assert planner.step() is None  # b still running
    assert stage_row(store, run.id, "a")["state"] == StageState.FAILED
    store.queue.apply_batch(IngestBatch(completions=[Completion(tasks["b"], run.id, "b", TaskState.DONE, "box")]))
    assert planner.step() == RunState.FAILED
    final = store.runs.get(run.id)
    assert final.state == RunState.FAILED and final.error is not None and "a" in final.error
    assert stage_row(store, run.id, "b")["state"] == StageState.COMPLETED


def test_empty_input_completes_at_once(tmp_path: Path) -> None:
    store = open_store(tmp_path / "p.db")
    stages = [stage("a"), stage("b", "a")]
    run = make_run(store, stages, "")
    planner = RunPlanner(store, run, [])
    outcome = None
    for _ in range(4):
        outcome = planner.step() or outcome
    assert outcome == RunState.COMPLETED


def test_input_values_match_the_target_sets_own_conversion() -> None:
    from console.targets.sets import parse_targets

    targets = parse_targets("127.0.0.1-3,localhost,127.0.0.5:8080,http://127.0.0.9:81/x")
    for kind in ("host", "ip", "port", "url", None):
        for cursor in (0, 2, 4):
            expected = list(targets.iter_from(cursor, kind)) if kind else list(targets.iter_from(cursor))
            assert list(RunPlanner._input_values(targets, cursor, kind)) == expected


def test_an_amendment_landing_under_the_planner_is_never_planned_over(store_url: str) -> None:
    """The race: a master has read the run (stage ``a`` not planned yet), ``amend`` lands, then the master
    plans. Its write is refused and nothing of the old definition lands; read again, the stage is planned
    from the amended one. Without the check, four one-target tasks (the old chunk) were planned under a
    stored definition that says one task of four."""
    store = open_store(store_url)
    run = make_run(store, [stage("a", chunk=1)], "127.0.0.1-4")
    planner = RunPlanner(store, run, [])
    amended = {**run.definition, "stages": [stage("a", chunk=4)]}
    assert store.history.amend(run.id, run.definition_json, amended, ["a"], "stage(s) a amended")

    assert planner.step() is None and planner.stale
    assert store.db.query("SELECT count(*) AS n FROM tasks WHERE run_id = ?", (run.id,))[0]["n"] == 0
    row = stage_row(store, run.id, "a")
    assert (row["planned"], row["cursor"], row["tasks_total"]) == (0, 0, 0)

    (again,) = [r for r in store.queue.owned_runs("m") if r.id == run.id]
    fresh = RunPlanner(store, again, [])
    fresh.step()
    assert not fresh.stale
    tasks = store.db.query("SELECT targets FROM tasks WHERE run_id = ?", (run.id,))
    assert [json.loads(t["targets"]) for t in tasks] == [["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]]
    # the stage started: a later amendment of it is refused, and the planner goes on from its own reading
    assert not store.history.amend(run.id, again.definition_json, run.definition, ["a"], "back")
