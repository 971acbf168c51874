"""Snapshot tests (pytest-textual-snapshot): the console's screens at 120x40.

The database is deterministic (fixed ids, times and results), the clock is frozen
and the master is off, so the pictures only change when the console's look does.
Update on purpose with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the SVGs in ``tests/__snapshots__/`` before committing them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from console.store import open_store
from console.tui.agents_screen import AgentsScreen
from console.tui.app import FleetscanApp
from console.tui.events_screen import EventsScreen, TextScreen
from console.tui.failures_screen import FailuresScreen
from console.tui.new_run import NewRunScreen
from console.tui.panels import StageProgress, StagesPanel
from console.tui.results_browser import ResultsScreen
from tests.fixtures.tui_data import FROZEN_NOW, RUN_DONE, RUN_RECON, add_typed_results, fill_console_db
from tests.test_tui_events import fail_tasks
from tests.test_tui_new_run import WORKFLOWS

SIZE = (120, 40)
#: the smallest terminal the console supports, and a maximised one
SIZES = [(80, 24), (160, 45)]


async def settle(pilot: Pilot[Any], predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            break
        await pilot.pause(0.05)
    assert predicate(), "the screen did not settle"
    await pilot.pause(0.2)


@pytest.fixture
def snapshot_app(tmp_path: Path) -> FleetscanApp:
    (tmp_path / "snap").mkdir()
    db = fill_console_db(tmp_path / "snap" / "console.db", results=250)
    workflows = tmp_path / "snap" / "workflows.yaml"
    workflows.write_text(WORKFLOWS)
    return FleetscanApp(db, workflows, "local:2", start_master=False, clock=lambda: FROZEN_NOW,
                        poll_interval=0.05)


def main_ready(app: FleetscanApp) -> Callable[[], bool]:
    return lambda: app.views_drawn > 0 and len(app.query(StageProgress)) == 3


def test_main_screen(snap_compare: Any, snapshot_app: FleetscanApp) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, main_ready(snapshot_app))

    assert snap_compare(snapshot_app, terminal_size=SIZE, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen_sizes(snap_compare: Any, snapshot_app: FleetscanApp, size: tuple[int, int]) -> None:
    """The run header ("targets ... scope ... agents ... priority") and "waiting for a master" at both sizes."""
    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, main_ready(snapshot_app))

    assert snap_compare(snapshot_app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_an_event_in_full(snap_compare: Any, snapshot_app: FleetscanApp, size: tuple[int, int]) -> None:
    """v lists the run's events; Enter shows one whole, wrapped, however long."""
    app = snapshot_app
    with open_store(app.db_path) as store, store.db.transaction() as conn:
        conn.execute("INSERT INTO events (id, ts, run_id, level, kind, message) VALUES (6, ?, ?, 'error', 'task', ?)",
                     (FROZEN_NOW - 5, RUN_RECON, "task 9.1 failed on local-1: exec: program not found: "
                      + "/opt/tools/" + "very-long-directory-name/" * 12 + "scanner\nstderr: nothing more"))

    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, main_ready(app))
        await pilot.press("v")
        await settle(pilot, lambda: isinstance(app.screen, EventsScreen) and bool(app.screen.events))
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(app.screen, TextScreen))

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_stages_cursor_on_a_failed_stage(snap_compare: Any, snapshot_app: FleetscanApp, size: tuple[int, int]) -> None:
    """The Stages panel focused: the cursor (on "ports", moved down once) shows only while it has the focus."""
    app = snapshot_app
    fail_tasks(app.db_path)

    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, main_ready(app))
        app.main.query_one(StagesPanel).focus()
        await pilot.press("down")
        await settle(pilot, lambda: app.main.query_one(StagesPanel).cursor == 1)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_failed_stages_tasks(snap_compare: Any, snapshot_app: FleetscanApp, size: tuple[int, int]) -> None:
    """Enter on a failed stage: its failed tasks, each with its box and the first line of its reason."""
    app = snapshot_app
    fail_tasks(app.db_path)

    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, main_ready(app))
        app.main.query_one(StagesPanel).focus()
        await pilot.press("down", "enter")
        await settle(pilot, lambda: isinstance(app.screen, FailuresScreen) and bool(app.screen.failures))

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_new_run_modal_with_inline_errors(snap_compare: Any, snapshot_app: FleetscanApp, size: tuple[int, int]) -> None:
    """Every wrong field's message beside it; at 80x24 the fields scroll and Submit stays on screen."""
    app = snapshot_app

    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, main_ready(app))
        await pilot.press("n")
        await settle(pilot, lambda: isinstance(app.screen, NewRunScreen) and bool(app.screen.workflows))
        screen = app.screen
        assert isinstance(screen, NewRunScreen)
        screen.query_one("#in-targets").value = "127.0.0.1, not a target"  # type: ignore[attr-defined]
        screen.query_one("#in-scope").value = "-x"  # type: ignore[attr-defined]
        await pilot.press("ctrl+s")
        await settle(pilot, lambda: screen.query_one("#err-scope").display and not screen.submitting)
        # the focused field's cursor blinks every 0.5 s: held on, as a snapshot taken at once sees it (a
        # loaded machine took it in the off phase now and then)
        for field in screen.query(Input):
            field.cursor_blink = False
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_results_browser(snap_compare: Any, snapshot_app: FleetscanApp, size: tuple[int, int]) -> None:
    app = snapshot_app

    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, main_ready(app))
        await pilot.press("r")
        await settle(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.pages_loaded > 0)
        await pilot.press("pagedown")
        await settle(pilot, lambda: app.screen.pages_loaded > 1)  # type: ignore[attr-defined]

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_results_browser_types_and_detail_pane(snap_compare: Any, snapshot_app: FleetscanApp,
                                               size: tuple[int, int]) -> None:
    """Per-type details in colour (baseline pass/fail, service, HTTP, TLS expiry), the pane beside the list."""
    app = snapshot_app
    add_typed_results(app.db_path)

    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, main_ready(app))
        screen = ResultsScreen(app.db_path, RUN_DONE, "baseline")
        await app.push_screen(screen)
        await settle(pilot, lambda: screen.pages_loaded > 0 and screen.filters_loaded)
        await pilot.press("j", "enter")

    assert snap_compare(app, terminal_size=size, run_before=ready)


def test_agents_screen(snap_compare: Any, snapshot_app: FleetscanApp) -> None:
    app = snapshot_app

    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, main_ready(app))
        await pilot.press("a")
        await settle(pilot, lambda: isinstance(app.screen, AgentsScreen) and bool(app.screen.entries))

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_help_screen(snap_compare: Any, snapshot_app: FleetscanApp) -> None:
    async def ready(pilot: Pilot[Any]) -> None:
        await settle(pilot, main_ready(snapshot_app))

    assert snap_compare(snapshot_app, press=["question_mark"], terminal_size=SIZE, run_before=ready)
