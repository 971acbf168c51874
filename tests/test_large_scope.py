"""A scope of a hundred thousand entries: stored whole (more than a typed SPEC may hold), sent to the
agent once by reference (not in every task line), and it still guards every task."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.fixtures.chaos import fleetscan, query, write_workflow

pytestmark = pytest.mark.slow


def test_a_run_with_a_hundred_thousand_entry_scope_file(tmp_path: Path) -> None:
    scope_file = tmp_path / "scope.txt"
    # scattered addresses (none adjacent, so nothing merges): ~1.4 MB of SPEC, ~1.5 MB of wire scope
    scattered = (f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(70_001, 270_001, 2))
    scope_file.write_text("127.0.0.1\n127.0.0.2\n" + "\n".join(scattered) + "\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        workflows = write_workflow(tmp_path / "workflows.yaml", "scan", [
            {"id": "ports", "tool": "tcp_connect", "with": {"ports": [port], "timeout": 1.0}, "chunk": 1},
        ])  # fmt: skip
        db = tmp_path / "s.db"
        out = fleetscan("run", "scan", "--targets", "127.0.0.1,127.0.0.2,localhost", "--scope", f"@{scope_file}",
                        "--exclude", "127.0.0.2", "--agents", "local:2", "--workflows", str(workflows), "--json", db=db)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "completed"
    hosts = sorted(json.loads(r["data"])["host"] for r in query(db, "SELECT data FROM results WHERE type = 'port_open'"))
    # 127.0.0.1 open; 127.0.0.2 excluded (never planned); localhost is not in the scope file: a name
    # outside the scope is dropped before planning
    assert hosts == ["127.0.0.1"]
    (stage,) = query(db, "SELECT dropped FROM stages")
    assert stage["dropped"] == 2
