"""One scope representation: what the master holds, the agent reads back identically.

The master formats its :class:`~console.targets.sets.Scope` into the wire form
(``Scope.wire()``); :mod:`agentkit.targets` is the parser of that form. A hypothesis
property checks membership agrees for addresses (v4/v6, at and around span edges) and
names; http_probe, run in a real agent process, follows redirects between real loopback
servers for every form a scope can take (range, shorthand range, CIDR, list, hostname, IPv6).
"""

from __future__ import annotations

import ipaddress
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkit.targets import Scope as AgentScope
from console.targets.sets import IpSpan, Scope, parse_scope
from tests.fixtures.agent_process import AgentProcess

V4_MAX = 2**32 - 1
V6_MAX = 2**128 - 1


@st.composite
def spans(draw: Any) -> IpSpan:
    version = draw(st.sampled_from([4, 6]))
    top = V4_MAX if version == 4 else V6_MAX
    start = draw(st.integers(0, top))
    width = draw(st.one_of(st.just(0), st.integers(0, 300), st.integers(0, 2**24)))
    return IpSpan(version, start, min(top, start + width))


_LABEL = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?\Z", fullmatch=True)
names = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(_LABEL, min_size=0, max_size=3),
    st.from_regex(r"\A[a-z][a-z0-9]{0,5}\Z", fullmatch=True),
)


def _probes(scope: Scope, extra: list[int]) -> Iterator[str]:
    """Addresses at, inside and just outside every span, plus arbitrary ones."""
    for span in scope.spans:
        top = V4_MAX if span.version == 4 else V6_MAX
        for number in (span.start - 1, span.start, (span.start + span.end) // 2, span.end, span.end + 1):
            if 0 <= number <= top:
                yield str(ipaddress.ip_address(number) if span.version == 4 else ipaddress.IPv6Address(number))
    for number in extra:
        yield str(ipaddress.IPv4Address(number % 2**32))
        yield str(ipaddress.IPv6Address(number))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(spans(), max_size=8),
    st.lists(names, max_size=5),
    st.lists(st.integers(0, V6_MAX), max_size=10),
    st.lists(names, max_size=5),
)
def test_the_agent_reads_back_exactly_the_scope_the_master_holds(
    held_spans: list[IpSpan], held_names: list[str], extra: list[int], other_names: list[str]
) -> None:
    master = Scope(held_spans, held_names)
    agent = AgentScope(master.wire())
    for address in _probes(master, extra):
        assert agent.contains(address) == master.contains(address), (master.wire(), address)
    for name in [*held_names, *other_names, *(n.upper() + "." for n in held_names)]:
        assert agent.contains(name) == master.contains(name.lower().rstrip(".")), (master.wire(), name)


@pytest.mark.parametrize(
    "spec",
    ["127.10.0.1-127.10.0.10", "127.10.0.1-10", "127.10.0.0/28", "::1-::2", "fd00::5-fd00::1:0", "10.0.0.0/8,::/127"],
)
def test_every_range_form_parses_on_the_agent(spec: str) -> None:
    wire = parse_scope(spec).wire()
    agent = AgentScope(wire)
    first = wire[0].split("-")[0].split("/")[0]
    assert agent.contains(first)


# -- redirects followed in scope, with real servers on loopback --------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: int, redirect: str | None, title: str) -> None:
        self.address_family = family
        self.redirect = redirect
        self.title = title
        self.hits = 0
        #: only requests for paths under this are counted (the machine's loopback is shared)
        self.token = "/" + uuid.uuid4().hex
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith(self.server.token):
            self.server.hits += 1
        if self.server.redirect:
            self.send_response(302)
            self.send_header("Location", self.server.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f"<html><title>{self.server.title}</title></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def serve(host: str, redirect: str | None = None, title: str = "") -> _Server:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = _Server((host, 0), family, redirect, title)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def url(host: str, server: _Server, path: str = "") -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{server.server_address[1]}{server.token}{path}"


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    with AgentProcess.serving() as process:
        yield process


# (first server's host, second server's host, how the redirect names the second, scope SPEC, followed)
CASES = [
    ("127.10.0.1", "127.10.0.7", "127.10.0.7", "127.10.0.1-127.10.0.10", True),
    ("127.10.0.1", "127.10.0.7", "127.10.0.7", "127.10.0.1-10", True),
    ("127.10.0.1", "127.10.0.7", "127.10.0.7", "127.10.0.0/28", True),
    ("127.10.0.1", "127.10.0.7", "127.10.0.7", "127.10.0.1,127.10.0.7", True),
    ("127.0.0.1", "127.0.0.1", "localhost", "127.0.0.1,localhost", True),
    ("::1", "::1", "::1", "::1-::2", True),
    ("::1", "::1", "::1", "::/127", True),
    ("127.10.0.1", "127.10.0.7", "127.10.0.7", "127.10.0.1-127.10.0.6", False),
    ("127.10.0.1", "127.10.0.7", "127.10.0.7", "127.10.0.1,::1-::2", False),
    ("127.0.0.1", "127.0.0.1", "localhost", "127.0.0.1", False),
]


@pytest.mark.parametrize(("first", "second", "named", "spec", "followed"), CASES)
def test_http_probe_follows_redirects_inside_every_scope_form(
    agent: AgentProcess, first: str, second: str, named: str, spec: str, followed: bool
) -> None:
    final = serve(second, title="arrived")
    target = url(named, final, "/end")
    start = serve(first, redirect=target)
    try:
        wire = parse_scope(spec).wire()
        done, records = agent.run_task(f"redir-{spec}", "http_probe", [url(first, start)], {"timeout": 5}, scope=wire)
        assert done["ok"], done
        (record,) = records
        data = record["data"]
        assert start.hits == 1
        if followed:
            assert final.hits == 1 and data["status"] == 200 and data["title"] == "arrived"
            assert data["final_url"] == target and "redirect_blocked" not in data
        else:
            assert final.hits == 0 and data["status"] == 302
            assert data["redirect_blocked"] == "out of scope" and data["location"] == target
    finally:
        for server in (start, final):
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("name", ["0x7f000001", "127.0.0.0x1", "0x7f.0x0.0.1", "0X7F.1", "0x7f.0.1"])
def test_a_name_a_resolver_reads_as_an_address_is_refused_on_both_sides(name: str) -> None:
    from agentkit.targets import TargetError
    from console.errors import BadInput

    with pytest.raises(BadInput):
        parse_scope(name)
    with pytest.raises(TargetError):
        AgentScope([name])


@pytest.mark.parametrize("name", ["deadbeef", "a.0x1f", "0xcafe.example", "x0.example"])
def test_names_with_hex_looking_parts_stay_names(name: str) -> None:
    assert parse_scope(name).wire() == [name]
    assert AgentScope([name]).contains(name)
