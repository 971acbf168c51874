"""Pilot tests of the agents screen (a): live rows, check a box (c), trust a host key (t).

The local check spawns a real local agent; the SSH tests use the suite's real sshd
boxes on loopback (``tests/fixtures/sshd.py``) and a private known_hosts file.
"""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from console.tui.agents_screen import AgentsScreen
from console.tui.app import FleetscanApp
from console.tui.dialogs import ConfirmScreen
from console.tui.keyed_table import KeyedTable
from tests.fixtures.tui_data import FROZEN_NOW, fill_console_db
from tests.test_tui_main import SIZE, wait_for


@pytest.fixture
def console_db(tmp_path: Path) -> Path:
    return fill_console_db(tmp_path / "console.db")


def make_app(db: Path, agents: str) -> FleetscanApp:
    return FleetscanApp(db, None, agents, start_master=False, clock=lambda: FROZEN_NOW, poll_interval=0.05)


def cell(screen: AgentsScreen, name: str, column: str) -> str:
    value = screen.query_one("#agents-table", KeyedTable).get_cell(name, column)
    return str(getattr(value, "plain", value))


def detail(screen: AgentsScreen) -> str:
    return str(screen.query_one("#agent-detail").render())


async def open_agents(app: FleetscanApp, pilot) -> AgentsScreen:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: app.views_drawn > 0)
    await pilot.press("a")
    await wait_for(pilot, lambda: isinstance(app.screen, AgentsScreen) and bool(app.screen.entries))
    await pilot.pause(0.1)
    return app.screen  # type: ignore[return-value]


async def test_a_lists_the_boxes_with_their_live_state(console_db: Path) -> None:
    app = make_app(console_db, "local:2")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_agents(app, pilot)
        table = screen.query_one("#agents-table", KeyedTable)
        await wait_for(pilot, lambda: table.row_keys == ["local-1", "local-2"])
        assert cell(screen, "local-1", "state") == "up"
        assert cell(screen, "local-1", "slots") == "3/4"
        assert cell(screen, "local-2", "state") == "down"
        assert cell(screen, "local-2", "heartbeat") == "1m35s ago"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, AgentsScreen))


async def test_c_checks_a_local_agent_for_real(console_db: Path) -> None:
    app = make_app(console_db, "local:2")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_agents(app, pilot)
        await pilot.press("c")
        await wait_for(pilot, lambda: "local-1" in screen.checks, timeout=60)
        assert screen.checks["local-1"].ok, screen.checks["local-1"].summary
        assert cell(screen, "local-1", "check") == "ok"
        assert "python" in detail(screen)


async def test_t_on_a_local_agent_explains_there_is_no_key(console_db: Path) -> None:
    app = make_app(console_db, "local")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_agents(app, pilot)
        await pilot.press("t")
        await wait_for(pilot, lambda: "no SSH host key" in detail(screen))
        assert not isinstance(app.screen, ConfirmScreen)


@pytest.mark.ssh
async def test_t_shows_the_fingerprint_then_trusts_and_c_passes(
    console_db: Path, sshd_boxes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    known_hosts = tmp_path / "known_hosts"
    monkeypatch.setenv("FLEETSCAN_KNOWN_HOSTS", str(known_hosts))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts of the operator's to trust it already
    box = sshd_boxes.boxes[0]
    expected = asyncssh.read_public_key(str(box.host_key.with_suffix(".pub"))).get_fingerprint("sha256")
    inventory = sshd_boxes.write_inventory(tmp_path / "agents.yaml", boxes=[box])
    app = make_app(console_db, str(inventory))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_agents(app, pilot)
        assert cell(screen, box.name, "host_key") == "unknown"
        # an unknown key: the check is refused, with the command that trusts it
        await pilot.press("c")
        await wait_for(pilot, lambda: box.name in screen.checks, timeout=60)
        assert not screen.checks[box.name].ok
        # trust: the fingerprint is shown first; "Cancel" records nothing
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=60)
        assert expected in app.screen.question  # type: ignore[attr-defined]
        await pilot.press("escape")
        await wait_for(pilot, lambda: "not trusted" in detail(screen))
        assert not known_hosts.exists()
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=60)
        await pilot.press("y")
        await wait_for(pilot, lambda: known_hosts.exists() and cell(screen, box.name, "host_key") == "trusted")
        assert expected in detail(screen)
        del screen.checks[box.name]
        await pilot.press("c")
        await wait_for(pilot, lambda: box.name in screen.checks, timeout=60)
        assert screen.checks[box.name].ok, screen.checks[box.name].summary


async def test_the_consoles_master_takes_a_box_back_once_its_key_is_trusted(
    console_db: Path, sshd_boxes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """An untrusted box: the master stays on with "no agents up"; trusting it (t, y) reconnects it at
    once (well before the heartbeat's backoff would), and the header counts it."""
    known_hosts = tmp_path / "known_hosts"
    monkeypatch.setenv("FLEETSCAN_KNOWN_HOSTS", str(known_hosts))
    monkeypatch.setenv("HOME", str(tmp_path))
    box = sshd_boxes.boxes[0]
    inventory = sshd_boxes.write_inventory(tmp_path / "agents.yaml", boxes=[box])
    app = FleetscanApp(console_db, None, str(inventory), clock=lambda: FROZEN_NOW, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "no agents up" in app.sub_title, timeout=60, why=lambda: app.sub_title)
        assert app.master is not None and app.master.fleet is not None  # on, not failed
        handle = app.master.fleet.handles[box.name]
        screen = await open_agents(app, pilot)
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=60)
        # between the heartbeat's retries (each fails on the unknown key): from now on it will not
        # retry the box by itself, so only the operator's intent can bring it back
        await wait_for(pilot, lambda: str(handle.state) == "down", timeout=60)
        handle.retry_at = float("inf")
        await pilot.press("y")
        await wait_for(pilot, lambda: known_hosts.exists())
        await wait_for(pilot, lambda: "1 agent up" in app.sub_title, timeout=30, why=lambda: app.sub_title)
        assert str(handle.state) == "up" and screen is not None


async def test_a_passing_check_reconnects_a_down_box_at_once(
    console_db: Path, sshd_boxes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """The key was trusted elsewhere (`fleetscan agents --trust` in another terminal): c proves the box
    reachable and the console's master takes it back without waiting for its backoff."""
    known_hosts = tmp_path / "known_hosts"
    monkeypatch.setenv("FLEETSCAN_KNOWN_HOSTS", str(known_hosts))
    monkeypatch.setenv("HOME", str(tmp_path))
    box = sshd_boxes.boxes[0]
    inventory = sshd_boxes.write_inventory(tmp_path / "agents.yaml", boxes=[box])
    app = FleetscanApp(console_db, None, str(inventory), clock=lambda: FROZEN_NOW, poll_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "no agents up" in app.sub_title, timeout=60, why=lambda: app.sub_title)
        assert app.master is not None and app.master.fleet is not None
        handle = app.master.fleet.handles[box.name]
        screen = await open_agents(app, pilot)
        await wait_for(pilot, lambda: str(handle.state) == "down", timeout=60)
        handle.retry_at = float("inf")  # no retry of its own from now on
        known_hosts.write_text(box.known_hosts_line())
        await pilot.press("c")
        await wait_for(pilot, lambda: box.name in screen.checks, timeout=60)
        assert screen.checks[box.name].ok, screen.checks[box.name].summary
        await wait_for(pilot, lambda: "1 agent up" in app.sub_title, timeout=30, why=lambda: app.sub_title)
