"""The console's runs-over-time screens (Pilot): d changes (filterable), t schedules, i assets, m amend."""

from __future__ import annotations

import json
import time
from pathlib import Path

from textual.widgets import Input, Select

from console.store import open_store
from console.store.writes import NewSchedule
from console.tui.history_screens import AmendScreen, AssetsScreen, DiffScreen, SchedulesScreen
from console.tui.keyed_table import KeyedTable
from tests.fixtures.chaos import write_workflow
from tests.test_history_diff import EXPECTED, NEW, OLD, make_run
from tests.test_tui_main import SIZE, make_app, wait_for


def shown_keys(screen: DiffScreen) -> set[tuple[str, str, str, str]]:
    return {(c["change"], c["stage"], c["type"], c["key"]) for c in screen.shown()}


async def test_d_shows_the_selected_runs_changes_filterable(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with open_store(db) as store:
        make_run(store, OLD)
        new = make_run(store, NEW)
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        app.watcher.selected_run = new
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DiffScreen) and app.screen.loaded)
        screen = app.screen
        assert isinstance(screen, DiffScreen) and screen.run_id == new
        assert shown_keys(screen) == EXPECTED
        assert screen.query_one("#diff-table", KeyedTable).row_count == len(EXPECTED)
        screen.query_one("#diff-kind", Select).value = "changed"
        await wait_for(pilot, lambda: screen.query_one("#diff-table", KeyedTable).row_count == 4)
        assert {k for k in shown_keys(screen)} == {e for e in EXPECTED if e[0] == "changed"}
        screen.query_one("#diff-filter", Input).value = "fail"
        await wait_for(pilot, lambda: screen.query_one("#diff-table", KeyedTable).row_count == 1)
        assert shown_keys(screen) == {("changed", "base", "baseline", "box1:1001")}
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DiffScreen))


async def test_t_lists_schedules_with_last_run_changes_and_pauses(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with open_store(db) as store:
        make_run(store, OLD)
        sid = store.schedules.add(NewSchedule(
            workflow="fleet", definition={"stages": [{"id": "s", "tool": "noop"}]}, every_s=3600, window="22:00-04:00",
            first_due=time.time() + 600, targets="127.0.0.0/29"))
        last = make_run(store, NEW)
        store.db.conn.execute("UPDATE schedules SET last_run = ? WHERE id = ?", (last, sid))
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, SchedulesScreen) and app.screen.loads > 0)
        screen = app.screen
        assert isinstance(screen, SchedulesScreen)
        table = screen.query_one("#schedules-table", KeyedTable)
        row = [str(c) for c in table.get_row(sid)]
        assert row[:5] == [sid, "fleet", "1h", "22:00-04:00", "active"]
        assert row[6].startswith(last) and row[7] == str(len(EXPECTED))
        table.focus()
        await pilot.press("p")
        await wait_for(pilot, lambda: screen.views.get(sid, {}).get("paused") is True)
        with open_store(db) as store:
            assert store.schedules.get(sid).paused


async def test_i_shows_assets_and_m_amends_from_a_file(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    stage = {"id": "a", "tool": "noop", "with": {"sleep": 0}, "targets": {"from": "input", "type": "host"}}
    old = write_workflow(tmp_path / "old.yaml", "quick", [stage])
    new = write_workflow(tmp_path / "new.yaml", "quick", [{**stage, "with": {"sleep": 1}}])
    from console.workflow.submit import prepare_run

    with open_store(db) as store:
        make_run(store, OLD)
        run_id = prepare_run(workflows_file=old, workflow="quick", targets="127.0.0.1").create(store)
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, AssetsScreen) and app.screen.loaded)
        hosts = app.screen.query_one("#assets-table", KeyedTable).row_keys
        assert hosts == ["127.0.0.1", "127.0.0.2", "box1"]
        await pilot.press("escape")
        app.watcher.selected_run = run_id
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, AmendScreen))
        screen = app.screen
        field = screen.query_one("#amend-file", Input)
        field.value = str(tmp_path / "missing.yaml")
        field.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: "missing.yaml" in str(screen.query_one("#amend-error").render()),
                       why=lambda: str(screen.query_one("#amend-error").render()))
        field.value = str(new)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, AmendScreen))
    with open_store(db) as store:
        stored = json.loads(store.history.definition(run_id))
    assert stored["stages"][0]["with"]["sleep"] == 1


async def test_screens_fit_an_80x24_terminal(tmp_path: Path) -> None:
    """At 80x24 the help dialog stayed 96 columns wide (right border and text cut off), the d screen's
    filter row took the whole height (table squeezed to its header at the bottom, the kind select 2
    columns wide), and t/i left the main screen showing under a table of auto height."""
    db = tmp_path / "state.db"
    with open_store(db) as store:
        make_run(store, OLD)
        new = make_run(store, NEW)
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
        await pilot.pause(0.2)
        dialog = app.screen.query_one(".dialog")
        assert dialog.region.x >= 0 and dialog.region.right <= 80, dialog.region
        await pilot.press("escape")
        app.watcher.selected_run = new
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DiffScreen) and app.screen.loaded)
        await pilot.pause(0.2)
        assert app.screen.query_one("#diff-kind", Select).region.width >= 16
        table = app.screen.query_one("#diff-table", KeyedTable)
        assert table.region.height >= 12 and table.region.y <= 6, table.region
        await pilot.press("escape")
        for key, screen_type, table_id in (("t", SchedulesScreen, "#schedules-table"), ("i", AssetsScreen, "#assets-table")):
            await wait_for(pilot, lambda: not isinstance(app.screen, (DiffScreen, SchedulesScreen, AssetsScreen)))
            await pilot.press(key)
            await wait_for(pilot, lambda st=screen_type: isinstance(app.screen, st))  # type: ignore[misc]
            await pilot.pause(0.2)
            assert app.screen.query_one(table_id, KeyedTable).region.height >= 15, key
            await pilot.press("escape")


def test_every_console_screen_keeps_its_screen_styles() -> None:
    """The worker-error mixin listed first hid Screen/ModalScreen from Textual's CSS type names."""
    from console.tui.agents_screen import AgentsScreen
    from console.tui.events_screen import EventsScreen
    from console.tui.new_run import NewRunScreen
    from console.tui.results_browser import ResultsScreen

    for screen in (AgentsScreen, EventsScreen, DiffScreen, SchedulesScreen, AssetsScreen, ResultsScreen):
        assert "Screen" in screen._css_type_names, screen
    for modal in (AmendScreen, NewRunScreen):
        assert "ModalScreen" in modal._css_type_names, modal


async def test_new_run_and_amend_dialogs_are_centred_at_160x45(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with open_store(db) as store:
        make_run(store, OLD)
    app = make_app(db)
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        for key, name in (("n", "NewRunScreen"), ("m", "AmendScreen")):
            await pilot.press(key)
            await wait_for(pilot, lambda n=name: type(app.screen).__name__ == n)  # type: ignore[misc]
            await pilot.pause(0.2)
            box = app.screen.query_one(".dialog").region
            assert box.x > 0 and abs(box.x - (160 - box.right)) <= 1, (key, box)
            await pilot.press("escape")
            await wait_for(pilot, lambda n=name: type(app.screen).__name__ != n)  # type: ignore[misc]
