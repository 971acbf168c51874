"""Result records from agents: validation, keys, derived targets, where filters."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkit import wire
from console.errors import AgentError
from console.targets.records import (
    MAX_TEXT,
    derive_target,
    escape_text,
    matches_where,
    validate,
)
from console.targets.sets import validate_value
from console.workflow.tools import TOOLS


def reports(tool: str | None) -> frozenset[str] | None:
    """What a task of ``tool`` may report (None: any type)."""
    return TOOLS[tool].reports if tool is not None else None


def rec(rtype: str, data: dict[str, object], target: str = "127.0.0.1") -> wire.Record:
    return wire.Record(type=rtype, target=target, data=data)


@pytest.mark.parametrize(
    ("record", "tool", "key"),
    [
        (rec("host_up", {"host": "127.0.0.1", "via": "tcp/22", "rtt_ms": 0.2}), "tcp_ping", "127.0.0.1"),
        (rec("port_open", {"host": "127.0.0.1", "port": 22, "proto": "tcp"}), "tcp_connect", "127.0.0.1:22/tcp"),
        (rec("port_open", {"host": "::1", "port": 8080}), "tcp_connect", "[::1]:8080/tcp"),
        (rec("service", {"host": "127.0.0.1", "port": 22, "banner": "SSH-2.0-x"}), "banner", "127.0.0.1:22"),
        (rec("http", {"url": "http://127.0.0.1:80/", "status": 200, "title": "t", "server": "s"}), "http_probe",
         "http://127.0.0.1/"),
        (rec("tls_cert", {"host": "127.0.0.1", "port": 443, "subject": "CN=x", "issuer": "CN=x",
                          "not_after": "2030", "sans": ["a.example"]}), "tls_cert", "127.0.0.1:443"),
        (rec("baseline", {"rule": 5, "title": "t", "security": "high", "status": "fail", "evidence": "x"}, ""),
         "baseline", "box-1:5"),
    ],
)
def test_keys_per_type(record: wire.Record, tool: str, key: str) -> None:
    checked = validate(record, reports(tool), box="box-1")
    rtype, got_key, target, data = checked
    assert rtype == record.type and got_key == key
    assert isinstance(target, str)
    json.dumps(data)


def test_key_never_comes_from_the_box() -> None:
    checked = validate({"type": "port_open", "target": "127.0.0.1", "key": "forged",
                        "data": {"host": "127.0.0.1", "port": 80}}, reports("tcp_connect"))
    assert checked.key == "127.0.0.1:80/tcp"


def test_baseline_host_is_the_box() -> None:
    checked = validate(rec("baseline", {"host": "198.51.100.9", "rule": "1", "status": "pass"}, "whatever"),
                       reports("baseline"), box="scan_box.1")
    assert checked.data["host"] == "scan_box.1" and checked.key == "scan_box.1:1"
    with pytest.raises(AgentError, match="no host"):
        validate(rec("baseline", {"rule": "1", "status": "pass"}, ""), reports("baseline"))


@pytest.mark.parametrize(
    ("record", "tool", "reason"),
    [
        (rec("port_open", {"host": "-oProxyCommand=x", "port": 22}), None, "starts with '-'"),
        (rec("port_open", {"host": "127.0.0.1", "port": 0}), None, "port"),
        (rec("port_open", {"host": "127.0.0.1", "port": 70000}), None, "port"),
        (rec("port_open", {"host": "127.0.0.1", "port": "22"}), None, "port"),
        (rec("port_open", {"host": "127.0.0.1", "port": True}), None, "port"),
        (rec("port_open", {"host": "127.0.0.1"}), None, "port"),
        (rec("host_up", {"host": "a;reboot"}), None, "host"),
        (rec("host_up", {"host": "127.0.0.1", "rtt_ms": -1}), None, "rtt_ms"),
        (rec("http", {"url": "file:///etc/passwd", "status": 200}), None, "url"),
        (rec("http", {"url": "http://a.example/", "status": 1000}), None, "status"),
        (rec("baseline", {"rule": "1", "status": "maybe"}, ""), "baseline", "status"),
        (rec("nonsense", {}), None, "unknown type"),
        (rec("port_open", {"host": "127.0.0.1", "port": 22}), "tcp_ping", "cannot report"),
        (rec("host_up", {"host": "127.0.0.1"}, "a b"), None, "target"),
        (rec("host_up", {"host": "127.0.0.1"}, "-x"), None, "target"),
        (wire.Record(type="host_up", target="127.0.0.1", data="x"), None, "not an object"),  # type: ignore[arg-type]
    ],
)
def test_bad_records_raise_agent_error(record: wire.Record, tool: str | None, reason: str) -> None:
    with pytest.raises(AgentError) as info:
        validate(record, reports(tool), box="box1")
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_text_is_escaped_and_bounded() -> None:
    banner = "SSH-2.0\r\n\x1b[2J\u202egnp.exe\x00" + "A" * 10_000
    checked = validate(rec("service", {"host": "127.0.0.1", "port": 22, "banner": banner, "extra": "\x07"}),
                       reports("banner"))
    out = checked.data["banner"]
    assert out.startswith("SSH-2.0\\r\\n\\x1b[2J\\u202egnp.exe\\x00")
    assert len(out) <= MAX_TEXT and out.isprintable()
    assert checked.data["extra"] == "\\x07"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_escape_text_is_printable_and_unforgeable(text: str) -> None:
    out = escape_text(text)
    assert out.isprintable() and "\n" not in out
    # short text is never cut, and the escaping is reversible: a sender cannot forge an escape
    assert out.encode("latin-1", "backslashreplace").decode("unicode_escape") == text


def test_extras_are_sanitised() -> None:
    checked = validate(rec("port_open", {"host": "127.0.0.1", "port": 22, "service": "ssh\n",
                                         "nested": {"a": [1, 2.5, float("nan"), "x\x00"]}}), reports("exec"))
    assert checked.data["service"] == "ssh\\n"
    assert checked.data["nested"] == {"a": [1, 2.5, None, "x\\x00"]}


def test_derive_target_per_kind() -> None:
    port = {"type": "port_open", "data": {"host": "127.0.0.1", "port": 443}}
    assert derive_target(port, "host") == "127.0.0.1"
    assert derive_target(port, "port") == "127.0.0.1:443"
    assert derive_target(port, "url") == "https://127.0.0.1/"
    alt = {"type": "port_open", "data": {"host": "127.0.0.1", "port": 8443}}
    assert derive_target(alt, "url") == "https://127.0.0.1:8443/"
    plain = {"type": "service", "data": {"host": "::1", "port": 8080}}
    assert derive_target(plain, "url") == "http://[::1]:8080/"
    http = {"type": "http", "data": {"url": "https://a.example:8443/login?x=1", "status": 200}}
    assert derive_target(http, "url") == "https://a.example:8443/login?x=1"
    assert derive_target(http, "port") == "a.example:8443"
    assert derive_target(http, "host") == "a.example"
    up = rec("host_up", {"host": "127.0.0.1"})
    assert derive_target(up, "host") == "127.0.0.1"
    assert derive_target(up, "port") is None and derive_target(up, "url") is None
    stored = {"type": "port_open", "data": json.dumps({"host": "127.0.0.1", "port": 22})}
    assert derive_target(stored, "port") == "127.0.0.1:22"


@pytest.mark.parametrize(
    "data",
    [
        {"host": "-rf", "port": 22},
        {"host": "a b", "port": 22},
        {"host": "127.0.0.1", "port": "22"},
        {"host": "127.0.0.1", "port": 0},
        {"host": "$(id)", "port": 22},
        {"host": None, "port": 22},
    ],
)
def test_derive_target_refuses_hostile_data(data: dict[str, object]) -> None:
    record = {"type": "port_open", "data": data}
    for kind in ("host", "port", "url"):
        value = derive_target(record, kind)
        assert value is None or not value.startswith("-")
    assert derive_target(record, "port") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.integers(-5, 70000), st.sampled_from(["host", "port", "url"]))
def test_derived_targets_are_always_valid_values(host: str, port: int, kind: str) -> None:
    value = derive_target({"type": "port_open", "data": {"host": host, "port": port}}, kind)
    if value is not None:
        assert validate_value(kind, value) == value
        assert not value.startswith("-") and value.isascii() and value.isprintable() and " " not in value


def test_matches_where() -> None:
    port = {"type": "port_open", "data": {"host": "127.0.0.1", "port": 443, "proto": "tcp"}}
    assert matches_where(port, None) and matches_where(port, {})
    assert matches_where(port, {"type": "port_open"})
    assert matches_where(port, {"type": ["host_up", "port_open"], "port": [80, 443]})
    assert matches_where(port, {"port": "443"})
    assert not matches_where(port, {"type": "host_up"})
    assert not matches_where(port, {"port": [80, 8080]})
    assert not matches_where(port, {"service": "https"})
    assert not matches_where(port, {"port": True})
    base = rec("baseline", {"rule": "1", "status": "fail"})
    assert matches_where(base, {"type": "baseline", "status": ["fail", "error"]})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["host", "port", "proto", "url", "status", "title", "banner", "rule", "via",
                               "rtt_ms", "subject", "evidence", "name", "extra"])


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["host_up", "port_open", "service", "http", "tls_cert", "baseline", "other", ""]),
    st.one_of(st.text(max_size=30), st.sampled_from(["127.0.0.1", "", "a.example:80"])),
    st.dictionaries(field_names, json_values, max_size=8),
    st.sampled_from([None, "tcp_ping", "tcp_connect", "banner", "http_probe", "tls_cert", "dns", "baseline",
                     "exec", "noop"]),
)
def test_any_record_is_either_clean_or_agent_error(rtype: str, target: str, data: dict[str, object],
                                                   tool: str | None) -> None:
    try:
        checked = validate({"type": rtype, "target": target, "data": data}, reports(tool), box="box1")
    except AgentError as exc:
        assert "\n" not in str(exc)
        return
    text = json.dumps(checked.data, allow_nan=False)
    assert checked.key and checked.key.isprintable()
    assert text.isprintable()
    assert checked.target == "" or not checked.target.startswith("-")


def test_where_on_list_fields_matches_members() -> None:
    cert = {"type": "tls_cert", "data": {"host": "127.0.0.1", "port": 443, "sans": ["DNS:a.example", "DNS:b"]}}
    assert matches_where(cert, {"sans": "DNS:b"})
    assert matches_where(cert, {"sans": ["DNS:x", "DNS:a.example"]})
    assert not matches_where(cert, {"sans": "DNS:c"})
