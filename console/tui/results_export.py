"""The export dialog: where and in which format, defaulting to the user's data dir.

The browser exports exactly what it lists (its stage, type, field and text filters, in its
order), so the dialog says how many records that is and writes nothing until asked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from console.store.rows import ResultFilter

EXPORT_FORMATS = ("jsonl", "csv", "json")


def export_dir() -> Path:
    """The platformdirs user data dir (where the default database lives too), created if missing."""
    import platformdirs

    path = Path(platformdirs.user_data_dir("fleetscan"))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return Path.cwd()
    return path


def default_export_path(flt: ResultFilter) -> Path:
    """``fleetscan-RUN[-stage-type-fields].jsonl`` in the data dir: the name says what was filtered."""
    parts = [p for p in (flt.stage, flt.type) if p]
    parts += [f"{name}-{value}" for name, value in flt.fields]
    if flt.text.strip():
        parts.append("text")
    suffix = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))[:60]
    return export_dir() / f"fleetscan-{flt.run_id}{'-' + suffix if suffix else ''}.jsonl"


class ExportScreen(ModalScreen[tuple[str, str] | None]):
    """Where and in which format; returns (path, format)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default_path: str, count: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.default_path = default_path
        self.count = count

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
            what = f"{self.count:,} records" if self.count is not None else "The records"
            yield Static(f"[dim]{what}: exactly what the browser lists, filters and order included.[/dim]",
                         id="export-what")
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
