"""The operator console: a Textual app with the master running inside it.

Harlequin's rules: workers do the work (the master on an async worker, store reads
and writes on thread workers) and post messages; only message handlers touch
widgets; one ``Worker.StateChanged`` handler reports errors. Closing the console
stops the master; its runs stay in the store and resume when the console (or
``fleetscan resume``/``master``) opens again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, SystemCommand
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

from console.errors import FleetscanError
from console.status import RUN_TERMINAL, AgentState
from console.store import store_label
from console.store.rows import ConsoleView, RunRow
from console.tui import intents
from console.tui.dialogs import ConfirmScreen, HelpScreen
from console.tui.main_screen import MainScreen
from console.tui.refresh import StoreChanged, StoreTrouble, ViewRefresher

Clock = Callable[[], float]

#: how long quitting waits for the master to hand back its leases before leaving anyway
MASTER_STOP_S = 10.0


class FleetscanApp(App[int]):
    """Main screen: runs, the selected run's stages, agents, live results and events."""

    CSS_PATH = "app.tcss"
    TITLE = "fleetscan"

    def __init__(
        self,
        db_path: str | Path | None = None,
        workflows_file: str | Path | None = None,
        agents_source: str = "local",
        *,
        start_master: bool = True,
        clock: Clock = time.time,
        poll_interval: float = 0.25,
    ) -> None:
        super().__init__()
        from console.store import default_location, is_url

        if db_path is None:
            self.db_path: str | Path = default_location()
        else:
            self.db_path = str(db_path) if is_url(db_path) else Path(db_path).expanduser()
        self.workflows_file = workflows_file
        self.agents_source = agents_source
        self.start_master = start_master
        self.clock = clock
        self.watcher = ViewRefresher(self.db_path, interval=poll_interval)
        self.view: ConsoleView | None = None
        self._leaving = False
        self.master: Any = None
        #: how many views were drawn (tests and the benchmark wait on it)
        self.views_drawn = 0
        #: the new-run modal's last values, kept for the session
        self.new_run_values: dict[str, str] = {}
        #: worker failures that came before the main screen could show them (written once it can)
        self._early_lines: list[Text] = []

    def get_default_screen(self) -> MainScreen:
        return MainScreen()

    @property
    def main(self) -> MainScreen:
        """The main screen (whatever screen is on top: updates go to it even under a modal)."""
        return self.screen_stack[0]  # type: ignore[return-value]

    def _main_ready(self) -> bool:
        stack = self.screen_stack
        # not while the app tears the screen down (a view that arrives then finds no tables)
        return (bool(stack) and isinstance(stack[0], MainScreen) and stack[0].ready and stack[0].is_attached
                and not getattr(stack[0], "_pruning", False))

    def on_mount(self) -> None:
        self.sub_title = f"{store_label(self.db_path)} · master {'on' if self.start_master else 'off'}"
        self.watch_store()
        if self.start_master:
            self.run_master()
        self.set_interval(1.0, self._tick)

    # -- workers -------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="watch", name="store watcher", exit_on_error=False)
    def watch_store(self) -> None:
        worker = get_current_worker()

        def post(view: ConsoleView) -> None:
            self.post_message(StoreChanged(view))

        def trouble(message: str | None) -> None:
            self.post_message(StoreTrouble(message))

        self.watcher.loop(post, lambda: worker.is_cancelled, trouble)

    @work(exclusive=True, group="master", name="master", exit_on_error=False)
    async def run_master(self) -> None:
        """The embedded master: serves pending and orphaned runs for as long as the console is open."""
        from console.master.scheduler import Master
        from console.store import open_store

        store = open_store(self.db_path)
        workflows = str(self.workflows_file) if self.workflows_file else None
        self.master = Master(store, self.agents_source, workflows_file=workflows)
        try:
            await self.master.serve()
        finally:
            self.master = None
            store.close()

    @on(Worker.StateChanged)
    def report_worker_error(self, event: Worker.StateChanged) -> None:
        """The one place worker failures surface: a notification and a line in the events log."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        message = str(error) if isinstance(error, FleetscanError) else f"{type(error).__name__}: {error}"
        self.notify(message, title=f"{event.worker.name} failed", severity="error", timeout=8)
        line = Text()
        line.append("ERROR ", style="bold #ff5f5f")
        line.append(f"{event.worker.name}: {message}")
        if event.worker.name == "master":  # the header must not go on saying "master on"
            self.sub_title = f"{store_label(self.db_path)} · master failed (see events)"
        if self._main_ready():
            self.main.log_line(line)
        else:
            self._early_lines.append(line)

    # -- live updates --------------------------------------------------------------

    @on(StoreTrouble)
    def store_trouble(self, message: StoreTrouble) -> None:
        if message.message is None:
            self.notify("The store can be read again.", title="Store")
        else:
            self.notify(message.message, title="Store", severity="error", timeout=10)

    @on(StoreChanged)
    def show_view(self, message: StoreChanged) -> None:
        if self._leaving or not self._main_ready():
            return  # the main screen pokes the watcher once it is composed
        view = message.view
        self.view = view  # only a view that is on screen: actions act on what the operator sees
        if self.watcher.selected_run is None and view.selected_run is not None:
            self.watcher.selected_run = view.selected_run
        with self.batch_update():
            self.main.show_view(view, self.watcher.selected_run, self.selected_run(), self.clock())
            for line in self._early_lines:
                self.main.log_line(line)
            self._early_lines.clear()
        self._show_fleet(view)
        self.views_drawn += 1

    def _show_fleet(self, view: ConsoleView) -> None:
        """The header says when none of our master's boxes is up: "master on" alone hid a master
        with nothing to run on."""
        master = self.master
        if master is None or self.sub_title.endswith("(see events)"):
            return
        ours = [a for a in view.agents if a.master == master.master_id]  # not the stale rows of other masters
        up = sum(1 for a in ours if a.state == AgentState.UP)
        if not ours:  # nothing reported yet: the fleet is still starting
            agents = "agents starting"
        else:
            agents = "no agents up" if not up else f"{up} agent{'s' if up != 1 else ''} up"
        self.sub_title = f"{store_label(self.db_path)} · master on · {agents}"

    def reconnect_boxes(self, names: list[str]) -> None:
        """The operator fixed these boxes (trusted a key, a check passed): our master retries them now."""
        master = self.master
        started = master.reconnect(names) if master is not None else []
        if started:
            self.notify(f"Reconnecting {', '.join(started)}.", title="Agents")

    def _tick(self) -> None:
        """Durations, ETAs and heartbeat ages move with the clock, not with the store."""
        if self.view is None or self._leaving or not self._main_ready():
            return
        with self.batch_update():
            self.main.tick(self.view, self.clock())

    def select_run(self, run_id: str) -> None:
        """The operator moved the runs table's cursor: read that run's stages now."""
        if run_id != self.watcher.selected_run:
            self.watcher.selected_run = run_id
            if self.view is not None and self._main_ready():  # draw at once from what we have
                with self.batch_update():
                    self.main.show_stages(self.view, run_id, self.selected_run(), self.clock())
            self.watcher.poke()

    def selected_run(self) -> RunRow | None:
        if self.view is None:
            return None
        wanted = self.watcher.selected_run
        return next((run for run in self.view.runs if run.id == wanted), None)

    # -- actions -------------------------------------------------------------------

    def _need_run(self) -> RunRow | None:
        run = self.selected_run()
        if run is None:
            self.notify("No run selected.", severity="warning")
        return run

    def action_new_run(self) -> None:
        from console.tui.new_run import NewRunScreen

        def submitted(run_id: str | None) -> None:
            if run_id:
                self.watcher.selected_run = run_id
                self.main.cursor_to = run_id
                self.watcher.poke()
                self.notify(f"Run {run_id} submitted.", title="New run")

        self.push_screen(NewRunScreen(self.db_path, self.workflows_file, self.agents_source, self.new_run_values),
                         submitted)

    def action_pause_resume(self) -> None:
        run = self._need_run()
        if run is not None:
            self._toggle_pause(run.id)

    @work(thread=True, group="intent", name="pause/resume", exit_on_error=False)
    def _toggle_pause(self, run_id: str) -> None:
        before, after = intents.toggle_pause(self.db_path, run_id)
        self.watcher.poke()
        if before == after:
            self.call_from_thread(self.notify, f"Run {run_id} is {after}: nothing to pause.", severity="warning")
        else:
            self.call_from_thread(self.notify, f"Run {run_id}: {before} → {after}.")

    def action_stop_run(self) -> None:
        run = self._need_run()
        if run is None:
            return
        if run.state in RUN_TERMINAL:
            self.notify(f"Run {run.id} already ended {run.state}.", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._stop(run.id)

        question = (f"Stop run {run.id} ({run.workflow})?\n\nRunning tasks are cancelled on the boxes "
                    "and the run ends [b]stopped[/b]. It cannot be resumed.")
        self.push_screen(ConfirmScreen(question, confirm_label="Stop run", id="confirm-stop"), confirmed)

    @work(thread=True, group="intent", name="stop", exit_on_error=False)
    def _stop(self, run_id: str) -> None:
        state = intents.request_stop(self.db_path, run_id)
        self.watcher.poke()
        self.call_from_thread(self.notify, f"Stop requested for run {run_id} ({state}).")

    #: the one results browser, kept installed: reopening it (for the same run or another) builds nothing
    RESULTS_SCREEN = "results"

    def action_results(self) -> None:
        from console.tui.results_browser import ResultsScreen

        run = self._need_run()
        if run is None or isinstance(self.screen, ResultsScreen):
            return
        if self.is_screen_installed(self.RESULTS_SCREEN):
            screen = self.get_screen(self.RESULTS_SCREEN)
            if isinstance(screen, ResultsScreen) and screen.run_id == run.id:
                self.push_screen(self.RESULTS_SCREEN)  # keeps its page, filters and order
                return
        self._open_results(run.id, run.workflow)

    @work(thread=True, exclusive=True, group="results-open", name="results browser", exit_on_error=False)
    def _open_results(self, run_id: str, workflow: str) -> None:
        """Read the first page before the browser shows, so it is drawn once, with its rows (a
        screen drawn empty and then again filled took twice as long to show a page)."""
        from console.store import open_store
        from console.store.rows import ResultFilter

        store = open_store(self.db_path)
        try:
            # the page first, counted once it is on screen (the browser asks): the count is the costly read
            page = store.results.first_page(ResultFilter(run_id), count=False)
        except BaseException:
            store.close()
            raise
        self.call_from_thread(self._show_results, run_id, workflow, store, page)

    def _show_results(self, run_id: str, workflow: str, store: Any, page: Any) -> None:
        """Point the browser at the run (built the first time, re-pointed after) and show it."""
        from console.tui.results_browser import ResultsScreen

        if self._leaving or isinstance(self.screen, ResultsScreen):
            store.close()
            return
        if self.is_screen_installed(self.RESULTS_SCREEN):
            screen = self.get_screen(self.RESULTS_SCREEN)
            assert isinstance(screen, ResultsScreen)
            screen.switch_run(run_id, workflow, store, page)
        else:
            self.install_screen(ResultsScreen(self.db_path, run_id, workflow, store=store, first_page=page),
                                self.RESULTS_SCREEN)
        self.push_screen(self.RESULTS_SCREEN)

    def action_agents(self) -> None:
        from console.tui.agents_screen import AgentsScreen

        self.push_screen(AgentsScreen(self.db_path, self.agents_source, clock=self.clock))

    def action_history(self, what: str) -> None:
        """d changes, t schedules, i assets, m amend: console/tui/history_screens.py."""
        from console.tui.history_screens import open_history

        open_history(self, what, self.db_path, self.selected_run(), self.workflows_file)

    def action_rerun(self) -> None:
        """R: a new run with the same inputs as the selected finished run."""
        run = self._need_run()
        if run is None:
            return
        if run.state not in RUN_TERMINAL:
            self.notify(f"Run {run.id} has not ended: only a finished run is re-run.", severity="warning")
            return
        self._rerun(run.id)

    @work(thread=True, group="intent", name="re-run", exit_on_error=False)
    def _rerun(self, run_id: str) -> None:
        from console.workflow.rerun import rerun_run

        with intents.opened_store(self.db_path) as store:
            new_id = rerun_run(store, run_id)
        self.watcher.selected_run = new_id
        self.main.cursor_to = new_id
        self.watcher.poke()
        self.call_from_thread(self.notify, f"Run {new_id} submitted: a re-run of {run_id}.", title="Re-run")

    def action_events(self, failures: bool = False) -> None:
        """The selected run's events (every event when none is selected); Enter opens one in full."""
        from console.tui.events_screen import EventsScreen

        run = self.selected_run()
        self.push_screen(EventsScreen(self.db_path, run.id if run else None, failures=failures))

    def action_stage_failures(self, run_id: str, stage_id: str) -> None:
        """A stage's failed tasks (Enter on a failed stage); Enter on one opens its reason whole."""
        from console.tui.failures_screen import FailuresScreen

        self.push_screen(FailuresScreen(self.db_path, run_id, stage_id))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New run", "Start a workflow on targets (n)", self.action_new_run)
        yield SystemCommand("Pause / resume run", "Pause the selected run, or resume it (p)",
                            self.action_pause_resume)
        yield SystemCommand("Stop run", "Cancel the selected run's tasks; it ends stopped (s)", self.action_stop_run)
        yield SystemCommand("Results", "Browse, filter and export the selected run's results (r)",
                            self.action_results)
        yield SystemCommand("Agents", "Boxes: check one, trust a host key (a)", self.action_agents)
        yield SystemCommand("Re-run", "A new run with the selected finished run's inputs (R)", self.action_rerun)
        yield SystemCommand("Events", "The selected run's events; Enter shows one in full (v)", self.action_events)
        yield SystemCommand("Keys", "Every key of the console (?)", self.action_help)

    async def action_quit(self) -> None:
        """Leave: the master hands its leases back (so runs resume at once next time), then exit."""
        self._leaving = True
        self.watcher.stop()
        master = self.master
        if master is not None:
            self.sub_title = f"{store_label(self.db_path)} · stopping the master..."
            master.shutdown()
            for worker in list(self.workers):
                if worker.group == "master":
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(worker.wait(), MASTER_STOP_S)
        self.exit(0)


def run_console(
    db_path: str | Path | None = None,
    workflows_file: str | Path | None = None,
    agents_source: str = "local",
) -> int:
    """Entry point for `fleetscan` / `fleetscan tui`: run the console until the operator quits."""
    app = FleetscanApp(db_path, workflows_file, agents_source)
    result = app.run()
    return int(result or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m console.tui.app", description="fleetscan console")
    parser.add_argument("--db", default=None)
    parser.add_argument("--workflows", default=None)
    parser.add_argument("--agents", default="local")
    parser.add_argument("--no-master", action="store_true", help="only watch the store (another master serves)")
    args = parser.parse_args(argv)
    if args.no_master:
        return int(FleetscanApp(args.db, args.workflows, args.agents, start_master=False).run() or 0)
    return run_console(args.db, args.workflows, args.agents)


if __name__ == "__main__":
    sys.exit(main())
