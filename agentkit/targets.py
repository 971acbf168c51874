"""The little target/scope parsing the agent needs, stdlib only; THE parser of the scope wire form.

The master owns the full target SPEC (``console/targets/sets.py``); the agent needs
just enough to (a) split the targets a task carries (host, ``host:port``, URL;
small CIDRs and ``a.b.c.d-e`` ranges are expanded), and (b) decide whether an
address or a name stays inside the task's scope and outside its exclusions.

The scope wire form (``Task.scope`` and ``Task.exclude``: a list of strings, what
``console.targets.sets.Scope.wire()`` writes). Each entry is one of:

- an IPv4 or IPv6 address (``127.0.0.1``, ``::1``);
- a CIDR (``10.0.0.0/8``, ``fd00::/64``);
- a range of two full addresses of one version (``127.10.0.1-127.10.0.10``,
  ``::1-::2``), or the IPv4 shorthand ``a.b.c.d-e``;
- a hostname, matched case-insensitively and exactly (a trailing dot ignored);
- any of the above as ``host:port`` / ``[v6]:port`` / an http(s) URL, which then
  matches that port only (older masters; the master writes bare entries).

An entry may also hold several of these separated by commas. An empty scope
means "the task's own targets" (the caller passes them).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import socket
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
#: a last label inet_aton would read as a number (``127.1``, ``0x7f000001``, ``10.0.0.0x1``)
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)\Z")
_RANGE = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.)(\d{1,3})-(\d{1,3})$")
#: a part of an address as inet_aton reads it (decimal, octal, or hex): ``0x7f000001`` is no name
_NUMBER_PART = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
#: Expanding a CIDR or range inside the agent is for small sets only; the master chunks big ones.
MAX_EXPAND = 65536
#: an IPv4 address in its one canonical form (decimal octets, no leading zeros): read without
#: ipaddress's string parser, which was most of the time spent on a 100,000-entry scope
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(r"(?:%s\.){3}%s\Z" % (_OCTET, _OCTET))


class TargetError(ValueError):
    """A target or scope entry that does not parse."""


def parse_ip(text: str) -> Optional[IPAddress]:
    return canonical_ip(text.strip("[]"))


def dotted_quad(text: str) -> Optional[int]:
    """An IPv4 address written the one canonical way (``127.0.0.1``) as its number, else None (the
    other address forms, IPv4 or IPv6, are :func:`canonical_ip`'s)."""
    if _DOTTED_QUAD.match(text):
        return int.from_bytes(socket.inet_aton(text), "big")
    return None


def canonical_ip(text: str) -> Optional[IPAddress]:
    """An IP address (IPv4-mapped IPv6 folded to IPv4), or None. The ONE address rule: the
    master's target and record checks call this very function (console.targets.values), so the
    agent and the master cannot disagree on what is an address."""
    if "%" in text or not text or len(text) > 45:
        return None  # no zone ids: an interface name is not a target
    number = dotted_quad(text)
    if number is not None:
        return ipaddress.IPv4Address(number)
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
    underscores, and no name that inet_aton reads as an address (every label a number in a form it
    accepts: ``127.1``, ``0x7f000001``, ``127.20.0.0x1``): the resolver would turn those into
    addresses, and one machine would show under several keys. ``a.0x1f`` stays a name.
    """
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    if not any(ch.isalpha() for ch in labels[-1]):
        return None  # 10.0.0.256 or 10.0.0.1-300 is a broken address, not a name (TLDs have letters)
    if len(labels) <= 4 and all(_NUMERIC_LABEL.match(label) for label in labels):
        return None  # 0x7f000001, 127.0.0.0x1: inet_aton (and so the resolver) reads it as an address
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


def split_host_ports(text: str) -> Tuple[str, List[int]]:
    """A ``host_ports`` target ``host:p1,p2`` / ``[v6]:p1,p2`` -> (host, ports), validated.

    The master writes one per host (``console.targets.hostports``); the ports become exec's
    ``{ports}`` placeholder, so each must be a plain port number (never an option or a range).
    """
    body = text.strip()
    if body.startswith("["):
        close = body.find("]")
        if close < 0 or body[close + 1 : close + 2] != ":":
            raise TargetError("bad host_ports target %r" % text)
        host, ports_text = body[1:close], body[close + 2 :]
    else:
        host, _, ports_text = body.rpartition(":")
        if ":" in host:
            raise TargetError("bad host_ports target %r (an IPv6 host goes in [])" % text)
    if not valid_host(host):
        raise TargetError("bad host in %r" % text)
    ports = [_port(part, text) for part in ports_text.split(",")]
    return host, ports


def is_host_ports(text: str) -> bool:
    """Does this target carry a port list (``host:22,80``)?"""
    return "," in text.rpartition(":")[2] and "://" not in text


def target_scope_entry(target: str) -> str:
    """A task target as a scope entry (when the task's targets stand in for its scope)."""
    if is_host_ports(target):
        try:
            return split_host_ports(target)[0]
        except TargetError:
            return target  # refused by the tool that reads it, with its own message
    return target


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


def parse_span(text: str) -> Optional[Tuple[int, int, int]]:
    """An address, CIDR or range as ``(version, first, last)`` integers; None when not address-shaped."""
    body = text.strip()
    if "/" in body:
        try:
            net = ipaddress.ip_network(body, strict=False)
        except ValueError:
            return None
        return net.version, int(net.network_address), int(net.broadcast_address)
    match = _RANGE.match(body)
    if match:
        first_ip = parse_ip(match.group(1) + match.group(2))
        last_ip = parse_ip(match.group(1) + match.group(3))
        if first_ip is None or last_ip is None or int(last_ip) < int(first_ip):
            return None
        return 4, int(first_ip), int(last_ip)
    if "-" in body:
        left, _, right = body.partition("-")
        first, last = parse_ip(left), parse_ip(right)
        if first is None or last is None or first.version != last.version or int(last) < int(first):
            return None
        return first.version, int(first), int(last)
    addr = parse_ip(body) if not body.startswith("[") else None
    if addr is None:
        return None
    return addr.version, int(addr), int(addr)


class ScopeEntry:
    """One scope entry that names a port (``host:port``, ``[v6]:port``, a URL): matches that port only."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.port: Optional[int] = None
        self.span: Optional[Tuple[int, int, int]] = None
        self.name: Optional[str] = None
        body = text.strip()
        if "://" in body:
            parts = urlsplit(body)
            body = parts.netloc.rpartition("@")[2]
            try:
                url_port = parts.port
            except ValueError:
                raise TargetError("bad scope entry %r" % text) from None
            if url_port is None:
                url_port = 443 if parts.scheme == "https" else 80
            host = parts.hostname or ""
            self.port = url_port
        else:
            host, self.port = split_host_port(body)
        self.span = parse_span(host)
        if self.span is None:
            if is_hostname(host) and not _looks_numeric(host):
                self.name = host.lower().rstrip(".")
            else:
                raise TargetError("bad scope entry %r" % text)

    def contains(self, host: str, port: Optional[int]) -> bool:
        if self.port is not None and port != self.port:
            return False
        addr = parse_ip(host)
        if addr is None:
            return self.name is not None and self.name == host.lower().rstrip(".")
        if self.span is None:
            return False
        version, first, last = self.span
        return addr.version == version and first <= int(addr) <= last


def _looks_numeric(text: str) -> bool:
    """A name a resolver would read as an address: a last label without a letter (``127.1``,
    ``10.0.0.256``), or up to four parts each decimal, octal or hex (``0x7f000001``, ``127.0.0.0x1``).

    The same rule as the master's ``normalize_hostname``, so both sides read an entry alike.
    """
    labels = text.rstrip(".").lower().split(".")
    if not any(ch.isalpha() for ch in labels[-1]):
        return True
    return len(labels) <= 4 and all(_NUMBER_PART.match(label) for label in labels)


class Scope:
    """Parsed wire-form entries; a host (and port) is in scope when any entry contains it.

    Address entries are kept as merged integer spans searched by bisection, so a scope of
    many thousand entries costs a logarithmic lookup per address.
    """

    def __init__(self, entries: Sequence[str]) -> None:
        self.entries: List[ScopeEntry] = []
        spans: List[Tuple[int, int, int]] = []
        names = set()
        for entry in entries:
            for part in entry.split(","):
                part = part.strip()
                if not part:
                    continue
                span = parse_span(part)
                if span is not None:
                    spans.append(span)
                elif is_hostname(part) and not _looks_numeric(part):
                    names.add(part.lower().rstrip("."))
                else:
                    self.entries.append(ScopeEntry(part))
        self.names = frozenset(names)
        self._starts: Dict[int, List[int]] = {4: [], 6: []}
        self._ends: Dict[int, List[int]] = {4: [], 6: []}
        for version, first, last in sorted(spans):
            starts, ends = self._starts[version], self._ends[version]
            if ends and first <= ends[-1] + 1:
                ends[-1] = max(ends[-1], last)
            else:
                starts.append(first)
                ends.append(last)

    @property
    def has_addresses(self) -> bool:
        """Whether any entry bounds addresses (a scope of names only bounds nothing by address)."""
        return bool(self._starts[4] or self._starts[6]) or any(e.span is not None for e in self.entries)

    def contains_address(self, addr: IPAddress, port: Optional[int] = None) -> bool:
        starts, ends = self._starts[addr.version], self._ends[addr.version]
        index = bisect.bisect_right(starts, int(addr)) - 1
        if index >= 0 and int(addr) <= ends[index]:
            return True
        return any(entry.contains(str(addr), port) for entry in self.entries)

    def contains(self, host: str, port: Optional[int] = None) -> bool:
        addr = parse_ip(host)
        if addr is not None:
            return self.contains_address(addr, port)
        if host.lower().rstrip(".") in self.names:
            return True
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
