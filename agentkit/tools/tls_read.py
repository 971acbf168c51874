"""TLS for READING a service, never for trusting it: every protocol from TLS 1.0, legacy ciphers, STARTTLS.

A scanner wants to see what a service presents, including the old and weak: a
default ``SSLContext`` refuses TLS 1.0/1.1 and legacy ciphers, and such a
service then looked like no TLS at all. :func:`reading_context` lowers the floor
as far as the box's OpenSSL allows (``@SECLEVEL=0``, minimum TLS 1.0) and turns
verification off. It is used to look, never to send anything secret.

:func:`upgrade` speaks the plain-text half of STARTTLS for the protocols SPEC
names (smtp, imap, pop3, ftp, ldap, postgres, xmpp) up to the point where the
TLS handshake begins; it never authenticates and never sends data of its own.
"""

from __future__ import annotations

import socket
import ssl
import time
import warnings
from typing import Callable, Dict, Optional

from agentkit.targets import parse_ip

STARTTLS_PROTOCOLS = ("smtp", "imap", "pop3", "ftp", "ldap", "postgres", "xmpp")
#: ``starttls: auto``: the well-known plain-text ports that upgrade (SPEC)
AUTO_STARTTLS: Dict[int, str] = {
    25: "smtp",
    587: "smtp",
    143: "imap",
    110: "pop3",
    21: "ftp",
    389: "ldap",
    5432: "postgres",
    5222: "xmpp",
}
#: LDAP ExtendedRequest, messageID 1, requestName 1.3.6.1.4.1.1466.20037 (StartTLS)
_LDAP_STARTTLS = bytes.fromhex("301d02010177188016") + b"1.3.6.1.4.1.1466.20037"
#: PostgreSQL SSLRequest: length 8, code 80877103
_PG_SSLREQUEST = bytes.fromhex("0000000804d2162f")


class StartTlsError(Exception):
    """The service did not agree to upgrade (the reason says where it stopped)."""


def reading_context(verify: bool = False) -> ssl.SSLContext:
    """A client context that completes handshakes with TLS 1.0-1.3 and legacy ciphers.

    ``verify`` gives the default trusting context instead (http_probe's ``verify_tls``).
    """
    if verify:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.set_ciphers("ALL:COMPLEMENTOFDEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        context.set_ciphers("ALL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 is deprecated: that is the point
        try:
            context.minimum_version = ssl.TLSVersion.TLSv1
        except (ValueError, ssl.SSLError, AttributeError):
            pass  # this OpenSSL cannot go lower: its own floor stays
        for name in ("OP_NO_TLSv1", "OP_NO_TLSv1_1"):
            flag = getattr(ssl, name, 0)
            if flag:
                context.options &= ~flag
    return context


def server_name(host: str) -> Optional[str]:
    """SNI for a name, none for an address."""
    return None if parse_ip(host) is not None else host


class _Lines:
    """Reads CRLF lines from a plain socket within one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""

    def more(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StartTlsError("timed out")
        self.sock.settimeout(left)
        chunk = self.sock.recv(4096)
        if not chunk:
            raise StartTlsError("connection closed")
        self.buffer += chunk
        if len(self.buffer) > 65536:
            raise StartTlsError("answer too long")

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            self.more()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self) -> bytes:
        """An SMTP/FTP reply: continuation lines ``NNN-`` up to the final ``NNN ``; its last line."""
        while True:
            line = self.line()
            if len(line) < 4 or line[3:4] != b"-":
                return line

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self.more()
        return self.buffer

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self.more()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data


def _expect(line: bytes, prefix: bytes, step: str) -> None:
    if not line.startswith(prefix):
        raise StartTlsError("%s: answered %r" % (step, line[:60]))


def upgrade(sock: socket.socket, protocol: str, host: str, deadline: float) -> None:
    """Speak ``protocol``'s plain-text part on ``sock`` until the TLS handshake may start."""
    lines = _Lines(sock, deadline)
    if protocol == "smtp":
        _expect(lines.reply(), b"220", "greeting")
        sock.sendall(b"EHLO fleetscan.invalid\r\n")
        _expect(lines.reply(), b"250", "EHLO")
        sock.sendall(b"STARTTLS\r\n")
        _expect(lines.reply(), b"220", "STARTTLS")
    elif protocol == "imap":
        _expect(lines.line(), b"* OK", "greeting")
        sock.sendall(b"a1 STARTTLS\r\n")
        while True:
            line = lines.line()
            if line.startswith(b"a1 "):
                _expect(line, b"a1 OK", "STARTTLS")
                break
    elif protocol == "pop3":
        _expect(lines.line(), b"+OK", "greeting")
        sock.sendall(b"STLS\r\n")
        _expect(lines.line(), b"+OK", "STLS")
    elif protocol == "ftp":
        _expect(lines.reply(), b"220", "greeting")
        sock.sendall(b"AUTH TLS\r\n")
        _expect(lines.reply(), b"234", "AUTH TLS")
    elif protocol == "ldap":
        sock.sendall(_LDAP_STARTTLS)
        head = lines.exactly(2)
        if head[0] != 0x30:
            raise StartTlsError("StartTLS: not an LDAP answer")
        size = head[1]
        if size & 0x80:
            size = int.from_bytes(lines.exactly(size & 0x7F), "big")
        body = lines.exactly(min(size, 4096))
        if b"\x78" not in body[:8] or b"\x0a\x01\x00" not in body:
            raise StartTlsError("StartTLS: refused")
    elif protocol == "postgres":
        sock.sendall(_PG_SSLREQUEST)
        answer = lines.exactly(1)
        if answer != b"S":
            raise StartTlsError("SSLRequest: answered %r" % answer)
    elif protocol == "xmpp":
        name = server_name(host) or host
        sock.sendall(
            (
                "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" % name
            ).encode("ascii", "replace")
        )
        lines.until(b"</stream:features>")
        lines.buffer = b""
        sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        while True:
            start = lines.buffer.find(b"<proceed")
            if start >= 0 and b">" in lines.buffer[start:]:
                break
            if b"<failure" in lines.buffer:
                raise StartTlsError("starttls: refused")
            lines.more()
        lines.buffer = lines.buffer[lines.buffer.index(b">", start) + 1 :]
    else:
        raise StartTlsError("unknown STARTTLS protocol %r" % protocol)
    if lines.buffer:
        raise StartTlsError("data before the handshake")  # a STARTTLS injection guard


def open_tls(
    host: str,
    port: int,
    timeout: float,
    starttls: Optional[str] = None,
    context: Optional[ssl.SSLContext] = None,
    connect: Callable[..., socket.socket] = socket.create_connection,
) -> ssl.SSLSocket:
    """A connected TLS socket (after ``starttls``'s upgrade when given); OSError/SSLError/StartTlsError.

    ``connect``: the task's guard (``ctx.guard.create_connection``) in a tool.
    """
    deadline = time.monotonic() + timeout
    raw = connect((host, port), timeout=timeout)
    try:
        if starttls:
            upgrade(raw, starttls, host, deadline)
        raw.settimeout(max(deadline - time.monotonic(), 0.01))
        return (context or reading_context()).wrap_socket(raw, server_hostname=server_name(host))
    except BaseException:
        raw.close()
        raise
