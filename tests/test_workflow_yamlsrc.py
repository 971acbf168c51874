"""The safe YAML loader behind workflow, inventory and rule files: positions and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from console import yamlsrc
from console.errors import BadInput


def test_positions_of_keys_and_values() -> None:
    data, smap = yamlsrc.load_text("a:\n  b: [1, 2]\n  c:\n    - x: 1\n", "f.yaml")
    assert data == {"a": {"b": [1, 2], "c": [{"x": 1}]}}
    assert smap.position(("a",)) == (1, 1)
    assert smap.position(("a", "b")) == (2, 3)
    assert smap.position(("a", "b", 1)) == (2, 10)
    assert smap.position(("a", "c", 0)) == (4, 7)
    assert smap.position(("a", "c", 0, "x")) == (4, 7)
    assert smap.position(("nope",)) is None


def test_plain_types_only() -> None:
    data, _ = yamlsrc.load_text("i: 3\nf: 1.5\nb: yes\nn: ~\ns: '007'\n", "f.yaml")
    assert data == {"i": 3, "f": 1.5, "b": True, "n": None, "s": "007"}


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a'"),
        ("x: !!python/object/apply:os.system [id]\n", 1, "unsupported YAML tag"),
        ("x: !!python/name:os.system\n", 1, "unsupported YAML tag"),
        ("x: !custom {a: 1}\n", 1, "unsupported YAML tag"),
        ("? [a, b]\n: 1\n", 1, "plain value"),
        ("a: 1\n---\nb: 2\n", 2, "YAML syntax error"),
        ("a: [1,\n", 2, "YAML syntax error"),
        ("a: *nope\n", 1, "YAML syntax error"),
    ],
)
def test_refusals_are_located(text: str, line: int, fragment: str) -> None:
    with pytest.raises(BadInput) as info:
        yamlsrc.load_text(text, "f.yaml")
    assert info.value.line == line, str(info.value)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_alias_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 10_000)
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        levels.append(f"a{i}: &a{i} [{refs}]")
    with pytest.raises(BadInput, match="too large"):
        yamlsrc.load_text("\n".join(levels) + "\n", "bomb.yaml")


def test_merge_keys_work() -> None:
    data, _ = yamlsrc.load_text("base: &b {timeout: 1}\nstage:\n  <<: *b\n  chunk: 2\n", "f.yaml")
    assert data["stage"] == {"timeout": 1, "chunk": 2}


def test_file_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(BadInput, match="UTF-8") as info:
        yamlsrc.load_file(bad)
    assert info.value.line == 2
    big = tmp_path / "big.yaml"
    big.write_text("a: 1\n" * 100)
    monkeypatch.setattr(yamlsrc, "MAX_FILE_BYTES", 50)
    with pytest.raises(BadInput, match="too large"):
        yamlsrc.load_file(big)


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Inner]


def test_pydantic_error_maps_to_line() -> None:
    data, smap = yamlsrc.load_text("items:\n  - port: 1\n  - port: x\n  - {port: 2, extra: 1}\n", "m.yaml")
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    err = yamlsrc.validation_error_to_bad_input(info.value, smap)
    assert str(err).startswith("m.yaml:3:5: items.1.port: ")
    data, smap = yamlsrc.load_text("items:\n  - port: 1\n  - {port: 2, extra: 1}\n", "m.yaml")
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    assert str(yamlsrc.validation_error_to_bad_input(info.value, smap)) == (
        "m.yaml:3:15: items.1.extra: unknown key 'extra'"
    )
    data, smap = yamlsrc.load_text("items:\n  - {}\n", "m.yaml")
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    assert str(yamlsrc.validation_error_to_bad_input(info.value, smap)) == (
        "m.yaml:2:5: items.0.port: missing required key"
    )
