"""No control or escape sequence from a box or a scanned service reaches a terminal.

Property tests of the one sanitiser (console.sanitize) over arbitrary text and bytes; then a
fake box (tests/fixtures/fakebox.py) whose hello, stderr and error texts carry ESC ] 0 (title),
OSC 52 (clipboard), CSI 2J (clear screen), BEL, C1 CSI and bidi overrides, behind a real
local link and behind a real sshd; the master stores none of it raw and `fleetscan agents
--check`, `run`, `status` and `workflows` print none of it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from agentkit.archive import build_archive
from console.fleet.links import LocalLink
from console.sanitize import escape_text, for_terminal, json_for_terminal, safe_line
from tests.fixtures.chaos import fleetscan, write_workflow
from tests.fixtures.fakebox import write_fakebox
from tests.fixtures.sshd import SshdFleet

#: what a hostile box writes: window title, clipboard (OSC 52), clear screen, BEL, C1 CSI, bidi override
HOSTILE = "\x1b]0;PWNED\x07\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\x9b31m\u202eevil\u2066\x07"
#: what must never be printed: ESC, BEL, C1 controls, bidi overrides and isolates
FORBIDDEN = ["\x1b", "\x07", "\x9b", "\x9d", "\u202e", "\u2066", "\x00"]


def assert_terminal_safe(text: str) -> None:
    for ch in FORBIDDEN:
        assert ch not in text, f"{ch!r} reached the terminal: {text[:400]!r}"
    for line in text.split("\n"):
        assert line.replace("\t", " ").isprintable(), repr(line)


# -- the sanitiser ------------------------------------------------------------------------------


@given(st.text())
def test_safe_line_is_printable_for_any_text(text: str) -> None:
    out = safe_line(text, None)
    assert out.isprintable()
    if text.isprintable():
        assert out == text  # printable text passes untouched


@given(st.binary())
def test_any_bytes_decoded_any_way_come_out_printable(data: bytes) -> None:
    for text in (data.decode("utf-8", "replace"), data.decode("utf-8", "surrogateescape"), data.decode("latin-1")):
        assert safe_line(text).isprintable()
        assert escape_text(text).isprintable()
        assert_terminal_safe(for_terminal(text))


@given(st.text(), st.integers(min_value=4, max_value=200))
def test_safe_line_respects_its_bound(text: str, limit: int) -> None:
    assert len(safe_line(text, limit)) <= limit


@given(st.recursive(st.none() | st.text() | st.integers(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_json_for_terminal_is_printable_and_the_same_json(value: object) -> None:
    text = json.dumps(value, ensure_ascii=False)
    safe = json_for_terminal(text)
    assert_terminal_safe(safe)
    assert json.loads(safe) == value


def test_the_hostile_sample_is_neutralised_visibly() -> None:
    out = safe_line(HOSTILE)
    assert_terminal_safe(out)
    assert "\\x1b]0;PWNED\\x07" in out and "\\u202e" in out


# -- a hostile box ------------------------------------------------------------------------------


def _hostile_box(directory: Path, **more: object) -> Path:
    return write_fakebox(directory, {
        "hello": {"python": "3.11" + HOSTILE, "hostname": HOSTILE, "programs": {"nmap" + HOSTILE: "/bin/" + HOSTILE}},
        "stderr": HOSTILE + "\n",
        **more,
    })


def test_a_hello_full_of_escape_sequences_is_made_printable_before_the_master_keeps_it(tmp_path: Path) -> None:
    script = _hostile_box(tmp_path / "box")

    async def main() -> tuple[str, str, dict[str, str]]:
        link = LocalLink("fake", python=str(script))
        try:
            hello = await link.start(*build_archive())
        finally:
            await link.close()
        return hello.python, hello.hostname, dict(hello.programs)

    python, hostname, programs = asyncio.run(main())
    for text in (python, hostname, *programs, *programs.values()):
        assert_terminal_safe(text)
    assert python.startswith("3.11\\x1b]0;PWNED")


@pytest.fixture
def hostile_inventory(sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path) -> Path:
    script = _hostile_box(tmp_path / "box", done_error="scan failed" + HOSTILE, error_line=HOSTILE)
    entries = sshd_boxes.inventory_entries(sshd_boxes.boxes[:1])
    entries[0]["python"] = str(script)
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump({"agents": entries}))
    return path


def test_agents_check_prints_no_escape_sequence_from_the_box(hostile_inventory: Path, tmp_path: Path) -> None:
    done = fleetscan("agents", "--check", "--agents", str(hostile_inventory), db=tmp_path / "db")
    assert done.returncode == 0, done.stderr
    assert " ok " in done.stdout and "PWNED" in done.stdout  # shown, as visible text
    assert_terminal_safe(done.stdout)
    assert_terminal_safe(done.stderr)


def test_a_run_on_a_hostile_box_stores_and_prints_no_escape_sequence(hostile_inventory: Path, tmp_path: Path) -> None:
    workflow = write_workflow(tmp_path / "wf.yaml", "probe", [{
        "id": "alive", "tool": "noop", "targets": {"from": "input", "type": "host"}, "retries": 0, "chunk": 1,
    }])
    db = tmp_path / "fleet.db"
    done = fleetscan("run", "probe", "--targets", "127.0.0.1", "--workflows", str(workflow),
                     "--agents", str(hostile_inventory), db=db)
    assert done.returncode == 1, done.stderr  # the box failed the task on purpose
    assert_terminal_safe(done.stdout)
    assert_terminal_safe(done.stderr)
    run_id = done.stderr.split("run ", 1)[1].split()[0]
    status = fleetscan("status", run_id, db=db)
    assert status.returncode == 0, status.stderr
    assert_terminal_safe(status.stdout)
    with sqlite3.connect(db) as conn:
        stored = [str(v) for table, cols in (("events", "message"), ("tasks", "error"), ("agents", "python, error, programs"))
                  for row in conn.execute(f"SELECT {cols} FROM {table}") for v in row if v is not None]
    assert any("PWNED" in text for text in stored), stored  # the box's words are kept, made visible
    for text in stored:
        assert_terminal_safe(text)


def test_workflows_prints_a_description_s_escapes_as_text(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(
        'workflows:\n  evil:\n    description: "title \\e]0;PWNED\\a clear \\e[2J bidi \\u202e"\n'
        "    stages:\n      - id: alive\n        tool: noop\n        targets: {from: input, type: host}\n"
    )
    done = fleetscan("workflows", "--workflows", str(path), db=tmp_path / "db")
    assert done.returncode == 0, done.stderr
    assert "PWNED" in done.stdout
    assert_terminal_safe(done.stdout)


def test_the_sanitiser_is_the_records_escape() -> None:
    from console.targets import records

    assert records.escape_text is escape_text


def test_a_changed_host_key_lists_each_known_fingerprint_once() -> None:
    import asyncssh

    from console.fleet.ssh import hostkeys

    offered = asyncssh.generate_private_key("ssh-ed25519")
    known = hostkeys.fingerprint(asyncssh.generate_private_key("ssh-ed25519"))
    message = hostkeys.refusal_message("box1", "127.0.0.1", 2222, offered, [known, known])
    assert message.count(known) == 1 and "CHANGED" in message
