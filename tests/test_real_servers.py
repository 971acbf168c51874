"""service, tls_cert and http_probe through a real agent against real servers on loopback.

nginx, openssl s_server (TLS 1.0, one legacy cipher), exim4 (SMTP with STARTTLS) and
redis-server are started once per session (tests/fixtures/daemons.py) with configs
written there; every expected value below comes from those configs or from the
server's own ``--version``, never from our output.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.daemons import (
    LEGACY_CIPHER,
    NGINX_ALT_IP,
    NGINX_IP,
    OUTSIDE_IP,
    SCOPE,
    SMTP_BANNER_TAIL,
    SMTP_HOSTNAME,
    TITLES,
    LegacyTls,
    Nginx,
    Redis,
    Smtp,
    Sshd,
    legacy_tls,
    nginx,
    plain_sshd,
    redis_server,
    smtp_server,
)

__all__ = ["legacy_tls", "nginx", "plain_sshd", "redis_server", "smtp_server"]  # the fixtures, used by name
_counter = iter(range(1, 1_000_000))


#: the agent on the venv's Python and on the oldest supported one when this machine has it
AGENT_PYTHONS = [sys.executable] + [str(p) for p in sorted(Path("/root/.pyenv/versions").glob("3.8.*/bin/python"))[:1]]


@pytest.fixture(scope="module", params=AGENT_PYTHONS, ids=lambda p: "py" + Path(p).parent.parent.name)
def agent(request: pytest.FixtureRequest) -> Iterator[AgentProcess]:
    process = AgentProcess.from_source(python=request.param)
    assert process.read()["op"] == "hello"
    try:
        yield process
    finally:
        process.stop()


def run(agent: AgentProcess, tool: str, targets: list[str], params: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
    done, records = agent.run_task(f"{tool}-{next(_counter)}", tool, targets, params, **kw)
    assert done["ok"] is True, done
    return records


def by_target(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["target"]: record["data"] for record in records}


# -- service ------------------------------------------------------------------------------


def test_service_names_each_real_server(
    agent: AgentProcess, nginx: Nginx, legacy_tls: LegacyTls, smtp_server: Smtp, redis_server: Redis,
    plain_sshd: Sshd,
) -> None:
    targets = {
        plain_sshd.target: ("ssh", "OpenSSH", plain_sshd.version, False),
        f"{NGINX_IP}:{nginx.http_port}": ("http", "nginx", nginx.version, False),
        f"{NGINX_IP}:{nginx.tls_port}": ("http", "nginx", nginx.version, True),
        legacy_tls.target: ("http", "", "", True),  # s_server -www answers GET over TLS 1.0
        smtp_server.target: ("smtp", "Exim", smtp_server.version, False),
        redis_server.target: ("redis", "Redis", redis_server.version, False),
    }
    if nginx.https_443:
        targets[f"{NGINX_IP}:443"] = ("http", "nginx", nginx.version, True)
    found = by_target(run(agent, "service", list(targets), {"timeout": 2.0}))
    assert set(found) == set(targets)
    for target, (name, product, version, tls) in targets.items():
        data = found[target]
        assert (data["name"], data["tls"], data["method"]) == (name, tls, "probe"), (target, data)
        if product:
            assert (data["product"], data["version"]) == (product, version), (target, data)
    smtp = found[smtp_server.target]["banner"]
    assert smtp.startswith(f"220 {SMTP_HOSTNAME} ESMTP Exim {smtp_server.version} {SMTP_BANNER_TAIL}")
    assert smtp.endswith("\r\n")  # decoded as sent: the master escapes it, once


def test_service_port_that_closed_gives_no_record(agent: AgentProcess, nginx: Nginx) -> None:
    from tests.fixtures.servers import closed_port

    assert run(agent, "service", [f"127.0.0.1:{closed_port()}"], {"timeout": 1.0}) == []


# -- tls_cert -----------------------------------------------------------------------------


def test_tls_cert_reads_tls_1_0_with_a_legacy_cipher(agent: AgentProcess, legacy_tls: LegacyTls) -> None:
    [record] = run(agent, "tls_cert", [legacy_tls.target], {"timeout": 5.0})
    data = record["data"]
    assert data["protocol"] == "TLSv1"
    assert data["cipher"] == LEGACY_CIPHER
    assert data["subject"] == "CN=legacy.fleetscan.test,O=Fleetscan Tests"
    assert data["sans"] == ["DNS:legacy.fleetscan.test"]
    served = ssl.PEM_cert_to_DER_cert(legacy_tls.cert.cert.read_text())  # the file s_server was given
    assert data["sha256"] == hashlib.sha256(served).hexdigest()
    assert data["not_before"] < data["not_after"]


def test_tls_cert_starttls_smtp_explicit_and_none(agent: AgentProcess, smtp_server: Smtp) -> None:
    [record] = run(agent, "tls_cert", [smtp_server.target], {"timeout": 5.0, "starttls": "smtp"})
    data = record["data"]
    assert data["subject"] == f"CN={SMTP_HOSTNAME},O=Fleetscan Tests"
    assert data["sans"] == [f"DNS:{SMTP_HOSTNAME}"]
    assert data["starttls"] == "smtp" and data["protocol"].startswith("TLSv1")
    # without the upgrade a plain SMTP port has no certificate to show
    assert run(agent, "tls_cert", [smtp_server.target], {"timeout": 3.0, "starttls": "none"}) == []


def test_tls_cert_starttls_auto_upgrades_port_25(agent: AgentProcess, smtp_server: Smtp) -> None:
    [record] = run(agent, "tls_cert", [f"{smtp_server.target.rsplit(':', 1)[0]}:25"], {"timeout": 5.0})
    assert record["data"]["starttls"] == "smtp"
    assert record["data"]["subject"] == f"CN={SMTP_HOSTNAME},O=Fleetscan Tests"
    service = run(agent, "service", [f"{smtp_server.target.rsplit(':', 1)[0]}:25"], {"timeout": 2.0})
    assert [(r["data"]["name"], r["data"]["product"]) for r in service] == [("smtp", "Exim")]


def test_tls_cert_on_nginx_443_and_a_non_standard_port(agent: AgentProcess, nginx: Nginx) -> None:
    targets = [f"{NGINX_IP}:{nginx.tls_port}"] + ([f"{NGINX_IP}:443"] if nginx.https_443 else [])
    found = by_target(run(agent, "tls_cert", targets, {}))
    assert set(found) == set(targets)
    for data in found.values():
        assert data["subject"] == "CN=www.fleetscan.test,O=Fleetscan Tests"
        assert data["sans"] == ["DNS:www.fleetscan.test", f"IP Address:{NGINX_IP}"]
        assert data["protocol"] == "TLSv1.3"  # ssl_protocols TLSv1.2 TLSv1.3: the newest wins


def test_tls_cert_refuses_an_unknown_starttls(agent: AgentProcess) -> None:
    done, _ = agent.run_task(f"tls-{next(_counter)}", "tls_cert", ["127.0.0.1:25"], {"starttls": "gopher"})
    assert done["ok"] is False and "params.starttls" in done["error"]


# -- http_probe -----------------------------------------------------------------------------


@pytest.mark.parametrize("page", sorted(TITLES))
def test_http_titles_decoded_as_the_page_meant(agent: AgentProcess, nginx: Nginx, page: str) -> None:
    [record] = run(agent, "http_probe", [nginx.url("/" + page)], {})
    assert record["data"]["title"] == TITLES[page]
    assert record["data"]["server"] == f"nginx/{nginx.version}"


def test_http_redirect_chain_inside_the_scope_is_followed_and_recorded(agent: AgentProcess, nginx: Nginx) -> None:
    [record] = run(agent, "http_probe", [nginx.url("/hop1")], {}, scope=[SCOPE])
    data = record["data"]
    hop2 = f"http://{NGINX_ALT_IP}:{nginx.alt_port}/hop2"
    final = f"http://{NGINX_ALT_IP}:{nginx.alt_port}/final.html"
    assert data["redirects"] == [hop2, final]
    assert data["final_url"] == final
    assert (data["status"], data["title"]) == (200, "Arrived")


def test_http_redirect_out_of_the_scope_is_reported_never_fetched(agent: AgentProcess, nginx: Nginx) -> None:
    with socket.socket() as outside:  # where the redirect points: it must never be connected to
        outside.bind((OUTSIDE_IP, nginx.outside_port))
        outside.listen(4)
        [record] = run(agent, "http_probe", [nginx.url("/away")], {}, scope=[SCOPE])
        outside.setblocking(False)
        with pytest.raises(BlockingIOError):
            outside.accept()
    data = record["data"]
    assert data["status"] == 301 and data["redirect_blocked"] == "out of scope"
    assert data["location"] == f"http://{OUTSIDE_IP}:{nginx.outside_port}/"
    assert data["redirects"] == [] and data["final_url"] == nginx.url("/away")


def test_http_plain_request_to_an_https_port_is_retried_over_tls(agent: AgentProcess, nginx: Nginx) -> None:
    plain = f"http://{NGINX_IP}:{nginx.tls_port}/entities.html"
    [record] = run(agent, "http_probe", [plain], {})
    data = record["data"]
    assert data["url"] == plain
    assert data["final_url"] == f"https://{NGINX_IP}:{nginx.tls_port}/entities.html"
    assert (data["status"], data["title"]) == (200, TITLES["entities.html"])


def test_http_over_tls_1_0_with_a_legacy_cipher(agent: AgentProcess, legacy_tls: LegacyTls) -> None:
    url = f"https://{legacy_tls.target}/"
    [record] = run(agent, "http_probe", [url], {})
    assert record["data"]["status"] == 200  # s_server -www answers any GET with its status page


class _V6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def test_service_over_ipv6_loopback(agent: AgentProcess) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "v6site/2.5"  # what the test expects as product and version

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = _V6Server(("::1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    port = int(server.server_address[1])
    try:
        [record] = run(agent, "service", [f"[::1]:{port}"], {"timeout": 2.0})
    finally:
        server.shutdown()
        server.server_close()
    data = record["data"]
    assert (data["host"], data["port"], data["name"], data["tls"]) == ("::1", port, "http", False)
    assert (data["product"], data["version"], data["method"]) == ("v6site", "2.5", "probe")
