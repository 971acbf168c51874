"""tls_cert: the certificate a TLS service presents, read without trusting it.

The handshake does not verify (self-signed and expired certificates are what
a scan is looking for) and accepts TLS 1.0 through 1.3 with legacy ciphers
(:func:`agentkit.tools.tls_read.reading_context`); the record names the
protocol negotiated. ``starttls`` (auto, the default; none; smtp, imap, pop3,
ftp, ldap, postgres, xmpp) upgrades a plain-text service first; ``auto``
upgrades the well-known ports (SMTP 25/587, IMAP 143, POP3 110, FTP 21, LDAP
389, PostgreSQL 5432, XMPP 5222) and speaks TLS at once elsewhere. ``getpeercert()`` returns nothing useful without
verification, so the DER form is decoded with CPython's own X.509 decoder
(``ssl._ssl._test_decode_cert``, present since 3.x, stdlib) from a private
temporary PEM file. Where that decoder is missing, the record still carries
the fingerprint.
params: ``timeout`` (default 5 s), ``starttls``, ``concurrency`` (default 32).
Results: ``tls_cert {host, port, subject, issuer, not_before, not_after, sans,
protocol}`` plus ``cipher``, ``starttls`` (when upgraded), ``serial``,
``sha256``; names as ``CN=x,O=y``, times ISO-8601 UTC.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import tempfile
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from agentkit.context import TaskContext, ToolError
from agentkit.params import get_float, get_int, get_str
from agentkit.targets import host_port
from agentkit.tools.fanout import for_each, parse_each
from agentkit.tools.text import collapse
from agentkit.tools.tls_read import AUTO_STARTTLS, STARTTLS_PROTOCOLS, StartTlsError, open_tls


class Handshake(NamedTuple):
    der: bytes
    protocol: str
    cipher: str


def fetch_der(
    host: str,
    port: int,
    timeout: float,
    starttls: Optional[str] = None,
    connect: Callable[..., socket.socket] = socket.create_connection,
) -> Optional[Handshake]:
    """The peer's certificate (DER), protocol and cipher; None when no handshake completed."""
    try:
        with open_tls(host, port, timeout, starttls, connect=connect) as tls:
            der = tls.getpeercert(binary_form=True)
            cipher = tls.cipher()
            if not der:
                return None
            return Handshake(der, tls.version() or "", cipher[0] if cipher else "")
    except (OSError, ssl.SSLError, ValueError, StartTlsError):
        return None


def starttls_for(setting: str, port: int) -> Optional[str]:
    """The STARTTLS protocol to speak on ``port`` for the ``starttls`` param (None: TLS at once)."""
    if setting == "auto":
        return AUTO_STARTTLS.get(port)
    return None if setting == "none" else setting


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


def describe(host: str, port: int, der: bytes, protocol: str = "", cipher: str = "") -> Dict[str, Any]:
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
        "protocol": collapse(protocol, 32),
        "cipher": collapse(cipher, 128),
    }


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    timeout = get_float(params, "timeout", 5.0, 0.01, 600.0)
    concurrency = get_int(params, "concurrency", 32, 1, 1024)
    setting = get_str(params, "starttls", "auto")
    if setting not in ("auto", "none") + STARTTLS_PROTOCOLS:
        raise ToolError(
            "params.starttls: one of auto, none, %s; got %r" % (", ".join(STARTTLS_PROTOCOLS), setting[:40])
        )
    parsed = parse_each(targets, host_port)

    def work(target: str) -> None:
        host, port = parsed[target]
        upgrade = starttls_for(setting, port)
        connect = ctx.guard.create_connection
        found = fetch_der(host, port, min(timeout, max(ctx.remaining(), 0.01)), upgrade, connect)
        if found is None and upgrade is not None and setting == "auto":
            found = fetch_der(host, port, min(timeout, max(ctx.remaining(), 0.01)), None, connect)  # TLS at once
            upgrade = None
        if found is not None:
            data = describe(host, port, found.der, found.protocol, found.cipher)
            if upgrade:
                data["starttls"] = upgrade
            ctx.emit("tls_cert", target, data)

    for_each(ctx, targets, work, concurrency)
