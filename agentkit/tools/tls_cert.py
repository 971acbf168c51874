"""tls_cert: the certificate a TLS service presents, read without trusting it.

The handshake does not verify (self-signed and expired certificates are what
a scan is looking for). ``getpeercert()`` returns nothing useful without
verification, so the DER form is decoded with CPython's own X.509 decoder
(``ssl._ssl._test_decode_cert``, present since 3.x, stdlib) from a private
temporary PEM file. Where that decoder is missing, the record still carries
the fingerprint.
params: ``timeout`` (default 5 s), ``concurrency`` (default 32).
Results: ``tls_cert {host, port, subject, issuer, not_after, sans}`` plus
``not_before``, ``serial``, ``sha256``; names as ``CN=x,O=y``, times ISO-8601 UTC.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

from agentkit.context import TaskContext
from agentkit.params import get_float, get_int
from agentkit.targets import host_port, parse_ip
from agentkit.tools.fanout import for_each, parse_each
from agentkit.tools.text import collapse


def fetch_der(
    host: str, port: int, timeout: float, connect: Callable[..., socket.socket] = socket.create_connection
) -> Optional[bytes]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    server_name = None if parse_ip(host) is not None else host
    try:
        with connect((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, ValueError):
        return None


def decode_der(der: bytes) -> Dict[str, Any]:
    """CPython's decoder over a temporary PEM file (it only reads files)."""
    decoder = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decoder is None:
        return {}
    fd, path = tempfile.mkstemp(prefix="fleetscan-cert-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(ssl.DER_cert_to_PEM_cert(der))
        decoded = decoder(path)
        return decoded if isinstance(decoded, dict) else {}
    except (ssl.SSLError, OSError, ValueError):
        return {}
    finally:
        os.unlink(path)


def name_text(name: Any) -> str:
    """``((('commonName', 'x'),), (('organizationName', 'y'),))`` -> ``CN=x,O=y``."""
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
        "stateOrProvinceName": "ST",
        "localityName": "L",
        "emailAddress": "emailAddress",
    }
    parts = []
    for rdn in name or ():
        for key, value in rdn:
            parts.append("%s=%s" % (short.get(key, key), value))
    return collapse(",".join(parts), 1024)


def iso_time(text: Optional[str]) -> str:
    if not text:
        return ""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ssl.cert_time_to_seconds(text)))
    except ValueError:
        return collapse(text, 64)


def describe(host: str, port: int, der: bytes) -> Dict[str, Any]:
    decoded = decode_der(der)
    sans: List[str] = []
    for kind, value in decoded.get("subjectAltName", ()):
        sans.append(collapse("%s:%s" % (kind, value), 256))
    return {
        "host": host,
        "port": port,
        "subject": name_text(decoded.get("subject")),
        "issuer": name_text(decoded.get("issuer")),
        "not_after": iso_time(decoded.get("notAfter")),
        "not_before": iso_time(decoded.get("notBefore")),
        "serial": collapse(str(decoded.get("serialNumber", "")), 128),
        "sans": sans[:100],
        "sha256": hashlib.sha256(der).hexdigest(),
    }


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    timeout = get_float(params, "timeout", 5.0, 0.01, 600.0)
    concurrency = get_int(params, "concurrency", 32, 1, 1024)
    parsed = parse_each(targets, host_port)

    def work(target: str) -> None:
        host, port = parsed[target]
        der = fetch_der(host, port, min(timeout, max(ctx.remaining(), 0.01)), ctx.guard.create_connection)
        if der:
            ctx.emit("tls_cert", target, describe(host, port, der))

    for_each(ctx, targets, work, concurrency)
