"""Pilot tests of the results browser (r): paging by key, filters, export (e)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select

from console.store import open_store
from console.store.base import PAGE_SIZE
from console.store.rows import ResultFilter
from console.store.sqlite.results import SQLiteResults
from console.tui.results_browser import ExportScreen, ResultsScreen
from tests.fixtures.tui_data import RUN_RECON, fill_console_db
from tests.test_tui_main import SIZE, make_app, wait_for


@pytest.fixture
def big_db(tmp_path: Path) -> Path:
    # 250 results: 12 host_up (stage alive) and 238 port_open (stage ports)
    return fill_console_db(tmp_path / "console.db", results=250)


def table_ids(screen: ResultsScreen) -> list[int]:
    table = screen.query_one("#results-table", DataTable)
    return [int(str(row.key.value)) for row in table.ordered_rows]


def status(screen: ResultsScreen) -> str:
    return str(screen.query_one("#results-status").render())


async def open_browser(app, pilot) -> ResultsScreen:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: app.selected_run() is not None)
    await pilot.press("r")
    await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.pages_loaded > 0)
    return app.screen  # type: ignore[no-any-return]


async def test_r_pages_forward_back_and_to_the_end(big_db: Path) -> None:
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(app, pilot)
        assert screen.run_id == RUN_RECON
        size = PAGE_SIZE
        assert table_ids(screen) == list(range(1, size + 1))
        assert f"rows 1-{size} of 250" in status(screen)
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: screen.pages_loaded == 2)
        assert table_ids(screen) == list(range(size + 1, 2 * size + 1))
        await pilot.press("end")
        await wait_for(pilot, lambda: screen.pages_loaded == 3)
        assert table_ids(screen) == list(range(251 - size, 251))
        assert f"rows {251 - size}-250 of 250" in status(screen)
        await pilot.press("pageup")
        await wait_for(pilot, lambda: screen.pages_loaded == 4)
        assert table_ids(screen) == list(range(251 - 2 * size, 251 - size))
        await pilot.press("home")
        await wait_for(pilot, lambda: screen.pages_loaded == 5)
        assert table_ids(screen) == list(range(1, size + 1))
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ResultsScreen))


async def test_filters_by_type_stage_and_text(big_db: Path) -> None:
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(app, pilot)
        await wait_for(pilot, lambda: len(screen.query_one("#filter-type", Select)._options) > 1)
        loaded = screen.pages_loaded
        screen.query_one("#filter-type", Select).value = "host_up"
        await wait_for(pilot, lambda: screen.pages_loaded > loaded and screen.filter.type == "host_up")
        assert table_ids(screen) == list(range(1, 13))
        assert "of 12" in status(screen)
        loaded = screen.pages_loaded
        screen.query_one("#filter-type", Select).clear()
        screen.query_one("#filter-stage", Select).value = "ports"
        await wait_for(pilot, lambda: screen.pages_loaded > loaded and screen.filter.stage == "ports")
        assert "of 238" in status(screen)
        await pilot.press("f")
        assert isinstance(app.focused, Input)
        await pilot.press(*"127.0.0.5:")
        await wait_for(pilot, lambda: screen.filter.text == "127.0.0.5:" and "of 20" in status(screen))
        table = screen.query_one("#results-table", DataTable)
        keys = [str(table.get_row(k)[0]).split()[3] for k in table.rows]  # id stage type KEY ...
        assert len(keys) == 20 and all(k.startswith("127.0.0.5:") for k in keys)
        # LIKE wildcards in the text are literal
        screen.query_one("#filter-text", Input).value = "%_"
        await wait_for(pilot, lambda: screen.filter.text == "%_" and "no results match" in status(screen))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
async def test_e_exports_what_the_filters_select(big_db: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(app, pilot)
        await wait_for(pilot, lambda: len(screen.query_one("#filter-stage", Select)._options) > 1)
        loaded = screen.pages_loaded
        screen.query_one("#filter-stage", Select).value = "alive"
        await wait_for(pilot, lambda: screen.pages_loaded > loaded)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen))
        app.screen.query_one("#export-format", Select).value = fmt
        app.screen.query_one("#export-path", Input).value = str(out)
        await pilot.click("#export-ok")
        await wait_for(pilot, lambda: out.exists() and all(w.name != "export" for w in app.workers))
    text = out.read_text()
    if fmt == "jsonl":
        records = [json.loads(line) for line in text.splitlines()]
    elif fmt == "json":
        records = json.loads(text)
    else:
        records = list(csv.DictReader(text.splitlines()))
    assert len(records) == 12
    assert {r["stage"] for r in records} == {"alive"}


async def test_export_to_a_missing_directory_is_refused_inline(big_db: Path, tmp_path: Path) -> None:
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        await open_browser(app, pilot)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen))
        app.screen.query_one("#export-path", Input).value = str(tmp_path / "nope" / "x.jsonl")
        await pilot.click("#export-ok")
        await pilot.pause(0.1)
        assert isinstance(app.screen, ExportScreen)
        assert "no such directory" in str(app.screen.query_one("#export-error").render())
        await pilot.press("escape")
    assert not (tmp_path / "nope").exists()


def test_keyset_pages_never_read_more_than_a_page(big_db: Path) -> None:
    with open_store(big_db) as store:
        flt = ResultFilter(RUN_RECON)
        page = store.results.first_page(flt, limit=40)
        seen = [r.id for r in page.rows]
        while page.has_next:
            page = store.results.next_page(page, limit=40)
            assert len(page.rows) <= 40
            seen += [r.id for r in page.rows]
        assert seen == list(range(1, 251))
        back = store.results.prev_page(page, limit=40)
        assert [r.id for r in back.rows] == list(range(201, 241))
        assert back.offset == 200


async def test_a_screen_workers_failure_reaches_the_one_error_handler(
    big_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, run_id: str) -> list[str]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(SQLiteResults, "types", broken)
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        await open_browser(app, pilot)
        events = app.screen_stack[0].query_one("#events")
        await wait_for(pilot, lambda: any("disk on fire" in "".join(s.text for s in line)
                                          for line in events.lines))  # type: ignore[attr-defined]
        assert isinstance(app.screen, ResultsScreen)  # the browser stays usable


async def test_enter_shows_the_whole_record(big_db: Path) -> None:
    from console.tui.results_browser import RecordScreen

    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        await open_browser(app, pilot)
        await pilot.press("down", "enter")  # the second record
        await wait_for(pilot, lambda: isinstance(app.screen, RecordScreen))
        assert app.screen.row.id == 2  # type: ignore[attr-defined]
        assert app.screen.row.data_dict() == {"host": "127.0.0.2", "via": "tcp/22", "rtt_ms": 0.5}  # type: ignore[attr-defined]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen))
