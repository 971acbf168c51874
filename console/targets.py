"""Target SPECs, typed target values, scopes, and lazy chunkable target sets.

A SPEC is what the operator types after ``--targets`` / ``--scope``: a
comma-separated list of IPv4/IPv6 addresses, CIDRs, ranges (``10.0.0.1-20`` or
``10.0.0.1-10.0.0.20``), hostnames, ``host:port`` (``[v6]:port``), http(s) URLs,
or ``@file`` (one entry a line, ``#`` comments).

Addresses are kept as integer spans, never expanded: a ``/8`` (16.7M addresses)
is one ``(start, end)`` pair, and :class:`TargetSet` gives ``len()``,
iteration from any offset and chunks in constant memory.

Every value that may become a target, typed by kind (``ip``, ``host``,
``port`` = host:port, ``url``), goes through :func:`validate_value`: normalised,
ASCII printable only, never starting with ``-``, no whitespace or shell
metacharacters, so a banner, title or hostname sent by a scanned machine can
never turn into a shell word, an option, or a target outside the scope.

Scope rule for names: a hostname is in scope only if it is listed by name
(case-insensitive). Names are never resolved to check scope, so a derived
hostname must be listed by name to be scanned; an address is in scope when an
address, CIDR or range of the scope contains it.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from console.errors import BadInput

Kind = Literal["ip", "host", "port", "url"]
KINDS: tuple[str, ...] = ("ip", "host", "port", "url")

#: Longest single entry or value we accept (a URL is the longest legitimate one).
MAX_ENTRY = 2048
#: A target set bigger than this is refused (a whole IPv4 Internet is 2**32).
MAX_TARGETS = 2**32
#: Ports that mean TLS when a url is derived from host:port.
HTTPS_PORTS = frozenset({443, 8443})

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
# Path and query characters allowed in a URL target: RFC 3986 unreserved, '%', and the
# few delimiters queries need. No quotes, backslashes, '$', ';', '|', '`', '<', '>', '@', '#'.
_URL_TAIL = re.compile(r"^[A-Za-z0-9\-._~/%?=&+:,]*$")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<tail>.*)$", re.S)


def _show(text: str, limit: int = 60) -> str:
    """An entry as it can appear in a one-line error: escaped and shortened."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    return ascii(shown)


def _bad(entry: str, reason: str, *, field: str | None, file: str | None = None, line: int | None = None) -> BadInput:
    return BadInput(f"bad target {_show(entry)}: {reason}", field=field, file=file, line=line)


# -- single values --------------------------------------------------------------------


def _check_text(value: str) -> str | None:
    """Why ``value`` can never be a target string, or None when its characters are fine."""
    if not value:
        return "empty"
    if len(value) > MAX_ENTRY:
        return f"longer than {MAX_ENTRY} characters"
    if not value.isascii():
        return "non-ASCII characters (use the IDNA xn-- form of a name)"
    if not value.isprintable() or " " in value:
        return "whitespace or control characters"
    if value.startswith("-"):
        return "starts with '-'"
    return None


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address, IPv4-mapped IPv6 folded to IPv4; None when ``text`` is not one."""
    if "%" in text or not text or len(text) > 45:
        return None  # no zone ids: an interface name is not a target
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def normalize_hostname(text: str) -> str | None:
    """A lower-case RFC 1123 hostname (IDNA ASCII labels, trailing dot dropped), or None."""
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    if labels[-1].isdigit():
        return None  # 10.0.0.256 is a broken address, not a name
    return name


def _host_value(text: str) -> str | None:
    """Canonical host (IP or hostname) or None."""
    addr = parse_ip(text)
    if addr is not None:
        return str(addr)
    return normalize_hostname(text)


def format_hostport(host: str, port: int) -> str:
    """``host:port``, with IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_port(text: str) -> int | None:
    if not _PORT.match(text):
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def split_hostport(text: str) -> tuple[str, int] | None:
    """``(host, port)`` from ``host:port`` / ``[v6]:port`` (host canonical), or None."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            return None
        addr = parse_ip(text[1:end])
        if addr is None or addr.version != 6:
            return None
        host: str | None = str(addr)
        rest = text[end + 2 :]
    else:
        if text.count(":") != 1:
            return None
        raw_host, rest = text.split(":")
        host = _host_value(raw_host)
    port = _parse_port(rest)
    if host is None or port is None:
        return None
    return host, port


def parse_url(text: str) -> tuple[str, str, int | None, str] | None:
    """``(scheme, host, port or None, path+query)`` of an http(s) URL, canonical, or None.

    No userinfo (``user@host`` tricks), no fragments, no dot segments, a narrow
    character set in the path and query.
    """
    m = _URL.match(text)
    if not m:
        return None
    scheme = m.group("scheme").lower()
    if scheme not in ("http", "https"):
        return None
    authority, tail = m.group("authority"), m.group("tail")
    if not authority or "@" in authority:
        return None
    port: int | None = None
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        addr = parse_ip(authority[1:end])
        if addr is None or addr.version != 6:
            return None
        host: str | None = str(addr)
        after = authority[end + 1 :]
        if after:
            if not after.startswith(":"):
                return None
            port = _parse_port(after[1:])
            if port is None:
                return None
    else:
        if authority.count(":") > 1:
            return None
        raw_host, _, raw_port = authority.partition(":")
        host = _host_value(raw_host)
        if ":" in authority:
            port = _parse_port(raw_port)
            if port is None:
                return None
    if host is None:
        return None
    if tail == "":
        tail = "/"
    if not tail.startswith(("/", "?")) or not _URL_TAIL.match(tail):
        return None
    path = tail.split("?", 1)[0]
    if any(seg in (".", "..") for seg in path.split("/")):
        return None
    if tail.startswith("?"):
        tail = "/" + tail
    if (scheme, port) in (("http", 80), ("https", 443)):
        port = None
    return scheme, host, port, tail


def format_url(scheme: str, host: str, port: int | None, tail: str = "/") -> str:
    """A canonical URL string; default ports are left out."""
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        netloc += f":{port}"
    return f"{scheme}://{netloc}{tail}"


def url_for(host: str, port: int) -> str:
    """The url a ``host:port`` becomes: https for 443 and 8443, else http."""
    return format_url("https" if port in HTTPS_PORTS else "http", host, port)


def validate_value(kind: str, value: object) -> str:
    """Check a value strictly before it may become a target; return it normalised.

    ``kind`` is ``ip`` (an address), ``host`` (address or hostname), ``port``
    (``host:port``) or ``url`` (http/https). Raises BadInput naming the value.
    """
    if not isinstance(value, str):
        raise BadInput(f"bad {kind} value {_show(repr(value))}: not a string")
    why = _check_text(value)
    if why is not None:
        raise BadInput(f"bad {kind} value {_show(value)}: {why}")
    result: str | None = None
    if kind == "ip":
        addr = parse_ip(value)
        result = str(addr) if addr is not None else None
    elif kind == "host":
        result = _host_value(value)
    elif kind == "port":
        hp = split_hostport(value)
        result = format_hostport(*hp) if hp else None
    elif kind == "url":
        parts = parse_url(value)
        result = format_url(*parts) if parts else None
    else:
        raise BadInput(f"unknown target kind {kind!r} (known: {', '.join(KINDS)})")
    if result is None:
        raise BadInput(f"bad {kind} value {_show(value)}: not a valid {_KIND_NAMES[kind]}")
    return result


_KIND_NAMES = {"ip": "IP address", "host": "IP address or hostname", "port": "host:port", "url": "http(s) URL"}


def host_of(value: str) -> str | None:
    """The canonical host of an ip / host / host:port / url value, or None if it is none of these."""
    if _check_text(value) is not None:
        return None
    if value.startswith(("http://", "https://", "HTTP://", "HTTPS://")) or "://" in value:
        parts = parse_url(value)
        return parts[1] if parts else None
    host = _host_value(value)
    if host is not None:
        return host
    hp = split_hostport(value)
    return hp[0] if hp else None


def as_kind(value: str, kind: str) -> str | None:
    """Convert a canonical target to ``kind``, one value for one value (None if it cannot).

    host: the host of anything. port: host:port as is; a url's host and port; a bare
    host means its TLS port 443 (the port-typed tools reading bare hosts from input are
    tls_cert and banner; give ``host:port`` for another port). url: a url as is;
    host:port as :func:`url_for`; a bare host as ``http://host/``.
    """
    if kind in ("host", "ip"):
        host = host_of(value)
        if host is None or (kind == "ip" and parse_ip(host) is None):
            return None
        return host
    if "://" in value:
        parts = parse_url(value)
        if parts is None:
            return None
        scheme, host, port, _tail = parts
        if kind == "url":
            return format_url(*parts)
        return format_hostport(host, port if port is not None else (443 if scheme == "https" else 80))
    hp = split_hostport(value)
    if hp is not None:
        return format_hostport(*hp) if kind == "port" else url_for(*hp)
    host = _host_value(value)
    if host is None:
        return None
    return format_hostport(host, 443) if kind == "port" else format_url("http", host, None)


# -- spec entries ---------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class IpSpan:
    """An inclusive range of addresses of one IP version, as integers."""

    version: int
    start: int
    end: int

    @property
    def size(self) -> int:
        """Number of addresses (may exceed sys.maxsize for IPv6, hence not __len__)."""
        return self.end - self.start + 1

    def address(self, index: int) -> str:
        number = self.start + index
        return str(ipaddress.IPv4Address(number) if self.version == 4 else ipaddress.IPv6Address(number))

    def format(self) -> str:
        """The shortest SPEC entry for the span: an address, a CIDR, or a full range."""
        cls = ipaddress.IPv4Address if self.version == 4 else ipaddress.IPv6Address
        first, last = cls(self.start), cls(self.end)
        if self.start == self.end:
            return str(first)
        nets = list(ipaddress.summarize_address_range(first, last))
        if len(nets) == 1:
            return str(nets[0])
        return f"{first}-{last}"


def _parse_ip_entry(entry: str) -> IpSpan | None:
    """An address, CIDR or range as a span; None when the entry is not address-shaped."""
    if "/" in entry:
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return None
        return IpSpan(net.version, int(net.network_address), int(net.broadcast_address))
    if "-" in entry:
        left, _, right = entry.partition("-")
        first = parse_ip(left)
        if first is None:
            return None
        if first.version == 4 and right.isdigit() and len(right) <= 3:
            last_octet = int(right)
            base = int(first) & ~0xFF
            if last_octet > 255 or (right.startswith("0") and right != "0"):
                return None
            return IpSpan(4, int(first), base | last_octet) if (base | last_octet) >= int(first) else _empty()
        last = parse_ip(right)
        if last is None or last.version != first.version:
            return None
        if int(last) < int(first):
            return _empty()
        return IpSpan(first.version, int(first), int(last))
    addr = parse_ip(entry)
    if addr is None:
        return None
    return IpSpan(addr.version, int(addr), int(addr))


def _empty() -> IpSpan:
    # A reversed range; the caller reports it.
    return IpSpan(0, 1, 0)


def _merge(spans: Iterable[IpSpan]) -> list[IpSpan]:
    """Sorted, non-overlapping, non-adjacent spans covering the same addresses."""
    merged: list[IpSpan] = []
    for span in sorted(spans):
        if merged and merged[-1].version == span.version and span.start <= merged[-1].end + 1:
            last = merged[-1]
            if span.end > last.end:
                merged[-1] = IpSpan(last.version, last.start, span.end)
        else:
            merged.append(span)
    return merged


def _parse_entry(entry: str, *, field: str | None, file: str | None, line: int | None) -> IpSpan | str:
    """One SPEC entry: an IpSpan, or a canonical host / host:port / url string."""
    why = _check_text(entry)
    if why is not None:
        raise _bad(entry, why, field=field, file=file, line=line)
    if "://" in entry:
        parts = parse_url(entry)
        if parts is None:
            raise _bad(entry, "not a valid http(s) URL (no user@, fragments, '..' or odd characters)",
                       field=field, file=file, line=line)
        return format_url(*parts)
    span = _parse_ip_entry(entry)
    if span is not None:
        if span.version == 0:
            raise _bad(entry, "range ends before it starts", field=field, file=file, line=line)
        return span
    host = normalize_hostname(entry)
    if host is not None:
        return host
    hp = split_hostport(entry)
    if hp is not None:
        return format_hostport(*hp)
    if any(c in entry for c in "/-") and any(c.isdigit() for c in entry.split("/")[0].split("-")[0][:1]):
        raise _bad(entry, "not a valid address, CIDR or range", field=field, file=file, line=line)
    raise _bad(entry, "not an address, CIDR, range, hostname, host:port or URL", field=field, file=file, line=line)


def _read_spec_file(name: str, *, field: str | None) -> Iterator[tuple[str, str, int]]:
    """``(entry, file, line)`` for each entry of an ``@file``."""
    path = Path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput("no such targets file", file=name, field=field) from None
    except UnicodeDecodeError:
        raise BadInput("targets file is not UTF-8 text", file=name, field=field) from None
    except OSError as exc:
        raise BadInput(f"cannot read targets file: {exc.strerror or exc}", file=name, field=field) from None
    for number, raw in enumerate(text.split("\n"), start=1):
        entry = raw.split("#", 1)[0].strip(" \t\r")
        if entry:
            if entry.startswith("@"):
                raise BadInput("@file entries cannot nest", file=name, line=number, field=field)
            yield entry, name, number


def _entries(spec: str, *, field: str | None) -> Iterator[tuple[str, str | None, int | None]]:
    if len(spec) > 1_000_000:
        raise BadInput("target SPEC too long (use @file)", field=field)
    for raw in spec.split(","):
        entry = raw.strip(" ")
        if not entry:
            continue
        if entry.startswith("@") and len(entry) > 1:
            why = _check_text(entry[1:])
            if why is not None and why != "starts with '-'":
                raise _bad(entry, why, field=field)
            yield from _read_spec_file(entry[1:], field=field)
        else:
            yield entry, None, None


def _parse(spec: str, *, field: str | None) -> tuple[list[IpSpan], list[str]]:
    spans: list[IpSpan] = []
    names: list[str] = []
    seen: set[str] = set()
    for entry, file, line in _entries(spec, field=field):
        item = _parse_entry(entry, field=field, file=file, line=line)
        if isinstance(item, IpSpan):
            spans.append(item)
        elif item not in seen:
            seen.add(item)
            names.append(item)
    if not spans and not names:
        raise BadInput("no targets given", field=field)
    return _merge(spans), names


# -- target sets ----------------------------------------------------------------------


class TargetSet:
    """An ordered, de-duplicated set of targets that is never expanded in memory.

    Order: address spans (merged, IPv4 then IPv6, ascending), then the other entries
    (hostnames, host:port, urls) in the order given. ``iter_from(offset)`` and
    ``chunks(size, start)`` seek by arithmetic, so planning a /8 costs constant memory.
    """

    def __init__(self, spans: list[IpSpan], names: list[str]) -> None:
        self.spans = _merge(spans)
        self.names = list(dict.fromkeys(names))
        self._offsets: list[int] = []
        total = 0
        for span in self.spans:
            self._offsets.append(total)
            total += span.size
        self._span_total = total
        self._len = total + len(self.names)

    def __len__(self) -> int:
        return self._len

    @property
    def size(self) -> int:
        """Number of targets (``len()`` without its sys.maxsize limit)."""
        return self._len

    def __iter__(self) -> Iterator[str]:
        return self.iter_from(0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TargetSet) and self.spans == other.spans and self.names == other.names

    def __hash__(self) -> int:
        return hash((tuple(self.spans), tuple(self.names)))

    def __repr__(self) -> str:
        return f"TargetSet({self.format()!r}, len={self._len})"

    def __getitem__(self, index: int) -> str:
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(index)
        return next(self.iter_from(index))

    def iter_from(self, offset: int = 0, kind: str | None = None) -> Iterator[str]:
        """Targets from position ``offset`` on, optionally converted by :func:`as_kind`.

        A value that cannot be converted to ``kind`` is yielded as ``""`` so positions
        stay aligned with offsets (the planner drops and counts it).
        """
        if offset < 0:
            raise ValueError("offset must be >= 0")
        if offset < self._span_total:
            index = bisect.bisect_right(self._offsets, offset) - 1
            within = offset - self._offsets[index]
            for span in self.spans[index:]:
                for number in range(span.start + within, span.end + 1):
                    value = str(
                        ipaddress.IPv4Address(number) if span.version == 4 else ipaddress.IPv6Address(number)
                    )
                    yield value if kind is None else (as_kind(value, kind) or "")
                within = 0
            offset = self._span_total
        for value in self.names[offset - self._span_total :]:
            yield value if kind is None else (as_kind(value, kind) or "")

    def chunks(self, size: int, start: int = 0, kind: str | None = None) -> Iterator[list[str]]:
        """Lists of at most ``size`` targets, from position ``start``."""
        if size <= 0:
            raise ValueError("chunk size must be > 0")
        chunk: list[str] = []
        for value in self.iter_from(start, kind):
            chunk.append(value)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def format(self) -> str:
        """A canonical SPEC (no @file) that parses back to an equal set."""
        return ",".join([span.format() for span in self.spans] + self.names)


def parse_targets(spec: str, *, field: str | None = "--targets", limit: int = MAX_TARGETS) -> TargetSet:
    """Parse a target SPEC into a lazy :class:`TargetSet` (BadInput naming the bad entry)."""
    spans, names = _parse(spec, field=field)
    targets = TargetSet(spans, names)
    if targets.size > limit:
        raise BadInput(f"too many targets ({targets.size}; at most {limit}): narrow the CIDR", field=field)
    return targets


# -- scope ----------------------------------------------------------------------------


class Scope:
    """What may be scanned: address spans plus hostnames listed by name.

    A ``host:port`` or url entry puts its host in scope (any port). ``contains`` never
    raises: a value that is not a valid target is simply not in scope.
    """

    def __init__(self, spans: list[IpSpan], names: Iterable[str]) -> None:
        hosts = {host for host in (host_of(n) for n in names) if host is not None}
        ip_hosts = [_parse_ip_entry(h) for h in hosts if parse_ip(h) is not None]
        self.spans = _merge([*spans, *(s for s in ip_hosts if s is not None)])
        self.names = sorted(h for h in hosts if parse_ip(h) is None)
        self._hostnames = frozenset(self.names)
        self._by_version: dict[int, tuple[list[int], list[int]]] = {}
        for version in (4, 6):
            mine = [s for s in self.spans if s.version == version]
            self._by_version[version] = ([s.start for s in mine], [s.end for s in mine])

    @classmethod
    def from_targets(cls, targets: TargetSet) -> Scope:
        """The default scope: exactly the targets given."""
        return cls(targets.spans, targets.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scope) and self.spans == other.spans and self.names == other.names

    def __hash__(self) -> int:
        return hash((tuple(self.spans), tuple(self.names)))

    def __repr__(self) -> str:
        return f"Scope({self.format()!r})"

    def contains_ip(self, text: str) -> bool:
        addr = parse_ip(text)
        if addr is None:
            return False
        starts, ends = self._by_version[addr.version]
        index = bisect.bisect_right(starts, int(addr)) - 1
        return index >= 0 and int(addr) <= ends[index]

    def contains(self, value: str) -> bool:
        """Is this ip / host / host:port / url value inside the scope?"""
        if not isinstance(value, str):
            return False
        host = host_of(value)
        if host is None:
            return False
        if parse_ip(host) is not None:
            return self.contains_ip(host)
        return host in self._hostnames

    __contains__ = contains

    def format(self) -> str:
        """A canonical SPEC that parses back to an equal scope."""
        return ",".join([span.format() for span in self.spans] + self.names)


def parse_scope(spec: str, *, field: str | None = "--scope") -> Scope:
    """Parse a scope SPEC (same syntax as targets, no size limit)."""
    spans, names = _parse(spec, field=field)
    return Scope(spans, names)
