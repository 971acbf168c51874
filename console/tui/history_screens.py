"""Runs over time in the console: a run's changes (d), the schedules (t), the assets (i), amend (m).

Each screen reads the store on a thread worker with its own connection and posts what it read; only
message handlers touch widgets. Text from scanned machines is drawn as ``Text``, never as markup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Select, Static

from console.errors import FleetscanError
from console.tui.keyed_table import KeyedTable
from console.tui.worker_errors import ForwardWorkerErrors

#: at most this many changes are held by the diff screen (the status line says how many there were)
MAX_DIFF_ROWS = 20_000
STYLES = {"added": "bold #5fd75f", "removed": "bold #ff5f5f", "changed": "bold #ffaf00"}


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _open(db_path: str | Path) -> Any:
    from console.store import open_store

    return open_store(db_path)


# -- d: a run's changes against the previous comparable run ------------------------------------------


@dataclass
class DiffLoaded(Message):
    old: str | None
    changes: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    error: str | None = None


class DiffScreen(Screen[None], ForwardWorkerErrors):
    BINDINGS = [Binding("escape", "close", "Back"), Binding("f", "focus_filter", "Filter")]

    def __init__(self, db_path: str | Path, run_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db_path = db_path
        self.run_id = run_id
        self.changes: list[dict[str, Any]] = []
        self.total = 0
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Static(Text(f"Changes of run {self.run_id}", style="bold"), id="diff-title")
        with Horizontal(id="diff-filters"):
            yield Select([(k, k) for k in ("added", "removed", "changed")], prompt="every change", id="diff-kind")
            yield Input(placeholder="filter: stage, type, key or value", id="diff-filter")
        yield KeyedTable([("change", "Change"), ("stage", "Stage"), ("type", "Type"), ("key", "Key"),
                          ("what", "What changed")], id="diff-table")
        yield Static("Comparing...", id="diff-status")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, name="diff", exit_on_error=False)
    def load(self) -> None:
        from console.history.diff import diff_runs

        store = _open(self.db_path)
        try:
            prev = store.history.previous_run(self.run_id)
            if prev is None:
                self.post_message(DiffLoaded(None, error="no earlier completed run of this workflow and targets"))
                return
            kept: list[dict[str, Any]] = []
            total = 0
            for change in diff_runs(store, prev.id, self.run_id):
                total += 1
                if len(kept) < MAX_DIFF_ROWS:
                    kept.append(change)
            self.post_message(DiffLoaded(prev.id, kept, total))
        except FleetscanError as err:
            self.post_message(DiffLoaded(None, error=str(err)))
        finally:
            store.close()

    @on(DiffLoaded)
    def loaded_diff(self, message: DiffLoaded) -> None:
        self.loaded = True
        if message.error:
            self.query_one("#diff-status", Static).update(Text(message.error, style="bold #ffaf00"))
            return
        self.changes, self.total = message.changes, message.total
        self.query_one("#diff-title", Static).update(Text(f"Changes of run {self.run_id} since run {message.old}",
                                                          style="bold"))
        self.redraw()

    @on(Input.Changed, "#diff-filter")
    @on(Select.Changed, "#diff-kind")
    def filters_changed(self) -> None:
        if self.loaded:
            self.redraw()

    def shown(self) -> list[dict[str, Any]]:
        """The changes the filters select."""
        from console.history.diff import describe

        kind = self.query_one("#diff-kind", Select).value
        text = self.query_one("#diff-filter", Input).value.strip().lower()
        return [
            c for c in self.changes
            if (not isinstance(kind, str) or c["change"] == kind) and (not text or text in describe(c).lower())
        ]

    def redraw(self) -> None:
        from console.history.diff import describe

        rows = []
        for i, c in enumerate(self.shown()):
            what = describe(c).split("  ", 1)[1] if c["change"] == "changed" else ""
            rows.append((str(i), (Text(c["change"], style=STYLES[c["change"]]), c["stage"], c["type"],
                                  Text(c["key"]), Text(what))))
        self.query_one("#diff-table", KeyedTable).sync(rows)
        held = "" if self.total <= len(self.changes) else f" (first {len(self.changes):,} held)"
        self.query_one("#diff-status", Static).update(
            Text(f"{len(rows):,} shown of {self.total:,} change(s){held}", style="dim"))

    def action_focus_filter(self) -> None:
        self.query_one("#diff-filter", Input).focus()

    def action_close(self) -> None:
        self.dismiss(None)


# -- t: schedules --------------------------------------------------------------------------------------


@dataclass
class SchedulesLoaded(Message):
    views: list[dict[str, Any]]


class SchedulesScreen(Screen[None], ForwardWorkerErrors):
    BINDINGS = [Binding("escape", "close", "Back"), Binding("p", "toggle_pause", "Pause/resume")]

    def __init__(self, db_path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db_path = db_path
        self.views: dict[str, dict[str, Any]] = {}
        self._changes: dict[str, int | None] = {}
        self.loads = 0

    def compose(self) -> ComposeResult:
        yield Static(Text("Schedules", style="bold"), classes="history-title")
        yield KeyedTable([("id", "Schedule"), ("workflow", "Workflow"), ("every", "Every"), ("window", "Window"),
                          ("state", "State"), ("next", "Next run"), ("last", "Last run"), ("changes", "Changes")],
                         id="schedules-table")
        yield Static(Text("p pauses or resumes the selected schedule", style="dim"), id="schedules-status")
        yield Footer()

    def on_mount(self) -> None:
        self.load()
        self.set_interval(2.0, self.load)

    @work(thread=True, exclusive=True, group="schedules", name="schedules", exit_on_error=False)
    def load(self) -> None:
        from console.history.overview import last_changes, schedule_view

        store = _open(self.db_path)
        try:
            views = []
            for row in store.schedules.all():
                view = schedule_view(store, row, with_changes=False)
                last = row.last_run
                if last is not None and view["last_state"] == "completed" and last not in self._changes:
                    self._changes[last] = last_changes(store, last)  # once per run: a diff is not free
                view["last_changes"] = self._changes.get(last) if last else None
                views.append(view)
            self.post_message(SchedulesLoaded(views))
        finally:
            store.close()

    @on(SchedulesLoaded)
    def loaded_schedules(self, message: SchedulesLoaded) -> None:
        from console.history.schedules import format_every

        self.loads += 1
        self.views = {v["id"]: v for v in message.views}
        rows = []
        for v in message.views:
            last = f"{v['last_run']} {v['last_state'] or ''}".strip() if v["last_run"] else "-"
            changes = "-" if v["last_changes"] is None else str(v["last_changes"])
            rows.append((v["id"], (v["id"], v["workflow"], format_every(v["every_s"]), v["window"] or "any time",
                                   "paused" if v["paused"] else "active", _when(v["next_due"]), last, changes)))
        self.query_one("#schedules-table", KeyedTable).sync(rows)

    def action_toggle_pause(self) -> None:
        key = self.query_one("#schedules-table", KeyedTable).selected_key()
        if key is None or key not in self.views:
            self.notify("No schedule selected.", severity="warning")
            return
        self.toggle(key, not self.views[key]["paused"])

    @work(thread=True, group="schedule-intent", name="pause/resume schedule", exit_on_error=False)
    def toggle(self, schedule_id: str, pause: bool) -> None:
        from console.history.schedules import parse_window, window_opens

        store = _open(self.db_path)
        try:
            row = store.schedules.get(schedule_id)
            due = None if pause else window_opens(max(time.time(), row.next_due), parse_window(row.window))
            store.schedules.set_paused(schedule_id, pause, due)
        finally:
            store.close()
        self.app.call_from_thread(self.notify, f"Schedule {schedule_id} {'paused' if pause else 'resumed'}.")
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)


# -- i: assets -----------------------------------------------------------------------------------------


@dataclass
class AssetsLoaded(Message):
    assets: list[dict[str, Any]]


class AssetsScreen(Screen[None], ForwardWorkerErrors):
    BINDINGS = [Binding("escape", "close", "Back")]

    def __init__(self, db_path: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db_path = db_path
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Static(Text("Assets: the latest known state of every host", style="bold"), classes="history-title")
        yield KeyedTable([("host", "Host"), ("ports", "Open ports"), ("services", "Services"),
                          ("certs", "Certificates"), ("failing", "Failing checks"), ("seen", "Last seen")],
                         id="assets-table")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, name="assets", exit_on_error=False)
    def load(self) -> None:
        from console.history.assets import collect

        store = _open(self.db_path)
        try:
            self.post_message(AssetsLoaded(collect(store)))
        finally:
            store.close()

    @on(AssetsLoaded)
    def loaded_assets(self, message: AssetsLoaded) -> None:
        self.loaded = True
        rows = []
        for a in message.assets:
            ports = ", ".join(f"{p['port']}/{p['proto']}" for p in a["ports"])
            services = ", ".join(f"{s['port']} {s.get('name') or ''}".strip() for s in a["services"])
            days = [c["days_left"] for c in a["certificates"] if c["days_left"] is not None]
            certs = f"{len(a['certificates'])}, soonest in {min(days)} d" if days else str(len(a["certificates"]) or "")
            failing = ", ".join(str(f["rule"]) for f in a["failing"])
            rows.append((a["host"], (Text(a["host"]), Text(ports), Text(services), Text(certs),
                                     Text(failing, style="bold #ff5f5f"), _when(a["seen"]))))
        self.query_one("#assets-table", KeyedTable).sync(rows)

    def action_close(self) -> None:
        self.dismiss(None)


# -- m: amend the selected run from a workflow file ----------------------------------------------------


@dataclass
class AmendDone(Message):
    message: str
    ok: bool


class AmendScreen(ModalScreen[str | None], ForwardWorkerErrors):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, db_path: str | Path, run_id: str, default_file: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db_path = db_path
        self.run_id = run_id
        self.default_file = default_file

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(f"Amend run {self.run_id}: stages not started take the file's definitions",
                              style="bold"), classes="title")
            yield Input(self.default_file, placeholder="workflow file (YAML)", id="amend-file")
            yield Static("", id="amend-error")
            with Horizontal(classes="buttons"):
                yield Button("Amend", variant="primary", id="amend-ok")
                yield Button("Cancel", id="amend-cancel")

    @on(Button.Pressed, "#amend-ok")
    @on(Input.Submitted, "#amend-file")
    def submit(self) -> None:
        self.amend(self.query_one("#amend-file", Input).value.strip())

    @on(Button.Pressed, "#amend-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @work(thread=True, exclusive=True, name="amend", exit_on_error=False)
    def amend(self, path: str) -> None:
        from console.history.amend import amend_run

        if not path:
            self.post_message(AmendDone("give the workflow file", False))
            return
        store = _open(self.db_path)
        try:
            result = amend_run(store, self.run_id, path)
        except FleetscanError as err:
            self.post_message(AmendDone(str(err), False))
            return
        finally:
            store.close()
        text = (f"Run {self.run_id}: amended {', '.join(result.amended)}" if result.amended
                else f"Run {self.run_id}: nothing to change")
        if result.kept:
            text += f" (already started, kept: {', '.join(result.kept)})"
        self.post_message(AmendDone(text, True))

    @on(AmendDone)
    def done(self, message: AmendDone) -> None:
        if message.ok:
            self.dismiss(message.message)
        else:
            self.query_one("#amend-error", Static).update(Text(message.message, style="bold #ff5f5f"))


def open_history(app: App[Any], what: str, db_path: str | Path, run: Any, workflows_file: Any) -> None:
    """The app's one entry point (``action_history``): push the screen for ``what``."""
    if what in ("diff", "amend") and run is None:
        app.notify("No run selected.", severity="warning")
        return
    if what == "diff":
        app.push_screen(DiffScreen(db_path, run.id))
    elif what == "schedules":
        app.push_screen(SchedulesScreen(db_path))
    elif what == "assets":
        app.push_screen(AssetsScreen(db_path))
    elif what == "amend":
        def amended(message: str | None) -> None:
            if message:
                app.notify(message, title="Amend")

        app.push_screen(AmendScreen(db_path, run.id, str(workflows_file or "")), amended)
