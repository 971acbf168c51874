"""The core never imports Textual (Harlequin's rule): proven in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "console.errors",
    "console.targets.sets",
    "console.workflow.models",
    "console.targets.records",
    "console.fleet.protocol",
    "console.store.sqlite.store",
    "console.master.planner",
    "console.master.scheduler",
    "console.fleet.fleet",
    "console.fleet.links",
    "console.fleet.ssh.link",
    "console.store.export",
    "console.cli",
]


def test_core_never_imports_textual() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"core modules pulled in Textual: {out.stdout.strip()}"


def test_tui_does_import_textual() -> None:
    """The check above can fail: the console package itself does load Textual."""
    code = "import sys, console.tui.app; print(any(m.startswith('textual') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
