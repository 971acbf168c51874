"""The little target/scope parsing the agent needs, stdlib only.

The master owns the full target SPEC (``console/targets/sets.py``); the agent needs
just enough to (a) split the targets a task carries (host, ``host:port``, URL;
small CIDRs and ``a.b.c.d-e`` ranges are expanded), and (b) decide whether a
redirect or a derived address stays inside the task's scope. A scope entry is
an IPv4/IPv6 address, a CIDR, a range ``a.b.c.d-e``, a hostname (matched
case-insensitively, exactly), or any of those with ``:port`` (``[v6]:port``),
which then matches that port only. An empty scope means "the task's own
targets" (the caller passes them).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
#: a last label inet_aton would read as a number (``127.1``, ``0x7f000001``, ``10.0.0.0x1``)
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)\Z")
_RANGE = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.)(\d{1,3})-(\d{1,3})$")
#: Expanding a CIDR or range inside the agent is for small sets only; the master chunks big ones.
MAX_EXPAND = 65536


class TargetError(ValueError):
    """A target or scope entry that does not parse."""


def parse_ip(text: str) -> Optional[IPAddress]:
    return canonical_ip(text.strip("[]"))


def canonical_ip(text: str) -> Optional[IPAddress]:
    """An IP address (IPv4-mapped IPv6 folded to IPv4), or None. The ONE address rule: the
    master's target and record checks call this very function (console.targets.values), so the
    agent and the master cannot disagree on what is an address."""
    if "%" in text or not text or len(text) > 45:
        return None  # no zone ids: an interface name is not a target
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def normalize_hostname(text: str) -> Optional[str]:
    """A lower-case RFC 1123 hostname (IDNA ASCII labels, trailing dot dropped), or None.

    The ONE hostname rule, shared with the master (console.targets.values calls this): no
    underscores, and no name whose last label is a number in any form inet_aton accepts
    (``127.1``, ``0x7f000001``, ``127.20.0.0x1``): the resolver would turn those into
    addresses, and one machine would show under several keys.
    """
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    last = labels[-1]
    if _NUMERIC_LABEL.match(last) or not any(ch.isalpha() for ch in last):
        return None  # 10.0.0.256 or 10.0.0.1-300 is a broken address, not a name (TLDs have letters)
    return name


def is_hostname(text: str) -> bool:
    return normalize_hostname(text) is not None


def valid_host(text: str) -> bool:
    """An IP address or a DNS name: never empty, never an option, no whitespace (the master's rule)."""
    return canonical_ip(text) is not None or is_hostname(text)


def split_host_port(text: str) -> Tuple[str, Optional[int]]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise TargetError("unbalanced [ in %r" % text)
        host, rest = text[1:close], text[close + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise TargetError("junk after ] in %r" % text)
        return host, _port(rest[1:], text)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port, text)
    return text, None


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise TargetError("bad port in %r" % whole)
    return int(text)


def host_port(text: str) -> Tuple[str, int]:
    """A ``host:port`` target, validated."""
    host, port = split_host_port(text)
    if port is None:
        raise TargetError("%r needs a port (host:port)" % text)
    if not valid_host(host):
        raise TargetError("bad host in %r" % text)
    return host, port


def iter_hosts(target: str) -> Iterator[str]:
    """One host target -> its hosts (an address, a name, or the addresses of a small CIDR/range)."""
    text = target.strip()
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise TargetError("bad CIDR %r" % text) from None
        if net.num_addresses > MAX_EXPAND:
            raise TargetError("CIDR %r is larger than %d addresses" % (text, MAX_EXPAND))
        if net.num_addresses <= 2:
            for addr in net:
                yield str(addr)
        else:
            for addr in net.hosts():
                yield str(addr)
        return
    match = _RANGE.match(text)
    if match:
        prefix, first, last = match.group(1), int(match.group(2)), int(match.group(3))
        if first > last or last > 255 or parse_ip(prefix + "0") is None:
            raise TargetError("bad range %r" % text)
        for last_octet in range(first, last + 1):
            yield "%s%d" % (prefix, last_octet)
        return
    host = text.strip("[]")
    if not valid_host(host):
        raise TargetError("bad host %r" % text)
    yield host


class ScopeEntry:
    """One parsed scope entry: a network, an address range, or a hostname; optionally one port."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.port: Optional[int] = None
        self.network: Optional[IPNetwork] = None
        self.first: Optional[IPAddress] = None
        self.last: Optional[IPAddress] = None
        self.name: Optional[str] = None
        body = text.strip()
        if "://" in body:
            parts = urlsplit(body)
            body = parts.netloc.rpartition("@")[2]
        if "/" in body:
            try:
                self.network = ipaddress.ip_network(body, strict=False)
            except ValueError:
                raise TargetError("bad scope CIDR %r" % text) from None
            return
        match = _RANGE.match(body)
        if match:
            self.first = ipaddress.ip_address(match.group(1) + match.group(2))
            self.last = ipaddress.ip_address(match.group(1) + match.group(3))
            return
        host, self.port = split_host_port(body)
        addr = parse_ip(host)
        if addr is not None:
            self.network = ipaddress.ip_network(addr)
        elif is_hostname(host):
            self.name = host.lower().rstrip(".")
        else:
            raise TargetError("bad scope entry %r" % text)

    def contains(self, host: str, port: Optional[int]) -> bool:
        if self.port is not None and port != self.port:
            return False
        addr = parse_ip(host)
        if addr is None:
            return self.name is not None and self.name == host.lower().rstrip(".")
        if self.network is not None:
            return addr.version == self.network.version and addr in self.network
        if self.first is not None and self.last is not None:
            return addr.version == self.first.version and self.first <= addr <= self.last  # type: ignore[operator]
        return False


class Scope:
    """A list of scope entries; a host (and port) is in scope when any entry contains it."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.entries: List[ScopeEntry] = []
        for entry in entries:
            for part in entry.split(","):
                if part.strip():
                    self.entries.append(ScopeEntry(part.strip()))

    def contains(self, host: str, port: Optional[int] = None) -> bool:
        return any(entry.contains(host, port) for entry in self.entries)


def url_host_port(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError("not an http(s) URL: %r" % url)
    try:
        port = parts.port
    except ValueError:
        raise TargetError("bad port in %r" % url) from None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)
