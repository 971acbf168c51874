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
import os
import stat
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from socket import inet_ntoa

from console.errors import BadInput
from console.targets.values import (
    HTTPS_PORTS,
    KINDS,
    MAX_ENTRY,
    Kind,
    as_kind,
    bad_target,
    dotted_quad,
    format_hostport,
    format_url,
    host_of,
    kind_of,
    normalize_hostname,
    parse_ip,
    parse_url,
    split_hostport,
    text_problem,
    url_for,
    validate_value,
)

#: A target set bigger than this is refused (a whole IPv4 Internet is 2**32).
MAX_TARGETS = 2**32
#: Largest @file read (a few million entries).
MAX_SPEC_FILE = 256 * 1024 * 1024
#: Longest line of an @file (an entry is at most MAX_ENTRY characters; a line may hold several).
MAX_SPEC_LINE = 1024 * 1024

__all__ = [
    "HTTPS_PORTS",
    "KINDS",
    "MAX_ENTRY",
    "MAX_TARGETS",
    "IpSpan",
    "Kind",
    "Scope",
    "TargetSet",
    "as_kind",
    "format_hostport",
    "format_url",
    "host_of",
    "kind_of",
    "normalize_hostname",
    "parse_ip",
    "parse_scope",
    "parse_targets",
    "parse_url",
    "split_hostport",
    "url_for",
    "validate_value",
]


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
            if (base | last_octet) < int(first):
                raise _ReversedRange(entry)
            return IpSpan(4, int(first), base | last_octet)
        last = parse_ip(right)
        if last is None or last.version != first.version:
            return None
        if int(last) < int(first):
            raise _ReversedRange(entry)
        return IpSpan(first.version, int(first), int(last))
    number = dotted_quad(entry)  # the common case of a long list, without building an address object
    if number is not None:
        return IpSpan(4, number, number)
    addr = parse_ip(entry)
    if addr is None:
        return None
    return IpSpan(addr.version, int(addr), int(addr))


class _ReversedRange(ValueError):
    """A range whose end is before its start (reported as bad input by the caller)."""


def _merge(spans: Iterable[IpSpan]) -> list[IpSpan]:
    """Sorted, non-overlapping, non-adjacent spans covering the same addresses."""
    merged: list[IpSpan] = []
    for span in sorted(spans, key=lambda s: (s.version, s.start, s.end)):  # tuple keys: fast C compares
        if merged and merged[-1].version == span.version and span.start <= merged[-1].end + 1:
            last = merged[-1]
            if span.end > last.end:
                merged[-1] = IpSpan(last.version, last.start, span.end)
        else:
            merged.append(span)
    return merged


def _parse_entry(entry: str, *, field: str | None, file: str | None, line: int | None) -> IpSpan | str:
    """One SPEC entry: an IpSpan, or a canonical host / host:port / url string."""
    why = text_problem(entry)
    if why is not None:
        raise bad_target(entry, why, field=field, file=file, line=line)
    if "://" in entry:
        parts = parse_url(entry)
        if parts is None:
            raise bad_target(
                entry,
                "not a valid http(s) URL (no user@, fragments, '..' or odd characters)",
                field=field,
                file=file,
                line=line,
            )
        return format_url(*parts)
    try:
        span = _parse_ip_entry(entry)
    except _ReversedRange:
        raise bad_target(entry, "range ends before it starts", field=field, file=file, line=line) from None
    if span is not None:
        return span
    host = normalize_hostname(entry)
    if host is not None:
        return host
    hp = split_hostport(entry)
    if hp is not None:
        return format_hostport(*hp)
    if entry[:1].isdigit() and any(c in entry for c in "/-"):
        raise bad_target(entry, "not a valid address, CIDR or range", field=field, file=file, line=line)
    raise bad_target(
        entry, "not an address, CIDR, range, hostname, host:port or URL", field=field, file=file, line=line
    )


def _read_spec_file(name: str, *, field: str | None) -> Iterator[tuple[str, str, int]]:
    """``(entry, file, line)`` for each entry of an ``@file``, read a line at a time.

    Bounded while reading, never after: the file must be a regular file (a FIFO with no writer
    would hang us, a device such as /dev/zero never ends; ``@/dev/stdin`` reads this process's
    standard input), at most MAX_SPEC_FILE bytes and MAX_SPEC_LINE bytes a line.
    """
    try:
        if name in ("/dev/stdin", "-"):
            handle = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
        else:
            if not stat.S_ISREG(os.stat(name).st_mode):
                raise BadInput("not a regular file (a FIFO, device or socket is refused)", file=name, field=field)
            handle = open(name, "rb")  # noqa: SIM115 - closed below, around the generator's reads
    except FileNotFoundError:
        raise BadInput("no such targets file", file=name, field=field) from None
    except OSError as exc:
        raise BadInput(f"cannot read targets file: {exc.strerror or exc}", file=name, field=field) from None
    with handle:
        total = 0
        number = 0
        while True:
            try:
                raw = handle.readline(MAX_SPEC_LINE + 1)
            except OSError as exc:
                raise BadInput(f"cannot read targets file: {exc.strerror or exc}", file=name, field=field) from None
            if not raw:
                return
            number += 1
            total += len(raw)
            if total > MAX_SPEC_FILE:
                raise BadInput(f"targets file larger than {MAX_SPEC_FILE} bytes", file=name, field=field)
            if len(raw) > MAX_SPEC_LINE and not raw.endswith(b"\n"):
                raise BadInput(f"line longer than {MAX_SPEC_LINE} bytes", file=name, line=number, field=field)
            if b"\0" in raw:
                raise BadInput("NUL byte in a targets file", file=name, line=number, field=field)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise BadInput("targets file is not UTF-8 text", file=name, line=number, field=field) from None
            for part in line.rstrip("\n").split("#", 1)[0].split(","):
                entry = part.strip(" \t\r")
                if entry.startswith("@"):
                    raise BadInput("@file entries cannot nest", file=name, line=number, field=field)
                if entry:
                    yield entry, name, number


#: the longest SPEC accepted as typed (a longer list belongs in an @file)
MAX_SPEC_TEXT = 1_000_000


def _entries(spec: str, *, field: str | None, stored: bool = False) -> Iterator[tuple[str, str | None, int | None]]:
    """The entries of a SPEC. ``stored``: a run's own canonical SPEC read back from the store (an
    @file's whole contents once submitted: no length cap, and never an @file to read)."""
    if not stored and len(spec) > MAX_SPEC_TEXT:
        raise BadInput("target SPEC too long (use @file)", field=field)
    for raw in spec.split(","):
        entry = raw.strip(" ")
        if not entry:
            continue
        if entry.startswith("@") and len(entry) > 1 and not stored:
            if not entry.isprintable():
                raise bad_target(entry, "file name with control characters", field=field)
            yield from _read_spec_file(entry[1:], field=field)
        else:
            yield entry, None, None


def _parse(spec: str, *, field: str | None, stored: bool = False) -> tuple[list[IpSpan], list[str]]:
    spans: list[IpSpan] = []
    names: list[str] = []
    seen: set[str] = set()
    for entry, file, line in _entries(spec, field=field, stored=stored):
        item = _parse_entry(entry, field=field, file=file, line=line)
        if isinstance(item, IpSpan):
            spans.append(item)
        elif item not in seen:
            seen.add(item)
            names.append(item)
    if not spans and not names:
        raise BadInput("no targets given", field=field)
    return spans, names  # TargetSet and Scope merge them


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
                numbers = range(span.start + within, span.end + 1)
                if span.version == 4:
                    values: Iterator[str] = (inet_ntoa(number.to_bytes(4, "big")) for number in numbers)
                else:
                    values = (str(ipaddress.IPv6Address(number)) for number in numbers)
                if kind is None or kind in ("host", "ip"):
                    yield from values  # an address is its own host: no per-value parsing
                else:
                    for value in values:
                        yield as_kind(value, kind) or ""
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


#: the last few sets turned into their canonical SPEC by this process, by that SPEC: ``fleetscan run``
#: parses a run's targets, scope and exclusions at submit, and its planner reads the same canonical
#: SPECs back from the store in the same process (a 400,000-entry scope took ~1.2 s each time)
_RECENT: dict[tuple[str, str], TargetSet | Scope] = {}
_RECENT_KEPT = 6
_RECENT_LOCK = threading.Lock()


def canonical(value: TargetSet | Scope) -> str:
    """``value.format()``, remembered: reading that SPEC back (``stored=True``) in this process gives
    ``value`` itself instead of parsing it again. Both kinds are immutable once built."""
    text = value.format()
    with _RECENT_LOCK:
        _RECENT[(type(value).__name__, text)] = value
        while len(_RECENT) > _RECENT_KEPT:
            del _RECENT[next(iter(_RECENT))]
    return text


def _recent(kind: type, spec: str) -> TargetSet | Scope | None:
    with _RECENT_LOCK:
        return _RECENT.get((kind.__name__, spec))


def parse_targets(
    spec: str, *, field: str | None = "--targets", limit: int = MAX_TARGETS, stored: bool = False
) -> TargetSet:
    """Parse a target SPEC into a lazy :class:`TargetSet` (BadInput naming the bad entry); ``stored``: a
    run's canonical SPEC from the store (see :func:`_entries`), which this process may have made itself
    (:func:`canonical`)."""
    recent = _recent(TargetSet, spec) if stored else None
    targets = recent if isinstance(recent, TargetSet) else TargetSet(*_parse(spec, field=field, stored=stored))
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
        return ",".join(self.wire())

    def wire(self) -> list[str]:
        """The scope as the agent reads it (``Task.scope`` / ``Task.exclude``; the form is defined
        and parsed by :mod:`agentkit.targets`): addresses, CIDRs, ``first-last`` ranges of full
        addresses (IPv4 or IPv6), and hostnames, one entry per item."""
        return [span.format() for span in self.spans] + list(self.names)


def parse_scope(spec: str, *, field: str | None = "--scope", stored: bool = False) -> Scope:
    """Parse a scope SPEC (same syntax as targets, no size limit; ``stored`` as for :func:`parse_targets`)."""
    recent = _recent(Scope, spec) if stored else None
    if isinstance(recent, Scope):
        return recent
    spans, names = _parse(spec, field=field, stored=stored)
    return Scope(spans, names)
