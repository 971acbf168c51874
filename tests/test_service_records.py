"""The master's side of the new fields: service records validated, their tls choosing the next url."""

from __future__ import annotations

from agentkit import wire
from console.targets.records import FIELDS, derive_target, matches_where, validate
from console.workflow.tools import TOOLS


def service(port: int, tls: bool, name: str = "http") -> wire.Record:
    return wire.Record("service", f"127.0.0.1:{port}", {
        "host": "127.0.0.1", "port": port, "banner": "", "name": name, "product": "nginx",
        "version": "1.22.1", "tls": tls, "method": "probe"})  # fmt: skip


def test_a_service_record_keeps_every_documented_field() -> None:
    checked = validate(service(4443, True), TOOLS["service"].reports)
    assert checked.key == "127.0.0.1:4443"
    assert checked.data == {"host": "127.0.0.1", "port": 4443, "banner": "", "name": "http", "product": "nginx",
                            "version": "1.22.1", "tls": True, "method": "probe"}  # fmt: skip
    assert {"name", "product", "version", "tls", "method"} <= FIELDS["service"]
    assert {"not_before", "sans", "protocol"} <= FIELDS["tls_cert"]
    assert {"redirects", "final_url"} <= FIELDS["http"]


def test_the_url_of_a_service_follows_what_it_spoke_not_its_port_number() -> None:
    assert derive_target(validate(service(4443, True)), "url") == "https://127.0.0.1:4443/"
    assert derive_target(validate(service(443, False)), "url") == "http://127.0.0.1:443/"
    assert derive_target(validate(service(443, True)), "url") == "https://127.0.0.1/"
    banner_only = wire.Record("service", "127.0.0.1:8443", {"host": "127.0.0.1", "port": 8443, "banner": "x"})
    assert derive_target(validate(banner_only), "url") == "https://127.0.0.1:8443/"  # no tls field: by port


def test_where_name_http_keeps_only_http_services() -> None:
    where = {"type": "service", "name": "http"}
    assert matches_where(validate(service(8080, False)), where)
    assert not matches_where(validate(service(6379, False, "redis")), where)
