"""Main's store additions on both backends: run-id prefixes, failures, unserved runs, retrying a failed
run, the event feed, baseline counts, diffs in Python's key order, amending by compare-and-set (with its
NOTIFY on PostgreSQL), notification claims, and the results browser's sorted pages and export. Each
test runs once on SQLite and once on PostgreSQL (``store_url``); expected values come from what the
test wrote, never from a first read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from console.errors import RunNotFound
from console.status import RunState, StageState, TaskState
from console.store import open_store
from console.store.base import Store
from console.store.writes import Completion, IngestBatch, TaskPlan
from tests.fixtures.chaos import fleetscan
from tests.test_history_diff import EXPECTED, NEW, OLD, make_run

DEFINITION = {"stages": [{"id": "a", "tool": "noop"}, {"id": "b", "tool": "noop"}]}


def _rename(store: Store, old: str, new: str) -> None:
    """Test setup: a run id of our choosing (ids are random; a shared prefix needs chosen ones)."""
    for table, column in (("runs", "id"), ("stages", "run_id"), ("events", "run_id"), ("tasks", "run_id")):
        store.db.conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (new, old))  # type: ignore[attr-defined]


def test_run_id_prefixes_resolve_on_either_backend(store_url: str) -> None:
    with open_store(store_url) as store:
        _rename(store, store.runs.create("w", DEFINITION, "127.0.0.1"), "abcd1111")
        _rename(store, store.runs.create("w", DEFINITION, "127.0.0.2"), "abcd2222")
        assert store.runs.resolve("abcd1") == "abcd1111"
        assert store.runs.resolve(" abcd222 ") == "abcd2222"
        assert store.runs.resolve("abcd2222") == "abcd2222"
        for bad, said in (("abcd", "ambiguous"), ("ffff", "no run"), ("abc", "4 characters")):
            with pytest.raises(RunNotFound, match=said):
                store.runs.resolve(bad)


def _failed_run(store: Store) -> tuple[str, list[int]]:
    """A run whose stage ``a`` had two tasks: one done, one failed ("boom"); the run ended failed."""
    run_id = store.runs.create("w", DEFINITION, "127.0.0.1-2")
    store.queue.adopt_runs("m")
    plan = TaskPlan(run_id, "a", 0, 1)
    assert store.plans.add_input_tasks(plan, [["127.0.0.1"], ["127.0.0.2"]], cursor=0, new_cursor=2,
                                       finished=True, dropped=0)
    tasks = store.queue.claim_tasks("m", 10, 60.0)
    assert len(tasks) == 2
    store.queue.apply_batch(IngestBatch(completions=[
        Completion(tasks[0].id, run_id, "a", TaskState.DONE, "box1"),
        Completion(tasks[1].id, run_id, "a", TaskState.FAILED, "box2", "boom"),
    ]))
    store.queue.finish_run(run_id, RunState.FAILED, "stage a failed")
    return run_id, [t.id for t in tasks]


def test_failures_and_retrying_a_failed_run(store_url: str) -> None:
    with open_store(store_url) as store:
        run_id, (done_id, failed_id) = _failed_run(store)
        (failure,) = store.runs.failures(run_id)
        assert (failure.task_id, failure.stage_id, failure.agent, failure.error) == (failed_id, "a", "box2", "boom")
        assert store.runs.retry_failed(run_id) == 1
        assert store.runs.retry_failed(run_id) == -1  # pending now: nothing changes
        assert store.runs.get(run_id).state == RunState.PENDING
        rows = {r["id"]: r for r in store.db.query(  # type: ignore[attr-defined]
            "SELECT id, state, attempts FROM tasks WHERE run_id = ?", (run_id,))}
        assert (rows[failed_id]["state"], rows[failed_id]["attempts"]) == (TaskState.QUEUED, 0)
        assert (rows[done_id]["state"], rows[done_id]["attempts"]) == (TaskState.DONE, 1)
        stage = store.plans.stage(run_id, "a")
        assert stage.tasks_failed == 0 and stage.state in (StageState.PENDING, StageState.RUNNING)
        # nobody serves it: it waits for a master
        assert store.runs.unserved([run_id, "nope1234"]) == {run_id}
        store.queue.register_master("m")  # a live master (heartbeat) takes it
        store.queue.adopt_runs("m")
        assert store.runs.unserved([run_id]) == set()
        assert [t.id for t in store.queue.claim_tasks("m", 10, 60.0)] == [failed_id]


def test_the_event_feed_pages_forward_by_id(store_url: str) -> None:
    with open_store(store_url) as store:
        first = store.runs.create("w", DEFINITION, "127.0.0.1")
        second = store.runs.create("w", DEFINITION, "127.0.0.2")
        store.runs.pause(first)
        every = store.events.since()
        assert [(e.run_id, e.kind) for e in every] == [(first, "submit"), (second, "submit"), (first, "pause")]
        assert [e.kind for e in store.events.since(first)] == ["submit", "pause"]
        assert store.events.since(after_id=every[0].id, limit=1) == [every[1]]
        assert store.events.since(after_id=every[-1].id) == []


def test_baseline_counts_and_a_diff_in_key_order(store_url: str) -> None:
    with open_store(store_url) as store:
        old, new = make_run(store, OLD), make_run(store, NEW)
        assert store.results.baseline_counts(new) == {"fail": 1, "pass": 1}
    for argv in ((old, new), (new,)):  # one run: compared with the latest earlier comparable completed one
        out = fleetscan("diff", *argv, "--format", "jsonl", db=store_url)  # type: ignore[arg-type]
        assert out.returncode == 1, out.stderr
        changes = [json.loads(line) for line in out.stdout.splitlines()]
        assert {(c["change"], c["stage"], c["type"], c["key"]) for c in changes} == EXPECTED
    with open_store(store_url) as store:
        prev = store.history.previous_run(new)
        assert prev is not None and prev.id == old and store.history.previous_run(old) is None


def test_keyed_pages_follow_python_string_order(store_url: str) -> None:
    """Upper case before lower, '-' before digits, code points beyond ASCII last: what Python's sorted()
    does, which the diff's merge of two runs relies on. On PostgreSQL the results' text columns are given
    a linguistic collation first (where the server has one), so the "C" ordering has to come from the SQL."""
    keys = ["b", "B", "a-1", "a1", "A", "é", "Z", "a", "_x", "10", "9"]
    with open_store(store_url) as store:
        run_id = store.runs.create("w", DEFINITION, "127.0.0.1")
        if "://" in store_url:
            icu = store.db.query("SELECT collname FROM pg_collation WHERE collname = 'und-x-icu'")  # type: ignore[attr-defined]
            if icu:
                for column in ("stage_id", "type", "key"):
                    store.db.conn.execute(  # type: ignore[attr-defined]
                        f'ALTER TABLE results ALTER COLUMN {column} TYPE TEXT COLLATE "und-x-icu"'
                    )
        records = [(run_id, stage, "t", key, "127.0.0.1", "box", 1, "ts", json.dumps({"k": key}))
                   for stage in ("a", "B") for key in keys]
        store.queue.apply_batch(IngestBatch(records=records))
        pages = list(store.history.keyed_pages(run_id, batch=4))
    read = [(stage, rtype, key) for page in pages for stage, rtype, key, _ in page]
    assert read == sorted((stage, "t", key) for stage in ("a", "B") for key in keys)
    assert all(len(page) <= 4 for page in pages)


def test_amend_is_a_compare_and_set_refused_once_a_stage_is_planned(store_url: str) -> None:
    listener: Any = None
    if "://" in store_url:
        import psycopg

        listener = psycopg.connect(store_url, autocommit=True)
        listener.execute("LISTEN fleetscan")
    try:
        with open_store(store_url) as store:
            run_id = store.runs.create("w", DEFINITION, "127.0.0.1")
            text = store.history.definition(run_id)
            changed = {"stages": [{"id": "a", "tool": "noop"}, {"id": "b", "tool": "noop", "with": {"sleep": 1}}]}
            assert not store.history.amend(run_id, text + " ", changed, ["b"], "stale")  # someone amended first
            assert store.history.amend(run_id, text, changed, ["b"], "amended b")
            assert json.loads(store.history.definition(run_id)) == changed
            store.queue.adopt_runs("m")
            plan = TaskPlan(run_id, "a", 0, 1)
            store.plans.add_input_tasks(plan, [["127.0.0.1"]], cursor=0, new_cursor=1, finished=True, dropped=0)
            again = store.history.definition(run_id)
            assert not store.history.amend(run_id, again, DEFINITION, ["a"], "too late")  # a has tasks
            assert store.history.definition(run_id) == again
            assert [e.message for e in store.events.since(run_id) if e.kind == "amend"] == ["amended b"]
        if listener is not None:
            got = [n.payload for n in listener.notifies(timeout=1.0, stop_after=3)]
            assert got == ["submit", "amend"]
    finally:
        if listener is not None:
            listener.close()


def test_a_notification_attempt_is_claimed_once(store_url: str) -> None:
    from console.runoptions import RunOptions

    with open_store(store_url) as store:
        run_id = store.runs.create("w", DEFINITION, "127.0.0.1", options=RunOptions(notify="http://127.0.0.1:9/"))
        assert store.history.notify_due(1e12) == []  # not ended yet
        store.queue.finish_run(run_id, RunState.COMPLETED)
        assert [r.id for r in store.history.notify_due(1e12)] == [run_id]
        with open_store(store_url) as other:
            assert store.history.notify_claim(run_id, 1000.0, 60.0) == 1
            assert other.history.notify_claim(run_id, 1000.0, 60.0) == 0  # leased until 1060
            assert other.history.notify_claim(run_id, 1061.0, 60.0) == 2  # the lease ran out: next attempt
            store.history.notify_outcome(run_id, 1, "delivered", None, "info", "stale attempt")  # not the latest
            assert [r.id for r in store.history.notify_due(1e12)] == [run_id]
            other.history.notify_outcome(run_id, 2, "delivered", None, "info", "delivered")
            assert store.history.notify_due(1e12) == []
            assert store.history.notify_claim(run_id, 1e12, 60.0) == 0


def test_a_browsed_record_names_the_master_that_dispatched_it(store_url: str) -> None:
    from console.store.rows import ResultFilter

    with open_store(store_url) as store:
        run_id = store.runs.create("w", DEFINITION, "127.0.0.1")
        for master, key in (("m1", "k1"), (None, "k2")):
            batch = IngestBatch(records=[(run_id, "a", "t", key, "127.0.0.1", "box", 1, "ts", "{}")])
            batch.master = master
            store.queue.apply_batch(batch)
        page = store.results.first_page(ResultFilter(run_id))
        assert [(r.key, r.master) for r in page.rows] == [("k1", "m1"), ("k2", None)]
        assert [(r.key, r.master) for r in store.results.latest(10)] == [("k1", "m1"), ("k2", None)]  # the feed


def _icu_results(store: Store) -> None:
    """PostgreSQL: give the results' text columns a linguistic collation (where the server has one), so
    an order in code points has to come from the SQL itself."""
    if "://" not in store.address:
        return
    if store.db.query("SELECT collname FROM pg_collation WHERE collname = 'und-x-icu'"):  # type: ignore[attr-defined]
        for column in ("stage_id", "type", "key", "target", "agent", "ts"):
            store.db.conn.execute(  # type: ignore[attr-defined]
                f'ALTER TABLE results ALTER COLUMN {column} TYPE TEXT COLLATE "und-x-icu"'
            )


@pytest.mark.parametrize("descending", [False, True])
def test_the_browser_sorts_text_in_code_points_and_exports_the_view(store_url: str, descending: bool) -> None:
    import io

    from console.store.export import export_matching
    from console.store.rows import ResultFilter

    keys = ["b", "B", "a-1", "a1", "A", "é", "Z", "a", "_x", "10", "9"]
    with open_store(store_url) as store:
        _icu_results(store)
        run_id = store.runs.create("w", DEFINITION, "127.0.0.1")
        batch = IngestBatch(records=[(run_id, "a", "t", key, "127.0.0.1", "box", 1, "ts", json.dumps({"port": i}))
                                     for i, key in enumerate(keys)])
        batch.master = "m1"
        store.queue.apply_batch(batch)
        flt = ResultFilter(run_id, sort="key", descending=descending)
        walked, page = [], store.results.first_page(flt, limit=3)
        while True:
            walked += [r.key for r in page.rows]
            following = store.results.next_page(page, limit=3)
            if following is page:
                break
            page = following
        assert walked == sorted(keys, reverse=descending)
        back = store.results.prev_page(page, limit=3)
        assert [r.key for r in back.rows] == walked[-len(page.rows) - 3:-len(page.rows)]
        out = io.StringIO()
        assert export_matching(store, ResultFilter(run_id, fields=(("port", "4"),)), "csv", out) == 1
    header, row = out.getvalue().splitlines()
    assert header.split(",")[:7] == ["run", "stage", "type", "key", "target", "agent", "master"]
    assert row.split(",")[3] == "A" and row.split(",")[6] == "m1"
