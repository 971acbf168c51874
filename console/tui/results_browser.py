"""The results browser: one run's records, filtered, sorted, paged by key, exported to a file.

Only one page is ever read or drawn, so a run of 100,000 records browses as fast as one of
100. Filtering and sorting are reads of the store (``ResultFilter``): the browser never holds
more than the page it shows. Reads run on a thread worker with their own connection; the page
comes back as a message and only the handler draws it.

Keys: j/k (and the arrows) move, crossing pages; g/G the first and last record; pgup/pgdn page;
``/`` or f the filter (``port=443 status=fail name=ssh`` and free text); Escape in the filter
clears it and nothing more; s/S the sort column and direction; Enter the detail pane; y copies
the record (OSC 52); e exports exactly what is listed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from console.errors import FleetscanError
from console.store.base import PAGE_SIZE, Store
from console.store.rows import ResultFilter, ResultPage, ResultRow, parse_query
from console.tui import formatting as fmt
from console.tui.intents import opened_store
from console.tui.results_cells import (
    LINE_WIDTH,
    SORT_CYCLE,
    SORT_LABELS,
    header,
    page_line,
    record_json,
    record_text,
)
from console.tui.results_export import ExportScreen, default_export_path
from console.tui.worker_errors import ForwardWorkerErrors

__all__ = ["ExportScreen", "ResultsScreen"]

FILTER_HINT = "/ filter: stage=ID type=T port=443 status=fail name=ssh, or any text"
#: the keys in one line: a Footer is a widget per key, and every widget is restyled whenever the screen shows
KEYS = ("[b]esc[/b] back  [b]/[/b] filter  [b]s[/b]/[b]S[/b] sort  [b]enter[/b] detail  [b]y[/b] copy  "
        "[b]e[/b] export  [b]j[/b]/[b]k[/b] [b]g[/b]/[b]G[/b] move  [b]pgup[/b]/[b]pgdn[/b] page")


@dataclass
class PageLoaded(Message):
    page: ResultPage
    #: where the cursor goes: a row index (-1: the last row), or None to keep its place
    cursor: int | None


@dataclass
class FiltersLoaded(Message):
    stages: list[str]
    types: list[str]


@dataclass
class Exported(Message):
    path: str
    count: int
    error: str | None = None


class ResultsScreen(Screen[None], ForwardWorkerErrors):
    AUTO_FOCUS = "#results-table"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("q", "close", "Back", show=False),
        # priority: the table would otherwise scroll on these keys instead of paging
        Binding("pagedown,right_square_bracket", "next_page", "Next page", key_display="pgdn", priority=True),
        Binding("pageup,left_square_bracket", "prev_page", "Prev page", key_display="pgup", priority=True),
        Binding("home", "first_page", "First", show=False, priority=True),
        Binding("end", "last_page", "Last", show=False, priority=True),
        Binding("j", "down", "Down", show=False),
        Binding("k", "up", "Up", show=False),
        Binding("g", "top", "Top", show=False),
        Binding("G", "bottom", "Bottom", show=False),
        Binding("slash,f", "focus_filter", "Filter", key_display="/"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("enter", "detail", "Detail", show=False),
        Binding("y", "copy", "Copy"),
        Binding("e", "export", "Export"),
    ]

    def __init__(self, db_path: str | Path, run_id: str, workflow: str = "", *, store: Store | None = None,
                 first_page: ResultPage | None = None, **kwargs: Any) -> None:
        """``store`` and ``first_page``: read by the app before the screen was built (the screen
        then owns the store), so the first frame already has its rows."""
        super().__init__(**kwargs)
        self.db_path = db_path
        self.run_id = run_id
        self.workflow = workflow
        self.page: ResultPage | None = None
        self.filter = ResultFilter(run_id)
        self.pages_loaded = 0
        self.filters_loaded = False
        self._store: Store | None = store
        self._first_page = first_page
        self._fresh = True
        self._lock = threading.Lock()

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Results[/b] · run {self.run_id} {self.workflow}", id="results-title")
        # one box for every filter (stage=, type= and data fields, and text): a screen of few widgets
        # is built and styled fast, and what was typed is exactly what export takes
        yield Input(placeholder=FILTER_HINT, id="filter-text")
        with Horizontal(id="results-body"):
            table: DataTable[Any] = DataTable(id="results-table", cursor_type="row", zebra_stripes=True)
            yield table
            with VerticalScroll(id="results-detail"):
                yield Static("", id="detail-text")
        yield Static("", id="results-status")
        yield Static(KEYS, id="results-keys")

    def on_mount(self) -> None:
        table = self.query_one("#results-table", DataTable)
        table.add_column(header(self.filter.sort, self.filter.descending), key="row", width=LINE_WIDTH)
        self.query_one("#results-detail").display = False
        table.focus()
        if self._first_page is not None and self._first_page.filter == self.filter:
            self.show_page(PageLoaded(self._first_page, 0))
            self._first_page = None
            self.filters_loaded = True
            self.load_filters()
        else:
            self.load("first")

    def switch_run(self, run_id: str, workflow: str, store: Store, page: ResultPage) -> None:
        """Show another run (the app keeps one browser): its first page, read by the app with
        ``store``, which this screen now owns; filters, order and cursor start afresh."""
        with self._lock:
            if self._store is not None:
                self._store.close()
            self._store = store
        self.run_id, self.workflow = run_id, workflow
        self.filter = ResultFilter(run_id)
        self.page = None
        self.query_one("#results-title", Static).update(f"[b]Results[/b] · run {run_id} {workflow}")
        box = self.query_one("#filter-text", Input)
        box.value = ""
        box.placeholder = FILTER_HINT
        self._fresh = True
        self.show_page(PageLoaded(page, 0))
        self.filters_loaded = True
        self.load_filters()

    def on_screen_resume(self) -> None:
        """Shown again (the app keeps the last run's browser): re-read the page it was on."""
        self.query_one("#results-table", DataTable).focus()
        if self._fresh:  # the first showing: the page was just read
            self._fresh = False
        elif self.page is not None:
            self.load("refresh")

    # -- reading -------------------------------------------------------------------

    @contextmanager
    def _reader(self) -> Iterator[Store]:
        """The screen's own store, opened on first use, used by one worker at a time."""
        with self._lock:
            if self._store is None:
                from console.store import open_store

                self._store = open_store(self.db_path)
            yield self._store

    def on_unmount(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    @work(thread=True, group="results-filters", name="results filters", exit_on_error=False)
    def load_filters(self) -> None:
        with self._reader() as store:
            stages = [s.id for s in store.runs.stages(self.run_id)]
            types = store.results.types(self.run_id)
        self.post_message(FiltersLoaded(stages, types))

    @work(thread=True, exclusive=True, group="results-page", name="results page", exit_on_error=False)
    def load(self, where: str, cursor: int | None = 0) -> None:
        with self._reader() as store:
            results = store.results
            page, flt = self.page, self.filter
            if where == "next" and page is not None and page.filter == flt:
                new = results.next_page(page)
            elif where == "prev" and page is not None and page.filter == flt:
                new = results.prev_page(page)
            elif where == "last":
                new = results.last_page(flt)
            elif where == "refresh" and page is not None and page.filter == flt:
                new, cursor = results.same_page(page), None
            else:
                new = results.first_page(flt)
        self.post_message(PageLoaded(new, cursor))
        if not self.filters_loaded:  # after the first page: the page is what the operator waits for
            self.filters_loaded = True
            self.load_filters()

    @on(FiltersLoaded)
    def show_filters(self, message: FiltersLoaded) -> None:
        """The run's stages and types, named in the filter's placeholder: what stage= and type= take."""
        parts = [f"stage={'|'.join(message.stages)}" if message.stages else "",
                 f"type={'|'.join(message.types)}" if message.types else ""]
        self.query_one("#filter-text", Input).placeholder = f"/ filter: {' '.join(p for p in parts if p)} port=443" \
            " status=fail name=ssh, or any text"

    @on(PageLoaded)
    def show_page(self, message: PageLoaded) -> None:
        page = message.page
        self.page = page
        table = self.query_one("#results-table", DataTable)
        keep = table.cursor_row
        now = self._now()
        with self.app.batch_update():
            if table.columns and next(iter(table.columns.values())).label != header(page.filter.sort,
                                                                                    page.filter.descending):
                table.clear(columns=True)
                table.add_column(header(page.filter.sort, page.filter.descending), key="row", width=LINE_WIDTH)
            table.clear()  # a new page is new rows: the live tables elsewhere diff, a page is replaced
            for index, row in enumerate(page.rows):
                table.add_row(page_line(page.offset + index + 1, row, now), key=str(row.id))
            if page.rows:
                wanted = keep if message.cursor is None else message.cursor
                table.move_cursor(row=len(page.rows) - 1 if wanted < 0 else min(wanted, len(page.rows) - 1),
                                  animate=False)
        self._show_status()
        self._show_detail()
        self.pages_loaded += 1

    def _show_status(self) -> None:
        page = self.page
        if page is None:
            return
        if page.total == 0:
            status = "no results match" if self.filter.narrowed else "no results yet"
        else:
            first, last = page.offset + 1, page.offset + len(page.rows)
            pages = (page.total + PAGE_SIZE - 1) // PAGE_SIZE
            number = page.offset // PAGE_SIZE + 1
            status = f"rows {first:,}-{last:,} of {fmt.count(page.total)} · page {number:,}/{pages:,}"
        flt = page.filter
        order = SORT_LABELS[flt.sort] + (" ▼" if flt.descending else " ▲")
        self.query_one("#results-status", Static).update(f"{status} · sorted by {order}")

    def _now(self) -> float:
        """The app's clock (frozen in snapshots): TLS expiry colours are relative to it."""
        clock = getattr(self.app, "clock", time.time)
        return float(clock())

    # -- the record under the cursor -------------------------------------------------

    def current(self) -> tuple[int, ResultRow] | None:
        """(its number in the view, the record) under the cursor."""
        if self.page is None or not self.page.rows:
            return None
        index = min(max(self.query_one("#results-table", DataTable).cursor_row, 0), len(self.page.rows) - 1)
        return self.page.offset + index + 1, self.page.rows[index]

    def _show_detail(self) -> None:
        pane = self.query_one("#results-detail")
        if not pane.display or self.page is None:
            return
        current = self.current()
        body = self.query_one("#detail-text", Static)
        if current is None:
            body.update("No record.")
        else:
            body.update(record_text(current[0], self.page.total, current[1], self._now()))

    @on(DataTable.RowHighlighted, "#results-table")
    def row_highlighted(self) -> None:
        self._show_detail()

    @on(DataTable.RowSelected, "#results-table")
    def row_selected(self) -> None:
        self.action_detail()

    def action_detail(self) -> None:
        """Enter: show or hide the detail pane beside the list (it follows the cursor)."""
        if isinstance(self.focused, Input):
            raise SkipAction()
        pane = self.query_one("#results-detail")
        pane.display = not pane.display
        self._show_detail()

    def action_copy(self) -> None:
        current = self.current()
        if current is None:
            self.notify("No record to copy.", severity="warning")
            return
        self.app.copy_to_clipboard(record_json(current[1]))
        self.notify(f"Record {current[0]:,} copied to the clipboard (OSC 52).")

    # -- filters and order -------------------------------------------------------------

    def _refilter(self, sort: str | None = None, descending: bool | None = None) -> None:
        fields, text = parse_query(self.query_one("#filter-text", Input).value)
        # stage= and type= match exactly (the store's indexes serve them); the last one given wins
        exact = {name: value for name, value in fields if name in ("stage", "type")}
        new = ResultFilter(
            self.run_id,
            stage=exact.get("stage"),
            type=exact.get("type"),
            text=text,
            fields=tuple((name, value) for name, value in fields if name not in exact),
            sort=self.filter.sort if sort is None else sort,
            descending=self.filter.descending if descending is None else descending,
        )
        if new != self.filter:
            self.filter = new
            self.load("first")

    @on(Input.Submitted, "#filter-text")
    def text_submitted(self) -> None:
        self._refilter()
        self.query_one("#results-table", DataTable).focus()

    @on(Input.Changed, "#filter-text")
    def text_changed(self) -> None:
        self._refilter()

    def action_sort(self) -> None:
        """s: sort by the next column (arrival order, stage, type, key, target, agent, time)."""
        nxt = SORT_CYCLE[(SORT_CYCLE.index(self.filter.sort) + 1) % len(SORT_CYCLE)]
        self._refilter(sort=nxt, descending=False)

    def action_reverse(self) -> None:
        self._refilter(descending=not self.filter.descending)

    # -- moving ----------------------------------------------------------------------

    def _typing(self) -> None:
        """Keys like ``[`` and ``home`` belong to the text filter while it has focus."""
        if isinstance(self.focused, Input):
            raise SkipAction()

    def action_next_page(self) -> None:
        self._typing()
        if self.page is not None and self.page.has_next:
            self.load("next")

    def action_prev_page(self) -> None:
        self._typing()
        if self.page is not None and self.page.has_prev:
            self.load("prev")

    def action_first_page(self) -> None:
        self._typing()
        self.load("first")

    def action_last_page(self) -> None:
        self._typing()
        self.load("last", -1)

    def action_down(self) -> None:
        """j: the next record, onto the next page from the last row."""
        table = self.query_one("#results-table", DataTable)
        page = self.page
        if page is not None and table.cursor_row >= len(page.rows) - 1 and page.has_next:
            self.load("next", 0)
        else:
            table.action_cursor_down()

    def action_up(self) -> None:
        table = self.query_one("#results-table", DataTable)
        page = self.page
        if page is not None and table.cursor_row <= 0 and page.has_prev:
            self.load("prev", -1)
        else:
            table.action_cursor_up()

    def action_top(self) -> None:
        self.load("first", 0)

    def action_bottom(self) -> None:
        self.load("last", -1)

    def action_focus_filter(self) -> None:
        self.query_one("#filter-text", Input).focus()

    def action_back(self) -> None:
        """Escape: in the filter it clears the filter (and only that); in the list it goes back."""
        box = self.query_one("#filter-text", Input)
        if self.focused is box:
            if box.value:
                box.value = ""
            else:
                self.query_one("#results-table", DataTable).focus()
            return
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)

    # -- export ------------------------------------------------------------------------

    def action_export(self) -> None:
        flt = self.filter
        count = self.page.total if self.page is not None else None

        def chosen(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                self.export(answer[0], answer[1], flt)

        self.app.push_screen(ExportScreen(str(default_export_path(flt)), count=count), chosen)

    @work(thread=True, exclusive=True, group="export", name="export", exit_on_error=False)
    def export(self, path: str, fmt_name: str, flt: ResultFilter) -> None:
        from console.store.export import export_matching

        out_path = Path(path).expanduser().absolute()
        try:
            with opened_store(self.db_path) as store, out_path.open("w", encoding="utf-8", newline="") as out:
                count = export_matching(store, flt, fmt_name, out)
        except (OSError, FleetscanError) as err:
            self.post_message(Exported(str(out_path), 0, error=str(err)))
        else:
            self.post_message(Exported(str(out_path), count))

    @on(Exported)
    def exported(self, message: Exported) -> None:
        if message.error:
            self.notify(message.error, title="Export failed", severity="error")
        else:
            self.notify(f"{message.count:,} records written to {message.path}", title="Exported", timeout=10)
