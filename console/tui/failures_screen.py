"""One stage's failed tasks, each with its reason, and Enter opens a task's reason whole.

Enter on a failed stage in the main screen's Stages panel comes here: the operator wants that
stage's failures, not the whole run's event log. The reasons are kept whole by the store (up
to 4,096 characters); they came from a box through the master, so they are shown as plain
``Text``, never markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from console.store.rows import TaskFailure
from console.tui import formatting as fmt
from console.tui.events_screen import TextScreen
from console.tui.intents import opened_store
from console.tui.worker_errors import ForwardWorkerErrors

#: the failed tasks the list reads (a stage has one task per batch of targets: rarely more)
FAILURES_SHOWN = 2000


@dataclass
class FailuresLoaded(Message):
    failures: list[TaskFailure]


def failure_cells(failure: TaskFailure) -> tuple[Text, ...]:
    first = failure.error.splitlines()[0] if failure.error else ""
    ended = fmt.clock_time(failure.ended) if failure.ended is not None else "-"
    return (Text(ended, style="dim"), Text(str(failure.task_id)), Text(failure.agent or "-", style="#87afd7"),
            Text(first + (" …" if "\n" in failure.error else ""), no_wrap=True, overflow="ellipsis"))


def failure_title(run_id: str, failure: TaskFailure) -> str:
    ended = f" · {fmt.clock_time(failure.ended)}" if failure.ended is not None else ""
    return (f"FAILED task {failure.task_id} · stage {failure.stage_id} · run {run_id}"
            f" · agent {failure.agent or '-'}{ended}")


class FailuresScreen(Screen[None], ForwardWorkerErrors):
    """The failed tasks of one stage of a run, first failed first; Enter shows one's reason whole."""

    AUTO_FOCUS = "#failures-table"
    BINDINGS = [Binding("escape,q", "close", "Back"), Binding("enter", "open", "Full reason")]

    def __init__(self, db_path: str | Path, run_id: str, stage_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db_path = db_path
        self.run_id = run_id
        self.stage_id = stage_id
        self.failures: list[TaskFailure] = []

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("Failed tasks", "bold"), f" · stage {self.stage_id} · run {self.run_id}"),
                     id="failures-title")
        yield DataTable(id="failures-table", cursor_type="row", zebra_stripes=True)
        yield Static("loading...", id="failures-status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#failures-table", DataTable)
        for label, width in (("Ended", 8), ("Task", 6), ("Agent", 12), ("Reason", None)):
            table.add_column(label, width=width)
        self.load()

    @work(thread=True, exclusive=True, name="failed tasks", exit_on_error=False)
    def load(self) -> None:
        with opened_store(self.db_path) as store:
            rows = store.runs.failures(self.run_id, limit=FAILURES_SHOWN, stage=self.stage_id)
        self.post_message(FailuresLoaded(rows))

    @on(FailuresLoaded)
    def show(self, message: FailuresLoaded) -> None:
        self.failures = message.failures
        table = self.query_one("#failures-table", DataTable)
        table.clear()
        for failure in self.failures:
            table.add_row(*failure_cells(failure), key=str(failure.task_id))
        count = len(self.failures)
        self.query_one("#failures-status", Static).update(
            f"{count:,} failed tasks · Enter shows a reason in full" if count else "no failed tasks")

    def action_open(self) -> None:
        table = self.query_one("#failures-table", DataTable)
        if self.failures and 0 <= table.cursor_row < len(self.failures):
            failure = self.failures[table.cursor_row]
            self.app.push_screen(TextScreen(failure_title(self.run_id, failure), failure.error))

    @on(DataTable.RowSelected, "#failures-table")
    def selected(self) -> None:
        self.action_open()

    def action_close(self) -> None:
        self.dismiss(None)
