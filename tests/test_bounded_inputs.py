"""Every input boundary is bounded and typed: one line naming file, line and field, exit 2,
nothing written; a full disk mid-run is one line, exit 1, and the run resumes exactly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.chaos import fleetscan, query

WORKFLOW = "workflows:\n  w:\n    stages:\n      - id: s\n        tool: noop\n        targets: {from: input, type: host}\n"


def _refused(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleetscan: "), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_nul_byte_in_the_workflow_file_is_one_line_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_bytes(WORKFLOW.encode().replace(b"tool: noop", b"tool: no\x00op"))
    db = tmp_path / "db"
    _refused(fleetscan("submit", "w", "--targets", "127.0.0.1", "--workflows", str(path), db=db), f"{path}:5", "NUL")
    assert not db.exists()


def test_an_integer_of_5000_digits_is_refused_at_its_place(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW.replace("tool: noop", "tool: noop\n        retries: " + "9" * 5000))
    _refused(fleetscan("workflows", "--workflows", str(path), db=tmp_path / "db"), f"{path}:6", "number too large")


def test_a_yaml_alias_bomb_is_refused_before_it_costs_memory(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nworkflows: *a8\n")
    _refused(fleetscan("workflows", "--workflows", str(path), db=tmp_path / "db"), "alias expansion")


@pytest.mark.parametrize("where", ["--workflows", "--targets"])
def test_a_fifo_or_a_device_is_refused_at_once(tmp_path: Path, where: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(WORKFLOW)
    for special in (str(fifo), "/dev/zero"):
        args = (["--workflows", special, "--targets", "127.0.0.1"] if where == "--workflows"
                else ["--workflows", str(workflow), "--targets", f"@{special}"])
        _refused(fleetscan("submit", "w", *args, db=tmp_path / "db", timeout=20), special, "not a regular file")


@pytest.mark.parametrize("value", ["0x7f140001", "127.20.0.0x1", "127.1", "under_score.example"])
def test_non_canonical_address_forms_are_refused_as_hostnames(tmp_path: Path, value: str) -> None:
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(WORKFLOW)
    _refused(fleetscan("submit", "w", "--targets", value, "--workflows", str(workflow), db=tmp_path / "db"),
             "--targets", value)


def test_an_at_file_is_bounded_while_it_is_read(tmp_path: Path) -> None:
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(WORKFLOW)
    long_line = tmp_path / "long.txt"
    long_line.write_text("127.0.0.1\n127.0.0.2\n" + "a" * (2 * 1024 * 1024) + "\n")
    _refused(fleetscan("submit", "w", "--targets", f"@{long_line}", "--workflows", str(workflow), db=tmp_path / "db"),
             f"{long_line}:3", "line longer than")
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"127.0.0.1\n127.0.0\x00.2\n")
    _refused(fleetscan("submit", "w", "--targets", f"@{nul}", "--workflows", str(workflow), db=tmp_path / "db"),
             f"{nul}:2", "NUL")


GEN = """\
import json, sys
t = sys.argv[1]
for p in range(1, 20001):
    print(json.dumps({"type": "port_open", "target": t, "data": {"host": t, "port": p, "proto": "tcp", "banner": "b" * 200}}))
"""


@pytest.mark.slow
def test_a_full_disk_mid_run_is_one_line_and_the_run_resumes_exactly(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        gen = tmp_path / "gen.py"
        gen.write_text(GEN)
        workflow = tmp_path / "wf.yaml"
        workflow.write_text(
            "workflows:\n  gen:\n    stages:\n      - id: s\n        tool: exec\n        retries: 0\n"
            f"        with: {{argv: [{sys.executable}, {gen}, '{{target}}'], parser: jsonl}}\n"
            "        targets: {from: input, type: host}\n"
        )
        done = fleetscan("run", "gen", "--targets", "127.0.0.1", "--workflows", str(workflow), "--agents", "local",
                         db=small / "f.db")
        assert done.returncode == 1
        assert "Traceback" not in done.stderr and "Exception" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].endswith("database or disk is full"), done.stderr
        run_id = done.stderr.split("run ", 1)[1].split()[0]
        big = tmp_path / "big"
        big.mkdir()
        for name in os.listdir(small):
            shutil.copy2(small / name, big / name)  # space freed: the same database, somewhere with room
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
    resumed = fleetscan("resume", run_id, "--agents", "local", db=big / "f.db")
    assert resumed.returncode == 0, resumed.stderr
    rows = query(big / "f.db", "SELECT key FROM results WHERE run_id = ?", (run_id,))
    assert sorted(r["key"] for r in rows) == sorted(f"127.0.0.1:{p}/tcp" for p in range(1, 20001))
