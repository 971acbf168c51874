"""The refresh loop without Textual: posts only on change, follows the selection, survives a bad read."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from console.store import open_store
from console.store.rows import ConsoleView
from console.tui.refresh import ViewRefresher
from tests.fixtures.tui_data import RUN_DONE, RUN_RECON, RUN_WEB, fill_console_db


class Loop:
    def __init__(self, db: Path) -> None:
        self.watcher = ViewRefresher(db, interval=0.02)
        self.views: list[ConsoleView] = []
        self.trouble: list[str | None] = []
        self.thread = threading.Thread(
            target=self.watcher.loop, args=(self.views.append, lambda: False, self.trouble.append), daemon=True
        )

    def wait(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "the loop did not get there"
            time.sleep(0.01)


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    running = Loop(fill_console_db(tmp_path / "console.db"))
    running.thread.start()
    yield running
    running.watcher.stop()
    running.thread.join(timeout=10)
    assert not running.thread.is_alive()


def test_first_view_selects_the_newest_run_and_idle_store_posts_nothing(loop: Loop) -> None:
    loop.wait(lambda: len(loop.views) == 1)
    view = loop.views[0]
    assert [r.id for r in view.runs] == [RUN_RECON, RUN_WEB, RUN_DONE]
    assert view.selected_run == RUN_RECON
    assert [s.id for s in view.stages] == ["alive", "ports", "web"]
    assert set(view.stages_by_run) == {RUN_RECON, RUN_WEB, RUN_DONE}
    assert [r.id for r in view.results][-1] == 40 and view.total_results == 40
    time.sleep(0.3)  # many poll intervals with no commit anywhere
    assert len(loop.views) == 1


def test_a_commit_elsewhere_and_a_new_selection_each_post_a_view(loop: Loop, tmp_path: Path) -> None:
    loop.wait(lambda: len(loop.views) == 1)
    store = open_store(tmp_path / "console.db")
    try:
        store.runs.pause(RUN_RECON)
    finally:
        store.close()
    loop.wait(lambda: any(r.id == RUN_RECON and r.state == "paused" for r in loop.views[-1].runs))
    seen = len(loop.views)
    loop.watcher.selected_run = RUN_WEB
    loop.watcher.poke()
    loop.wait(lambda: len(loop.views) > seen and loop.views[-1].selected_run == RUN_WEB)
    assert [s.id for s in loop.views[-1].stages] == ["probe"]


def test_a_failing_read_is_reported_once_and_recovers(loop: Loop, tmp_path: Path) -> None:
    loop.wait(lambda: len(loop.views) == 1)
    conn = sqlite3.connect(tmp_path / "console.db", isolation_level=None)
    try:
        conn.execute("ALTER TABLE events RENAME TO events_away")
        loop.wait(lambda: len(loop.trouble) == 1)
        assert loop.trouble[0] is not None and "events" in loop.trouble[0]
        time.sleep(0.2)
        assert len(loop.trouble) == 1  # reported once, not every second
        conn.execute("ALTER TABLE events_away RENAME TO events")
        loop.wait(lambda: loop.trouble[-1] is None)
        loop.wait(lambda: len(loop.views) >= 2)
    finally:
        conn.close()
