"""Pure parsing edges of the agent: targets and scope, port lists, exec output parsers, text hygiene."""

from __future__ import annotations

import pytest

from agentkit.context import ToolError
from agentkit.params import parse_ports
from agentkit.targets import Scope, TargetError, host_port, iter_hosts, split_host_port
from agentkit.tools.exec import check_template, target_values
from agentkit.tools.parsers import jsonl, lines, masscan_json, nmap_xml
from agentkit.tools.text import collapse, decoded

NMAP_XML = b"""<?xml version="1.0"?>
<nmaprun>
<host><status state="up" reason="conn-refused"/>
<address addr="192.0.2.7" addrtype="ipv4"/>
<ports>
<port protocol="tcp" portid="22"><state state="open"/><service name="ssh" product="OpenSSH" version="9.2"/></port>
<port protocol="tcp" portid="23"><state state="closed"/></port>
<port protocol="tcp" portid="80"><state state="open"/></port>
</ports>
<times srtt="120" rttvar="50" to="100000"/>
</host>
<host><status state="down"/><address addr="192.0.2.8" addrtype="ipv4"/></host>
</nmaprun>
"""

MASSCAN_LINES = b"""[
{   "ip": "198.51.100.4",   "timestamp": "1700000000", "ports": [ {"port": 443, "proto": "tcp", "status": "open", "reason": "syn-ack", "ttl": 64} ] },
{   "ip": "198.51.100.5",   "timestamp": "1700000000", "ports": [ {"port": 80, "proto": "tcp", "status": "open", "reason": "syn-ack", "ttl": 64} ] },
{   "ip": "-rf",   "timestamp": "1700000000", "ports": [ {"port": 80, "proto": "tcp", "status": "open"} ] }
]
"""


def test_scope_entries() -> None:
    scope = Scope(["192.0.2.0/28", "198.51.100.10-20", "example.test", "203.0.113.5:8443", "2001:db8::/64"])
    assert scope.contains("192.0.2.15") and not scope.contains("192.0.2.16")
    assert scope.contains("198.51.100.20") and not scope.contains("198.51.100.21")
    assert scope.contains("EXAMPLE.test", 80) and not scope.contains("evil.example.test")
    assert scope.contains("203.0.113.5", 8443) and not scope.contains("203.0.113.5", 443)
    assert scope.contains("2001:db8::1") and not scope.contains("2001:db8:1::1")
    assert Scope(["http://127.0.0.1:8080/x"]).contains("127.0.0.1", 8080)
    with pytest.raises(TargetError):
        Scope(["not a host"])


def test_host_port_and_expansion() -> None:
    assert split_host_port("[2001:db8::1]:443") == ("2001:db8::1", 443)
    assert split_host_port("2001:db8::1") == ("2001:db8::1", None)
    assert host_port("example.test:22") == ("example.test", 22)
    for bad in ("example.test", "host:0", "host:99999", "-x:22", "[::1"):
        with pytest.raises(TargetError):
            host_port(bad)
    assert list(iter_hosts("192.0.2.1-3")) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert list(iter_hosts("192.0.2.0/30")) == ["192.0.2.1", "192.0.2.2"]
    assert list(iter_hosts("192.0.2.9/32")) == ["192.0.2.9"]
    for bad in ("-oX", "127.0.0.0/8", "a b"):
        with pytest.raises(TargetError):
            list(iter_hosts(bad))


def test_ports() -> None:
    assert parse_ports("1-3,8080, 2") == [1, 2, 3, 8080]
    assert parse_ports([22, "80-81"]) == [22, 80, 81]
    for bad in ("0", "5-1", "x", [True], {"a": 1}, "", "65536"):
        with pytest.raises(ToolError):
            parse_ports(bad)


def test_exec_values_are_typed_and_never_options() -> None:
    assert target_values("192.0.2.1:8080") == {
        "{target}": "192.0.2.1:8080",
        "{host}": "192.0.2.1",
        "{port}": "8080",
        "{ports}": "8080",
    }
    host_ports = target_values("192.0.2.1:22,80,443")
    assert (host_ports["{host}"], host_ports["{ports}"]) == ("192.0.2.1", "22,80,443") and "{port}" not in host_ports
    assert target_values("https://example.test/a")["{port}"] == "443"
    assert target_values("example.test") == {"{target}": "example.test", "{host}": "example.test"}
    for bad in ("-iL/etc/passwd", "a\tb", "x\x00", "", "http://-evil/", "ex ample"):
        with pytest.raises(ToolError):
            target_values(bad)
    with pytest.raises(ToolError, match="whole argv element"):
        check_template(["nmap", "-p{port}"])
    with pytest.raises(ToolError):
        check_template(["{target}"])


def test_nmap_xml() -> None:
    records = nmap_xml(NMAP_XML, "", "")
    assert [(r.type, r.target) for r in records] == [
        ("host_up", "192.0.2.7"),
        ("port_open", "192.0.2.7"),
        ("service", "192.0.2.7"),
        ("port_open", "192.0.2.7"),
    ]
    assert records[0].data == {"host": "192.0.2.7", "via": "nmap", "rtt_ms": 0.12}
    assert records[1].data == {
        "host": "192.0.2.7",
        "port": 22,
        "proto": "tcp",
        "service": "ssh",
        "product": "OpenSSH",
        "version": "9.2",
        "tls": False,
    }
    assert nmap_xml(b"", "", "") == []  # no output: nothing to recognise (not-XML output fails: test_parsers)


def test_masscan_json_both_forms() -> None:
    records = masscan_json(MASSCAN_LINES, "", "")
    assert [(r.data["host"], r.data["port"]) for r in records] == [
        ("198.51.100.4", 443),
        ("198.51.100.5", 80),
    ]
    whole = b'[{"ip": "198.51.100.4", "ports": [{"port": 22, "proto": "tcp", "status": "open"}]}]'
    assert [r.data["port"] for r in masscan_json(whole, "", "")] == [22]


def test_jsonl_and_lines() -> None:
    out = b'{"type":"http","target":"t","data":{"url":"u"}}\n{"type":1}\nnot json\n{"type":"x","data":[]}\n'
    assert [(r.type, r.target) for r in jsonl(out, "", "d")] == [("http", "t")]
    assert lines(b"192.0.2.1:22\nbogus\n\n", "port_open", "")[0].data == {
        "line": "192.0.2.1:22",
        "host": "192.0.2.1",
        "port": 22,
        "proto": "tcp",
    }
    assert len(lines(b"192.0.2.1:22\nbogus\n", "port_open", "")) == 1
    assert [r.data["line"] for r in lines(b"a\x1b[0m b\n", "note", "t")] == ["a [0m b"]


def test_text_hygiene() -> None:
    # decoded, bounded, never escaped by the agent (the master escapes once)
    assert decoded(b"ok\r\n\x00\x7f\\\xff") == "ok\r\n\x00\x7f\\\ufffd"
    assert decoded(b"x" * 10, 4) == "xxxx"
    assert collapse("  a \n\t b  ") == "a b"
