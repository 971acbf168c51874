"""Single target values: parse, normalise and validate ip / host / host:port / url.

Every value that may become a target goes through :func:`validate_value`:
normalised, ASCII printable only, never starting with ``-``, no whitespace or
shell metacharacters, so a banner, title or hostname sent by a scanned machine
can never turn into a shell word, an option, or a malformed target.
:mod:`console.targets.sets` builds SPECs, target sets and scopes on top of these.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Literal
from urllib.parse import unquote

from agentkit import targets as shared
from console.errors import BadInput

Kind = Literal["ip", "host", "port", "url"]
KINDS: tuple[str, ...] = ("ip", "host", "port", "url")

#: Longest single entry or value we accept (a URL is the longest legitimate one).
MAX_ENTRY = 2048
#: Ports that mean TLS when a url is derived from host:port.
HTTPS_PORTS = frozenset({443, 8443})

_PORT = re.compile(r"^[0-9]{1,5}\Z")
# Path and query characters allowed in a URL target: RFC 3986 unreserved, '%', and the
# few delimiters queries need. No quotes, backslashes, '$', ';', '|', '`', '<', '>', '@', '#'.
_URL_TAIL = re.compile(r"^[A-Za-z0-9\-._~/%?=&+:,]*\Z")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<tail>.*)\Z", re.S)


def show_value(text: str, limit: int = 60) -> str:
    """An entry as it can appear in a one-line error: escaped and shortened."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    return ascii(shown)


def bad_target(
    entry: str, reason: str, *, field: str | None, file: str | None = None, line: int | None = None
) -> BadInput:
    return BadInput(f"bad target {show_value(entry)}: {reason}", field=field, file=file, line=line)


# -- single values --------------------------------------------------------------------


def text_problem(value: str) -> str | None:
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


@lru_cache(maxsize=65536)  # records repeat the same hosts port after port
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address, IPv4-mapped IPv6 folded to IPv4; None when ``text`` is not one (the agent's
    own rule, :func:`agentkit.targets.canonical_ip`: one validator on both sides)."""
    return shared.canonical_ip(text)


#: an IPv4 address in its canonical form as its number, else None (the agent's own rule)
dotted_quad = shared.dotted_quad


@lru_cache(maxsize=65536)
def normalize_hostname(text: str) -> str | None:
    """A lower-case RFC 1123 hostname (IDNA ASCII labels, trailing dot dropped; no name that
    inet_aton would read as an address), or None: the agent's own rule,
    :func:`agentkit.targets.normalize_hostname`, so the two sides cannot disagree."""
    return shared.normalize_hostname(text)


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
        if addr is None or ":" not in text[1:end]:
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
        if addr is None or ":" not in authority[1:end]:
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
    if any(unquote(seg) in (".", "..") for seg in path.split("/")):
        return None  # dot segments, also percent-encoded ones
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
        raise BadInput(f"bad {kind} value {show_value(repr(value))}: not a string")
    return _validate_text(kind, value)


@lru_cache(maxsize=65536)  # derived targets repeat (a host per open port); failures are not cached
def _validate_text(kind: str, value: str) -> str:
    why = text_problem(value)
    if why is not None:
        raise BadInput(f"bad {kind} value {show_value(value)}: {why}")
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
        raise BadInput(f"bad {kind} value {show_value(value)}: not a valid {_KIND_NAMES[kind]}")
    return result


_KIND_NAMES = {
    "ip": "IP address",
    "host": "IP address or hostname",
    "port": "host:port",
    "url": "http(s) URL",
}


@lru_cache(maxsize=65536)
def host_of(value: str) -> str | None:
    """The canonical host of an ip / host / host:port / url value, or None if it is none of these."""
    if text_problem(value) is not None:
        return None
    if "://" in value:
        parts = parse_url(value)
        return parts[1] if parts else None
    host = _host_value(value)
    if host is not None:
        return host
    hp = split_hostport(value)
    return hp[0] if hp else None


def kind_of(value: str) -> str | None:
    """The kind of a canonical target value: ``ip``, ``host`` (a name), ``port`` or ``url``; None if none."""
    if text_problem(value) is not None:
        return None
    if "://" in value:
        return "url" if parse_url(value) is not None else None
    if parse_ip(value) is not None:
        return "ip"
    if normalize_hostname(value) is not None:
        return "host"
    return "port" if split_hostport(value) is not None else None


def as_kind(value: str, kind: str) -> str | None:
    """Convert a canonical target to ``kind``, one value for one value (None if it cannot).

    host: the host of anything. port: host:port as is; a url's host and port; a bare
    host means its TLS port 443 (the port-typed tools reading bare hosts from input are
    tls_cert and banner; give ``host:port`` for another port). url: a url as is;
    host:port as :func:`url_for`; a bare host as ``http://host/``.
    """
    if kind not in KINDS:
        return None
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
