"""End to end in a real terminal: `fleetscan` in tmux, a run submitted from the CLI, paused with p.

The console runs its embedded master with local agents; the workflow is noop tasks
that sleep, so there is time to watch progress and pause. tmux runs on a private
socket (a server of its own, with this test's environment) and is killed at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from console.store import open_store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

WORKFLOWS = """\
workflows:
  slow:
    description: noop tasks that sleep (console end-to-end test)
    stages:
      - id: work
        tool: noop
        with: {sleep: 2.0, records: 1}
        targets: {from: input, type: host}
        chunk: 1
"""

FLEETSCAN = str(Path(sys.executable).with_name("fleetscan"))


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=30, check=check)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "console").stdout

    def alive(self) -> bool:
        return self.run("has-session", "-t", "console", check=False).returncode == 0


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    mux = Tmux(f"fleetscan-test-{os.getpid()}-{tmp_path.name}")
    yield mux
    mux.run("kill-server", check=False)


def wait_until(predicate: Callable[[], bool], what: str, screen: Callable[[], str], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; screen:\n{screen()}")


def run_line(screen: str, run_id: str) -> str:
    return next((line for line in screen.splitlines() if run_id[:8] in line and "slow" in line), "")


def progress_of(line: str) -> tuple[int, int]:
    for word in line.split():
        done, slash, total = word.partition("/")
        if slash and done.isdigit() and total.isdigit():
            return int(done), int(total)
    return 0, 0


def start_console(tmux: Tmux, tmp_path: Path, command: str, size: tuple[int, int]) -> None:
    """A detached session of exactly ``size``: no user config (``-f /dev/null``), and the window size
    pinned (``window-size manual``), so tmux's ``default-size`` (80x24) never applies behind our back."""
    width, height = str(size[0]), str(size[1])
    tmux.run("-f", "/dev/null", "new-session", "-d", "-s", "console", "-x", width, "-y", height,
             "-c", str(tmp_path), command)
    tmux.run("set-option", "-t", "console", "window-size", "manual")
    tmux.run("resize-window", "-t", "console", "-x", width, "-y", height)


@pytest.mark.parametrize("size", [(160, 48), (80, 24)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_console_shows_a_cli_run_progress_and_pauses_it(tmux: Tmux, tmp_path: Path, size: tuple[int, int]) -> None:
    db = tmp_path / "console.db"
    workflows = tmp_path / "workflows.yaml"
    workflows.write_text(WORKFLOWS)
    common = ["--db", str(db), "--workflows", str(workflows), "--agents", "local:2"]
    command = " ".join([FLEETSCAN, *common])
    start_console(tmux, tmp_path, command, size)
    # the header says the master is on and how many of its boxes are up (not just "master on")
    wait_until(lambda: re.search(r"master on \W+ [1-9]\d* agents? up", tmux.screen()) is not None
               and "Runs" in tmux.screen(), "the console and its boxes", tmux.screen)

    submitted = subprocess.run(
        [FLEETSCAN, "submit", "slow", "--targets", "127.0.0.1-127.0.0.200", *common],
        capture_output=True, text=True, timeout=60, check=True,
    )
    run_id = submitted.stdout.strip()
    assert run_id

    def screen_and_store() -> str:
        """What a failure needs to be understood: the screen, and what the store says happened."""
        with open_store(db) as store:
            run = store.runs.get(run_id)
            told = [f"{e.kind}: {e.message}" for e in store.events.recent(limit=50)]
            boxes = [f"{a.name} {a.state} {a.error or ''}" for a in store.agents.all()]
        size = tmux.run("display", "-p", "-t", "console", "#{window_width}x#{window_height}", check=False).stdout
        return (f"{tmux.screen()}\nwindow {size.strip()}; run {run.state}, owner {run.owner}; agents {boxes}\n"
                + "\n".join(told))

    # the run shows up, is served by the console's master, and progresses
    wait_until(lambda: "running" in run_line(tmux.screen(), run_id), "the run running", screen_and_store)
    wait_until(lambda: progress_of(run_line(tmux.screen(), run_id))[0] > 0, "progress", tmux.screen)
    done, total = progress_of(run_line(tmux.screen(), run_id))
    assert total == 200 and done < total

    tmux.run("send-keys", "-t", "console", "p")
    wait_until(lambda: "paused" in run_line(tmux.screen(), run_id), "paused on screen", tmux.screen)
    store = open_store(db)
    try:
        assert store.runs.get(run_id).state == "paused"
    finally:
        store.close()

    # q leaves; the run stays paused (resumable), nothing is lost
    tmux.run("send-keys", "-t", "console", "q")
    wait_until(lambda: not tmux.alive(), "the console to exit", tmux.screen, timeout=60)
    store = open_store(db)
    try:
        run = store.runs.get(run_id)
        summary = store.runs.summary(run_id)
    finally:
        store.close()
    assert run.state == "paused"
    assert summary["stages"][0]["tasks_done"] < 200
