"""Pilot tests of the console's main screen: live view, p, s, q, ?, the palette, CLI writes.

The master worker is off (``start_master=False``); the database is the deterministic
one from ``tests/fixtures/tui_data.py`` and writes from "another process" are made
through a second Store connection, exactly as the CLI makes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from console.store import open_store
from console.tui.app import FleetscanApp
from console.tui.dialogs import ConfirmScreen, HelpScreen
from console.tui.panels import FeedLog, RunsTable, StageProgress, StagesPanel
from tests.fixtures.tui_data import FROZEN_NOW, RUN_DONE, RUN_RECON, RUN_WEB, fill_console_db

SIZE = (120, 40)


async def wait_for(
    pilot: Pilot[int], predicate: Callable[[], bool], timeout: float = 20.0, why: Callable[[], str] = str
) -> None:
    """Poll the UI until ``predicate`` holds (a generous deadline: the machine is shared)."""
    loops = int(timeout / 0.05)
    for _ in range(loops):
        if predicate():
            return
        await pilot.pause(0.05)
    assert predicate(), f"condition not reached before the deadline {why()}"


@pytest.fixture
def console_db(tmp_path: Path) -> Path:
    return fill_console_db(tmp_path / "console.db")


def make_app(db: Path, **kwargs: object) -> FleetscanApp:
    return FleetscanApp(db, start_master=False, clock=lambda: FROZEN_NOW, poll_interval=0.05, **kwargs)  # type: ignore[arg-type]


def run_state(db: Path, run_id: str) -> str:
    store = open_store(db)
    try:
        return str(store.runs.get(run_id).state)
    finally:
        store.close()


def cell_text(app: FleetscanApp, run_id: str, column: str) -> str:
    value = app.query_one(RunsTable).get_cell(run_id, column)
    return str(getattr(value, "plain", value))


async def test_main_screen_shows_runs_stages_agents_and_feeds(console_db: Path) -> None:
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.views_drawn > 0 and len(app.query(StageProgress)) == 3)
        assert app.query_one(RunsTable).row_keys == [RUN_RECON, RUN_WEB, RUN_DONE]
        assert cell_text(app, RUN_RECON, "state") == "waiting for a master"  # running, but no master holds it
        assert cell_text(app, RUN_RECON, "results") == "40"
        assert [w.stage.id for w in app.query(StageProgress)] == ["alive", "ports", "web"]
        assert app.query_one("#agents").row_keys == ["local-1", "local-2"]  # type: ignore[attr-defined]
        assert app.query_one("#feed", FeedLog).last_id == 40
        assert app.query_one("#events", FeedLog).last_id == 5


async def test_selecting_a_run_shows_its_stages(console_db: Path) -> None:
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(app.query(StageProgress)) == 3)
        await pilot.press("down")
        await wait_for(pilot, lambda: [w.stage.id for w in app.query(StageProgress)] == ["probe"])
        assert app.watcher.selected_run == RUN_WEB
        assert RUN_WEB in str(app.query_one(StagesPanel).border_title)


async def test_cli_writes_show_up_in_place(console_db: Path) -> None:
    """A pause and a new run from another process appear; rows are updated, not refilled."""
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.views_drawn > 0)
        table = app.query_one(RunsTable)
        cursor_key = table.selected_key()
        other = open_store(console_db)
        try:
            other.runs.pause(RUN_RECON)
            new_id = other.runs.create("web", {"stages": [{"id": "probe", "tool": "http_probe"}]}, "127.0.0.1")
        finally:
            other.close()
        await wait_for(pilot, lambda: cell_text(app, RUN_RECON, "state") == "paused")
        await wait_for(pilot, lambda: new_id in table.row_keys)
        assert table.row_keys[0] == new_id  # newest first
        assert table.selected_key() == cursor_key  # the cursor stayed on its run


async def test_p_pauses_then_resumes_the_selected_run(console_db: Path) -> None:
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        await pilot.press("p")
        await wait_for(pilot, lambda: run_state(console_db, RUN_RECON) == "paused")
        await wait_for(pilot, lambda: cell_text(app, RUN_RECON, "state") == "paused")
        await pilot.press("p")
        await wait_for(pilot, lambda: run_state(console_db, RUN_RECON) == "pending")


async def test_s_asks_first_and_escape_keeps_the_run(console_db: Path) -> None:
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert RUN_RECON in app.screen.question  # type: ignore[attr-defined]
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        await pilot.pause(0.3)
        assert run_state(console_db, RUN_RECON) == "running"


async def test_s_then_confirm_stops_the_run(console_db: Path) -> None:
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.click("#confirm")
        # no live master owns the fixture's run, so the stop is immediate
        await wait_for(pilot, lambda: run_state(console_db, RUN_RECON) == "stopped")
        await wait_for(pilot, lambda: cell_text(app, RUN_RECON, "state") == "stopped")


async def test_s_on_an_ended_run_does_not_ask(console_db: Path) -> None:
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        await pilot.press("down", "down")
        table = app.query_one(RunsTable)
        await wait_for(pilot, lambda: app.watcher.selected_run == RUN_DONE,
                       why=lambda: f"{app.watcher.selected_run} {table.cursor_row} {app.focused}")
        await pilot.press("s")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmScreen)
        assert run_state(console_db, RUN_DONE) == "completed"


async def test_question_mark_opens_help_and_escape_closes_it(console_db: Path) -> None:
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))


async def test_palette_offers_every_action(console_db: Path) -> None:
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"New run", "Pause / resume run", "Stop run", "Results", "Agents", "Keys"} <= titles


async def test_q_quits_and_leaves_the_run_resumable(console_db: Path) -> None:
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.views_drawn > 0)
        app.simulate_key("q")  # pilot.press/pause would wait on a screen that is closing
        for _ in range(400):
            if app.return_value is not None:
                break
            await asyncio.sleep(0.05)
    assert app.return_value == 0
    assert run_state(console_db, RUN_RECON) == "running"


async def test_empty_database_invites_a_new_run(tmp_path: Path) -> None:
    app = make_app(tmp_path / "empty.db")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.views_drawn > 0)
        await pilot.press("p")  # nothing selected: a warning, no crash
        await pilot.pause(0.1)
        empty = app.query_one("#stages-empty")
        assert "Press n" in str(empty.render())


async def test_a_failing_worker_is_reported_once_in_the_events_log(console_db: Path) -> None:
    """The one Worker.StateChanged handler turns a worker's error into a notification and a log line."""
    app = make_app(console_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.views_drawn > 0)
        events = app.query_one("#events", FeedLog)
        lines_before = len(events.lines)
        app._toggle_pause("nosuchrun")  # a run deleted under the operator's feet
        await wait_for(pilot, lambda: len(events.lines) > lines_before)
        text = "".join(segment.text for segment in events.lines[-1])
        assert "pause/resume" in text and "nosuchrun" in text
        assert app.is_running  # an error in a worker never closes the console


async def test_a_master_that_fails_at_start_says_so_in_the_header_and_the_log(
    console_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure before the main screen is ready is kept and shown once it is; the header stops saying 'on'."""
    from console.master.scheduler import Master

    async def broken_serve(self: Master, **_: object) -> None:
        raise RuntimeError("no store for you")

    monkeypatch.setattr(Master, "serve", broken_serve)
    app = FleetscanApp(console_db, start_master=True, clock=lambda: FROZEN_NOW, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        events = app.query_one("#events", FeedLog)
        await wait_for(pilot, lambda: any("no store for you" in "".join(s.text for s in line) for line in events.lines))
        assert "master failed" in app.sub_title
