"""Small modal screens: a yes/no confirmation and the key help."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

HELP_KEYS = [
    ("Main screen", ""),
    ("n", "new run: pick a workflow, targets, scope, agents, priority"),
    ("p", "pause the selected run, or resume it when paused"),
    ("s", "stop the selected run (asks first; running tasks are cancelled)"),
    ("r", "results browser of the selected run: filter, page, export"),
    ("a", "agents: check a box, trust a new host key"),
    ("d", "changes of the selected run since the previous comparable run (filterable)"),
    ("t", "schedules: next run, last run and its changes; p pauses or resumes one"),
    ("i", "assets: the latest known state of every host"),
    ("m", "amend the selected run from a workflow file (stages not started)"),

    ("v", "the selected run's events; enter shows one in full"),
    ("enter", "on the events log: events in full; on a failed stage (↑ ↓ on the stages): its failed tasks"),
    ("R", "re-run the selected finished run with the same inputs"),
    ("↑ ↓", "select a run (its stages show below)"),
    ("ctrl+p", "command palette"),
    ("q", "quit (runs stay resumable and resume when the console reopens)"),
    ("Results browser", ""),
    ("pgdn / ]", "next page"),
    ("pgup / [", "previous page"),
    ("home / end", "first / last page"),
    ("j / k, g / G", "next / previous record (across pages), first / last record"),
    ("enter", "detail pane beside the list (follows the cursor)"),
    ("y", "copy the record as JSON to the clipboard (OSC 52)"),
    ("/ or f", "filter: stage=ID type=T port=443 status=fail name=ssh, or any text; escape clears"),
    ("s / S", "sort by the next column / reverse the order"),
    ("e", "export exactly what is listed (jsonl, csv, json), to the data dir by default"),
    ("Agents screen", ""),
    ("c", "check the selected box (connect, bootstrap, report)"),
    ("t", "trust the selected box's host key (shows its fingerprint first)"),
    ("escape", "back"),
]


class ConfirmScreen(ModalScreen[bool]):
    """Ask before something that cannot be undone; Enter/y confirms, Escape/n cancels."""

    BINDINGS = [
        Binding("escape,n", "cancel", "Cancel"),
        Binding("y", "confirm", "Confirm"),
    ]

    def __init__(self, question: str, confirm_label: str = "Yes", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button(self.confirm_label, variant="error", id="confirm")
                yield Button("Cancel", variant="default", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)


class HelpScreen(ModalScreen[None]):
    """Every key of the console on one page."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold #ffaf00", no_wrap=True)
        table.add_column()
        for key, text in HELP_KEYS:
            if text:
                table.add_row(key, text)
            else:
                table.add_row("", "")
                table.add_row(f"[bold #5fafff]{key}[/]", "")
        with Vertical(classes="dialog help"):
            yield Static("[b]fleetscan console: keys[/b]", classes="title")
            yield Static(table, id="help-keys")
            yield Static("[dim]escape closes[/dim]")

    def action_close(self) -> None:
        self.dismiss(None)
