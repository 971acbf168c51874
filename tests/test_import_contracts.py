"""The import-linter contracts in pyproject.toml hold, and each of them can break.

`lint-imports` runs on a copy of console/ and agentkit/, once as it is and once with one new
module per contract that breaks it, so a contract that names a module wrongly or checks
nothing shows here rather than passing quietly in CI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"

# One new module per contract, each breaking exactly that contract (the master's also through
# console.cli's lazy import of console.tui); console/_stray.py is a module no list of sources
# names, which the Textual contract must still catch.
BREAKERS = {
    "agentkit/_stray.py": "from console import errors\n",
    "console/_stray.py": "import textual\n",
    "console/store/_stray.py": "from console.fleet import protocol\n",
    "console/master/_stray.py": "from console.cli import main\n",
    "console/workflow/_stray.py": "import console.master.planner\n",
    "console/cli/_stray.py": "from console.store.sqlite import store\n",
    "console/store/sqlite/_stray.py": "import psycopg\n",
}


def _copy_tree(dest: Path) -> None:
    for package in ("console", "agentkit"):
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", "--no-logo"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"},
    )


def test_contracts_kept_on_this_tree(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    out = _lint(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 7 kept, 0 broken." in out.stdout, out.stdout


def test_every_contract_can_break(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    for relpath, source in BREAKERS.items():
        (tmp_path / relpath).write_text(source)
    out = _lint(tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Contracts: 0 kept, 7 broken." in out.stdout, out.stdout
    for chain in (
        "agentkit._stray -> console.errors",
        "console._stray -> textual",
        "console.store._stray -> console.fleet.protocol",
        "console.master._stray -> console.cli.main",
        "console.cli.main -> console.tui.app",
        "console.workflow._stray -> console.master.planner",
        "console.cli._stray -> console.store.sqlite.store",
        "console.store.sqlite._stray -> psycopg",
    ):
        assert chain in out.stdout, f"{chain!r} not reported:\n{out.stdout}"
