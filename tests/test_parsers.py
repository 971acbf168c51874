"""exec's parsers on real program output shapes: nmap's service detail, masscan -oD, nothing recognised.

The nmap XML below is the shape nmap 7.9x writes for ``-sV`` (a TLS-wrapped http port,
cpe, extrainfo, a hostname given on the command line); addresses are documentation
ranges, as strings only. The real-program tests run nmap against loopback listeners.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator

import pytest

from agentkit.tools.parsers import Unrecognised, jsonl, masscan_json, masscan_ndjson, nmap_xml
from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.servers import tcp_listeners

NMAP_SV = b"""<?xml version="1.0" encoding="UTF-8"?>
<nmaprun scanner="nmap" args="nmap -sV -oX - www.example.test" version="7.93">
<host><status state="up" reason="syn-ack"/>
<address addr="192.0.2.10" addrtype="ipv4"/>
<hostnames><hostname name="www.example.test" type="user"/><hostname name="web1.example.test" type="PTR"/></hostnames>
<ports>
<port protocol="tcp" portid="443"><state state="open"/><service name="http" product="nginx" version="1.22.1" extrainfo="Debian" tunnel="ssl" method="probed" conf="10"><cpe>cpe:/a:igor_sysoev:nginx:1.22.1</cpe><cpe>cpe:/o:linux:linux_kernel</cpe></service></port>
<port protocol="tcp" portid="8443"><state state="open"/><service name="unknown" tunnel="ssl" method="probed" conf="3"/></port>
<port protocol="tcp" portid="25"><state state="open"/><service name="smtp" method="table" conf="3"/></port>
</ports>
</host>
<host><status state="up"/><address addr="198.51.100.3" addrtype="ipv4"/></host>
</nmaprun>
"""

MASSCAN_D = b"""{"ip":"192.0.2.20","timestamp":"1700000000","port":22,"proto":"tcp","rec_type":"status","data":{"status":"open","reason":"syn-ack","ttl":64}}
{"ip":"192.0.2.20","timestamp":"1700000001","port":22,"proto":"tcp","rec_type":"banner","data":{"service_name":"ssh","banner":"SSH-2.0-OpenSSH_9.2p1"}}
{"ip":"192.0.2.21","timestamp":"1700000000","port":81,"proto":"tcp","rec_type":"status","data":{"status":"closed"}}
{"ip":"-rf","port":80,"rec_type":"status","data":{"status":"open"}}
"""


def test_nmap_xml_tls_cpe_extrainfo_and_the_users_hostname() -> None:
    records = nmap_xml(NMAP_SV, "", "www.example.test")
    ports = {r.data["port"]: r for r in records if r.type == "port_open"}
    services = {r.data["port"]: r for r in records if r.type == "service"}
    https = ports[443]
    assert https.target == "www.example.test" and https.data["host"] == "www.example.test"
    assert https.data["tls"] is True and https.data["service"] == "http"
    assert (https.data["product"], https.data["version"], https.data["extrainfo"]) == ("nginx", "1.22.1", "Debian")
    assert https.data["cpe"] == ["cpe:/a:igor_sysoev:nginx:1.22.1", "cpe:/o:linux:linux_kernel"]
    assert services[443].data == {"host": "www.example.test", "port": 443, "banner": "", "name": "http",
                                  "product": "nginx", "version": "1.22.1", "tls": True, "method": "probe"}
    assert (services[8443].data["name"], services[8443].data["tls"]) == ("ssl", True)
    assert (services[25].data["name"], services[25].data["method"], services[25].data["tls"]) == ("smtp", "port", False)
    hosts = [r.data["host"] for r in records if r.type == "host_up"]
    assert hosts == ["www.example.test", "198.51.100.3"]  # no user name given: the address


def test_masscan_ndjson() -> None:
    records = masscan_ndjson(MASSCAN_D, "", "")
    assert [(r.type, r.data) for r in records] == [
        ("port_open", {"host": "192.0.2.20", "port": 22, "proto": "tcp"}),
        ("service", {"host": "192.0.2.20", "port": 22, "banner": "SSH-2.0-OpenSSH_9.2p1", "name": "ssh"}),
    ]
    assert masscan_ndjson(b"", "", "") == []


@pytest.mark.parametrize(
    ("parser", "output"),
    [
        (nmap_xml, b"Starting Nmap 7.93\nNote: Host seems down.\n"),
        (nmap_xml, b"<html><body>not nmap</body></html>"),
        (masscan_json, b"garbage\nmore garbage\n"),
        (masscan_ndjson, b"Starting masscan 1.3.2\n"),
        (jsonl, b"plain text\nno json here\n"),
    ],
)
def test_a_parser_that_recognises_nothing_says_so(parser: object, output: bytes) -> None:
    with pytest.raises(Unrecognised):
        parser(output, "", "")  # type: ignore[operator]


def test_an_empty_nmap_run_or_masscan_array_is_recognised() -> None:
    assert nmap_xml(b'<?xml version="1.0"?><nmaprun></nmaprun>', "", "") == []
    assert masscan_json(b"[\n]\n", "", "") == []


# -- through a real agent --------------------------------------------------------------------

NMAP = shutil.which("nmap")


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    with AgentProcess.serving() as process:
        yield process


def test_exec_fails_with_the_reason_when_the_parser_recognises_nothing(agent: AgentProcess) -> None:
    done, records = agent.run_task("unrec-1", "exec", [], {"argv": ["echo", "hello there"], "parser": "nmap_xml"})
    assert done["ok"] is False and records == []
    assert "parser nmap_xml recognised nothing" in done["error"]


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not NMAP, reason="nmap not installed")
@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_nmap_ipv6_targets_run_with_argv6_never_skipped(agent: AgentProcess) -> None:
    argv = ["nmap", "-sT", "-Pn", "-n", "-p", "{port}", "-oX", "-", "{host}"]
    with tcp_listeners(1, host="::1") as six, tcp_listeners(1) as four:
        targets = [six[0].target if six[0].target.startswith("[") else f"[::1]:{six[0].port}", four[0].target]
        done, _ = agent.run_task("nmap6-1", "exec", targets, {"argv": argv, "parser": "nmap_xml"})
        assert done["ok"] is False and "-6" in done["error"]  # visible, not a silent skip
        argv6 = ["nmap", "-6", "-sT", "-Pn", "-n", "-p", "{port}", "-oX", "-", "{host}"]
        done, records = agent.run_task("nmap6-2", "exec", targets, {"argv": argv, "argv6": argv6, "parser": "nmap_xml"})
    assert done["ok"] is True, done
    found = {(r["data"]["host"], r["data"]["port"]) for r in records if r["type"] == "port_open"}
    assert found == {("::1", six[0].port), ("127.0.0.1", four[0].port)}


@pytest.mark.skipif(not NMAP, reason="nmap not installed")
def test_nmap_hostname_target_keeps_its_name(agent: AgentProcess) -> None:
    with tcp_listeners(1) as listeners:
        argv = ["nmap", "-sT", "-Pn", "-n", "-p", "{port}", "-oX", "-", "{host}"]
        done, records = agent.run_task("nmapname-1", "exec", [f"localhost:{listeners[0].port}"],
                                       {"argv": argv, "parser": "nmap_xml"})  # fmt: skip
    assert done["ok"] is True, done
    opened = [r for r in records if r["type"] == "port_open"]
    assert [(r["target"], r["data"]["host"], r["data"]["port"]) for r in opened] == [
        ("localhost", "localhost", listeners[0].port)
    ]


def test_exec_params_accept_argv6_and_masscan_ndjson() -> None:
    from pydantic import ValidationError

    from console.workflow.params import ExecParams

    params = ExecParams.model_validate({"argv": ["nmap", "{targets_file}"], "argv6": ["nmap", "-6", "{targets_file}"],
                                        "parser": "nmap_xml"})  # fmt: skip
    assert params.agent_params()["argv6"] == ["nmap", "-6", "{targets_file}"]
    assert params.outputs() == frozenset({"host_up", "port_open", "service"})
    assert ExecParams.model_validate({"argv": ["masscan"], "parser": "masscan_ndjson"}).outputs() == frozenset(
        {"port_open", "service"}
    )
    assert "argv6" not in ExecParams.model_validate({"argv": ["nmap"], "parser": "nmap_xml"}).agent_params()
    for bad in ("nmap -6 x", ["-6", "nmap"]):
        with pytest.raises(ValidationError):
            ExecParams.model_validate({"argv": ["nmap"], "argv6": bad, "parser": "nmap_xml"})
