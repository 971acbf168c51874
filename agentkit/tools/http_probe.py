"""http_probe: one GET per target: status, <title>, Server header; redirects only inside scope.

Targets are URLs (http/https) or ``host:port`` (https for 443 and 8443, else
http). Certificates are not verified unless ``verify_tls`` is true (a scanner
wants to see the service, not to trust it). A redirect is followed only when
its host (and port) is inside the task's scope (``Task.scope``; empty scope =
the task's own targets), at most ``max_redirects`` times (default 3); a
redirect that leaves the scope is reported, never fetched.
params: ``timeout`` (s per request, default 5), ``verify_tls``,
``max_redirects``, ``concurrency`` (default 32).
Results: one ``http {url, status, title, server}`` per target, ``url`` being
the target's URL; extra fields ``final_url`` and, when a redirect was not
followed, ``location`` and ``redirect_blocked`` (``out of scope`` / ``limit``).
"""

from __future__ import annotations

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

MAX_BODY = 256 * 1024
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_CHARSET = re.compile(r"charset=([\w.-]+)", re.IGNORECASE)
_REDIRECTS = (301, 302, 303, 307, 308)


def target_url(target: str) -> str:
    if "://" in target:
        url_host_port(target)
        return target
    host, port = host_port(target)
    scheme = "https" if port in (443, 8443) else "http"
    shown = "[%s]" % host if ":" in host else host
    return "%s://%s:%d/" % (scheme, shown, port)


def extract_title(body: bytes, content_type: str) -> str:
    match = _TITLE.search(body)
    if not match:
        return ""
    charset = _CHARSET.search(content_type or "")
    try:
        text = match.group(1).decode(charset.group(1) if charset else "utf-8", "replace")
    except LookupError:
        text = match.group(1).decode("utf-8", "replace")
    return collapse(text, 256)


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
        response = connection.getresponse()
        headers = {key.lower(): value for key, value in response.getheaders()}
        body = response.read(MAX_BODY)
        return response.status, headers, body
    finally:
        connection.close()


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
    for hop in range(max_redirects + 1):
        try:
            status, headers, body = fetch(current, timeout, context, connect)
        except Blocked as err:  # the guard refused every address (reported to the master)
            if hop == 0:
                return None
            data["redirect_blocked"] = err.reason
            return data
        except (OSError, http.client.HTTPException, ssl.SSLError, ValueError):
            return (
                None
                if hop == 0
                else {
                    "url": url,
                    "status": 0,
                    "title": "",
                    "server": "",
                    "final_url": current,
                    "error": "redirect target did not answer",
                }
            )
        data = {
            "url": url,
            "status": status,
            "title": extract_title(body, headers.get("content-type", "")),
            "server": collapse(headers.get("server", ""), 256),
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
    if verify:
        context = ssl.create_default_context()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    def work(target: str) -> None:
        data = probe_url(
            urls[target], scope, min(timeout, max(ctx.remaining(), 0.01)), context, max_redirects,
            ctx.guard.create_connection,
        )
        if data is not None:
            ctx.emit("http", target, data)

    for_each(ctx, targets, work, concurrency)
