"""Pilot tests of the new-run modal (n): bad input is shown inline and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, Select, Static

from console.store import open_store
from console.tui import intents
from console.tui.app import FleetscanApp
from console.tui.new_run import NewRunScreen
from tests.fixtures.tui_data import FROZEN_NOW, fill_console_db
from tests.test_tui_main import SIZE, wait_for

WORKFLOWS = """\
workflows:
  slow:
    description: noop tasks that take a while (console tests)
    stages:
      - id: work
        tool: noop
        with: {sleep: 1.0}
        targets: {from: input, type: host}
        chunk: 1
  quick:
    description: one noop task per target
    stages:
      - id: work
        tool: noop
        targets: {from: input, type: host}
  sweep:
    description: one noop task per box, no targets
    stages:
      - id: checks
        tool: noop
        targets: {from: boxes}
"""


@pytest.fixture
def workflows_file(tmp_path: Path) -> Path:
    path = tmp_path / "workflows.yaml"
    path.write_text(WORKFLOWS)
    return path


@pytest.fixture
def console_db(tmp_path: Path) -> Path:
    return fill_console_db(tmp_path / "console.db")


def make_app(db: Path, workflows: Path, agents: str = "local") -> FleetscanApp:
    return FleetscanApp(db, workflows, agents, start_master=False, clock=lambda: FROZEN_NOW, poll_interval=0.05)


def run_ids(db: Path) -> set[str]:
    store = open_store(db)
    try:
        return {r.id for r in store.runs.newest(limit=1000)}
    finally:
        store.close()


async def open_modal(app: FleetscanApp, pilot) -> NewRunScreen:  # type: ignore[no-untyped-def]
    await wait_for(pilot, lambda: app.views_drawn > 0)
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen) and bool(app.screen.workflows))
    await pilot.pause()  # let the layout settle before clicking
    return app.screen  # type: ignore[return-value]


def fill(screen: NewRunScreen, **values: str) -> None:
    for name, value in values.items():
        if name == "workflow":
            screen.query_one("#in-workflow", Select).value = value
        else:
            screen.query_one(f"#in-{name}", Input).value = value


def error_of(screen: NewRunScreen, field: str) -> str:
    widget = screen.query_one(f"#err-{field}", Static)
    return str(widget.render()) if widget.display else ""


async def test_modal_picks_a_workflow_and_shows_its_stages(console_db: Path, workflows_file: Path) -> None:
    app = make_app(console_db, workflows_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_modal(app, pilot)
        assert screen.workflows == ["slow", "quick", "sweep"]
        assert screen.query_one("#in-workflow", Select).value == "slow"
        assert "work noop ← input" in str(screen.query_one("#workflow-stages").render())
        fill(screen, workflow="sweep")
        await wait_for(pilot, lambda: "checks noop ← boxes" in str(screen.query_one("#workflow-stages").render()))
        assert "optional" in screen.query_one("#in-targets", Input).placeholder
        assert not screen.query("#in-agents")  # no field the master would ignore
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewRunScreen))


@pytest.mark.parametrize(
    ("values", "field", "expect"),
    [
        ({"targets": "not a target!"}, "targets", "bad target"),
        ({"targets": ""}, "targets", "required: stage 'work'"),  # a stage reads targets
        ({"targets": "   "}, "targets", "required"),
        ({"targets": "127.0.0.1", "scope": "-x"}, "scope", "not a scope entry '-x'"),
        ({"targets": "127.0.0.1", "exclude": "-y"}, "exclude", "not an exclusion '-y'"),
        ({"targets": "127.0.0.1", "priority": "high"}, "priority", "high"),
        ({"targets": "127.0.0.1", "priority": "99999999"}, "priority", "1,000,000"),
        ({"targets": "127.0.0.1", "max_rate": "0"}, "max_rate", "from 1"),
        ({"targets": "127.0.0.1", "host_rate": "fast"}, "host_rate", "fast"),
        ({"targets": "127.0.0.1,300.1.2.3"}, "targets", "300.1.2.3"),
    ],
)
async def test_bad_input_is_shown_inline_and_writes_nothing(
    console_db: Path, workflows_file: Path, values: dict[str, str], field: str, expect: str
) -> None:
    before = run_ids(console_db)
    app = make_app(console_db, workflows_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_modal(app, pilot)
        fill(screen, **values)
        await pilot.click("#submit")
        await wait_for(pilot, lambda: bool(error_of(screen, field)) and not screen.submitting)
        assert expect in error_of(screen, field)
        assert screen.query_one(f"#in-{field}", Input).has_class("invalid")
        assert isinstance(app.screen, NewRunScreen)  # still open, for the operator to fix
    assert run_ids(console_db) == before


async def test_every_error_shows_at_once_beside_its_field(console_db: Path, workflows_file: Path) -> None:
    before = run_ids(console_db)
    app = make_app(console_db, workflows_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_modal(app, pilot)
        fill(screen, targets="bad!", scope="-x", priority="hi", host_rate="0")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: bool(error_of(screen, "host_rate")) and not screen.submitting)
        shown = {f: error_of(screen, f) for f in ("workflow", "targets", "scope", "exclude", "priority",
                                                  "max_rate", "host_rate")}
        assert {f for f, text in shown.items() if text} == {"targets", "scope", "priority", "host_rate"}
        assert "bad target" not in shown["scope"] and "scope" in shown["scope"]
        assert app.focused is screen.query_one("#in-targets")  # the first wrong field
    assert run_ids(console_db) == before


async def test_targets_are_optional_when_no_stage_reads_them(console_db: Path, workflows_file: Path) -> None:
    before = run_ids(console_db)
    app = make_app(console_db, workflows_file, agents="local:2")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_modal(app, pilot)
        fill(screen, workflow="sweep", exclude="127.0.0.9", max_rate="300", host_rate="20")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewRunScreen))
    (new_id,) = run_ids(console_db) - before
    with open_store(console_db) as store:
        run = store.runs.get(new_id)
    assert (run.workflow, run.targets, run.exclude, run.max_rate, run.host_rate) == ("sweep", None, "127.0.0.9",
                                                                                     300, 20)
    assert run.agents == "local:2"  # the source the console's master serves it with


async def test_the_last_values_come_back_next_time(console_db: Path, workflows_file: Path) -> None:
    app = make_app(console_db, workflows_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_modal(app, pilot)
        fill(screen, workflow="quick", targets="127.0.0.4", scope="127.0.0.0/28", priority="3")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewRunScreen))
        screen = await open_modal(app, pilot)
        await wait_for(pilot, lambda: screen.query_one("#in-workflow", Select).value == "quick")
        assert screen.form() == intents.NewRunForm("quick", "127.0.0.4", "127.0.0.0/28", "", "3", "", "")


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
async def test_the_form_fits_and_submits_at_any_size(console_db: Path, workflows_file: Path,
                                                     size: tuple[int, int]) -> None:
    before = run_ids(console_db)
    app = make_app(console_db, workflows_file)
    async with app.run_test(size=size) as pilot:
        screen = await open_modal(app, pilot)
        button = screen.query_one("#submit")
        region = button.region
        assert region.bottom <= size[1] and region.right <= size[0] and region.height > 0
        fill(screen, targets="127.0.0.7")
        await pilot.click("#submit")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewRunScreen))
    assert len(run_ids(console_db) - before) == 1


async def test_fixing_the_input_submits_and_selects_the_new_run(console_db: Path, workflows_file: Path) -> None:
    before = run_ids(console_db)
    app = make_app(console_db, workflows_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_modal(app, pilot)
        fill(screen, targets="bogus target")
        await pilot.click("#submit")
        await wait_for(pilot, lambda: bool(error_of(screen, "targets")) and not screen.submitting)
        fill(screen, workflow="quick", targets="127.0.0.1-3", scope="127.0.0.0/24", priority="7")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewRunScreen),
                       why=lambda: f"{screen.submitting} {[error_of(screen, f) for f in ('targets', 'form')]}"
                       f" {app.screen} {list(app.workers)}")
        (new_id,) = run_ids(console_db) - before
        await wait_for(pilot, lambda: app.watcher.selected_run == new_id and app.selected_run() is not None)
    store = open_store(console_db)
    try:
        run = store.runs.get(new_id)
    finally:
        store.close()
    assert (run.workflow, run.state, run.priority, run.agents) == ("quick", "pending", 7, "local")
    assert run.targets == "127.0.0.1-127.0.0.3"


async def test_enter_in_a_field_submits(console_db: Path, workflows_file: Path) -> None:
    before = run_ids(console_db)
    app = make_app(console_db, workflows_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_modal(app, pilot)
        screen.query_one("#in-targets", Input).focus()
        await pilot.press(*"127.0.0.9", "enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewRunScreen))
    assert len(run_ids(console_db) - before) == 1


async def test_a_broken_workflows_file_is_reported_in_the_modal(console_db: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("workflows:\n  x:\n    stages:\n      - id: a\n        tool: no_such_tool\n")
    app = make_app(console_db, broken)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.views_drawn > 0)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen) and bool(error_of(app.screen, "form")))
        assert "broken.yaml" in error_of(app.screen, "form")  # type: ignore[arg-type]
