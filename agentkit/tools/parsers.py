"""Output parsers for ``exec``: program output (untrusted bytes) -> records.

Every parser takes ``(output, record_type, default_target)`` and returns a list
of :class:`agentkit.wire.Record`. They validate loosely (shapes and types);
the master validates every record again per type and derives keys itself.

* ``nmap_xml``: ``nmap -oX -``. A host with status up -> ``host_up {host, via:
  "nmap", rtt_ms}``; each open port -> ``port_open {host, port, proto}`` plus
  ``service``, ``product``, ``version``, ``extrainfo``, ``cpe`` (list) and
  ``tls`` (``tunnel="ssl"``) when nmap named them, and then also a ``service
  {host, port, banner, name, product, version, tls, method}`` record (method
  ``probe`` when nmap's probes matched, ``port`` when it only read its port
  table). A host the task gave by name (nmap's ``hostname type="user"``) is
  reported under that name, as the task asked, not under the address it
  resolved to.
* ``masscan_json``: ``masscan -oJ -`` (a JSON array, or its line-per-object
  form with trailing commas) -> ``port_open`` for ``status: open``.
* ``masscan_ndjson``: ``masscan -oD -`` (one object a line): ``rec_type:
  status`` open -> ``port_open``; ``rec_type: banner`` -> ``service {host, port,
  banner, name}``.
* ``jsonl``: one ``{"type", "target", "data"}`` object a line; other lines skipped.

A parser that recognises nothing in non-empty output (not nmap XML, no masscan
object, no JSON line) raises :class:`Unrecognised`: the task fails with that
reason instead of ending with no records, silently.
* ``lines``: each non-empty line one record of ``params.type``; ``host_up``
  and ``port_open`` get their typed fields from the line (``host`` /
  ``host:port``), every record keeps the line as ``data.line``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Dict, List, Optional

from agentkit.targets import TargetError, split_host_port, valid_host
from agentkit.tools.text import collapse
from agentkit.wire import Record

Parser = Callable[[bytes, str, str], List[Record]]
MAX_LINE_TEXT = 4096


class Unrecognised(ValueError):
    """Non-empty output in which the parser found nothing of its format."""


def nmap_xml(output: bytes, record_type: str, default_target: str) -> List[Record]:
    if not output.strip():
        return []
    try:
        root = ElementTree.fromstring(output)
    except ElementTree.ParseError as err:
        raise Unrecognised("not nmap XML (%s)" % err) from None
    if root.tag != "nmaprun":
        raise Unrecognised("not nmap XML (root element <%s>)" % collapse(root.tag, 40))
    records: List[Record] = []
    for host in root.iter("host"):
        address = _nmap_host(host)
        if address is None:
            continue
        status = host.find("status")
        if status is not None and status.get("state") == "up":
            times = host.find("times")
            rtt = 0.0
            if times is not None and (times.get("srtt") or "").isdigit():
                rtt = int(times.get("srtt") or 0) / 1000.0
            records.append(Record("host_up", address, {"host": address, "via": "nmap", "rtt_ms": rtt}))
        for port in host.iter("port"):
            state = port.find("state")
            if state is None or state.get("state") != "open":
                continue
            number = port.get("portid") or ""
            if not number.isdigit():
                continue
            data: Dict[str, Any] = {
                "host": address,
                "port": int(number),
                "proto": port.get("protocol") or "tcp",
            }
            service = port.find("service")
            records.append(Record("port_open", address, data))
            if service is not None and service.get("name"):
                records.extend(_nmap_service(address, data, service))
    return records


def _nmap_service(address: str, data: Dict[str, Any], service: Any) -> List[Record]:
    """Adds nmap's service fields to the port_open ``data``; the service record beside it."""
    for key in ("name", "product", "version", "extrainfo"):
        if service.get(key):
            data["service" if key == "name" else key] = collapse(service.get(key) or "", 256)
    cpes = [collapse(cpe.text or "", 256) for cpe in service.findall("cpe") if (cpe.text or "").strip()]
    if cpes:
        data["cpe"] = cpes[:16]
    tls = service.get("tunnel") == "ssl"
    data["tls"] = tls
    name = data["service"]
    if tls and name in ("unknown", "ssl"):
        name = "ssl"
    return [
        Record(
            "service",
            address,
            {
                "host": address,
                "port": data["port"],
                "banner": "",
                "name": name,
                "product": data.get("product", ""),
                "version": data.get("version", ""),
                "tls": tls,
                "method": "port" if service.get("method") == "table" else "probe",
            },
        )
    ]


def _nmap_host(host: Any) -> Optional[str]:
    """The name the task gave (``type="user"``) when there is one, else the address."""
    for element in host.findall("hostnames/hostname"):
        if element.get("type") == "user" and valid_host(element.get("name") or ""):
            return element.get("name")
    for element in host.findall("address"):
        if element.get("addrtype") in ("ipv4", "ipv6"):
            return element.get("addr")
    return None


def masscan_json(output: bytes, record_type: str, default_target: str) -> List[Record]:
    text = output.decode("utf-8", "replace").strip()
    if not text:
        return []
    items: List[Any] = []
    whole_array = False
    try:
        whole = json.loads(text) if text else []
        items = whole if isinstance(whole, list) else [whole]
        whole_array = isinstance(whole, list)
    except ValueError:
        for line in text.splitlines():
            line = line.strip().rstrip(",")
            if not line or line in ("[", "]"):
                continue
            try:
                items.append(json.loads(line))
            except ValueError:
                continue
    records: List[Record] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("ip"), str) or not valid_host(item["ip"]):
            continue
        for port in item.get("ports") or []:
            if not isinstance(port, dict) or port.get("status", "open") != "open":
                continue
            number = port.get("port")
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
                continue
            proto = port.get("proto") if isinstance(port.get("proto"), str) else "tcp"
            records.append(
                Record("port_open", item["ip"], {"host": item["ip"], "port": number, "proto": proto})
            )
    if not whole_array and not any(isinstance(item, dict) and "ip" in item for item in items):
        raise Unrecognised("no masscan JSON object")
    return records


def masscan_ndjson(output: bytes, record_type: str, default_target: str) -> List[Record]:
    records: List[Record] = []
    recognised = False
    for line in output.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line, parse_constant=_no_constants)
        except ValueError:
            continue
        if not isinstance(item, dict) or not isinstance(item.get("ip"), str):
            continue
        recognised = True
        address, number, detail = item["ip"], item.get("port"), item.get("data")
        if not valid_host(address) or isinstance(number, bool) or not isinstance(number, int):
            continue
        if not 1 <= number <= 65535 or not isinstance(detail, dict):
            continue
        proto = item.get("proto") if item.get("proto") in ("tcp", "udp", "sctp") else "tcp"
        kind = item.get("rec_type", "status")
        if kind == "status" and detail.get("status") == "open":
            records.append(Record("port_open", address, {"host": address, "port": number, "proto": proto}))
        elif kind == "banner" and isinstance(detail.get("banner"), str):
            given = detail.get("service_name")
            name = given if isinstance(given, str) else ""
            records.append(
                Record(
                    "service",
                    address,
                    {"host": address, "port": number, "banner": detail["banner"][:MAX_LINE_TEXT],
                     "name": collapse(name, 64)},
                )
            )
    if output.strip() and not recognised:
        raise Unrecognised("no masscan -oD line")
    return records


def _no_constants(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def jsonl(output: bytes, record_type: str, default_target: str) -> List[Record]:
    records: List[Record] = []
    seen_json = False
    for line in output.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line, parse_constant=_no_constants)
        except ValueError:
            continue
        seen_json = True
        if (
            isinstance(item, dict)
            and isinstance(item.get("type"), str)
            and isinstance(item.get("data"), dict)
            and isinstance(item.get("target", default_target), str)
        ):
            records.append(Record(item["type"], item.get("target", default_target), item["data"]))
    if output.strip() and not seen_json:
        raise Unrecognised("no JSON line")
    return records


def lines(output: bytes, record_type: str, default_target: str) -> List[Record]:
    records: List[Record] = []
    for raw in output.decode("utf-8", "replace").splitlines():
        line = collapse(raw, MAX_LINE_TEXT)
        if not line:
            continue
        data: Dict[str, Any] = {"line": line}
        target = default_target or line
        if record_type == "host_up" and valid_host(line):
            data.update({"host": line, "via": "exec", "rtt_ms": 0.0})
            target = line
        elif record_type == "port_open":
            try:
                host, port = split_host_port(line)
            except TargetError:
                port = None
            if port is None or not valid_host(host):
                continue
            data.update({"host": host, "port": port, "proto": "tcp"})
            target = host
        records.append(Record(record_type, target, data))
    return records


PARSERS: Dict[str, Parser] = {
    "nmap_xml": nmap_xml,
    "masscan_json": masscan_json,
    "masscan_ndjson": masscan_ndjson,
    "jsonl": jsonl,
    "lines": lines,
}
