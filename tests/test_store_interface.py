"""The store's interface contract: how a store is chosen, which errors leave it, typed rows, migrations."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from console.errors import BadInput, RunNotFound, StoreBusy, StoreCorrupt, StoreError
from console.status import RunState, StageState, TaskState
from console.store import base, open_store
from console.store.rows import ResultFilter, RunRow
from console.store.sqlite import database
from console.store.sqlite.schema import _V1, SCHEMA_VERSION
from console.store.writes import IngestBatch, TaskPlan

DEFINITION = {"stages": [{"id": "a", "tool": "noop"}]}


@pytest.mark.parametrize("url", ["file:///tmp/x.db", "mysql://scan:secret@h/db", "sqlite://x.db"])
def test_a_url_is_never_taken_for_a_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput) as err:
        open_store(url)
    assert err.value.field == "--db" and "://" in str(err.value) and "secret" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nothing created under a `mysql:` directory


def test_a_postgresql_server_that_is_down_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.sshd import free_port

    monkeypatch.chdir(tmp_path)
    url = f"postgresql://scan:s3cret@127.0.0.1:{free_port('127.0.0.1')}/fleet"
    with pytest.raises(StoreError) as err:
        open_store(url)
    text = str(err.value)
    assert err.value.exit_code == 2 and "\n" not in text and "s3cret" not in text
    assert f"postgresql://scan@127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}/fleet" in text
    assert list(tmp_path.iterdir()) == []


def test_a_refused_login_is_one_line_exit_2(postgres_server: Any) -> None:
    url = f"postgresql://nobody:pw@127.0.0.1:{postgres_server.port}/postgres"
    with pytest.raises(StoreError) as err:
        open_store(url)
    assert err.value.exit_code == 2 and "\n" not in str(err.value) and ":pw@" not in str(err.value)
    assert "nobody" in str(err.value)


def test_postgresql_is_imported_only_for_a_postgresql_url(tmp_path: Path) -> None:
    code = (
        "import sys; from console.store import open_store; from console.cli.main import build_parser;"
        f" s = open_store({str(tmp_path / 'x.db')!r}); s.runs.newest(); s.close();"
        " bad = [m for m in sys.modules if m.startswith(('psycopg', 'console.store.postgres'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_part_of_the_store_implements_the_interface(store_url: str) -> None:
    with open_store(store_url) as store:
        assert isinstance(store, base.Store)
        parts = {
            "runs": base.Runs, "results": base.Results, "events": base.Events, "agents": base.Agents,
            "queue": base.TaskQueue, "plans": base.Plans,
        }
        for name, interface in parts.items():
            assert isinstance(getattr(store, name), interface), name
        run_id = store.runs.create("w", DEFINITION, "127.0.0.1")
        run = store.runs.get(run_id)
        assert isinstance(run, RunRow) and run.state is RunState.PENDING and run.targets == "127.0.0.1"
        (stage,) = store.runs.stages(run_id)
        assert stage.state is StageState.PENDING and stage.tool == "noop"
        with pytest.raises(RunNotFound):
            store.runs.pause("nope")


def test_a_file_that_is_not_a_store_is_one_store_error(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not an sqlite database at all" * 200)
    with pytest.raises(StoreCorrupt) as err:
        open_store(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    open_store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreCorrupt, match="newer"):
        open_store(path)


def test_driver_errors_never_leave_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = open_store(path)
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("ALTER TABLE events RENAME TO events_away")
        conn.execute("ALTER TABLE results RENAME TO results_away")
    with pytest.raises(StoreError) as err:
        store.events.recent()
    assert not isinstance(err.value, sqlite3.Error) and "events" in str(err.value)
    with pytest.raises(StoreError):
        list(store.results.pages("x"))  # generators are mapped too
    store.close()


def test_busy_past_the_timeout_is_store_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "s.db"
    store = open_store(path)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusy) as err:
            store.runs.create("w", DEFINITION, "127.0.0.1")
        assert isinstance(err.value, TimeoutError)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.runs.newest() == []  # nothing half-written
    store.close()


def test_version_1_files_migrate_the_stop_intent_into_its_own_column(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _V1.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO runs (id, workflow, definition, state, created, error) VALUES"
        " ('r1', 'w', '{}', 'running', 1.0, 'stop requested'), ('r2', 'w', '{}', 'failed', 1.0, 'boom')"
    )
    conn.close()
    with open_store(path) as store:
        assert store.runs.get("r1").stop_requested and store.runs.get("r1").error is None
        assert not store.runs.get("r2").stop_requested and store.runs.get("r2").error == "boom"
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_input_planning_is_a_compare_and_set_on_the_cursor(store_url: str) -> None:
    with open_store(store_url) as store:
        run_id = store.runs.create("w", DEFINITION, "127.0.0.1-4")
        plan = TaskPlan(run_id, "a", priority=3, max_attempts=2)
        assert store.plans.add_input_tasks(plan, [["127.0.0.1", "127.0.0.2"]], cursor=0, new_cursor=2,
                                           finished=False, dropped=0)
        # a second planner that read the same cursor writes nothing
        assert not store.plans.add_input_tasks(plan, [["127.0.0.1", "127.0.0.2"]], cursor=0, new_cursor=2,
                                               finished=False, dropped=0)
        assert store.plans.add_input_tasks(plan, [["127.0.0.3"]], cursor=2, new_cursor=4, finished=True,
                                           dropped=1, note="stage a: dropped 1")
        stage = store.plans.stage(run_id, "a")
        assert (stage.tasks_total, stage.cursor, stage.planned, stage.dropped) == (2, 4, True, 1)
        assert stage.state is StageState.RUNNING and store.plans.queued(run_id, "a") == 2
        store.queue.adopt_runs("m")
        claimed = store.queue.claim_tasks("m", 10, 30)
        assert [json.loads(c.targets) for c in claimed] == [["127.0.0.1", "127.0.0.2"], ["127.0.0.3"]]
        assert {(c.priority, c.max_attempts, c.attempts) for c in claimed} == {(3, 2, 1)}
        assert store.plans.complete_stage(run_id, "a") is None  # tasks still open
        from console.store.writes import Completion

        store.queue.apply_batch(IngestBatch(completions=[
            Completion(c.id, run_id, "a", TaskState.DONE, "box") for c in claimed
        ]))
        assert store.plans.complete_stage(run_id, "a") is StageState.COMPLETED
        assert any(e.kind == "scope" for e in store.events.recent(run_id))


def test_results_browser_pages_by_key_over_a_text_filter(store_url: str) -> None:
    with open_store(store_url) as store:
        run_id = store.runs.create("w", DEFINITION, "127.0.0.1")
        records = [
            (run_id, "a", "host_up", f"k{i}", "127.0.0.1", "box", 1, "ts",
                      json.dumps({"note": "100%_literal" if i % 3 == 0 else "other"}))
            for i in range(1, 31)
        ]
        store.queue.apply_batch(IngestBatch(records=records))
        results = store.results
        flt = ResultFilter(run_id, text="100%_lit")  # LIKE wildcards are literal text here
        first = results.first_page(flt, limit=4)
        assert first.total == 10 and [r.key for r in first.rows] == ["k3", "k6", "k9", "k12"]
        second = results.next_page(first, limit=4)
        assert second.offset == 4 and [r.key for r in second.rows] == ["k15", "k18", "k21", "k24"]
        assert results.prev_page(second, limit=4).rows == first.rows
        last = results.last_page(flt, limit=4)
        assert last.offset == 6 and not last.has_next and [r.key for r in last.rows] == ["k21", "k24", "k27", "k30"]
        assert results.same_page(second, limit=4).rows == second.rows
        assert results.types(run_id) == ["host_up"]
        assert results.latest(2)[-1].key == "k30"
        # the first page without its count (what r shows first): "more than this page", then counted
        quick = results.first_page(flt, limit=4, count=False)
        assert quick.rows == first.rows and not quick.counted and quick.has_next and quick.total > 4
        assert results.counted(quick) == first
        assert results.next_page(results.counted(quick), limit=4) == second
        # a page that is not full needs no count: its rows are all there is
        whole = results.first_page(flt, limit=10, count=False)
        assert whole.counted and whole.total == 10 and not whole.has_next


def test_summaries_of_the_newest_runs_equal_each_runs_summary(store_url: str) -> None:
    with open_store(store_url) as store:
        ids = [store.runs.create("w", {"stages": [{"id": "a", "tool": "noop"}, {"id": "b", "tool": "noop"}]},
                                 f"127.0.0.{i}") for i in range(1, 4)]
        store.runs.pause(ids[1])
        listed = store.runs.summaries()
        assert [s["run"] for s in listed] == list(reversed(ids))
        assert listed == [store.runs.summary(run_id) for run_id in reversed(ids)]
        assert store.runs.summaries(limit=1) == listed[:1]


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://scan:pw@192.0.2.7:5432/fleet", "postgresql://scan@192.0.2.7:5432/fleet"),
    ("postgresql://scan:p:w@db.example/fleet?sslmode=require", "postgresql://scan@db.example/fleet?sslmode=require"),
    ("postgresql://scan:pw@[2001:db8::1]:99999/fleet", "postgresql://scan@[2001:db8::1]:99999/fleet"),
    ("postgresql://scan@db.example/fleet", "postgresql://scan@db.example/fleet"),
    ("postgresql://db.example/fleet", "postgresql://db.example/fleet"),
])
def test_a_store_url_is_shown_without_its_password(url: str, shown: str) -> None:
    from console.store import redact, store_label

    assert redact(url) == shown == store_label(url)


def test_a_malformed_postgresql_url_is_one_line_exit_2() -> None:
    with pytest.raises(StoreError) as err:
        open_store("postgresql://scan:pw@127.0.0.1:99999/fleet?nonsense=1")
    assert err.value.exit_code == 2 and ":pw@" not in str(err.value) and "\n" not in str(err.value)


def test_a_gone_masters_local_agents_are_not_listed_but_its_ssh_boxes_are(tmp_path: Path) -> None:
    """A local agent is its master's subprocess: when that master is gone, so is the agent."""
    from console.status import AgentState
    from console.store.rows import AgentRow

    store = open_store(tmp_path / "s.db")
    try:
        store.queue.register_master("alive-master")  # this process: alive
        store.agents.report([
            AgentRow("local-1", kind="local", state=AgentState.DOWN, master="gone-master"),
            AgentRow("box1", kind="ssh", state=AgentState.DOWN, master="gone-master"),
            AgentRow("local-9", kind="local", state=AgentState.UP, master="alive-master"),
        ])
        names = [a.name for a in store.agents.all()]
    finally:
        store.close()
    assert names == ["box1", "local-9"]
