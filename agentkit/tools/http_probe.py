"""http_probe: one GET per target: status, <title>, Server header; redirects only inside scope.

Targets are URLs (http/https) or ``host:port`` (https for 443 and 8443, else
http). Certificates are not verified unless ``verify_tls`` is true (a scanner
wants to see the service, not to trust it). A redirect is followed only when
its host (and port) is inside the task's scope (``Task.scope``; empty scope =
the task's own targets), at most ``max_redirects`` times (default 3); a
redirect that leaves the scope is reported, never fetched.
params: ``timeout`` (s per request, default 5), ``verify_tls``,
``max_redirects``, ``concurrency`` (default 32).
Results: one ``http {url, status, title, server, redirects, final_url}`` per
target, ``url`` being the target's URL, ``redirects`` the absolute URLs
followed (in order) and ``final_url`` the one that answered last; when a
redirect was not followed, ``location`` and ``redirect_blocked`` (``out of
scope`` / ``limit`` / ``not http(s)``).

The title is decoded as the page meant it: charset from a BOM, else the
Content-Type header, else a ``<meta>`` tag (UTF-8, then windows-1252, when
nothing says), and its HTML entities decoded. A plain request answered as an
HTTPS port (nginx's 400 "The plain HTTP request was sent to HTTPS port", a TLS
alert, garbage or a hang-up) is retried over TLS; ``final_url`` then says https.
"""

from __future__ import annotations

import codecs
import html
import http.client
import re
import socket
import ssl
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urljoin, urlsplit

from agentkit.context import TaskContext, ToolError
from agentkit.guard import Blocked
from agentkit.params import get_bool, get_float, get_int
from agentkit.targets import Scope, TargetError, host_port, url_host_port
from agentkit.tools.fanout import for_each, parse_each
from agentkit.tools.text import collapse
from agentkit.tools.tls_read import reading_context

MAX_BODY = 256 * 1024
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)
_META = re.compile(rb"<meta\b[^>]*>", re.IGNORECASE)
_META_CHARSET = re.compile(rb"charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)
_REDIRECTS = (301, 302, 303, 307, 308)
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
#: what an HTTPS port says to a plain request (nginx, and others that copied its wording)
_PLAIN_TO_TLS = (b"plain HTTP request was sent to HTTPS port", b"speaking plain HTTP to an SSL", b"TLS is required")


class NeedsTls(Exception):
    """A plain request was answered as an HTTPS port answers it."""


def target_url(target: str) -> str:
    if "://" in target:
        url_host_port(target)
        return target
    host, port = host_port(target)
    scheme = "https" if port in (443, 8443) else "http"
    shown = "[%s]" % host if ":" in host else host
    return "%s://%s:%d/" % (scheme, shown, port)


def _known(name: str) -> Optional[str]:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def page_charset(body: bytes, content_type: str) -> Optional[str]:
    """The declared encoding: BOM, then the Content-Type header, then a ``<meta>`` tag; None if none."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name
    header = _CHARSET.search(content_type or "")
    if header and _known(header.group(1)):
        return _known(header.group(1))
    for tag in _META.finditer(body[:4096]):
        found = _META_CHARSET.search(tag.group(0))
        if found and _known(found.group(1).decode("ascii", "replace")):
            return _known(found.group(1).decode("ascii", "replace"))
    return None


def extract_title(body: bytes, content_type: str) -> str:
    """The <title>, decoded in the page's charset, entities decoded, whitespace collapsed."""
    charset = page_charset(body, content_type)
    if charset and charset.startswith("utf-16"):
        text = body.decode(charset, "replace")
        found = re.search(r"<title[^>]*>(.*?)</title\s*>", text, re.IGNORECASE | re.DOTALL)
        return collapse(html.unescape(found.group(1)), 256) if found else ""
    match = _TITLE.search(body)
    if not match:
        return ""
    raw = match.group(1)
    if charset:
        text = raw.decode(charset, "replace")
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("windows-1252", "replace")  # what browsers assume when nothing is declared
    return collapse(html.unescape(text), 256)


def fetch(
    url: str, timeout: float, context: ssl.SSLContext, connect: Optional[Callable[..., socket.socket]] = None
) -> Tuple[int, Dict[str, str], bytes]:
    """One GET; (status, lower-cased headers, at most MAX_BODY bytes of body)."""
    parts = urlsplit(url)
    host, port = url_host_port(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    if connect is not None:
        connection._create_connection = connect  # type: ignore[attr-defined]  # the task's guard
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request("GET", path, headers={"User-Agent": "fleetscan-agent/1", "Accept": "*/*"})
        try:
            response = connection.getresponse()
        except (http.client.BadStatusLine, ConnectionResetError) as err:
            if parts.scheme == "http":
                raise NeedsTls(str(err)) from None  # a TLS alert, garbage, or a hang-up
            raise
        headers = {key.lower(): value for key, value in response.getheaders()}
        body = response.read(MAX_BODY)
        if parts.scheme == "http" and response.status == 400 and any(m in body for m in _PLAIN_TO_TLS):
            raise NeedsTls("plain HTTP request was sent to HTTPS port")
        return response.status, headers, body
    finally:
        connection.close()


def as_https(url: str) -> str:
    """The same URL over TLS, on the same port (``http://h/`` means port 80, kept explicit)."""
    parts = urlsplit(url)
    host, port = url_host_port(url)
    shown = "[%s]" % host if ":" in host else host
    return parts._replace(scheme="https", netloc="%s:%d" % (shown, port)).geturl()


def probe_url(
    url: str,
    scope: Scope,
    timeout: float,
    context: ssl.SSLContext,
    max_redirects: int,
    connect: Optional[Callable[..., socket.socket]] = None,
) -> Optional[Dict[str, Any]]:
    current = url
    data: Dict[str, Any] = {}  # the last answer (a refused redirect is recorded on it)
    followed: List[str] = []
    for hop in range(max_redirects + 1):
        try:
            try:
                status, headers, body = fetch(current, timeout, context, connect)
            except NeedsTls:
                current = as_https(current)
                status, headers, body = fetch(current, timeout, context, connect)
        except Blocked as err:  # the guard refused every address (reported to the master)
            if hop == 0:
                return None
            data["redirect_blocked"] = err.reason
            return data
        except (OSError, http.client.HTTPException, ssl.SSLError, ValueError, NeedsTls):
            return (
                None
                if hop == 0
                else {
                    "url": url,
                    "status": 0,
                    "title": "",
                    "server": "",
                    "redirects": followed,
                    "final_url": current,
                    "error": "redirect target did not answer",
                }
            )
        data = {
            "url": url,
            "status": status,
            "title": extract_title(body, headers.get("content-type", "")),
            "server": collapse(headers.get("server", ""), 256),
            "redirects": list(followed),
            "final_url": current,
        }
        location = headers.get("location")
        if status not in _REDIRECTS or not location:
            return data
        following = urljoin(current, location.strip())
        data["location"] = collapse(following, 1024)
        try:
            next_host, next_port = url_host_port(following)
        except TargetError:
            data["redirect_blocked"] = "not http(s)"
            return data
        if not scope.contains(next_host, next_port):
            data["redirect_blocked"] = "out of scope"
            return data
        if hop == max_redirects:
            data["redirect_blocked"] = "limit"
            return data
        current = following
        followed.append(following)
    return None


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    timeout = get_float(params, "timeout", 5.0, 0.01, 600.0)
    verify = get_bool(params, "verify_tls", False)
    max_redirects = get_int(params, "max_redirects", 3, 0, 20)
    concurrency = get_int(params, "concurrency", 32, 1, 1024)
    urls = parse_each(targets, target_url)
    try:
        scope = Scope(ctx.scope or targets)
    except TargetError as err:
        raise ToolError("scope: %s" % err) from None
    context = reading_context(verify)  # unverified: TLS 1.0 and legacy ciphers answer too

    def work(target: str) -> None:
        data = probe_url(
            urls[target], scope, min(timeout, max(ctx.remaining(), 0.01)), context, max_redirects,
            ctx.guard.create_connection,
        )
        if data is not None:
            ctx.emit("http", target, data)

    for_each(ctx, targets, work, concurrency)
