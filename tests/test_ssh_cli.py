"""The operator's SSH flow through the real CLI: list, check (refused), trust, check again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from tests.fixtures.sshd import SshdFleet

pytestmark = pytest.mark.ssh

ROOT = Path(__file__).resolve().parent.parent


def fleetscan(*args: str, known_hosts: Path, db: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLEETSCAN_KNOWN_HOSTS": str(known_hosts), "FLEETSCAN_DB": str(db)}
    return subprocess.run(
        [sys.executable, "-m", "console.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def fingerprint(fleet: SshdFleet, name: str) -> str:
    pub = fleet.box(name).host_key.with_suffix(".pub")
    return asyncssh.read_public_key(str(pub)).get_fingerprint("sha256")


def line_of(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(name + " "))


def test_unknown_boxes_are_refused_until_the_operator_trusts_them(
    sshd_boxes: SshdFleet, tmp_path: Path
) -> None:
    inventory = str(sshd_boxes.write_inventory(tmp_path / "agents.yaml"))
    known = tmp_path / "fleetscan_known_hosts"
    db = tmp_path / "fleetscan.db"

    listed = fleetscan("agents", "--agents", inventory, known_hosts=known, db=db)
    assert listed.returncode == 0, listed.stderr
    assert "unknown" in line_of(listed.stdout, "box1") and "unknown" in line_of(listed.stdout, "box2")

    refused = fleetscan("agents", "--check", "--agents", inventory, known_hosts=known, db=db)
    assert refused.returncode == 1
    assert fingerprint(sshd_boxes, "box1") in line_of(refused.stdout, "box1")
    assert "fleetscan agents --trust box1" in refused.stdout
    assert not sshd_boxes.box("box1").cache_dir.exists()  # refused before anything ran there

    trusted = fleetscan("agents", "--trust", "box1", "--yes", "--agents", inventory, known_hosts=known, db=db)
    assert trusted.returncode == 0, trusted.stderr
    assert fingerprint(sshd_boxes, "box1") in trusted.stdout
    assert f"[{sshd_boxes.box('box1').address}]:{sshd_boxes.box('box1').port}" in known.read_text()

    half = fleetscan("agents", "--check", "--agents", inventory, known_hosts=known, db=db)
    assert half.returncode == 1
    assert " ok " in line_of(half.stdout, "box1") and "FAIL" in line_of(half.stdout, "box2")

    fleetscan("agents", "--trust", "box2", "--yes", "--agents", inventory, known_hosts=known, db=db)
    whole = fleetscan("agents", "--check", "--agents", inventory, known_hosts=known, db=db)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "cached" in line_of(whole.stdout, "box1")  # pushed by the previous check
    assert "pushed" in line_of(whole.stdout, "box2")


def test_trust_without_a_terminal_needs_yes(sshd_boxes: SshdFleet, tmp_path: Path) -> None:
    inventory = str(sshd_boxes.write_inventory(tmp_path / "agents.yaml"))
    known = tmp_path / "fleetscan_known_hosts"
    asked = fleetscan(
        "agents", "--trust", "box1", "--agents", inventory, known_hosts=known, db=tmp_path / "db"
    )
    assert asked.returncode == 2
    assert "--yes" in asked.stderr
    assert not known.exists()
