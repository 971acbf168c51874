"""Events in full: a run's event log (or every event) as a list, and Enter opens one whole.

The main screen's Events panel cuts a line at its width; failure reasons are kept whole
by the store (up to 4,096 characters) and this is where the operator reads them. Every
text came from the master or, through it, from a box: shown as plain ``Text``, never markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Static

from console.store.rows import EventRow
from console.tui import formatting as fmt
from console.tui.intents import opened_store
from console.tui.worker_errors import ForwardWorkerErrors

#: the newest events the list reads (the CLI's `fleetscan events` has them all)
EVENTS_SHOWN = 2000


@dataclass
class EventsLoaded(Message):
    events: list[EventRow]


def event_cells(event: EventRow) -> tuple[Text, ...]:
    level = {"warning": "WARN"}.get(event.level, event.level).upper()
    first = event.message.splitlines()[0] if event.message else ""
    return (Text(fmt.clock_time(event.ts), style="dim"), Text(level, style=fmt.level_style(event.level)),
            Text(event.kind, style="#87afd7"), Text(fmt.short_id(event.run_id or "-", 8), style="dim"),
            Text(first + (" …" if "\n" in event.message else ""), no_wrap=True, overflow="ellipsis"))


def matches(event: EventRow, needle: str) -> bool:
    return not needle or needle.lower() in event.message.lower() or needle.lower() == event.kind.lower()


class EventsScreen(Screen[None], ForwardWorkerErrors):
    """A run's events (all when ``run_id`` is None), newest last; ``needle`` narrows to those naming it."""

    AUTO_FOCUS = "#events-table"
    BINDINGS = [Binding("escape,q", "close", "Back"), Binding("enter", "open", "Full text")]

    def __init__(self, db_path: str | Path, run_id: str | None, needle: str = "", failures: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db_path = db_path
        self.run_id = run_id
        self.needle = needle
        self.failures = failures
        self.events: list[EventRow] = []

    def compose(self) -> ComposeResult:
        what = f"run {self.run_id}" if self.run_id else "every run and the fleet"
        narrowed = f" · naming {self.needle!r}" if self.needle else ""
        narrowed += " · warnings and errors" if self.failures else ""
        yield Static(Text.assemble(("Events", "bold"), f" · {what}{narrowed}"), id="events-title")
        yield DataTable(id="events-table", cursor_type="row", zebra_stripes=True)
        yield Static("loading...", id="events-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#events-table", DataTable)
        for label, width in (("Time", 8), ("Level", 5), ("Kind", 10), ("Run", 8), ("Message", None)):
            table.add_column(label, width=width)
        self.load()

    @work(thread=True, exclusive=True, name="events", exit_on_error=False)
    def load(self) -> None:
        with opened_store(self.db_path) as store:
            rows = store.events.recent(self.run_id, limit=EVENTS_SHOWN)
        self.post_message(EventsLoaded(rows))

    @on(EventsLoaded)
    def show(self, message: EventsLoaded) -> None:
        events = [e for e in message.events if matches(e, self.needle)
                  and (not self.failures or e.level in ("warning", "error"))]
        self.events = events
        table = self.query_one("#events-table", DataTable)
        table.clear()
        for event in events:
            table.add_row(*event_cells(event), key=str(event.id))
        if events:
            table.move_cursor(row=len(events) - 1, animate=False)
        self.query_one("#events-status", Static).update(
            f"{len(events):,} events · Enter shows one in full" if events else "no events")

    def action_open(self) -> None:
        table = self.query_one("#events-table", DataTable)
        if self.events and 0 <= table.cursor_row < len(self.events):
            self.app.push_screen(TextScreen(event_title(self.events[table.cursor_row]),
                                            self.events[table.cursor_row].message))

    @on(DataTable.RowSelected, "#events-table")
    def selected(self) -> None:
        self.action_open()

    def action_close(self) -> None:
        self.dismiss(None)


def event_title(event: EventRow) -> str:
    run = f" · run {event.run_id}" if event.run_id else ""
    return f"{event.level.upper()} {event.kind}{run} · {fmt.clock_time(event.ts)}"


class TextScreen(ModalScreen[None]):
    """One text in full (an event's message, a failure reason), scrollable, as plain text."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close"), Binding("y", "copy", "Copy")]

    def __init__(self, title: str, body: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog full-text"):
            yield Static(Text(self.title_text, style="bold"), classes="title")
            with VerticalScroll(id="full-text"):
                yield Static(Text(self.body), id="full-text-body")
            yield Static(f"[dim]{len(self.body):,} characters · y copies · escape closes[/dim]")

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.body)
        self.notify("Copied to the clipboard (OSC 52).")

    def action_close(self) -> None:
        self.dismiss(None)
