"""The results browser: one run's records, filtered, paged by key, exported to a file.

Only one page (100 rows) is ever read or drawn, so a run of 100,000 records
browses as fast as one of 100. Reads run on a thread worker with their own
connection; the page comes back as a message and only the handler draws it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Select, Static

from console.errors import FleetscanError
from console.store.base import PAGE_SIZE, Store
from console.store.rows import ResultFilter, ResultPage, ResultRow
from console.tui import formatting as fmt
from console.tui.intents import opened_store
from console.tui.worker_errors import ForwardWorkerErrors

EXPORT_FORMATS = ("jsonl", "csv", "json")


@dataclass
class PageLoaded(Message):
    page: ResultPage


@dataclass
class FiltersLoaded(Message):
    stages: list[str]
    types: list[str]


@dataclass
class Exported(Message):
    path: str
    count: int
    error: str | None = None


#: fixed widths: the table never measures cells, and a page draws in one pass
COLUMNS = [("id", "#", 6), ("stage", "Stage", 9), ("type", "Type", 9), ("key", "Key", 26),
           ("target", "Target", 15), ("data", "Data", 48), ("agent", "Agent", 9), ("ts", "Time", 20)]
_WIDTHS = {key: width for key, _, width in COLUMNS}


def data_summary(row: ResultRow) -> str:
    data = row.data_dict()
    return ", ".join(f"{k}={v}" for k, v in data.items() if k not in ("host",))


def _cell(value: str, column: str, style: str = "") -> Text:
    """Text, not str: no markup parsing of what a scanned machine sent, and cut to the column."""
    width = _WIDTHS[column]
    value = fmt.safe(value)
    return Text(value if len(value) <= width else value[: width - 1] + "…", style=style, no_wrap=True)


def page_cells(row: ResultRow) -> tuple[Text, ...]:
    return (
        _cell(str(row.id), "id", "dim"),
        _cell(row.stage_id, "stage", "#87afd7"),
        _cell(row.type, "type", "#5fd75f"),
        _cell(row.key, "key"),
        _cell(row.target, "target"),
        _cell(data_summary(row), "data", "#a0a0a0"),
        _cell(row.agent, "agent", "dim"),
        _cell(row.ts, "ts", "dim"),
    )


def _join(cells: tuple[Text, ...]) -> Text:
    line = Text(no_wrap=True)
    for (_, _, width), cell in zip(COLUMNS, cells, strict=True):
        cell.pad_right(width - cell.cell_len)
        line.append_text(cell)
        line.append("  ")
    return line


#: A page is drawn as ONE cell per row (the columns laid out in the line itself): a DataTable
#: renders cell by cell, and 50 rows x 8 cells made the first paint of a page several times slower.
HEADER = _join(tuple(Text(label, style="bold") for _, label, _ in COLUMNS))
LINE_WIDTH = HEADER.cell_len


def page_line(row: ResultRow) -> Text:
    return _join(page_cells(row))


class ResultsScreen(ForwardWorkerErrors, Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Back"),
        # priority: the table would otherwise scroll on these keys instead of paging
        Binding("pagedown,right_square_bracket", "next_page", "Next page", key_display="pgdn", priority=True),
        Binding("pageup,left_square_bracket", "prev_page", "Prev page", key_display="pgup", priority=True),
        Binding("home", "first_page", "First", show=False, priority=True),
        Binding("end", "last_page", "Last", show=False, priority=True),
        Binding("f", "focus_filter", "Filter"),
        Binding("e", "export", "Export"),
    ]

    def __init__(self, db_path: str | Path, run_id: str, workflow: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db_path = db_path
        self.run_id = run_id
        self.workflow = workflow
        self.page: ResultPage | None = None
        self.filter = ResultFilter(run_id)
        self.pages_loaded = 0
        self.filters_loaded = False
        self._store: Store | None = None
        self._lock = threading.Lock()

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Results[/b] · run {self.run_id} {self.workflow}", id="results-title")
        with Horizontal(id="filters"):
            yield Select[str]([], prompt="all stages", id="filter-stage")
            yield Select[str]([], prompt="all types", id="filter-type")
            yield Input(placeholder="text in key, target or data", id="filter-text")
        table: DataTable[Any] = DataTable(id="results-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="results-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#results-table", DataTable)
        table.add_column(HEADER, key="row", width=LINE_WIDTH)
        table.focus()
        self.load("first")

    def on_screen_resume(self) -> None:
        """Shown again (the app keeps the last run's browser): re-read the page it was on."""
        if self.page is not None:
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
    def load(self, where: str) -> None:
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
                new = results.same_page(page)
            else:
                new = results.first_page(flt)
        self.post_message(PageLoaded(new))
        if not self.filters_loaded:  # after the first page: the page is what the operator waits for
            self.filters_loaded = True
            self.load_filters()

    @on(FiltersLoaded)
    def show_filters(self, message: FiltersLoaded) -> None:
        self.query_one("#filter-stage", Select).set_options((s, s) for s in message.stages)
        self.query_one("#filter-type", Select).set_options((t, t) for t in message.types)

    @on(PageLoaded)
    def show_page(self, message: PageLoaded) -> None:
        page = message.page
        self.page = page
        table = self.query_one("#results-table", DataTable)
        with self.app.batch_update():
            table.clear()  # a new page is new rows: the live tables elsewhere diff, a page is replaced
            for row in page.rows:
                table.add_row(page_line(row), key=str(row.id))
        if page.total == 0:
            status = "no results match" if self._filtered() else "no results yet"
        else:
            first, last = page.offset + 1, page.offset + len(page.rows)
            pages = (page.total + PAGE_SIZE - 1) // PAGE_SIZE
            number = page.offset // PAGE_SIZE + 1
            status = f"rows {first:,}-{last:,} of {fmt.count(page.total)} · page {number:,}/{pages:,}"
        self.query_one("#results-status", Static).update(status)
        self.pages_loaded += 1

    def _filtered(self) -> bool:
        return bool(self.filter.stage or self.filter.type or self.filter.text.strip())

    # -- filters ---------------------------------------------------------------------

    def _refilter(self) -> None:
        stage = self.query_one("#filter-stage", Select).value
        type_ = self.query_one("#filter-type", Select).value
        text = self.query_one("#filter-text", Input).value
        new = ResultFilter(
            self.run_id,
            stage=stage if isinstance(stage, str) else None,
            type=type_ if isinstance(type_, str) else None,
            text=text,
        )
        if new != self.filter:
            self.filter = new
            self.load("first")

    @on(Select.Changed)
    def select_changed(self) -> None:
        self._refilter()

    @on(Input.Submitted, "#filter-text")
    def text_submitted(self) -> None:
        self._refilter()
        self.query_one("#results-table", DataTable).focus()

    @on(Input.Changed, "#filter-text")
    def text_changed(self) -> None:
        self._refilter()

    # -- actions ---------------------------------------------------------------------

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
        self.load("last")

    def action_focus_filter(self) -> None:
        self.query_one("#filter-text", Input).focus()

    def action_close(self) -> None:
        self.dismiss(None)

    @on(DataTable.RowSelected, "#results-table")
    def open_record(self, event: DataTable.RowSelected) -> None:
        """Enter on a row: the whole record, data pretty-printed (the table cuts long values)."""
        if self.page is None or event.row_key.value is None:
            return
        wanted = int(event.row_key.value)
        row = next((r for r in self.page.rows if r.id == wanted), None)
        if row is not None:
            self.app.push_screen(RecordScreen(row))

    def action_export(self) -> None:
        flt = self.filter
        suffix = "-".join(p for p in (flt.stage, flt.type) if p)
        default = f"fleetscan-{self.run_id}{'-' + suffix if suffix else ''}.jsonl"

        def chosen(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                self.export(answer[0], answer[1], flt)

        self.app.push_screen(ExportScreen(default, filtered_by_text=bool(flt.text.strip())), chosen)

    @work(thread=True, exclusive=True, group="export", name="export", exit_on_error=False)
    def export(self, path: str, fmt_name: str, flt: ResultFilter) -> None:
        from console.store.export import export_results

        out_path = Path(path).expanduser()
        try:
            with opened_store(self.db_path) as store, out_path.open("w", encoding="utf-8", newline="") as out:
                count = export_results(store, self.run_id, fmt_name, out, stage=flt.stage, type_=flt.type)
        except (OSError, FleetscanError) as err:
            self.post_message(Exported(str(out_path), 0, error=str(err)))
        else:
            self.post_message(Exported(str(out_path), count))

    @on(Exported)
    def exported(self, message: Exported) -> None:
        if message.error:
            self.notify(message.error, title="Export failed", severity="error")
        else:
            self.notify(f"{message.count:,} records written to {message.path}", title="Exported")


class RecordScreen(ModalScreen[None]):
    """One result record in full. Its text came from a scanned machine: shown as plain text."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, row: ResultRow, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.row = row

    def compose(self) -> ComposeResult:
        row = self.row
        head = Text()
        for label, value in (("stage", row.stage_id), ("type", row.type), ("key", row.key),
                             ("target", row.target), ("agent", row.agent), ("time", row.ts)):
            head.append(f"{label:>7} ", style="bold #87afd7")
            head.append(f"{value}\n")
        body = Text(json.dumps(row.data_dict(), indent=2, ensure_ascii=False, sort_keys=True))
        with Vertical(classes="dialog record"):
            yield Static(Text(f"Result #{row.id}", style="bold"), classes="title")
            yield Static(head)
            with VerticalScroll(id="record-data"):
                yield Static(body)
            yield Static("[dim]escape closes[/dim]")

    def action_close(self) -> None:
        self.dismiss(None)


class ExportScreen(ModalScreen[tuple[str, str] | None]):
    """Where and in which format; returns (path, format)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default_path: str, filtered_by_text: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_path = default_path
        self.filtered_by_text = filtered_by_text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog export"):
            yield Static("[b]Export results[/b]", classes="title")
            with Horizontal(classes="field"):
                yield Label("Format", classes="field-label")
                yield Select[str]([(f, f) for f in EXPORT_FORMATS], value="jsonl", allow_blank=False,
                                  id="export-format")
            with Horizontal(classes="field"):
                yield Label("File", classes="field-label")
                yield Input(value=self.default_path, id="export-path")
            yield Static("", id="export-error", classes="field-error")
            if self.filtered_by_text:
                yield Static("[dim]The stage and type filters apply; the text filter does not.[/dim]")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="export-ok")
                yield Button("Cancel", id="export-cancel")

    def on_mount(self) -> None:
        self.query_one("#export-error", Static).display = False
        self.query_one("#export-path", Input).focus()

    @on(Select.Changed, "#export-format")
    def format_changed(self, event: Select.Changed) -> None:
        box = self.query_one("#export-path", Input)
        stem, dot, ext = box.value.rpartition(".")
        if dot and ext in EXPORT_FORMATS and isinstance(event.value, str):
            box.value = f"{stem}.{event.value}"

    @on(Input.Submitted, "#export-path")
    @on(Button.Pressed, "#export-ok")
    def action_ok(self) -> None:
        path = self.query_one("#export-path", Input).value.strip()
        fmt_value = self.query_one("#export-format", Select).value
        error = self.query_one("#export-error", Static)
        if not path:
            error.update("✗ file: give a file name")
            error.display = True
            return
        parent = Path(path).expanduser().parent
        if not parent.is_dir():
            error.update(f"✗ file: no such directory {str(parent)!r}")
            error.display = True
            return
        self.dismiss((path, str(fmt_value)))

    @on(Button.Pressed, "#export-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
