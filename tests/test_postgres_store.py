"""What only the PostgreSQL store does: NOTIFY inside intents, a LISTEN that reconnects, calls that
wait out a server restart, and planning that happens once when masters plan at the same moment
(that last one on both backends)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from console.errors import StoreError
from console.store import open_store
from console.store.writes import TaskPlan

DEFINITION = {"stages": [{"id": "a", "tool": "noop"}]}


def test_submit_and_every_intent_notify_inside_their_transaction(pg_url: str) -> None:
    import psycopg

    store = open_store(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute("LISTEN fleetscan")
        run_id = store.runs.create("w", DEFINITION, "127.0.0.1")
        store.runs.pause(run_id)
        store.runs.resume(run_id)
        store.runs.stop(run_id)  # no live master: ended at once, still announced
        store.runs.pause(run_id)  # a no-op on a stopped run: nothing announced
        got = [n.payload for n in listener.notifies(timeout=1.0, stop_after=5)]
    assert got == ["submit", "pause", "resume", "stop"]


def test_the_listen_connection_comes_back_after_a_server_restart(postgres_server: Any, pg_url: str) -> None:
    watched, writer = open_store(pg_url), open_store(pg_url)
    before = watched.change_token()
    assert watched.change_token() == before  # quiet store, quiet token
    postgres_server.restart(0.5)
    deadline = time.monotonic() + 30
    while True:  # the first reads may fail while it reconnects: the watcher's fallback covers that
        try:
            token = watched.change_token()
            break
        except StoreError:
            assert time.monotonic() < deadline, "the listener never came back"
            time.sleep(0.1)
    writer.runs.create("w", DEFINITION, "127.0.0.1")  # the writer reconnects on its own, then notifies
    assert watched.change_token() != token


def test_a_call_during_a_server_restart_waits_and_is_done_once(postgres_server: Any, pg_url: str) -> None:
    store = open_store(pg_url)
    store.runs.create("w", DEFINITION, "127.0.0.1")
    postgres_server.stop("immediate")
    threading.Timer(1.5, postgres_server.start).start()
    started = time.monotonic()
    run_id = store.runs.create("w", DEFINITION, "127.0.0.2")  # retried with backoff until the server is back
    assert time.monotonic() - started >= 1.0
    assert store.runs.get(run_id).targets == "127.0.0.2"
    assert len(store.runs.newest()) == 2


@pytest.mark.parametrize("planners", [4])
def test_planning_happens_once_however_many_masters_plan_at_once(store_url: str, planners: int) -> None:
    setup = open_store(store_url)
    run_id = setup.runs.create("w", DEFINITION, "127.0.0.1-40")
    plan = TaskPlan(run_id, "a", 0, 1)
    barrier = threading.Barrier(planners)
    wins: list[bool] = []

    def plan_first_chunk() -> None:
        store = open_store(store_url)
        barrier.wait()
        wins.append(store.plans.add_input_tasks(
            plan, [[f"127.0.0.{i}"] for i in range(1, 11)], cursor=0, new_cursor=10, finished=False, dropped=0
        ))
        store.plans.add_targets(plan, [f"127.0.0.{i}" for i in range(11, 41)], [], cursor=5)
        barrier.wait()
        store.plans.chunk_targets(plan, 5, partial_ok=True, finish=True)
        store.close()

    threads = [threading.Thread(target=plan_first_chunk) for _ in range(planners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(wins) == [False] * (planners - 1) + [True]
    targets = [t for (t,) in setup.db.conn.execute("SELECT targets FROM tasks").fetchall()]  # type: ignore[attr-defined]
    planned = sorted(v for text in targets for v in json.loads(text))
    assert planned == sorted(f"127.0.0.{i}" for i in range(1, 41))  # every target in exactly one task
    stage = setup.plans.stage(run_id, "a")
    assert stage.tasks_total == len(targets) == 10 + 6 and stage.cursor == 10 and stage.planned


@pytest.mark.parametrize(("sqlite", "postgresql"), [
    ("SELECT a FROM t WHERE b = ? AND c LIKE ? ESCAPE '\\'", "SELECT a FROM t WHERE b = %s AND c ILIKE %s ESCAPE '\\'"),
    ("SELECT '100%' FROM t WHERE x IN ()", "SELECT '100%%' FROM t WHERE x IN (SELECT NULL WHERE false)"),
    ("INSERT OR IGNORE INTO s (a, b) VALUES (?, ?)", "INSERT INTO s (a, b) VALUES (%s, %s) ON CONFLICT DO NOTHING"),
    ("INSERT OR IGNORE INTO s (a) VALUES (?) RETURNING id",
     "INSERT INTO s (a) VALUES (%s) ON CONFLICT DO NOTHING RETURNING id"),
    ("INSERT OR REPLACE INTO agents (name, state) VALUES (?, ?)",
     "INSERT INTO agents (name, state) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state"),
    ("SELECT json_extract(data, '$.status'), count(*) FROM results",
     "SELECT (data::jsonb #>> '{status}'), count(*) FROM results"),
    ("SELECT json_extract(r.data, '$.a.b') FROM results r", "SELECT (r.data::jsonb #>> '{a,b}') FROM results r"),
    ("SELECT 1 FROM results WHERE lower(CAST(json_extract(data, ?) AS TEXT)) = lower(?)",
     "SELECT 1 FROM results WHERE lower(CAST((jsonb_path_query_first(data::jsonb, %s::jsonpath) #>> '{}') AS TEXT))"
     " = lower(%s)"),
])
def test_the_few_sqlite_spellings_are_translated(sqlite: str, postgresql: str) -> None:
    from console.store.postgres.connection import translate

    assert translate(sqlite) == postgresql


def test_json_members_read_the_same_on_both_backends(store_url: str) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("w", DEFINITION, "127.0.0.1")
    records = [
        (run_id, "a", "baseline", f"k{i}", "127.0.0.1", "box", 1, "ts", json.dumps({"status": s, "n": {"m": i}}))
        for i, s in enumerate(["pass", "fail", "pass"])
    ]
    from console.store.writes import IngestBatch

    store.queue.apply_batch(IngestBatch(records=records))
    rows = store.db.query(  # type: ignore[attr-defined]
        "SELECT json_extract(data, '$.status') AS status, count(*) AS n FROM results WHERE run_id = ?"
        " GROUP BY json_extract(data, '$.status') ORDER BY status", (run_id,),
    )
    assert [(r["status"], r["n"]) for r in rows] == [("fail", 1), ("pass", 2)]


@pytest.mark.parametrize(("path", "value", "keys"), [
    ("$.port", "443", ["k0"]),  # a number read as text
    ("$.status", "PASS", ["k0", "k2"]),  # compared without regard to case
    ("$.type", "a", ["k1"]),  # a member named like an SQL/JSON path keyword
    ("$.n.m", "2", ["k2"]),
    ("$.missing", "x", []),
])
def test_a_json_member_named_by_a_parameter_reads_the_same_on_both_backends(
    store_url: str, path: str, value: str, keys: list[str]
) -> None:
    store = open_store(store_url)
    run_id = store.runs.create("w", DEFINITION, "127.0.0.1")
    data = [{"status": "pass", "port": 443, "n": {"m": 0}}, {"status": "fail", "type": "A", "n": {"m": 1}},
            {"status": "Pass", "port": 80, "n": {"m": 2}}]
    records = [(run_id, "a", "t", f"k{i}", "127.0.0.1", "box", 1, "ts", json.dumps(d)) for i, d in enumerate(data)]
    from console.store.writes import IngestBatch

    store.queue.apply_batch(IngestBatch(records=records))
    rows = store.db.query(  # type: ignore[attr-defined]
        "SELECT key FROM results WHERE run_id = ? AND lower(CAST(json_extract(data, ?) AS TEXT)) = lower(?)"
        " ORDER BY key", (run_id, path, value),
    )
    assert [r["key"] for r in rows] == keys
