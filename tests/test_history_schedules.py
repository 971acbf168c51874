"""Schedules: due-time arithmetic, firing exactly once across masters sharing one database, windows,
missed occurrences collapsing into one, pause/resume, and bad input (exit 2, nothing written)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from console.errors import BadInput
from console.history.schedules import first_due, in_window, next_due, parse_every, parse_window, window_opens
from console.master.schedules import fire_due
from console.store import open_store
from console.store.base import Store
from console.store.writes import NewSchedule
from tests.fixtures.chaos import FleetscanProcess, fleetscan, query, wait_until, write_workflow


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Windows are local time: pin the local zone for the arithmetic tests."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def noop_stage(path: Path, name: str, sleep: float) -> Path:
    stage = {"id": "wait", "tool": "noop", "with": {"sleep": sleep}, "targets": {"from": "input", "type": "host"},
             "chunk": 1}
    return write_workflow(path, name, [stage])


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_durations() -> None:
    assert parse_every("30m") == 1800
    assert parse_every("6h") == 21600
    assert parse_every("1d") == 86400
    assert parse_every("1h30m") == 5400
    for bad in ("", "5", "m", "1x", "30 m", "-1h", "0m", "30s", "367d", "1h 30m", "1.5h"):
        with pytest.raises(BadInput) as err:
            parse_every(bad)
        assert err.value.field == "--every"


def test_windows(utc: None) -> None:
    assert parse_window("09:00-17:30") == (540, 1050)
    assert parse_window("22:00-04:00") == (1320, 240)
    for bad in ("9-17", "24:00-01:00", "09:60-10:00", "10:00-10:00", "10:00", "10:00-11:00-12:00", "aa:bb-cc:dd"):
        with pytest.raises(BadInput) as err:
            parse_window(bad)
        assert err.value.field == "--window"
    night = parse_window("22:00-04:00")
    assert in_window(at("2026-12-03 23:30"), night) and in_window(at("2026-12-04 03:59"), night)
    assert not in_window(at("2026-12-03 04:00"), night) and not in_window(at("2026-12-03 12:00"), night)
    assert window_opens(at("2026-12-03 12:00"), night) == at("2026-12-03 22:00")
    assert window_opens(at("2026-12-03 23:00"), night) == at("2026-12-03 23:00")
    day = parse_window("09:00-17:00")
    assert window_opens(at("2026-12-03 18:00"), day) == at("2026-12-04 09:00")
    assert first_due(at("2026-12-03 08:00"), day) == at("2026-12-03 09:00")
    assert first_due(at("2026-12-03 10:00"), None) == at("2026-12-03 10:00")


def test_missed_occurrences_collapse(utc: None) -> None:
    due = at("2026-12-01 00:00")
    now = at("2026-12-03 10:20")  # 58 hourly occurrences missed
    assert next_due(due, 3600, now, None) == at("2026-12-03 11:00")
    assert next_due(due, 3600, at("2026-12-01 00:00"), None) == at("2026-12-01 01:00")
    # the next boundary falls outside the window: the window's next opening
    assert next_due(due, 3600, now, parse_window("22:00-23:00")) == at("2026-12-03 22:00")


def schedule(store: Store, every: int = 3600, window: str | None = None, first: float | None = None) -> str:
    definition = {"stages": [{"id": "a", "tool": "noop", "targets": {"from": "input", "type": "host"}}]}
    return store.schedules.add(NewSchedule(
        workflow="quick", definition=definition, every_s=every, window=window,
        first_due=time.time() if first is None else first, targets="127.0.0.1",
    ))


def runs_of(store: Store, schedule_id: str) -> list[str]:
    return [r.id for r in store.runs.newest(1000) if r.schedule_id == schedule_id]


def test_concurrent_firing_starts_one_run(store_url: str) -> None:
    """Eight masters' ticks at the same instant, each on its own connection: one run per occurrence
    (on SQLite and on PostgreSQL, where the compare-and-set waits for the first firing to commit)."""
    db = store_url
    with open_store(db) as store:
        sid = schedule(store)
    now = time.time() + 1
    barrier = threading.Barrier(8)
    started: list[str] = []

    def tick() -> None:
        with open_store(db) as own:
            barrier.wait()
            started.extend(fire_due(own, now))

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    with open_store(db) as store:
        assert runs_of(store, sid) == started and len(started) == 1
        row = store.schedules.get(sid)
        assert row.last_run == started[0] and row.next_due > now
        assert store.runs.get(started[0]).schedule_id == sid
        # missed for ten periods while no master ran: one run, not ten
        store.schedules.set_paused(sid, False, now - 10 * 3600)
        assert len(fire_due(store, now)) == 1 and fire_due(store, now) == []
        assert len(runs_of(store, sid)) == 2
        assert now < store.schedules.get(sid).next_due <= now + 3600


def test_outside_the_window_nothing_starts(tmp_path: Path) -> None:
    now = time.time()
    minute = datetime.fromtimestamp(now)
    # a one-hour window that opened an hour ago... plus two hours: closed now, opens later today or tomorrow
    start = (minute.hour + 2) % 24
    window = f"{start:02d}:00-{(start + 1) % 24:02d}:00"
    with open_store(tmp_path / "state.db") as store:
        sid = schedule(store, window=window, first=now - 5)
        assert fire_due(store, now) == []
        row = store.schedules.get(sid)
        assert row.next_due == window_opens(now, parse_window(window)) and row.next_due > now
        assert runs_of(store, sid) == []


def test_paused_schedules_do_not_fire(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with open_store(db) as store:
        sid = schedule(store)
    assert fleetscan("schedule", "pause", sid[:4], db=db).returncode == 0  # a prefix names it, as for runs
    with open_store(db) as store:
        assert fire_due(store) == [] and runs_of(store, sid) == []
    assert fleetscan("schedule", "resume", sid[:5], db=db).returncode == 0
    with open_store(db) as store:
        assert len(fire_due(store)) == 1
    listing = json.loads(fleetscan("schedule", "list", "--json", db=db).stdout)["schedules"]
    assert [s["id"] for s in listing] == [sid] and listing[0]["last_run"] is not None
    assert fleetscan("schedule", "rm", sid, db=db).returncode == 0
    assert json.loads(fleetscan("schedule", "list", "--json", db=db).stdout) == {"schedules": []}


def test_two_masters_on_one_database_fire_once(tmp_path: Path, store_url: str) -> None:
    """Two real `fleetscan master` processes: the schedule's first occurrence runs once, to completion
    (on SQLite and on PostgreSQL, where both masters share the run task by task)."""
    db = store_url  # a fresh SQLite file or PostgreSQL database
    wf = noop_stage(tmp_path / "wf.yaml", "quick", sleep=0)
    out = fleetscan("schedule", "add", "quick", "--targets", "127.0.0.1-3", "--every", "1h", "--workflows", str(wf),
                    db=db)
    assert out.returncode == 0, out.stderr
    sid = out.stdout.strip()
    with FleetscanProcess("master", "--agents", "local:1", db=db), \
            FleetscanProcess("master", "--agents", "local:1", db=db):
        wait_until(lambda: query(db, "SELECT id FROM runs WHERE schedule_id = ? AND state = 'completed'", (sid,)),
                   90, "the scheduled run to complete")
        time.sleep(3)  # both masters ticked several more times meanwhile
        runs = query(db, "SELECT id, state FROM runs WHERE schedule_id = ?", (sid,))
    assert len(runs) == 1 and runs[0]["state"] == "completed"
    listing = fleetscan("schedule", "list", db=db)
    assert runs[0]["id"] in listing.stdout and "completed" in listing.stdout


@pytest.mark.parametrize(("argv", "field"), [
    (["add", "quick", "--targets", "127.0.0.1", "--every", "soon"], "--every"),
    (["add", "quick", "--targets", "127.0.0.1", "--every", "0m"], "--every"),
    (["add", "quick", "--targets", "127.0.0.1", "--every", "1h", "--window", "25:00-02:00"], "--window"),
    (["add", "quick", "--targets", "127.0.0.1", "--every", "1h", "--window", "08:00-08:00"], "--window"),
    (["add", "quick", "--targets", "127.0.0.1", "--every", "1h", "--notify", "ftp://127.0.0.1/x"], "--notify"),
    (["add", "quick", "--targets", "127.0.0.1", "--every", "1h", "--notify", "http://"], "--notify"),
    (["add", "nosuch", "--targets", "127.0.0.1", "--every", "1h"], "nosuch"),
    (["add", "quick", "--targets", "127.0.0.1/33", "--every", "1h"], "--targets"),
    (["add", "quick", "--every", "1h"], "--targets"),
    (["rm", "feedbeef"], "schedule"),
    (["pause", "feedbeef"], "schedule"),
    (["resume", "feedbeef"], "schedule"),
    (["rm", "abc"], "schedule"),  # shorter than a prefix may be
])
def test_bad_input_exit_2_nothing_written(tmp_path: Path, argv: list[str], field: str) -> None:
    db = tmp_path / "state.db"
    wf = noop_stage(tmp_path / "wf.yaml", "quick", sleep=0)
    with open_store(db) as store:
        sid = schedule(store)
        before = [(s.id, s.paused, s.next_due) for s in store.schedules.all()]
    out = fleetscan("schedule", *argv, "--workflows", str(wf), db=db)
    assert out.returncode == 2, out.stderr
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1 and field in out.stderr
    with open_store(db) as store:
        assert [(s.id, s.paused, s.next_due) for s in store.schedules.all()] == before
        assert runs_of(store, sid) == []
