"""``where:`` accepts every documented data field of the record type and refuses unknown ones.

The documented fields are written here from SPEC's Results table (plus the extras the built-in
tools add), never read from the code under test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from console.errors import BadInput
from console.targets.records import matches_where
from console.workflow.models import load_workflows

# (source tool, its params, record type, fields SPEC documents for that type + tool extras)
DOCUMENTED = [
    ("dns", {}, "host_up", ["host", "via", "rtt_ms", "name"]),
    ("tcp_connect", {"ports": [80]}, "port_open", ["host", "port", "proto", "addr"]),
    ("exec", {"argv": ["nmap", "-oX", "-", "{target}"], "parser": "nmap_xml"}, "port_open",
     ["service", "product", "version", "tls", "cpe", "extrainfo", "name"]),
    ("banner", {}, "service", ["host", "port", "banner", "name", "product", "version", "tls", "method"]),
    ("http_probe", {}, "http",
     ["url", "status", "title", "server", "redirects", "final_url", "location", "redirect_blocked", "error"]),
    ("tls_cert", {}, "tls_cert",
     ["host", "port", "subject", "issuer", "not_before", "not_after", "sans", "protocol"]),
    ("baseline", {}, "baseline", ["rule", "title", "security", "status", "evidence"]),
]


def _file(tmp_path: Path, tool: str, params: dict[str, Any], rtype: str, where: dict[str, Any]) -> Path:
    kind = {"banner": "port", "tls_cert": "port", "http_probe": "url"}.get(tool, "host")
    targets = {"from": "boxes"} if tool == "baseline" else {"from": "input", "type": kind}
    source: dict[str, Any] = {"id": "src", "tool": tool, "targets": targets}
    if tool == "baseline":  # the shipped rule file (its format is Elkeid's)
        params = {"rules_file": str(Path(__file__).resolve().parents[1] / "baseline-rules.yaml")}
    if params:
        source["with"] = params
    if tool == "exec":
        source["output"] = [rtype]
    follow = {"id": "next", "tool": "noop", "targets": {"from": "src", "type": "host", "where": {"type": rtype, **where}}}
    path = tmp_path / "workflows.yaml"
    path.write_text(yaml.safe_dump({"workflows": {"w": {"stages": [source, follow]}}}, sort_keys=False))
    return path


@pytest.mark.parametrize(("tool", "params", "rtype", "fields"), DOCUMENTED, ids=[d[2] + "-" + d[0] for d in DOCUMENTED])
def test_where_accepts_every_documented_field(
    tmp_path: Path, tool: str, params: dict[str, Any], rtype: str, fields: list[str]
) -> None:
    for field in fields:
        wf = load_workflows(_file(tmp_path, tool, params, rtype, {field: "x"}))
        assert wf.get("w").stage("next").targets.where == {"type": rtype, field: "x"}, field


@pytest.mark.parametrize(("tool", "params", "rtype", "fields"), DOCUMENTED, ids=[d[2] + "-" + d[0] for d in DOCUMENTED])
def test_where_refuses_an_unknown_field_with_file_line_and_field(
    tmp_path: Path, tool: str, params: dict[str, Any], rtype: str, fields: list[str]
) -> None:
    path = _file(tmp_path, tool, params, rtype, {"no_such_field": 1})
    with pytest.raises(BadInput) as info:
        load_workflows(path)
    err = info.value
    assert err.file == str(path) and err.line is not None and err.line > 1
    assert err.field is not None and err.field.endswith("targets.where.no_such_field")
    assert "no field 'no_such_field'" in str(err)


def test_where_on_http_redirect_fields_selects_the_records() -> None:
    blocked = {"type": "http", "data": {"url": "http://127.0.0.1/", "status": 302, "title": "", "server": "",
                                        "location": "http://127.0.0.9/", "redirect_blocked": "out of scope"}}  # fmt: skip
    plain = {"type": "http", "data": {"url": "http://127.0.0.2/", "status": 200, "title": "", "server": ""}}
    where = {"type": "http", "redirect_blocked": "out of scope"}
    assert [matches_where(r, where) for r in (blocked, plain)] == [True, False]
    assert matches_where(blocked, {"location": "http://127.0.0.9/"})
