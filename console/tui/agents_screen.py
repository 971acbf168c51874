"""The agents screen: every box of the agents source, its live state, check and trust.

Rows merge two sources: the inventory (what the operator configured, with whether
its host key is trusted) and the store's ``agents`` table (what the master saw:
state, slots, heartbeats). The store half is the app's latest view, diffed by key
every half second; checks and trusts run on workers and come back as messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from console.errors import FleetscanError
from console.store.rows import AgentRow
from console.tui import agent_ops
from console.tui import formatting as fmt
from console.tui.dialogs import ConfirmScreen
from console.tui.keyed_table import KeyedTable
from console.tui.worker_errors import ForwardWorkerErrors

COLUMNS = [
    ("name", "Box"),
    ("address", "Address"),
    ("state", "State"),
    ("host_key", "Host key"),
    ("slots", "Slots"),
    ("done", "Tasks done"),
    ("failures", "Failures"),
    ("heartbeat", "Heartbeat"),
    ("latency", "Latency"),
    ("check", "Last check"),
]

HOST_KEY_STYLES = {"trusted": "#5fd75f", "unknown": "bold #ffaf00", "see ssh config": "#a0a0a0"}


@dataclass
class EntriesLoaded(Message):
    entries: list[agent_ops.BoxEntry]
    error: str | None = None


@dataclass
class CheckDone(Message):
    outcome: agent_ops.CheckOutcome


@dataclass
class KeyOffered(Message):
    box: str
    offer: agent_ops.OfferedKey | None
    error: str | None = None


@dataclass
class TrustDone(Message):
    box: str
    message: str
    ok: bool


def agent_row_cells(
    name: str,
    entry: agent_ops.BoxEntry | None,
    live: AgentRow | None,
    check: agent_ops.CheckOutcome | None,
    now: float,
) -> tuple[Any, ...]:
    host_key = entry.host_key if entry is not None else "-"
    if check is None:
        check_text = Text("-", style="dim")
    else:
        check_text = Text("ok" if check.ok else "failed", style="bold #5fd75f" if check.ok else "bold #ff5f5f")
    address = entry.address if entry is not None else (live.address if live else "")
    return (
        name,
        address,
        fmt.state_text(live.state if live else "unknown"),
        Text(host_key, style=HOST_KEY_STYLES.get(host_key, "")),
        f"{live.busy}/{live.slots}" if live else "-",
        fmt.count(live.tasks_done) if live else "-",
        fmt.count(live.failures) if live else "-",
        fmt.age(live.last_seen, now) if live else "-",
        fmt.latency(live.latency_ms) if live else "-",
        check_text,
    )


class AgentsScreen(Screen[None], ForwardWorkerErrors):
    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("c", "check", "Check box"),
        Binding("t", "trust", "Trust host key"),
    ]

    def __init__(self, db_path: str | Path, agents_source: str, *, clock: Callable[[], float],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db_path = db_path
        self.agents_source = agents_source
        self.clock = clock
        self.entries: dict[str, agent_ops.BoxEntry] = {}
        self.checks: dict[str, agent_ops.CheckOutcome] = {}
        self.busy: set[str] = set()

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Agents[/b] · source [b]{self.agents_source}[/b]", id="agents-title")
        yield KeyedTable(COLUMNS, id="agents-table")
        yield Static("Select a box: [b]c[/b] checks it, [b]t[/b] trusts its host key.", id="agent-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#agent-detail").border_title = "Box"
        self.query_one("#agents-table", KeyedTable).focus()
        self.load_entries()
        self.set_interval(0.5, self.refresh_rows)

    @work(thread=True, name="agents inventory", exit_on_error=False)
    def load_entries(self) -> None:
        try:
            self.post_message(EntriesLoaded(agent_ops.list_entries(self.agents_source)))
        except FleetscanError as err:
            self.post_message(EntriesLoaded([], error=str(err)))

    @on(EntriesLoaded)
    def entries_loaded(self, message: EntriesLoaded) -> None:
        self.entries = {entry.name: entry for entry in message.entries}
        if message.error:
            self.query_one("#agent-detail", Static).update(fmt.plain(f"✗ {message.error}", "bold #ff5f5f"))
        self.refresh_rows()

    def _live(self) -> dict[str, AgentRow]:
        view = getattr(self.app, "view", None)
        return {agent.name: agent for agent in (view.agents if view is not None else ())}

    def refresh_rows(self) -> None:
        live = self._live()
        names = list(self.entries) + sorted(n for n in live if n not in self.entries)
        now = self.clock()
        rows = [(name, agent_row_cells(name, self.entries.get(name), live.get(name), self.checks.get(name), now))
                for name in names]
        with self.app.batch_update():
            self.query_one("#agents-table", KeyedTable).sync(rows)

    def _selected(self) -> agent_ops.BoxEntry | None:
        name = self.query_one("#agents-table", KeyedTable).selected_key()
        if name is None:
            self.notify("No box selected.", severity="warning")
            return None
        entry = self.entries.get(name)
        if entry is None:
            self.notify(f"{name} is not in the agents source {self.agents_source!r}.", severity="warning")
        return entry

    def _detail(self, text: str | Text) -> None:
        self.query_one("#agent-detail", Static).update(fmt.plain(text) if isinstance(text, str) else text)

    # -- check -------------------------------------------------------------------------

    def action_check(self) -> None:
        entry = self._selected()
        if entry is None or entry.name in self.busy:
            return
        self.busy.add(entry.name)
        self._detail(f"Checking {entry.name} ({entry.address}): connect, bootstrap, ping...")
        self.check(entry)

    @work(group="agent-check", name="check box", exit_on_error=False)
    async def check(self, entry: agent_ops.BoxEntry) -> None:
        try:
            outcome = await agent_ops.check_entry(entry)
        except FleetscanError as err:
            outcome = agent_ops.CheckOutcome(entry.name, False, str(err))
        self.post_message(CheckDone(outcome))

    @on(CheckDone)
    def check_done(self, message: CheckDone) -> None:
        outcome = message.outcome
        self.busy.discard(outcome.name)
        self.checks[outcome.name] = outcome
        style = "#5fd75f" if outcome.ok else "bold #ff5f5f"
        self._detail(Text.assemble((f"{outcome.name}: ", "bold"), (fmt.safe(outcome.summary), style)))
        self.refresh_rows()
        if outcome.ok:
            self._reconnect(outcome.name)

    def _reconnect(self, name: str) -> None:
        """A box just proved reachable: the console's master takes it back now, not at its next backoff."""
        reconnect = getattr(self.app, "reconnect_boxes", None)
        if reconnect is not None:
            reconnect([name])

    # -- trust -------------------------------------------------------------------------

    def action_trust(self) -> None:
        entry = self._selected()
        if entry is None:
            return
        if entry.kind == "local":
            self._detail(f"{entry.name} is a local agent: there is no SSH host key to trust.")
            return
        self._detail(f"Asking {entry.name} ({entry.address}) for its host key...")
        self.fetch_key(entry)

    @work(group="agent-trust", name="fetch host key", exit_on_error=False)
    async def fetch_key(self, entry: agent_ops.BoxEntry) -> None:
        try:
            offer = await agent_ops.offered_key(entry)
        except FleetscanError as err:
            self.post_message(KeyOffered(entry.name, None, error=str(err)))
        else:
            self.post_message(KeyOffered(entry.name, offer))

    @on(KeyOffered)
    def key_offered(self, message: KeyOffered) -> None:
        offer = message.offer
        if offer is None:
            self._detail(fmt.plain(f"✗ {message.error}", "bold #ff5f5f"))
            return
        if offer.fingerprint in offer.known:
            self._detail(f"{offer.box}: host key {offer.fingerprint} is already trusted.")
            return
        before = ""
        if offer.known:
            before = ("\n\n[bold #ff5f5f]The key CHANGED.[/] Trusted before: " + ", ".join(offer.known)
                      + "\nOnly trust it if the box was reinstalled or re-keyed.")
        question = (f"Trust the host key of [b]{offer.box}[/b] ({offer.host}:{offer.port})?\n\n"
                    f"  [b]{offer.fingerprint}[/b]\n\nCompare it with [i]ssh-keygen -lf[/i] "
                    f"of the box's host key before you say yes.{before}")
        self._detail(f"{offer.box} presents {offer.fingerprint}")

        def answered(yes: bool | None) -> None:
            if yes:
                self.record(offer)
            else:
                self._detail(f"{offer.box}: host key not trusted.")

        self.app.push_screen(ConfirmScreen(question, confirm_label="Trust", id="confirm-trust"), answered)

    @work(thread=True, group="agent-trust", name="record host key", exit_on_error=False)
    def record(self, offer: agent_ops.OfferedKey) -> None:
        try:
            done = agent_ops.record_trust(offer)
        except (OSError, FleetscanError) as err:
            self.post_message(TrustDone(offer.box, str(err), ok=False))
        else:
            self.post_message(TrustDone(offer.box, done, ok=True))

    @on(TrustDone)
    def trust_done(self, message: TrustDone) -> None:
        style = "#5fd75f" if message.ok else "bold #ff5f5f"
        self._detail(Text.assemble((f"{message.box}: ", "bold"), (fmt.safe(message.message), style)))
        if message.ok:
            self.notify(f"{message.box}: host key trusted.")
            self.load_entries()
            self._reconnect(message.box)

    def action_close(self) -> None:
        self.dismiss(None)
