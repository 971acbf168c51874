"""The main screen's panels: runs, the selected run's stages, agents, results feed, events.

Each panel takes immutable rows from a ``ConsoleView`` and updates itself in place:
tables diff by key, stage bars are keyed by stage id, and the feeds append only
what they have not drawn yet (a RichLog draws line by line, never one widget a row).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Label, ProgressBar, RichLog, Static

from console.status import MASTER_DEAD_AFTER_S, STAGE_TERMINAL, StageState
from console.store.rows import AgentRow, EventRow, ResultRow, RunRow, StageRow
from console.tui import formatting as fmt
from console.tui.keyed_table import KeyedTable

Clock = Callable[[], float]

RUN_COLUMNS = [
    ("id", "Run"),
    ("workflow", "Workflow"),
    ("state", "State"),
    ("progress", "Progress"),
    ("results", "Results"),
    ("priority", "Prio"),
    ("started", "Started"),
    ("duration", "Duration"),
]

AGENT_COLUMNS = [
    ("name", "Box"),
    ("address", "Address"),
    ("state", "State"),
    ("slots", "Slots"),
    ("done", "Tasks done"),
    ("failures", "Failures"),
    ("heartbeat", "Heartbeat"),
    ("latency", "Latency"),
]


def run_state(run: RunRow, now: float) -> str:
    """What the runs table says of a run's state: "stopping", "waiting for a master" (none holds it)."""
    if run.stop_requested:
        return "stopping"
    return fmt.served_state(str(run.state), run.owner, run.owner_seen, now, MASTER_DEAD_AFTER_S)


def run_header(run: RunRow) -> Text:
    """The selected run's request: what it scans, within what, with what, and who asked."""
    text = Text(no_wrap=True, overflow="ellipsis")

    def part(label: str, value: object, style: str = "") -> None:
        if value in (None, ""):
            return
        if text.plain:
            text.append("  ")
        text.append(f"{label} ", style="dim")
        text.append(str(value), style=style)

    part("targets", run.targets or "(none: boxes)", "bold")
    part("scope", run.scope or "= targets")
    part("exclude", run.exclude, "#ffaf00")
    part("agents", run.agents)
    part("priority", run.priority)
    part("max-rate", f"{run.max_rate}/s" if run.max_rate else None)
    part("host-rate", f"{run.host_rate}/s" if run.host_rate else None)
    part("by", run.submitted_by, "dim")
    if run.error:
        text.append("\n")
        text.append("error ", style="bold #ff5f5f")
        text.append(run.error.splitlines()[0] if run.error else "")
    return text


def run_cells(run: RunRow, now: float) -> tuple[Any, ...]:
    state = fmt.state_text(run_state(run, now))
    return (
        fmt.short_id(run.id),
        run.workflow,
        state,
        fmt.progress_text(run.tasks_done, run.tasks_total),
        fmt.count(run.results),
        str(run.priority),
        fmt.clock_time(run.started),
        fmt.duration(fmt.run_duration(run.started, run.ended, now)),
    )


def agent_cells(agent: AgentRow, now: float) -> tuple[Any, ...]:
    return (
        agent.name,
        agent.address or agent.kind,
        fmt.state_text(agent.state),
        f"{agent.busy}/{agent.slots}",
        fmt.count(agent.tasks_done),
        fmt.count(agent.failures),
        fmt.age(agent.last_seen, now),
        fmt.latency(agent.latency_ms),
    )


class RunsTable(KeyedTable):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(RUN_COLUMNS, **kwargs)

    def show(self, runs: Sequence[RunRow], now: float) -> None:
        self.sync([(run.id, run_cells(run, now)) for run in runs])


class AgentsTable(KeyedTable):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(AGENT_COLUMNS, **kwargs)

    def show(self, agents: Sequence[AgentRow], now: float) -> None:
        self.sync([(agent.name, agent_cells(agent, now)) for agent in agents])


def stage_stats(stage: StageRow, now: float) -> Text:
    text = Text()
    if stage.state == StageState.PENDING and stage.tasks_total == 0:
        text.append("waiting for its input", style="dim")
        return text
    text.append(f"{fmt.percent(stage.tasks_done + stage.tasks_failed, stage.tasks_total):>6}  ", style="bold")
    text.append(f"tasks {stage.tasks_done:,}/{stage.tasks_total:,}")
    if not stage.planned and stage.state in (StageState.PENDING, StageState.RUNNING):
        text.append("+", style="dim")
    text.append(f"  results {stage.results:,}")
    if stage.tasks_failed:
        text.append(f"  failed {stage.tasks_failed:,}", style="bold #ff5f5f")
    if stage.dropped:
        text.append(f"  out of scope {stage.dropped:,}", style="#ffaf00")
    if stage.state == StageState.RUNNING:
        eta = fmt.eta_seconds(stage.tasks_done, stage.tasks_total, stage.started, now)
        text.append(f"  ETA {fmt.duration(eta)}" if eta is not None else "  ETA -", style="dim")
    elif stage.ended is not None and stage.started is not None:
        text.append(f"  took {fmt.duration(stage.ended - stage.started)}", style="dim")
    return text


class StageProgress(Horizontal):
    """One stage: name and state, a bar of tasks done over planned, and the counts."""

    DEFAULT_CSS = """
    StageProgress { height: 1; }
    StageProgress > .stage-name { width: 34; }
    StageProgress > ProgressBar { width: 32; margin-right: 1; }
    StageProgress > .stage-stats { width: 1fr; }
    """

    def __init__(self, stage: StageRow, now: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage = stage
        self._now = now

    def compose(self) -> ComposeResult:
        yield Label(classes="stage-name")
        yield ProgressBar(total=1, show_eta=False, show_percentage=False, classes="stage-bar")
        yield Label(classes="stage-stats")

    def on_mount(self) -> None:
        self.update_stage(self.stage, now=self._now)

    def update_stage(self, stage: StageRow, now: float) -> None:
        self.stage = stage
        self._now = now
        if not self.children:  # not composed yet: on_mount draws self.stage
            return
        name = Text()
        name.append(f"{stage.idx + 1}. {stage.id}", style="bold")
        name.append(f" {stage.tool} ", style="dim")
        name.append_text(fmt.state_text(stage.state))
        self.query_one(".stage-name", Label).update(name)
        bar = self.query_one(ProgressBar)
        # A bar with no total animates (indeterminate); a stage not planned yet shows 0 of 1 instead.
        if stage.tasks_total > 0:
            bar.update(total=stage.tasks_total, progress=stage.tasks_done + stage.tasks_failed)
        else:
            bar.update(total=1, progress=1 if stage.state in STAGE_TERMINAL else 0)
        self.query_one(".stage-stats", Label).update(stage_stats(stage, now))


class StagesPanel(VerticalScroll):
    """The selected run's stages, one StageProgress each.

    Stage rows are reused by position: switching runs updates the bars in place and
    only mounts or removes the difference in count, so moving the cursor is instant.
    With the focus, up/down move a cursor over the stages (shown only while focused), and
    Enter on a stage with failed tasks lists them (the main screen's ``open_detail``).
    """

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Previous stage", show=False),
        Binding("down,j", "cursor(1)", "Next stage", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._bars: list[StageProgress] = []
        self._run_id: str | None = None
        #: the stage under the cursor, by position
        self.cursor = 0

    @property
    def current_stage(self) -> StageRow | None:
        """The stage under the cursor (None when the run has none)."""
        return self._bars[self.cursor].stage if 0 <= self.cursor < len(self._bars) else None

    def action_cursor(self, step: int) -> None:
        if self._bars:
            self._move_cursor(max(0, min(len(self._bars) - 1, self.cursor + step)))
            self.scroll_to_widget(self._bars[self.cursor], animate=False)

    def _move_cursor(self, index: int) -> None:
        self.cursor = index
        for position, bar in enumerate(self._bars):
            bar.set_class(position == index, "-cursor")

    def compose(self) -> ComposeResult:
        yield Static("", id="run-header")
        yield Static("No run selected.", id="stages-empty")

    def show_header(self, run: RunRow | None) -> None:
        header = self.query_one("#run-header", Static)
        header.display = run is not None
        if run is not None:
            header.update(run_header(run))

    @property
    def stage_ids(self) -> list[str]:
        return [bar.stage.id for bar in self._bars]

    def show(self, run_id: str | None, stages: Sequence[StageRow], now: float) -> None:
        empty = self.query_one("#stages-empty", Static)
        empty.display = not stages
        if run_id != self._run_id:  # another run: the cursor starts on its first stage
            self._run_id, self.cursor = run_id, 0
        if run_id is None:
            empty.update("No runs yet. Press [b]n[/b] to start one.")
        elif not stages:
            empty.update("Waiting for the master to plan this run...")
        for bar, stage in zip(self._bars, stages, strict=False):
            if bar.is_mounted:
                bar.update_stage(stage, now)
            else:
                bar.stage = stage
        if len(stages) > len(self._bars):
            fresh = [StageProgress(stage, now) for stage in stages[len(self._bars):]]
            self._bars.extend(fresh)
            self.mount_all(fresh)
        elif len(stages) < len(self._bars):
            for bar in self._bars[len(stages):]:
                bar.remove()
            del self._bars[len(stages):]
        self._move_cursor(min(self.cursor, max(len(self._bars) - 1, 0)))

    def tick(self, now: float) -> None:
        """Times move even when the store does not: redraw ETAs."""
        for bar in self._bars:
            if bar.is_mounted:
                bar.update_stage(bar.stage, now)


def result_line(row: ResultRow) -> Text:
    """One result as one line: stage, type, key, then the data fields that matter."""
    data = row.data_dict()
    detail = "  ".join(
        f"{name}={json.dumps(value) if isinstance(value, str | list | dict) else value}"
        for name, value in data.items()
        if name not in ("host", "port", "proto") and value not in (None, "")
    )
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{fmt.short_id(row.run_id, 6)} ", style="dim")
    text.append(f"{row.stage_id:<8} ", style="#87afd7")
    text.append(f"{row.type:<10} ", style="bold #5fd75f")
    text.append(fmt.safe(row.key))
    if row.agent:
        text.append(f"  @{fmt.safe(row.agent)}", style="dim")
    if detail:
        text.append(f"  {fmt.safe(detail)}", style="#a0a0a0")
    return text


def event_line(event: EventRow) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{fmt.clock_time(event.ts)} ", style="dim")
    level = {"warning": "WARN", "error": "ERROR", "info": "INFO", "debug": "DEBUG"}.get(event.level, event.level)
    text.append(f"{level.upper():<5} ", style=fmt.level_style(event.level))
    text.append(f"{event.kind:<10} ", style="#87afd7")
    if event.run_id:
        text.append(f"{fmt.short_id(event.run_id, 6)} ", style="dim")
    text.append(fmt.safe(event.message))  # a box's stderr and errors end up in events
    return text


class FeedLog(RichLog):
    """A RichLog that appends only rows it has not drawn yet (rows carry increasing ids)."""

    def __init__(self, render: Callable[[Any], Text], max_lines: int, **kwargs: Any) -> None:
        super().__init__(max_lines=max_lines, wrap=False, markup=False, auto_scroll=True, **kwargs)
        self._render_row = render
        self.last_id = 0

    def feed(self, rows: Sequence[ResultRow] | Sequence[EventRow]) -> int:
        fresh = [row for row in rows if row.id > self.last_id]
        for row in fresh:
            self.write(self._render_row(row), scroll_end=True)
        if fresh:
            self.last_id = fresh[-1].id
        return len(fresh)


def panel_title(widget: Widget, title: str) -> None:
    widget.border_title = title
