"""Pilot tests: events in full (v, Enter), the run header, "waiting for a master", re-run (R and the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable

from console.store import open_store
from console.tui.events_screen import EventsScreen, TextScreen
from console.tui.failures_screen import FailuresScreen
from console.tui.panels import StagesPanel
from console.workflow.definition import freeze
from console.workflow.models import default_workflows_path, load_workflows
from tests.fixtures.tui_data import FROZEN_NOW, RUN_DONE, RUN_RECON, fill_console_db
from tests.test_tui_main import SIZE, make_app, wait_for

#: longer than any panel is wide, with a line break: only the full view shows all of it
LONG_REASON = "exec: program not found: " + "x" * 3000 + "\nsecond line of the reason"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = fill_console_db(tmp_path / "console.db")
    with open_store(path) as store, store.db.transaction() as conn:
        conn.execute("INSERT INTO events (id, ts, run_id, level, kind, message) VALUES (6, ?, ?, 'error', 'task', ?)",
                     (FROZEN_NOW - 5, RUN_RECON, LONG_REASON))
        # a real stored definition for the finished run (the fixture's are sketches): what a re-run serves
        recon = load_workflows(default_workflows_path()).get("recon")
        conn.execute("UPDATE runs SET workflow = 'recon', definition = ? WHERE id = ?",
                     (json.dumps(freeze("recon", recon)), RUN_DONE))
        conn.execute("UPDATE runs SET exclude = '127.0.0.9', max_rate = 500, host_rate = 20,"
                     " submitted_by = 'ops@console' WHERE id = ?", (RUN_RECON,))
    return path


async def test_enter_on_the_events_log_then_on_an_event_shows_its_whole_text(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        app.main.query_one("#events").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen) and bool(app.screen.events))
        screen = app.screen
        assert isinstance(screen, EventsScreen) and screen.run_id == RUN_RECON
        assert [e.id for e in screen.events] == [1, 2, 3, 4, 6]  # the run's own events, oldest first
        assert screen.query_one(DataTable).cursor_row == 4  # on the newest
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen))
        assert app.screen.body == LONG_REASON  # type: ignore[attr-defined]
        shown = str(app.screen.query_one("#full-text-body").render())
        assert "second line of the reason" in shown and "x" * 3000 in shown.replace("\n", "")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, EventsScreen))


async def test_enter_on_the_stages_lists_the_runs_failures(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        app.main.query_one("#stages").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen) and bool(app.screen.events))
        assert [e.id for e in app.screen.events] == [3, 4, 6]  # type: ignore[attr-defined]


def fail_tasks(db: Path) -> None:
    """Failed tasks as the master records them: two in "ports" (one with a long reason), one in "alive"."""
    with open_store(db) as store, store.db.transaction() as conn:
        tasks = [(101, "alive", "failed", "local-1", "alive: connect refused", FROZEN_NOW - 50),
                 (102, "ports", "done", "local-1", None, FROZEN_NOW - 45),
                 (103, "ports", "failed", "local-2", LONG_REASON, FROZEN_NOW - 40),
                 (104, "ports", "failed", "local-1", "ports: timed out", FROZEN_NOW - 30)]
        conn.executemany("INSERT INTO tasks (id, run_id, stage_id, seq, targets, state, agent, error, created, ended)"
                         " VALUES (?, ?, ?, 0, '[]', ?, ?, ?, ?, ?)",
                         [(tid, RUN_RECON, stage, state, agent, error, ended - 5, ended)
                          for tid, stage, state, agent, error, ended in tasks])
        conn.execute("UPDATE stages SET tasks_failed = CASE id WHEN 'alive' THEN 1 WHEN 'ports' THEN 2 ELSE 0 END,"
                     " tasks_total = CASE id WHEN 'alive' THEN 2 ELSE tasks_total END WHERE run_id = ?", (RUN_RECON,))


async def test_enter_on_a_failed_stage_lists_its_failed_tasks_and_enter_on_one_shows_its_reason(db: Path) -> None:
    fail_tasks(db)
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        stages = app.main.query_one(StagesPanel)
        await wait_for(pilot, lambda: stages.stage_ids == ["alive", "ports", "web"])
        stages.focus()
        await pilot.press("down")  # the cursor from "alive" to "ports"
        assert stages.current_stage is not None and stages.current_stage.id == "ports"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, FailuresScreen) and bool(app.screen.failures))
        screen = app.screen
        assert isinstance(screen, FailuresScreen) and (screen.run_id, screen.stage_id) == (RUN_RECON, "ports")
        # only that stage's failed tasks, first failed first: not alive's, not the done one
        assert [(f.task_id, f.agent) for f in screen.failures] == [(103, "local-2"), (104, "local-1")]
        await pilot.press("enter")  # the cursor is on the first: its reason whole
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen))
        assert app.screen.body == LONG_REASON  # type: ignore[attr-defined]
        shown = str(app.screen.query_one("#full-text-body").render())
        assert "second line of the reason" in shown and "x" * 3000 in shown.replace("\n", "")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, FailuresScreen))
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen))
        assert app.screen.body == "ports: timed out"  # type: ignore[attr-defined]
        await pilot.press("escape", "escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, FailuresScreen | TextScreen))
        await pilot.press("up", "enter")  # back on "alive": its one failure
        await wait_for(pilot, lambda: isinstance(app.screen, FailuresScreen) and bool(app.screen.failures))
        assert [f.error for f in app.screen.failures] == ["alive: connect refused"]  # type: ignore[attr-defined]


async def test_enter_on_a_stage_without_failed_tasks_lists_the_runs_warnings_and_errors(db: Path) -> None:
    fail_tasks(db)
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        stages = app.main.query_one(StagesPanel)
        await wait_for(pilot, lambda: stages.stage_ids == ["alive", "ports", "web"])
        stages.focus()
        await pilot.press("down", "down", "down")  # stops on the last stage, "web" (no failed task)
        assert stages.current_stage is not None and stages.current_stage.id == "web"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen) and bool(app.screen.events))
        assert app.screen.failures  # type: ignore[attr-defined]


async def test_header_shows_the_runs_request_and_a_run_no_master_holds_says_so(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None and app.views_drawn > 0)
        header = str(app.main.query_one("#run-header").render())
        for part in ("targets 127.0.0.0/24", "scope = targets", "exclude 127.0.0.9", "agents local", "priority 5",
                     "max-rate 500/s", "host-rate 20/s", "by ops@console"):
            assert part in header
        runs = app.main.query_one("#runs", DataTable)
        states = {str(k.value): str(runs.get_row(k)[2]) for k in runs.rows}
        # the fixture's running run has no owner; paused and completed runs need none
        assert states == {RUN_RECON: "waiting for a master", RUN_DONE: "completed", "e5f6a7b8": "paused"}


async def test_r_reruns_a_finished_run_with_the_same_inputs(db: Path) -> None:
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        await pilot.press("R")  # the selected run is running: refused, nothing written
        await pilot.pause(0.2)
        app.select_run(RUN_DONE)
        await wait_for(pilot, lambda: app.selected_run() is not None and app.selected_run().id == RUN_DONE)  # type: ignore[union-attr]
        await pilot.press("R")
        await wait_for(pilot, lambda: app.view is not None and len(app.view.runs) == 4)
    with open_store(db) as store:
        old = store.runs.get(RUN_DONE)
        new = next(r for r in store.runs.newest() if r.id not in (RUN_DONE, RUN_RECON, "e5f6a7b8"))
        assert (new.workflow, new.targets, new.agents, new.priority) == (old.workflow, old.targets, old.agents,
                                                                         old.priority)
        assert store.runs.definition(new.id) == store.runs.definition(RUN_DONE)
        assert str(new.state) == "pending"


def test_fleetscan_rerun_prints_the_new_id_and_refuses_an_unfinished_run(db: Path) -> None:
    def fleetscan(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "console.cli", "--db", str(db), *args],
                              capture_output=True, text=True, timeout=60)

    done = fleetscan("rerun", RUN_DONE)
    assert done.returncode == 0, done.stderr
    new_id = done.stdout.strip()
    with open_store(db) as store:
        new, old = store.runs.get(new_id), store.runs.get(RUN_RECON)
        assert new.workflow == "recon" and store.runs.definition(new_id) == store.runs.definition(RUN_DONE)
    running = fleetscan("rerun", RUN_RECON)
    assert running.returncode == 2 and "has not ended" in running.stderr and running.stderr.count("\n") == 1
    missing = fleetscan("rerun", "nosuchrun")
    assert missing.returncode == 2 and "nosuchrun" in missing.stderr
    with open_store(db) as store:
        assert len(store.runs.newest()) == 4 and str(old.state) == "running"

