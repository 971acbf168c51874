"""The agents inventory file and the --agents source syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.errors import BadInput
from console.fleet.inventory import BoxSpec, load_inventory, parse_agents_source


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(text)
    return path


def test_spec_example_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, (
        "agents:\n"
        "  - name: box1\n"
        "    host: 203.0.113.10\n"
        "    port: 22\n"
        "    user: scan\n"
        "    key: ~/.ssh/id_ed25519\n"
        "    slots: 4\n"
        "  - name: box2\n"
        "    ssh: box2\n"
        "  - name: box_3.lab\n"
        "    host: Scan3.Example.\n"
        "    port: 2222\n"
        "    key: keys/box3\n"
        "    python: /opt/py38/bin/python3.8\n"
    ))
    boxes = load_inventory(path)
    assert [b.name for b in boxes] == ["box1", "box2", "box_3.lab"]
    first, second, third = boxes
    assert first.host == "203.0.113.10" and first.user == "scan" and first.slots == 4
    assert first.key == str(Path.home() / ".ssh" / "id_ed25519")
    assert second.ssh == "box2" and second.host is None and second.port == 22 and second.slots == 4
    assert second.python == "python3" and second.key is None and second.user is None
    assert third.host == "scan3.example" and third.key == str(tmp_path / "keys" / "box3")
    assert third.address == "scan3.example:2222" and second.address == "ssh:box2"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("agents:\n  - name: a\n    host: 192.0.2.1\n  - name: a\n    host: 192.0.2.2\n", 4, "duplicate agent name"),
        ("agents:\n  - name: -a\n    host: 192.0.2.1\n", 2, "name"),
        ("agents:\n  - name: 'a b'\n    host: 192.0.2.1\n", 2, "name"),
        ("agents:\n  - name: a\n    host: -oProxyCommand=x\n", 3, "host"),
        ("agents:\n  - name: a\n    host: 'a b'\n", 3, "host"),
        ("agents:\n  - name: a\n    host: 192.0.2.1\n    ssh: a\n", 2, "exactly one of"),
        ("agents:\n  - name: a\n", 2, "exactly one of"),
        ("agents:\n  - name: a\n    host: 192.0.2.1\n    port: 0\n", 4, "port"),
        ("agents:\n  - name: a\n    host: 192.0.2.1\n    slots: 0\n", 4, "slots"),
        ("agents:\n  - name: a\n    host: 192.0.2.1\n    colour: red\n", 4, "unknown key 'colour'"),
        ("agents:\n  - name: a\n    host: 192.0.2.1\n    user: -root\n", 4, "user"),
        ("agents:\n  - name: a\n    ssh: '-F/tmp/x'\n", 3, "ssh"),
        ("agents:\n  - name: a\n    host: 192.0.2.1\n    python: 'python3; rm -rf /'\n", 4, "python"),
        ("agents: []\n", 1, "agents"),
        ("agents:\n  - name: a\n    host: [1\n", 4, "YAML syntax error"),
        ("- name: a\n", 1, "agents"),
        ("agents:\n  - name: a\n    name: b\n    host: 192.0.2.1\n", 3, "duplicate key"),
    ],
)
def test_bad_inventory_one_line_with_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(BadInput) as info:
        load_inventory(path)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.line == line, message
    assert message.startswith(f"{path}:{line}:"), message
    assert fragment in message, message


def test_agents_source() -> None:
    assert parse_agents_source("local") == ("local", 1)
    assert parse_agents_source(None) == ("local", 1)
    assert parse_agents_source("local:3") == ("local", 3)
    for bad in ("local:0", "local:-1", "local:x", "local:", "local:99999", "nonexistent-inventory.yaml", "-x"):
        with pytest.raises(BadInput) as info:
            parse_agents_source(bad)
        assert info.value.field == "--agents"


def test_agents_source_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "agents:\n  - {name: a, host: 127.0.0.1}\n")
    kind, where = parse_agents_source(str(path))
    assert kind == "inventory" and Path(where) == path
    assert isinstance(load_inventory(where)[0], BoxSpec)
