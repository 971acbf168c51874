"""Pilot tests of the results browser (r): paging by key, filters, export (e)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Select

from console.store import open_store
from console.store.base import PAGE_SIZE, Store
from console.store.rows import ResultFilter, parse_query
from console.store.sqlite.results import SQLiteResults
from console.tui.results_browser import ExportScreen, ResultsScreen
from tests.fixtures.tui_data import RUN_DONE, RUN_RECON, add_typed_results, fill_console_db
from tests.test_tui_main import SIZE, make_app, wait_for


@pytest.fixture
def big_db(tmp_path: Path) -> Path:
    # 250 results: 12 host_up (stage alive) and 238 port_open (stage ports)
    return fill_console_db(tmp_path / "console.db", results=250)


@pytest.fixture
def big_store(store_url: str) -> Path:
    """The same records in a fresh SQLite file or PostgreSQL database (the store-level tests run on both)."""
    return fill_console_db(store_url, results=250)  # type: ignore[arg-type]


def table_ids(screen: ResultsScreen) -> list[int]:
    table = screen.query_one("#results-table", DataTable)
    return [int(str(row.key.value)) for row in table.ordered_rows]


def status(screen: ResultsScreen) -> str:
    return str(screen.query_one("#results-status").render())


async def open_browser(app, pilot) -> ResultsScreen:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: app.selected_run() is not None)
    await pilot.press("r")
    # the page is drawn first and counted after (r reads it without its count): wait for both
    await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.pages_loaded > 0
                   and app.screen.page is not None and app.screen.page.counted)
    return app.screen  # type: ignore[no-any-return]


async def test_paging_at_once_from_the_page_shown_before_its_count(big_db: Path) -> None:
    """r draws the first page before counting: a page key pressed before the count arrives pages right."""
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.selected_run() is not None)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.pages_loaded > 0)
        screen = app.screen
        assert isinstance(screen, ResultsScreen)
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: screen.pages_loaded == 2)
        assert table_ids(screen) == list(range(PAGE_SIZE + 1, 2 * PAGE_SIZE + 1))
        assert screen.page is not None and screen.page.counted and screen.page.has_next
        assert f"rows {PAGE_SIZE + 1}-{2 * PAGE_SIZE} of 250" in status(screen)


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
        box = screen.query_one("#filter-text", Input)
        # the placeholder names what stage= and type= take, from the run's definition
        await wait_for(pilot, lambda: "stage=alive|ports|web" in box.placeholder)
        loaded = screen.pages_loaded
        box.value = "type=host_up"
        await wait_for(pilot, lambda: screen.pages_loaded > loaded and screen.filter.type == "host_up")
        assert table_ids(screen) == list(range(1, 13))
        assert "of 12" in status(screen)
        loaded = screen.pages_loaded
        box.value = "stage=ports"
        await wait_for(pilot, lambda: screen.pages_loaded > loaded and screen.filter.stage == "ports"
                       and screen.filter.type is None)
        assert "of 238" in status(screen)
        box.value = ""
        await pilot.press("f")
        assert isinstance(app.focused, Input)
        await pilot.press(*"stage=ports 127.0.0.5:")
        await wait_for(pilot, lambda: screen.filter.text == "127.0.0.5:" and "of 20" in status(screen))
        assert screen.filter.stage == "ports"
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
        loaded = screen.pages_loaded
        screen.query_one("#filter-text", Input).value = "stage=alive"
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


async def test_enter_opens_the_detail_pane_that_follows_j_k_and_y_copies(big_db: Path) -> None:
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(app, pilot)
        pane = screen.query_one("#results-detail")
        assert not pane.display
        await pilot.press("j", "enter")  # the second record
        assert pane.display
        text = str(screen.query_one("#detail-text").render())
        assert "Record 2 of 250" in text and '"via": "tcp/22"' in text and "127.0.0.2" in text
        await pilot.press("j")
        assert "Record 3 of 250" in str(screen.query_one("#detail-text").render())
        await pilot.press("k", "y")
        assert json.loads(app.clipboard) == {
            "run": RUN_RECON, "stage": "alive", "type": "host_up", "key": "127.0.0.2", "target": "127.0.0.2",
            "agent": "local-1", "task": None, "ts": "2025-11-25T12:00:01Z",
            "data": {"host": "127.0.0.2", "via": "tcp/22", "rtt_ms": 0.5},
        }
        await pilot.press("enter")
        assert not pane.display


async def test_opens_on_the_table_and_vim_keys_cross_pages(big_db: Path) -> None:
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(app, pilot)
        table = screen.query_one("#results-table", DataTable)
        assert app.focused is table
        await pilot.press("G")
        await wait_for(pilot, lambda: screen.pages_loaded == 2)
        assert table_ids(screen)[-1] == 250 and table.cursor_row == len(table_ids(screen)) - 1
        await pilot.press("j")  # nothing after the last record
        await pilot.press("g")
        await wait_for(pilot, lambda: screen.pages_loaded == 3)
        assert table.cursor_row == 0 and table_ids(screen)[0] == 1
        for _ in range(PAGE_SIZE - 1):
            await pilot.press("j")
        assert table.cursor_row == PAGE_SIZE - 1
        await pilot.press("j")  # past the page's last row: the next page, cursor on its first
        await wait_for(pilot, lambda: screen.pages_loaded == 4)
        assert table_ids(screen)[0] == PAGE_SIZE + 1 and table.cursor_row == 0
        await pilot.press("k")  # and back onto the previous page's last row
        await wait_for(pilot, lambda: screen.pages_loaded == 5)
        assert table_ids(screen)[-1] == PAGE_SIZE and table.cursor_row == PAGE_SIZE - 1


def first_cells(screen: ResultsScreen) -> list[str]:
    table = screen.query_one("#results-table", DataTable)
    return [str(table.get_row(k)[0]).split()[0] for k in table.rows]


async def test_field_filter_slash_escape_and_local_row_numbers(big_db: Path) -> None:
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(app, pilot)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"host=127.0.0.5")
        # ports 20+i for i in 12..249 with i % 12 == 4 on 127.0.0.5, and its host_up: 20 + 1
        await wait_for(pilot, lambda: "of 21" in status(screen))
        assert screen.filter.fields == (("host", "127.0.0.5"),)
        assert first_cells(screen) == [str(n) for n in range(1, 22)]  # 1..N in the view, not the ids
        assert table_ids(screen)[:2] == [5, 17]
        await pilot.press("escape")  # clears the filter, stays on the screen and in the box
        await wait_for(pilot, lambda: "of 250" in status(screen))
        assert isinstance(app.screen, ResultsScreen) and isinstance(app.focused, Input)
        assert screen.query_one("#filter-text", Input).value == ""
        await pilot.press("escape")
        assert app.focused is screen.query_one("#results-table")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ResultsScreen))


async def test_s_sorts_by_column_and_shift_s_reverses(big_db: Path) -> None:
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(app, pilot)
        await pilot.press("S")
        await wait_for(pilot, lambda: screen.filter.descending and screen.pages_loaded == 2)
        assert table_ids(screen)[:3] == [250, 249, 248] and first_cells(screen)[:3] == ["1", "2", "3"]
        for _ in range(3):  # arrival -> stage -> type -> key
            await pilot.press("s")
        await wait_for(pilot, lambda: screen.filter.sort == "key" and screen.page is not None
                       and screen.page.filter.sort == "key")
        with open_store(big_db) as store:
            keys = sorted(r.key for rows in store.results.matching(ResultFilter(RUN_RECON)) for r in rows)
        table = screen.query_one("#results-table", DataTable)
        assert [str(table.get_row(k)[0]).split()[3] for k in table.rows] == keys[:PAGE_SIZE]
        assert "sorted by Key ▲" in status(screen)


async def test_types_get_their_own_coloured_detail(big_db: Path) -> None:
    from console.tui.results_cells import FAIL, PASS, WARN, page_line

    add_typed_results(big_db)
    with open_store(big_db) as store:
        rows = {r.type + r.key: r for rows in store.results.matching(ResultFilter(RUN_DONE)) for r in rows}

    def styled(key: str, word: str) -> str:
        line = page_line(1, rows[key], now=1_764_072_000.0)
        start = line.plain.index(word)
        return " ".join(str(span.style) for span in line.spans if span.start <= start < span.end)

    assert styled("baselinebox1:ssh-root", "FAIL") == FAIL
    assert styled("baselinebox1:tmp-noexec", "PASS") == PASS
    assert styled("service127.0.0.7:22", "ssh ") and "OpenSSH 9.6" in page_line(1, rows["service127.0.0.7:22"]).plain
    assert styled("httphttp://127.0.0.7:8080/", "404") == WARN
    assert "Not Found" in page_line(1, rows["httphttp://127.0.0.7:8080/"]).plain
    assert styled("tls_cert127.0.0.7:443", "expired 2021-01-01") == FAIL


async def test_export_writes_exactly_the_view_into_the_data_dir(big_db: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(app, pilot)
        screen.query_one("#filter-text", Input).value = "host=127.0.0.5 :2"
        await wait_for(pilot, lambda: screen.filter.text == ":2" and screen.page is not None
                       and screen.page.filter == screen.filter)
        await pilot.press("S")
        await wait_for(pilot, lambda: screen.page is not None and screen.page.filter.descending)
        shown = screen.page.total if screen.page else 0
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, ExportScreen))
        path = Path(app.screen.query_one("#export-path", Input).value)
        assert path.parent == tmp_path / "data" / "fleetscan" and path.name.startswith(f"fleetscan-{RUN_RECON}")
        await pilot.click("#export-ok")
        await wait_for(pilot, lambda: path.exists() and all(w.name != "export" for w in app.workers))
        # and the console says where it wrote
        await wait_for(pilot, lambda: any(str(path) in n.message for n in app._notifications))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    # field truth: the fixture's ports on 127.0.0.5 are 20+i for i = 16, 28, ... ; ":2" keeps those whose key has ":2"
    expected = sorted((20 + i for i in range(12, 250) if i % 12 == 4 and ":2" in f"127.0.0.5:{20 + i}/tcp"),
                      reverse=True)
    assert [r["data"]["port"] for r in records] == expected and len(records) == shown


# -- the store's side: sorting and field filters are reads of the store ---------------------


def test_parse_query_splits_fields_from_free_text() -> None:
    assert parse_query("port=443 ssh  status=FAIL x=") == ((("port", "443"), ("status", "FAIL")), "ssh x=")
    assert parse_query("a-b=1 =2") == ((), "a-b=1 =2")  # not identifiers: free text, never a JSON path
    with pytest.raises(ValueError):
        ResultFilter(RUN_RECON, fields=(("$.x", "1"),))
    with pytest.raises(ValueError):
        ResultFilter(RUN_RECON, sort="data; DROP TABLE results")


def _walk(store: Store, flt: ResultFilter, limit: int) -> list[int]:
    page = store.results.first_page(flt, limit=limit)
    seen = [r.id for r in page.rows]
    while page.has_next:
        page = store.results.next_page(page, limit=limit)
        seen += [r.id for r in page.rows]
    return seen


@pytest.mark.parametrize("sort", ["key", "target", "ts", "stage", "id"])
@pytest.mark.parametrize("descending", [False, True])
def test_sorted_keyset_pages_walk_the_whole_order(big_store: Path, sort: str, descending: bool) -> None:
    with open_store(big_store) as store:
        flt = ResultFilter(RUN_RECON, sort=sort, descending=descending)
        every = [r for rows in store.results.matching(flt, batch=7) for r in rows]
        expected = sorted(every, key=lambda r: (r.sort_value(sort), r.id), reverse=descending)
        assert [r.id for r in every] == [r.id for r in expected] and len(every) == 250
        assert _walk(store, flt, 40) == [r.id for r in expected]
        last = store.results.last_page(flt, limit=40)
        assert [r.id for r in last.rows] == [r.id for r in expected[-40:]]
        back = store.results.prev_page(last, limit=40)
        assert [r.id for r in back.rows] == [r.id for r in expected[-80:-40]] and back.offset == 250 - 80
        again = store.results.same_page(back, limit=40)
        assert [r.id for r in again.rows] == [r.id for r in back.rows]


def test_field_filters_match_columns_and_data_fields(big_store: Path) -> None:
    add_typed_results(big_store)
    with open_store(big_store) as store:
        def ids(run: str, query: str) -> list[str]:
            fields, text = parse_query(query)
            return [r.key for rows in store.results.matching(ResultFilter(run, fields=fields, text=text))
                    for r in rows]

        # the fixture writes port 20+i for i in 12..249: port 100 is i = 80, host 127.0.0.((80 % 12) + 1)
        assert ids(RUN_RECON, "port=100") == ["127.0.0.9:100/tcp"]
        assert ids(RUN_RECON, "port=100 host=127.0.0.1") == []
        assert len(ids(RUN_RECON, "type=HOST_UP")) == 12
        assert ids(RUN_DONE, "status=fail") == ["box1:ssh-root"]
        assert ids(RUN_DONE, "status=404") == ["http://127.0.0.7:8080/"]
        assert ids(RUN_DONE, "name=ssh") == ["127.0.0.7:22"]
        assert ids(RUN_DONE, "name=ssh openssh") == ["127.0.0.7:22"]
        assert ids(RUN_DONE, "name=ssh nginx") == []


async def test_one_browser_is_re_pointed_at_another_run(big_db: Path) -> None:
    """The app keeps one browser: r on another run shows that run's records, with its filters
    and row numbers afresh; back on the first run, its records again."""
    add_typed_results(big_db)
    app = make_app(big_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_browser(app, pilot)
        screen.query_one("#filter-text", Input).value = "port=100"
        await wait_for(pilot, lambda: "of 1 " in status(screen))
        await pilot.press("escape", "escape", "escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ResultsScreen))
        app.select_run(RUN_DONE)
        await wait_for(pilot, lambda: app.selected_run() is not None and app.selected_run().id == RUN_DONE)  # type: ignore[union-attr]
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.run_id == RUN_DONE
                       and app.screen.page is not None and app.screen.page.filter.run_id == RUN_DONE)
        assert app.screen is screen and screen.filter == ResultFilter(RUN_DONE)
        assert "of 5 " in status(screen) and first_cells(screen) == ["1", "2", "3", "4", "5"]
        assert screen.query_one("#filter-text", Input).value == ""
        await wait_for(pilot, lambda: "type=baseline|" in screen.query_one("#filter-text", Input).placeholder
                       or "type=" in screen.query_one("#filter-text", Input).placeholder)
        await pilot.press("escape")
        app.select_run(RUN_RECON)
        await wait_for(pilot, lambda: app.selected_run() is not None and app.selected_run().id == RUN_RECON)  # type: ignore[union-attr]
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and screen.run_id == RUN_RECON
                       and screen.page is not None and screen.page.filter.run_id == RUN_RECON)
        assert "of 250" in status(screen) and table_ids(screen)[:2] == [1, 2]
