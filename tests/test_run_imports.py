"""A local run imports only what it uses: a real one-target no-op ``fleetscan run`` (a real local agent)
in a fresh interpreter, then its ``sys.modules``. The start-up cost of a run is mostly imports
(README "Speed and politeness"); this keeps the heavy ones it never needs off its path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

#: never needed by a run on local agents without --notify: the TUI, SSH, the inventory's models, HTTP
NOT_ON_A_LOCAL_RUN = ("textual", "rich", "asyncssh", "paramiko", "sqlite_utils", "console.tui",
                      "console.fleet.inventory", "console.fleet.ssh", "http.client")


def _modules_after_run(tmp_path: Path, *extra: str) -> tuple[int, set[str]]:
    flow = tmp_path / "wf.yaml"
    flow.write_text("workflows:\n  nop:\n    stages:\n      - id: n\n        tool: noop\n")
    argv = ["run", "nop", "--targets", "127.0.0.1", "--workflows", str(flow), "--db", str(tmp_path / "r.db"), *extra]
    code = (
        "import json, sys\n"
        "from console.cli.main import main\n"
        f"rc = main({argv!r})\n"
        "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))\n"
    )
    first = subprocess.run([sys.executable, "-m", "console.cli", *argv], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr  # creates the store (its migrations use sqlite_utils)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    return answer["rc"], set(answer["modules"])


def _loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(m.startswith(name + ".") for m in modules)


def test_local_noop_run_skips_what_it_does_not_use(tmp_path: Path) -> None:
    """The second run on a store: the first one migrated it."""
    rc, modules = _modules_after_run(tmp_path)
    assert rc == 0
    assert [name for name in NOT_ON_A_LOCAL_RUN if _loaded(modules, name)] == []
    assert "console.master.scheduler" in modules and "yaml" in modules  # the run did run, from the file


def test_an_inventory_run_does_load_the_inventory(tmp_path: Path) -> None:
    """The check above can fail: an ``--agents FILE`` run reads its inventory with those models."""
    inventory = tmp_path / "agents.yaml"
    inventory.write_text("agents:\n  - {name: box1, host: 127.0.0.1, port: 1}\n")
    code = (
        "import sys\n"
        "from console.cli.main import _agents_source\n"
        "import argparse\n"
        f"_agents_source(argparse.Namespace(agents={str(inventory)!r}))\n"
        "print('console.fleet.inventory' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"  # the source is only checked here; the fleet loads the file
    from console.fleet.fleet import handles_for

    assert [h.name for h in handles_for(str(inventory))] == ["box1"]
