"""The SQLite store: file safety, the public API the CLI/TUI use, atomic claims, idempotent ingest, intents."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from console.errors import RunNotFound
from console.status import AgentState, RunState, TaskState
from console.store import default_db_path, open_store
from console.store.base import Store
from console.store.rows import AgentRow
from console.store.writes import Completion, EventLine, IngestBatch, Requeue

DEFINITION = {"stages": [{"id": "a", "tool": "noop"}, {"id": "b", "tool": "noop"}]}


def _store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "t.db")


def _add_tasks(store: Store, run_id: str, n: int, stage: str = "a") -> list[int]:
    ids = []
    with store.db.transaction() as conn:
        for i in range(n):
            cur = conn.execute(
                "INSERT INTO tasks (run_id, stage_id, seq, targets, state, max_attempts, created)"
                " VALUES (?, ?, ?, ?, 'queued', 2, ?) RETURNING id",
                (run_id, stage, i, json.dumps([f"127.0.0.{i % 250 + 1}"]), time.time()),
            )
            ids.append(int(cur.fetchone()[0]))
    return ids


def test_open_creates_private_wal_database(tmp_path: Path) -> None:
    store = _store(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "t.db").st_mode)
    assert mode == 0o600
    assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    store.close()
    open_store(tmp_path / "t.db").close()  # reopening does not migrate twice


def test_default_db_path_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETSCAN_DB", str(tmp_path / "x.db"))
    assert default_db_path() == tmp_path / "x.db"
    monkeypatch.delenv("FLEETSCAN_DB")
    assert default_db_path().name == "fleetscan.db"


def test_create_get_list_and_summary_shape(store_url: str) -> None:
    store = open_store(store_url)
    first = store.runs.create("recon", DEFINITION, "127.0.0.1", None, "local", 0, None)
    second = store.runs.create("web", DEFINITION, "127.0.0.2", "127.0.0.0/24", "local:2", 5, "wf.yaml")
    assert store.runs.get(first).state == RunState.PENDING
    assert store.runs.get(second).scope == "127.0.0.0/24"
    assert [r.id for r in store.runs.newest()] == [second, first]
    summary = store.runs.summary(second)
    assert set(summary) >= {"run", "state", "stages", "results", "duration_s"}
    assert summary["run"] == second and summary["state"] == "pending" and summary["priority"] == 5
    assert [s["id"] for s in summary["stages"]] == ["a", "b"]
    assert set(summary["stages"][0]) >= {"id", "state", "tasks_total", "tasks_done", "tasks_failed", "results"}
    json.dumps(summary)
    with pytest.raises(RunNotFound):
        store.runs.get("nope")
    with pytest.raises(RunNotFound):
        store.runs.summary("nope")


def _claim_worker(path: str, master: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = open_store(path)
    got: list[int] = []
    while True:
        rows = store.queue.claim_tasks(master, 7, 60.0)
        if not rows:
            break
        got.extend(r.id for r in rows)
    out.put(got)


def test_claims_are_atomic_across_processes(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    # three masters claim from one running run at once
    store.queue.adopt_runs("m1")
    ids = _add_tasks(store, run_id, 600)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_worker, args=(store_url, "shared", queue)) for _ in range(3)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
    claimed = [task_id for got in results for task_id in got]
    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert sorted(claimed) == ids
    attempts = store.db.conn.execute("SELECT DISTINCT attempts FROM tasks").fetchall()
    assert [tuple(a) for a in attempts] == [(1,)]


def test_claim_order_priority_not_before_and_pinned(store_url: str) -> None:
    store = open_store(store_url)
    low = store.runs.create("a", DEFINITION, "127.0.0.1", None, None, 0, None)
    high = store.runs.create("b", DEFINITION, "127.0.0.1", None, None, 9, None)
    store.queue.adopt_runs("m")
    low_ids = _add_tasks(store, low, 2)
    high_ids = _add_tasks(store, high, 2)
    store.db.conn.execute("UPDATE tasks SET priority = 9 WHERE run_id = ?", (high,))
    store.db.conn.execute("UPDATE tasks SET not_before = ? WHERE id = ?", (time.time() + 60, low_ids[1]))
    store.db.conn.execute("UPDATE tasks SET pinned = 'box9' WHERE id = ?", (high_ids[1],))
    got = [r.id for r in store.queue.claim_tasks("m", 10, 30)]
    assert got == [high_ids[0], low_ids[0]]
    assert [r.id for r in store.queue.claim_tasks("m", 10, 30, pinned_boxes=["box9"])] == [high_ids[1]]
    # a paused run's tasks are never claimed
    store.runs.pause(low)
    store.db.conn.execute("UPDATE tasks SET not_before = NULL WHERE id = ?", (low_ids[1],))
    assert store.queue.claim_tasks("m", 10, 30) == []


def test_redelivered_batch_never_duplicates(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    store.queue.adopt_runs("m")
    (task,) = _add_tasks(store, run_id, 1)
    store.queue.claim_tasks("m", 1, 30)
    rows = [
        (run_id, "a", "host_up", f"127.0.0.{i}", f"127.0.0.{i}", "box1", task, "ts",
                  json.dumps({"host": f"127.0.0.{i}"}))
        for i in range(1, 51)
    ]
    batch = IngestBatch(
        records=rows, completions=[Completion(task, run_id, "a", TaskState.DONE, "box1")], master="m-one"
    )
    assert store.queue.apply_batch(batch) == {(run_id, "a"): 50}
    assert store.queue.apply_batch(batch) == {}
    assert store.results.count(run_id) == 50
    assert {r["master"] for r in store.results.records(run_id)} == {"m-one"}
    stage = store.runs.summary(run_id)["stages"][0]
    assert stage["results"] == 50 and stage["tasks_done"] == 1


def test_requeue_and_failure_counters(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    store.queue.adopt_runs("m")
    first, second = _add_tasks(store, run_id, 2)
    store.queue.claim_tasks("m", 2, 30)
    store.queue.apply_batch(IngestBatch(
        requeues=[Requeue(first, time.time() - 1, ("box1",), "boom")],
        completions=[Completion(second, run_id, "a", TaskState.FAILED, "box1", "bad")],
    ))
    row = store.db.query("SELECT state, tried, error FROM tasks WHERE id = ?", (first,))[0]
    assert row == {"state": "queued", "tried": '["box1"]', "error": "boom"}
    assert store.runs.summary(run_id)["stages"][0]["tasks_failed"] == 1
    again = store.queue.claim_tasks("m", 5, 30)
    assert [r.id for r in again] == [first] and again[0].attempts == 2


def test_iter_results_streams_in_id_order_with_filters(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    rows = [
        (run_id, "a" if i % 2 else "b", "host_up" if i % 3 else "port_open", f"k{i}", "127.0.0.1", "box", 1,
                  "ts", json.dumps({"i": i}))
        for i in range(1, 1001)
    ]
    store.queue.apply_batch(IngestBatch(records=rows))
    seen = [r["key"] for r in store.results.records(run_id, batch=64)]
    assert seen == [k for (k,) in store.db.conn.execute("SELECT key FROM results ORDER BY id")]
    assert len(seen) == 1000
    only_a = list(store.results.records(run_id, stage="a", batch=10))
    assert len(only_a) == 500 and {r["stage"] for r in only_a} == {"a"}
    typed = list(store.results.records(run_id, stage="b", type="port_open", batch=7))
    assert len(typed) == store.results.count(run_id, stage="b", type="port_open") > 0
    first = only_a[0]
    assert set(first) == {"run", "stage", "type", "key", "target", "agent", "master", "task", "ts", "data"}


def test_pause_resume_and_stop_without_live_owner(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    assert store.runs.pause(run_id) == RunState.PAUSED
    assert store.runs.resume(run_id) == RunState.PENDING
    store.db.conn.execute("UPDATE runs SET owner = 'ghost', state = 'running'")
    _add_tasks(store, run_id, 3)
    assert store.runs.stop(run_id) == RunState.STOPPED
    assert store.runs.get(run_id).state == RunState.STOPPED
    states = {r["state"] for r in store.db.query("SELECT state FROM tasks")}
    assert states == {TaskState.CANCELLED}
    assert store.runs.pause(run_id) == RunState.STOPPED  # terminal: intents are no-ops


def test_stop_with_live_owner_is_an_intent(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    store.queue.register_master("live")
    store.queue.adopt_runs("live")
    assert store.runs.stop(run_id) == RunState.RUNNING
    run = store.runs.get(run_id)
    assert run.stop_requested and run.state == RunState.RUNNING


def test_orphaned_run_is_adopted_and_its_leases_requeued(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    store.queue.register_master("old")
    assert store.queue.adopt_runs("old") == [run_id]
    _add_tasks(store, run_id, 2)
    store.queue.claim_tasks("old", 2, 300)
    store.queue.register_master("new")
    assert store.queue.adopt_runs("new") == [run_id]  # shared: the new master serves it beside the old
    leased = store.db.query("SELECT state, attempts, lease_owner FROM tasks")
    assert leased == [{"state": "leased", "attempts": 1, "lease_owner": "old"}] * 2  # the old one is alive
    assert store.runs.get(run_id).owner == "old"
    store.db.conn.execute("UPDATE masters SET pid = 999999999 WHERE id = 'old'")  # a dead pid on this host
    assert store.queue.adopt_runs("new") == [run_id]
    if "://" in store_url:
        # PostgreSQL: masters on other machines may share a host name, so only the heartbeat counts
        assert {r["lease_owner"] for r in store.db.query("SELECT lease_owner FROM tasks")} == {"old"}
        store.db.conn.execute("UPDATE masters SET seen = seen - 11 WHERE id = 'old'")
        store.queue.adopt_runs("new")
    rows = store.db.query("SELECT state, attempts, lease_owner FROM tasks")
    assert rows == [{"state": "queued", "attempts": 0, "lease_owner": None}] * 2
    assert store.runs.get(run_id).owner == "new"
    assert [m.id for m in store.queue.masters()] == ["new"]


def test_a_silent_master_is_dead_after_ten_seconds(store_url: str) -> None:
    """Liveness is the heartbeat: a master on another host (no pid to check) silent for 10 s is gone."""
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    store.queue.register_master("far")
    store.queue.adopt_runs("far")
    _add_tasks(store, run_id, 3)
    assert len(store.queue.claim_tasks("far", 3, 300)) == 3
    store.queue.touch_owned("far", agents=4, in_flight=3)
    (row,) = store.queue.masters()
    assert (row.agents, row.in_flight) == (4, 3)
    store.db.conn.execute("UPDATE masters SET host = 'elsewhere', seen = ? WHERE id = 'far'", (time.time() - 9.0,))
    store.queue.adopt_runs("near")
    assert {r["lease_owner"] for r in store.db.query("SELECT lease_owner FROM tasks")} == {"far"}  # 9 s: alive
    store.db.conn.execute("UPDATE masters SET seen = ? WHERE id = 'far'", (time.time() - 10.5,))
    store.queue.adopt_runs("near")
    rows = store.db.query("SELECT state, attempts, lease_owner FROM tasks")
    assert rows == [{"state": "queued", "attempts": 0, "lease_owner": None}] * 3
    assert [t.id for t in store.queue.claim_tasks("near", 5, 30)] == [r[0] for r in store.db.conn.execute("SELECT id FROM tasks ORDER BY id").fetchall()]


def test_sweeper_requeues_or_fails_expired_leases(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    store.queue.adopt_runs("m")
    first, second = _add_tasks(store, run_id, 2)
    store.queue.claim_tasks("m", 2, -1.0)  # already expired
    store.db.conn.execute("UPDATE tasks SET attempts = max_attempts WHERE id = ?", (second,))
    assert store.queue.sweep_expired("m") == (1, 1)
    states = dict(store.db.conn.execute("SELECT id, state FROM tasks").fetchall())
    assert states == {first: "queued", second: "failed"}


def test_events_and_data_version(store_url: str) -> None:
    store = open_store(store_url)
    other = open_store(store_url)
    before = store.change_token()
    run_id = other.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    assert store.change_token() != before
    store.queue.apply_batch(IngestBatch(events=[EventLine(run_id, "info", "test", f"e{i}") for i in range(5)]))
    events = store.events.recent(run_id, limit=3)
    assert [e.message for e in events] == ["e2", "e3", "e4"]
    assert store.events.recent(run_id, after_id=events[-1].id) == []


def test_agents_upsert_roundtrip(store_url: str) -> None:
    store = open_store(store_url)
    store.agents.report([AgentRow("box1", state=AgentState.UP, slots=4, programs={"nmap": "/usr/bin/nmap"})])
    (agent,) = store.agents.all()
    assert agent.state == "up" and agent.programs == {"nmap": "/usr/bin/nmap"}
    store.agents.report([AgentRow("box1", state=AgentState.DOWN, slots=4)])
    (agent,) = store.agents.all()
    assert agent.state == "down" and agent.programs == {}


def test_busy_database_is_waited_for(tmp_path: Path) -> None:
    store = _store(tmp_path)
    locker = sqlite3.connect(tmp_path / "t.db", isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    import threading

    threading.Timer(0.3, lambda: locker.execute("COMMIT")).start()
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)  # waits, then succeeds
    assert store.runs.get(run_id).state == RunState.PENDING


def test_pinned_tasks_of_an_unusable_box_are_failed(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("baseline", DEFINITION, "", None, None, 0, None)
    store.queue.adopt_runs("m")
    first, second = _add_tasks(store, run_id, 2)
    store.db.conn.execute("UPDATE tasks SET pinned = 'gone' WHERE id = ?", (first,))
    store.db.conn.execute("UPDATE tasks SET pinned = 'box1' WHERE id = ?", (second,))
    assert store.queue.fail_pinned("m", ["box1"], "failed: box unreachable") == 1
    states = dict(store.db.conn.execute("SELECT id, state FROM tasks").fetchall())
    assert states == {first: "failed", second: "queued"}
    assert store.runs.summary(run_id)["stages"][0]["tasks_failed"] == 1


def test_a_batch_mixing_known_and_new_records_counts_only_the_new(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)

    def rec(i: int) -> tuple[str, str, str, str, str, str, int, str, str]:
        return (run_id, "a", "host_up", f"127.0.0.{i}", f"127.0.0.{i}", "box1", 1, "ts", json.dumps({"i": i}))

    assert store.queue.apply_batch(IngestBatch(records=[rec(i) for i in range(1, 11)], master="m1")) == {(run_id, "a"): 10}
    mixed = [rec(i) for i in range(6, 16)] + [rec(15)]  # 5 known, 5 new, one new one twice
    assert store.queue.apply_batch(IngestBatch(records=mixed, master="m2")) == {(run_id, "a"): 5}
    records = list(store.results.records(run_id))
    assert sorted(r["key"] for r in records) == sorted(f"127.0.0.{i}" for i in range(1, 16))
    assert {r["key"]: r["master"] for r in records}["127.0.0.6"] == "m1"  # the first delivery stays
    assert store.runs.summary(run_id)["stages"][0]["results"] == 15


def test_a_run_stopped_by_several_masters_ends_once(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("recon", DEFINITION, "127.0.0.1", None, None, 0, None)
    for master in ("m1", "m2"):
        store.queue.register_master(master)
        store.queue.adopt_runs(master)
    _add_tasks(store, run_id, 2)
    assert store.runs.stop(run_id) == RunState.RUNNING  # a live master serves it: an intent
    store.queue.end_stopped(run_id)  # m1 cancelled its tasks
    ended = store.runs.get(run_id).ended
    store.queue.end_stopped(run_id)  # m2 too, a moment later
    assert store.runs.get(run_id).state == RunState.STOPPED and store.runs.get(run_id).ended == ended
    assert [e.message for e in store.events.recent(run_id) if e.kind == "stop"] == ["stop requested", "run stopped"]
