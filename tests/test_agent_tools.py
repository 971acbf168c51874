"""Every built-in tool through a real agent subprocess, against real servers on loopback."""

from __future__ import annotations

import contextlib
import errno
import select
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.servers import (
    SelfSignedCert,
    TlsService,
    closed_port,
    http_site,
    listening_ports,
    page,
    redirect,
    silent_port,
    tcp_listeners,
)

NMAP = shutil.which("nmap") or ""
_counter = iter(range(1, 1_000_000))


#: every tool test runs on the venv's Python and on the oldest supported one when this machine has it
AGENT_PYTHONS = [sys.executable] + [
    str(p) for p in sorted(Path("/root/.pyenv/versions").glob("3.8.*/bin/python"))[:1]
]


@pytest.fixture(scope="module", params=AGENT_PYTHONS, ids=lambda p: "py" + Path(p).parent.parent.name)
def agent(request: pytest.FixtureRequest) -> Iterator[AgentProcess]:
    process = AgentProcess.from_source(python=request.param)
    hello = process.read()
    assert hello is not None and hello["op"] == "hello"
    try:
        yield process
    finally:
        process.stop()


def run(
    agent: AgentProcess, tool: str, targets: list[str], params: dict[str, Any], **kw: Any
) -> list[dict[str, Any]]:
    """Run a task that must succeed; its records."""
    done, records = agent.run_task(f"{tool}-{next(_counter)}", tool, targets, params, **kw)
    assert done["ok"] is True, done
    return records


def run_failing(agent: AgentProcess, tool: str, targets: list[str], params: dict[str, Any]) -> str:
    done, _ = agent.run_task(f"{tool}-{next(_counter)}", tool, targets, params)
    assert done["ok"] is False
    return str(done["error"])


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


# -- tcp_connect ------------------------------------------------------------------


def test_tcp_connect_finds_exactly_the_open_ports(agent: AgentProcess) -> None:
    with tcp_listeners(3) as listeners:
        opened = sorted(listener.port for listener in listeners)
        closed = [closed_port() for _ in range(5)]
        records = run(agent, "tcp_connect", ["127.0.0.1"], {"ports": opened + closed, "timeout": 2.0})
    assert sorted(r["data"]["port"] for r in records) == opened
    for record in records:
        assert record["type"] == "port_open" and record["target"] == "127.0.0.1"
        assert record["data"]["host"] == "127.0.0.1" and record["data"]["proto"] == "tcp"


def test_tcp_connect_range_strings_hostnames_rate_and_small_concurrency(agent: AgentProcess) -> None:
    with tcp_listeners(2) as listeners:
        ports = sorted(listener.port for listener in listeners)
        spec = f"{ports[0]}-{ports[0] + 20},{ports[1]}"
        records = run(
            agent,
            "tcp_connect",
            ["localhost"],
            {"ports": spec, "concurrency": 3, "rate": 200, "timeout": 2.0},
        )
    found = {(r["data"]["host"], r["data"]["port"]) for r in records}
    assert {("localhost", port) for port in ports} <= found
    assert all(r["data"]["addr"] in ("127.0.0.1", "::1") for r in records)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_tcp_connect_over_ipv6_loopback(agent: AgentProcess) -> None:
    with tcp_listeners(1, host="::1") as listeners:
        records = run(agent, "tcp_connect", ["::1"], {"ports": [listeners[0].port, closed_port("::1")]})
    assert [r["data"]["port"] for r in records] == [listeners[0].port]


def test_tcp_connect_kept_socket_never_crosses_families_or_misses_a_port(agent: AgentProcess) -> None:
    """A socket refused at once is reused for the next probe: closed and open ports interleaved on two
    address families in one task are each found exactly as they are, every open one accepted once."""
    hosts = ["127.0.0.1", "::1"] if has_ipv6_loopback() else ["127.0.0.1"]
    with contextlib.ExitStack() as stack:
        expected: set[tuple[str, int]] = set()
        ports: list[int] = []
        for host in hosts:
            listeners = stack.enter_context(tcp_listeners(3, host=host))
            expected |= {(host, listener.port) for listener in listeners}
            ports += [listener.port for listener in listeners]
            ports += [closed_port(host) for _ in range(4)]
        # every port on every host: each host has its open ports among the other host's closed ones
        records = run(agent, "tcp_connect", hosts, {"ports": sorted(set(ports)), "timeout": 2.0})
    found = [(r["data"]["host"], r["data"]["port"]) for r in records]
    assert len(found) == len(set(found)) and set(found) == expected


def test_a_refused_socket_connects_again_after_its_abort() -> None:
    """What the engine relies on to keep a refused socket: on Linux the next connect answers ECONNABORTED
    and the one after it is a real connect; anything else puts the probe on a fresh socket."""
    from agentkit.tools.connect_engine import _reconnect

    stream = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)
    with tcp_listeners(1) as (listener,), socket.socket(socket.AF_INET, stream) as sock:
        assert sock.connect_ex(("127.0.0.1", closed_port())) in (errno.ECONNREFUSED, errno.EINPROGRESS)
        select.select([], [sock], [], 2.0)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
        target = ("127.0.0.1", listener.port)
        again, code = _reconnect(sock, sock.connect_ex(target), socket.AF_INET, stream, target)
        assert code in (0, errno.EINPROGRESS)
        select.select([], [again], [], 2.0)
        assert again.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert again.getpeername() == target
        # an answer the engine does not expect from a kept socket: the probe goes on a fresh one
        fresh, code = _reconnect(again, errno.EALREADY, socket.AF_INET, stream, target)
        try:
            assert fresh is not again and again.fileno() == -1 and code in (0, errno.EINPROGRESS)
            select.select([], [fresh], [], 2.0)
            assert fresh.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        finally:
            fresh.close()


def test_tcp_connect_rejects_bad_ports(agent: AgentProcess) -> None:
    assert "params.ports" in run_failing(agent, "tcp_connect", ["127.0.0.1"], {"ports": "80-70000"})
    assert "params.ports" in run_failing(agent, "tcp_connect", ["127.0.0.1"], {"ports": "http"})
    assert "target" in run_failing(agent, "tcp_connect", ["-oX"], {"ports": [80]})


@pytest.mark.skipif(not NMAP, reason="nmap not installed")
def test_tcp_connect_open_set_equals_nmap_sT(agent: AgentProcess) -> None:
    with tcp_listeners(4) as listeners:
        mine = sorted(listener.port for listener in listeners)
        low, high = min(mine) - 300, max(mine) + 300
        spec = f"1-1024,{max(low, 1025)}-{min(high, 65535)}"
        before = listening_ports()
        records = run(agent, "tcp_connect", ["127.0.0.1"], {"ports": spec, "timeout": 2.0})
        nmap = subprocess.run(
            [NMAP, "-sT", "-n", "-Pn", "-T4", "-p", spec, "-oG", "-", "127.0.0.1"],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        after = listening_ports()
    nmap_open = set()
    for line in nmap.stdout.splitlines():
        if "Ports:" in line:
            for item in line.split("Ports:", 1)[1].split("\t")[0].split(","):
                fields = item.strip().split("/")
                if len(fields) > 1 and fields[1] == "open":
                    nmap_open.add(int(fields[0]))
    agent_open = {r["data"]["port"] for r in records}
    assert set(mine) <= agent_open and set(mine) <= nmap_open
    # other test processes on this machine may open/close listeners meanwhile: the two scanners
    # must agree on every port that listened throughout the scans
    stable = (before & after) | set(mine)
    assert agent_open & stable == nmap_open & stable


# -- tcp_ping ---------------------------------------------------------------------


def test_tcp_ping_counts_a_refusal_as_up(agent: AgentProcess) -> None:
    port = closed_port()
    records = run(agent, "tcp_ping", ["127.0.0.1"], {"ports": [port], "timeout": 2.0})
    assert len(records) == 1
    data = records[0]["data"]
    assert records[0]["type"] == "host_up" and data["host"] == "127.0.0.1" and data["via"] == f"tcp/{port}"
    assert data["rtt_ms"] >= 0


def test_tcp_ping_one_record_per_host_with_many_ports_and_hosts(agent: AgentProcess) -> None:
    with tcp_listeners(1) as listeners:
        ports = [listeners[0].port] + [closed_port() for _ in range(3)]
        records = run(agent, "tcp_ping", ["127.0.0.1", "127.0.0.2-4"], {"ports": ports, "timeout": 2.0})
    assert sorted(r["data"]["host"] for r in records) == ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert all(r["data"]["via"].startswith("tcp/") for r in records)


def test_silence_means_down_and_not_open(agent: AgentProcess) -> None:
    with silent_port() as port:
        assert run(agent, "tcp_ping", ["127.0.0.1"], {"ports": [port], "timeout": 0.5}) == []
        with tcp_listeners(1) as listeners:
            ports = [port, listeners[0].port]
            records = run(agent, "tcp_connect", ["127.0.0.1"], {"ports": ports, "timeout": 0.5})
    assert [r["data"]["port"] for r in records] == [listeners[0].port]


@pytest.mark.skipif(shutil.which("ping") is None, reason="no ping program")
def test_tcp_ping_icmp_for_hosts_tcp_found_silent(agent: AgentProcess) -> None:
    records = run(agent, "tcp_ping", ["127.0.0.1"], {"ports": [closed_port()], "icmp": True})
    assert [r["data"]["via"] for r in records] == [records[0]["data"]["via"]]  # TCP answered: no ping record
    assert records[0]["data"]["via"].startswith("tcp/")
    with silent_port() as port:
        records = run(agent, "tcp_ping", ["127.0.0.1"], {"ports": [port], "icmp": True, "timeout": 0.5})
    assert [(r["data"]["host"], r["data"]["via"]) for r in records] == [("127.0.0.1", "icmp")]


# -- banner -----------------------------------------------------------------------


def test_banner_escapes_control_characters_and_skips_silent_services(agent: AgentProcess) -> None:
    with (
        tcp_listeners(1, greeting=b"SSH-2.0-Test_1.0\r\n\x01\x1b[31m\xff") as talkers,
        tcp_listeners(1) as silent,
    ):
        records = run(agent, "banner", [talkers[0].target, silent[0].target], {"timeout": 1.0})
    assert len(records) == 1
    data = records[0]["data"]
    assert data == {
        "host": "127.0.0.1",
        "port": talkers[0].port,
        "banner": "SSH-2.0-Test_1.0\r\n\x01\x1b[31m\ufffd",  # as sent; the master escapes it once
    }
    assert records[0]["target"] == talkers[0].target


def test_banner_max_bytes_bounds_the_banner(agent: AgentProcess) -> None:
    with tcp_listeners(1, greeting=b"A" * 5000) as talkers:
        records = run(agent, "banner", [talkers[0].target], {"timeout": 1.0, "max_bytes": 10})
    assert records[0]["data"]["banner"] == "A" * 10


# -- http_probe -------------------------------------------------------------------


def test_http_probe_title_server_and_redirects_only_inside_scope(agent: AgentProcess) -> None:
    with http_site("127.0.0.1") as site, http_site("127.0.0.2") as inside, http_site("127.0.0.3") as outside:
        site.routes["/"] = page("Hello   Fleet")
        site.routes["/in"] = redirect(inside.url("/landing"))
        site.routes["/out"] = redirect(outside.url("/secret"))
        site.routes["/loop"] = redirect("/loop")
        inside.routes["/landing"] = page("Landed")
        outside.routes["/secret"] = page("Never")
        scope = ["127.0.0.1", "127.0.0.2/32"]
        targets = [site.url("/"), site.url("/in"), site.url("/out"), site.url("/loop")]
        records = run(agent, "http_probe", targets, {"timeout": 5.0, "max_redirects": 2}, scope=scope)
        by_url = {r["data"]["url"]: r["data"] for r in records}
        assert outside.hits == [], "an out-of-scope redirect was followed"
        assert inside.hits == ["/landing"]
    root = by_url[site.url("/")]
    assert (root["status"], root["title"], root["server"].startswith("fleetscan-test/1.0")) == (
        200,
        "Hello Fleet",
        True,
    )
    assert by_url[site.url("/in")]["status"] == 200 and by_url[site.url("/in")]["title"] == "Landed"
    assert by_url[site.url("/in")]["final_url"] == inside.url("/landing")
    out = by_url[site.url("/out")]
    assert (
        out["status"] == 302
        and out["redirect_blocked"] == "out of scope"
        and out["location"] == outside.url("/secret")
    )
    assert by_url[site.url("/loop")]["redirect_blocked"] == "limit"


def test_http_probe_host_port_targets_and_no_listener(agent: AgentProcess) -> None:
    with http_site() as site:
        site.routes["/"] = page("Plain")
        records = run(
            agent, "http_probe", [f"127.0.0.1:{site.port}", f"127.0.0.1:{closed_port()}"], {"timeout": 3.0}
        )
    assert [r["data"]["url"] for r in records] == [f"http://127.0.0.1:{site.port}/"]


def test_http_probe_over_https_without_and_with_verification(
    agent: AgentProcess, self_signed_cert: SelfSignedCert
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(self_signed_cert.cert), str(self_signed_cert.key))
    with http_site(tls=context) as site:
        site.routes["/"] = page("Secure")
        url = f"https://127.0.0.1:{site.port}/"
        records = run(agent, "http_probe", [url], {"timeout": 5.0})
        verified = run(agent, "http_probe", [url], {"timeout": 5.0, "verify_tls": True})
    assert records[0]["data"]["title"] == "Secure" and records[0]["data"]["status"] == 200
    assert verified == []  # a self-signed certificate does not verify


# -- tls_cert ---------------------------------------------------------------------


def test_tls_cert_reads_a_self_signed_certificate(agent: AgentProcess, tls_service: TlsService) -> None:
    records = run(agent, "tls_cert", [tls_service.target], {"timeout": 5.0})
    assert len(records) == 1
    data = records[0]["data"]
    assert data["host"] == "127.0.0.1" and data["port"] == tls_service.port
    assert data["subject"] == "CN=fleetscan.test,O=Fleetscan Tests" == data["issuer"]
    assert {"DNS:fleetscan.test", "DNS:alt.fleetscan.test", "IP Address:127.0.0.1"} == set(data["sans"])
    assert data["not_after"].endswith("Z") and data["not_after"] > data["not_before"]
    expected = subprocess.run(
        ["openssl", "x509", "-in", str(tls_service.cert.cert), "-noout", "-fingerprint", "-sha256"],
        capture_output=True, text=True, check=True,
    ).stdout.split("=", 1)[1].strip().replace(":", "").lower()  # fmt: skip
    assert data["sha256"] == expected


def test_tls_cert_on_a_plain_tcp_port_gives_nothing(agent: AgentProcess) -> None:
    with tcp_listeners(1, greeting=b"not tls\r\n") as listeners:
        assert run(agent, "tls_cert", [listeners[0].target], {"timeout": 2.0}) == []


# -- dns --------------------------------------------------------------------------


def test_dns_resolves_localhost(agent: AgentProcess) -> None:
    records = run(agent, "dns", ["localhost"], {"timeout": 5.0})
    addresses = {r["data"]["host"] for r in records}
    assert "127.0.0.1" in addresses or "::1" in addresses
    assert all(r["data"]["name"] == "localhost" and r["data"]["via"] == "dns" for r in records)
    assert "not a host name" in run_failing(agent, "dns", ["bad name"], {})


# -- exec -------------------------------------------------------------------------


@pytest.mark.skipif(not NMAP, reason="nmap not installed")
def test_exec_nmap_xml_per_target(agent: AgentProcess) -> None:
    with tcp_listeners(2) as listeners:
        argv = ["nmap", "-sT", "-Pn", "-n", "-p", "{port}", "-oX", "-", "{host}"]
        records = run(
            agent, "exec", [listeners[0].target, listeners[1].target], {"argv": argv, "parser": "nmap_xml"}
        )
    ports = sorted(r["data"]["port"] for r in records if r["type"] == "port_open")
    assert ports == sorted(listener.port for listener in listeners)
    assert all(r["data"]["host"] == "127.0.0.1" for r in records)


def test_exec_targets_file_and_lines_parser(agent: AgentProcess) -> None:
    records = run(
        agent,
        "exec",
        ["127.0.0.1", "localhost"],
        {"argv": ["cat", "{targets_file}"], "parser": "lines", "type": "host_up"},
    )
    assert [(r["type"], r["data"]["host"], r["data"]["via"]) for r in records] == [
        ("host_up", "127.0.0.1", "exec"),
        ("host_up", "localhost", "exec"),
    ]


def test_exec_jsonl_parser_skips_junk(agent: AgentProcess) -> None:
    script = 'echo \'{"type":"port_open","target":"127.0.0.1","data":{"host":"127.0.0.1","port":22,"proto":"tcp"}}\'; echo junk; echo "[1]"'
    records = run(agent, "exec", [], {"argv": ["sh", "-c", script], "parser": "jsonl"})
    assert records == [
        {
            "type": "port_open",
            "target": "127.0.0.1",
            "data": {"host": "127.0.0.1", "port": 22, "proto": "tcp"},
        }
    ]


def test_exec_refuses_option_like_values_partial_placeholders_and_missing_programs(
    agent: AgentProcess,
) -> None:
    assert "refused" in run_failing(agent, "exec", ["-oXevil"], {"argv": ["echo", "{target}"]})
    assert "refused" in run_failing(agent, "exec", ["a b"], {"argv": ["echo", "{target}"]})
    assert "whole argv element" in run_failing(
        agent, "exec", ["127.0.0.1"], {"argv": ["echo", "--host={host}"]}
    )
    assert "no value" in run_failing(agent, "exec", ["127.0.0.1"], {"argv": ["echo", "{port}"]})
    assert (
        run_failing(agent, "exec", [], {"argv": ["fleetscan-no-such-program"]})
        == "program not found: fleetscan-no-such-program"
    )
    assert "exited 3" in run_failing(agent, "exec", [], {"argv": ["sh", "-c", "echo oops >&2; exit 3"]})


def test_exec_timeout_kills_the_program(agent: AgentProcess) -> None:
    done, _ = agent.run_task("slow-exec", "exec", [], {"argv": ["sleep", "30"]}, timeout=0.5)
    assert done["ok"] is False and done["error"].startswith("timeout")


def test_exec_fills_placeholders_as_whole_elements(agent: AgentProcess, tmp_path: Path) -> None:
    records = run(agent, "exec", ["127.0.0.1:8080", "http://localhost:9000/x"],
                  {"argv": ["printf", "%s|%s|%s\\n", "{host}", "{port}", "{target}"], "parser": "lines", "type": "note"})  # fmt: skip
    assert [r["data"]["line"] for r in records] == [
        "127.0.0.1|8080|127.0.0.1:8080",
        "localhost|9000|http://localhost:9000/x",
    ]


# -- noop -------------------------------------------------------------------------


def test_noop_emits_synthetic_records(agent: AgentProcess) -> None:
    records = run(agent, "noop", [], {"records": 3})
    assert [r["data"]["via"] for r in records] == ["noop/0", "noop/1", "noop/2"]
