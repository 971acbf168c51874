"""Output parsers for ``exec``: program output (untrusted bytes) -> records.

Every parser takes ``(output, record_type, default_target)`` and returns a list
of :class:`agentkit.wire.Record`. They validate loosely (shapes and types);
the master validates every record again per type and derives keys itself.

* ``nmap_xml``: ``nmap -oX -``. A host with status up -> ``host_up {host, via:
  "nmap", rtt_ms}``; each open port -> ``port_open {host, port, proto}`` plus
  ``service``, ``product``, ``version`` when nmap named them.
* ``masscan_json``: ``masscan -oJ -`` (a JSON array, or its line-per-object
  form with trailing commas) -> ``port_open`` for ``status: open``.
* ``jsonl``: one ``{"type", "target", "data"}`` object a line; other lines skipped.
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


def nmap_xml(output: bytes, record_type: str, default_target: str) -> List[Record]:
    if not output.strip():
        return []
    try:
        root = ElementTree.fromstring(output)
    except ElementTree.ParseError:
        return []
    records: List[Record] = []
    for host in root.iter("host"):
        address = _nmap_address(host)
        if address is None:
            continue
        # a hostname target nmap resolved: its records are reported under that name (what the task asked)
        about = _nmap_user_name(host) or address
        status = host.find("status")
        if status is not None and status.get("state") == "up":
            times = host.find("times")
            rtt = 0.0
            if times is not None and (times.get("srtt") or "").isdigit():
                rtt = int(times.get("srtt") or 0) / 1000.0
            records.append(Record("host_up", about, {"host": address, "via": "nmap", "rtt_ms": rtt}))
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
            if service is not None:
                for key in ("name", "product", "version"):
                    if service.get(key):
                        data["service" if key == "name" else key] = collapse(service.get(key) or "", 256)
            records.append(Record("port_open", about, data))
    return records


def _nmap_user_name(host: Any) -> Optional[str]:
    """The hostname the scan was given for this host (nmap's ``type="user"``), when it is a valid one."""
    for element in host.iter("hostname"):
        name = element.get("name") or ""
        if element.get("type") == "user" and valid_host(name):
            return name
    return None


def _nmap_address(host: Any) -> Optional[str]:
    for element in host.findall("address"):
        if element.get("addrtype") in ("ipv4", "ipv6"):
            return element.get("addr")
    return None


def masscan_json(output: bytes, record_type: str, default_target: str) -> List[Record]:
    text = output.decode("utf-8", "replace").strip()
    items: List[Any] = []
    try:
        whole = json.loads(text) if text else []
        items = whole if isinstance(whole, list) else [whole]
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
    return records


def _no_constants(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def jsonl(output: bytes, record_type: str, default_target: str) -> List[Record]:
    records: List[Record] = []
    for line in output.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line, parse_constant=_no_constants)
        except ValueError:
            continue
        if (
            isinstance(item, dict)
            and isinstance(item.get("type"), str)
            and isinstance(item.get("data"), dict)
            and isinstance(item.get("target", default_target), str)
        ):
            records.append(Record(item["type"], item.get("target", default_target), item["data"]))
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
    "jsonl": jsonl,
    "lines": lines,
}
