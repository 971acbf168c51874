"""The main screen: runs, the selected run's stages, agents, the live results feed, events.

It only draws: the app hands it each new ``ConsoleView`` (and a clock tick), and its
keys call the app's actions, which own the workers and the store.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from console.store.rows import FEED_EVENTS, FEED_RESULTS, ConsoleView, RunRow
from console.tui.panels import AgentsTable, FeedLog, RunsTable, StagesPanel, event_line, result_line


class MainFooter(Footer):
    """The Footer, idle while another screen covers the main screen: Textual re-lists a screen's keys
    when it is suspended (a widget per key, each styled again) just as the next screen wants its
    first frame; the keys are listed again when the main screen is back on top."""

    def bindings_changed(self, screen: Screen[Any]) -> None:
        top = screen.app.screen
        if top is screen or top.styles.background.a < 1:  # on top, or seen through a modal
            super().bindings_changed(screen)


class MainScreen(Screen[None]):
    BINDINGS = [
        Binding("n", "app.new_run", "New run"),
        Binding("p", "app.pause_resume", "Pause/resume"),
        Binding("s", "app.stop_run", "Stop"),
        Binding("r", "app.results", "Results"),
        Binding("a", "app.agents", "Agents"),
        Binding("d", "app.history('diff')", "Changes", show=False),
        Binding("t", "app.history('schedules')", "Schedules", show=False),
        Binding("i", "app.history('assets')", "Assets", show=False),
        Binding("m", "app.history('amend')", "Amend", show=False),

        Binding("v", "app.events", "Events"),
        Binding("R", "app.rerun", "Re-run", show=False),
        Binding("enter", "open_detail", "Full text", show=False),
        Binding("question_mark", "app.help", "Help", key_display="?"),
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="◆")
        yield RunsTable(id="runs")
        yield StagesPanel(id="stages")
        yield AgentsTable(id="agents")
        with Horizontal(id="bottom"):
            yield FeedLog(result_line, FEED_RESULTS, id="feed")
            yield FeedLog(event_line, FEED_EVENTS, id="events")
        yield MainFooter()

    def on_mount(self) -> None:
        titles = {"#runs": "Runs", "#agents": "Agents", "#stages": "Stages", "#feed": "Results (latest)",
                  "#events": "Events"}
        for selector, title in titles.items():
            self.query_one(selector).border_title = title
        self.query_one(RunsTable).focus()
        self.ready = True
        self.app.watcher.poke()  # type: ignore[attr-defined]

    #: set once composed: views that arrive earlier wait for the next one
    ready = False
    #: a run to put the cursor on as soon as it shows up (one submitted from the modal)
    cursor_to: str | None = None

    def show_view(self, view: ConsoleView, selected_id: str | None, selected: RunRow | None, now: float) -> None:
        runs = self.query_one(RunsTable)
        runs.show(view.runs, now)
        if self.cursor_to is not None and self.cursor_to in runs.row_keys:
            runs.move_to(self.cursor_to)
            self.cursor_to = None
        self.show_stages(view, selected_id, selected, now)
        self.query_one(AgentsTable).show(view.agents, now)
        feed = self.query_one("#feed", FeedLog)
        feed.feed(view.results)
        feed.border_subtitle = f"{view.total_results:,} results"
        self.query_one("#events", FeedLog).feed(view.events)

    def show_stages(self, view: ConsoleView, selected_id: str | None, selected: RunRow | None,
                    now: float) -> None:
        stages = self.query_one(StagesPanel)
        stages.show(selected_id, view.stages_by_run.get(selected_id or "", ()), now)
        stages.border_title = f"Stages · {selected.workflow} {selected.id}" if selected else "Stages"
        stages.show_header(selected)

    def action_open_detail(self) -> None:
        """Enter on the events log: the events in full; on the stages: the failed tasks of the stage under
        the cursor (a stage with none: the run's warnings and errors)."""
        focused = self.focused
        if focused is self.query_one("#events"):
            self.app.action_events()  # type: ignore[attr-defined]
        elif focused is self.query_one(StagesPanel):
            stage = self.query_one(StagesPanel).current_stage
            if stage is not None and stage.tasks_failed > 0:
                self.app.action_stage_failures(stage.run_id, stage.id)  # type: ignore[attr-defined]
            else:
                self.app.action_events(failures=True)  # type: ignore[attr-defined]

    def tick(self, view: ConsoleView, now: float) -> None:
        self.query_one(RunsTable).show(view.runs, now)
        self.query_one(AgentsTable).show(view.agents, now)
        self.query_one(StagesPanel).tick(now)

    def log_line(self, line: Text) -> None:
        """A line of the console's own (a worker error) in the events log."""
        self.query_one("#events", FeedLog).write(line)

    @on(DataTable.RowHighlighted, "#runs")
    def run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key is not None else None
        if key:
            self.app.select_run(str(key))  # type: ignore[attr-defined]
