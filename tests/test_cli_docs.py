"""docs/COMMANDS.md is the command reference users read: every command the parser knows has its
section there, and every option of it is named in that section (so a new option cannot ship
undocumented)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from console.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"--db", "--workflows", "--agents", "-h", "--help"}


def sections() -> dict[str, str]:
    text = (ROOT / "docs" / "COMMANDS.md").read_text()
    found: dict[str, str] = {}
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        for name in re.findall(r"fleetscan (\w+)", title):
            found[name] = found.get(name, "") + title + "\n" + body
    return found


def test_every_command_and_option_is_in_the_command_reference() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    docs = sections()
    missing: list[str] = []
    for name, command in sub.choices.items():
        if name not in docs:
            missing.append(f"section for `fleetscan {name}`")
            continue
        for action in command._actions:
            for flag in action.option_strings:
                if flag not in COMMON and flag not in docs[name]:
                    missing.append(f"`{flag}` of `fleetscan {name}`")
    assert not missing, missing


def test_the_readme_links_the_reference_and_keeps_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    for doc in ("docs/COMMANDS.md", "docs/WORKFLOWS.md", "docs/RECORDS.md"):
        assert f"({doc})" in readme and (ROOT / doc).exists()
    assert "pip install -e . && fleetscan\n" in readme
    assert "pip install -e '.[test]' && pytest\n" in readme
    assert "python3 -m venv" in readme and "FLEETSCAN_DB" in readme
