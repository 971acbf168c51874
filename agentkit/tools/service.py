"""service: what answers on a port, from a small, safe probe set.

Per ``host:port``, each step on a fresh connection, stopping at the first that tells:

1. wait for a greeting (ssh, smtp, ftp, pop3, imap, mysql/mariadb, vnc speak first);
   an ambiguous ``220`` is asked ``EHLO`` (an SMTP server answers 250, FTP does not);
2. a TLS handshake (TLS 1.0-1.3, legacy ciphers; never verified): when it completes the
   record says ``tls: true`` and steps 1 and 3 run again inside the TLS session
   (imaps, smtps, https ...); a TLS port that tells nothing more is named ``ssl``;
3. the protocol hellos of :mod:`agentkit.tools.service_probes` (HTTP ``GET /``, redis
   ``PING``, memcached ``version``, PostgreSQL SSLRequest, MongoDB ``isMaster``, LDAP
   rootDSE, RDP connection request, SMB2 NEGOTIATE), the one the port suggests first.

Nothing here authenticates or writes: every request is one a service answers to a
stranger. A port that accepted but told nothing is named by its number (``method:
port``) or ``unknown``; a port that does not accept gives no record. A port is
given at most 1.5 s + 5 x ``timeout`` in all (silent ones cost that; talkers much less).
params: ``timeout`` (s to wait for each answer, default 3), ``intensity`` (0-9,
default 7: hellos of that rarity or below; 0 is greeting, TLS and the port's own
hello only), ``concurrency`` (default 32).
Results: ``service {host, port, banner, name, product, version, tls, method}``.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from agentkit.context import TaskContext
from agentkit.params import get_float, get_int
from agentkit.targets import host_port
from agentkit.tools.fanout import for_each, parse_each
from agentkit.tools.service_probes import PORT_NAMES, Ident, hellos_for, read_greeting
from agentkit.tools.text import collapse, decoded
from agentkit.tools.tls_read import reading_context, server_name

MAX_ANSWER = 16384
#: how long a service may take to greet before we speak first
GREETING_WAIT = 1.5
#: a port gets at most GREETING_WAIT + PORT_BUDGET x timeout: one that accepts and never answers
#: (a tarpit, a filtered proxy) costs that much, not one timeout per hello
PORT_BUDGET = 5

Connect = Callable[[], Optional[socket.socket]]


def _read(sock: socket.socket, wait: float, settle: float = 0.3) -> bytes:
    """What arrives within ``wait`` s; once something came, stop after ``settle`` s of quiet."""
    data = b""
    ends = time.monotonic() + wait
    while len(data) < MAX_ANSWER:
        left = ends - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(min(left, settle) if data else left)
        try:
            chunk = sock.recv(MAX_ANSWER - len(data))
        except (socket.timeout, ssl.SSLWantReadError):
            if data:
                break
            continue
        except (OSError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data


class Prober:
    """One target's probes; ``connect`` gives a fresh connection (plain or TLS) or None."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        deadline: float,
        connect: Callable[..., socket.socket] = socket.create_connection,
    ) -> None:
        #: the task's guard (``ctx.guard.create_connection``): every connection goes through it
        self.connect = connect
        self.host = host
        self.port = port
        self.timeout = timeout
        self.deadline = deadline
        self.accepted = False

    def _wait(self, most: float) -> float:
        return max(0.01, min(most, self.deadline - time.monotonic()))

    def plain(self) -> Optional[socket.socket]:
        if time.monotonic() >= self.deadline:
            return None
        try:
            sock = self.connect((self.host, self.port), timeout=self._wait(self.timeout))
        except OSError:
            return None
        self.accepted = True
        return sock

    def tls(self) -> Optional[socket.socket]:
        raw = self.plain()
        if raw is None:
            return None
        try:
            raw.settimeout(self._wait(self.timeout))
            return reading_context().wrap_socket(raw, server_hostname=server_name(self.host))
        except (OSError, ssl.SSLError, ValueError):
            raw.close()
            return None

    def greeting(self, connect: Connect) -> Tuple[bytes, Optional[Ident]]:
        sock = connect()
        if sock is None:
            return b"", None
        try:
            data = _read(sock, self._wait(min(GREETING_WAIT, self.timeout)))
            if not data:
                return b"", None
            ident = read_greeting(data, self.port)
            if ident is None and data.startswith(b"220"):
                ident = self._smtp_or_ftp(sock, data)
            return data, ident
        finally:
            sock.close()

    def _smtp_or_ftp(self, sock: socket.socket, greeting: bytes) -> Ident:
        """A 220 that names neither: SMTP answers EHLO with 250, FTP with an error."""
        banner = collapse(greeting.decode("utf-8", "replace"), 256)
        try:
            sock.sendall(b"EHLO fleetscan.invalid\r\n")
            answer = _read(sock, self._wait(self.timeout))
        except OSError:
            answer = b""
        if answer.startswith(b"250"):
            return Ident("smtp", banner=banner)
        if answer[:1] in (b"5", b"4") or self.port == 21:
            return Ident("ftp", banner=banner)
        return Ident(PORT_NAMES.get(self.port, "unknown"), banner=banner)

    def hellos(self, connect: Connect, intensity: int) -> Optional[Ident]:
        for hello in hellos_for(self.port, intensity):
            sock = connect()
            if sock is None:
                return None

            def exchange(request: bytes, sock: socket.socket = sock) -> bytes:
                try:
                    sock.sendall(request)
                except OSError:
                    return b""
                return _read(sock, self._wait(self.timeout))

            try:
                ident = hello.ask(exchange, self.host)
            finally:
                sock.close()
            if ident is not None:
                return ident
        return None


def identify(
    host: str,
    port: int,
    timeout: float,
    intensity: int,
    deadline: float,
    connect: Callable[..., socket.socket] = socket.create_connection,
) -> Optional[Dict[str, Any]]:
    """The service record's data for one port, or None when the port does not accept."""
    prober = Prober(host, port, timeout, deadline, connect)
    tls = False
    greeting, ident = prober.greeting(prober.plain)
    if not prober.accepted:
        return None
    if ident is None and not greeting:
        hinted = [h for h in hellos_for(port, 0) if h.name != "http"]
        if hinted:  # a plain protocol's own port (redis, memcached ...): ask it before any TLS bytes
            ident = prober.hellos(prober.plain, -1)
    if ident is None and not greeting:
        if prober.tls() is not None:  # a TLS port: what speaks inside it?
            tls = True
            greeting, ident = prober.greeting(prober.tls)
            if ident is None and not greeting:
                ident = prober.hellos(prober.tls, min(intensity, 1)) or Ident("ssl")
        else:
            ident = prober.hellos(prober.plain, intensity)
    method = "probe"
    banner = decoded(greeting, 1024) if greeting else ""  # escaped once, by the master
    if ident is None or ident.name == "unknown":
        ident = Ident(PORT_NAMES.get(port, "unknown"))
        method = "port" if port in PORT_NAMES else "probe"
    return {
        "host": host,
        "port": port,
        "banner": banner or ident.banner,
        "name": ident.name,
        "product": collapse(ident.product, 128),
        "version": collapse(ident.version, 64),
        "tls": tls,
        "method": method,
    }


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    timeout = get_float(params, "timeout", 3.0, 0.01, 600.0)
    intensity = get_int(params, "intensity", 7, 0, 9)
    concurrency = get_int(params, "concurrency", 32, 1, 1024)
    parsed = parse_each(targets, host_port)

    def work(target: str) -> None:
        host, port = parsed[target]
        budget = min(max(ctx.remaining(), 0.01), GREETING_WAIT + PORT_BUDGET * timeout)
        data = identify(host, port, timeout, intensity, time.monotonic() + budget, ctx.guard.create_connection)
        if data is not None:
            ctx.emit("service", target, data)

    for_each(ctx, targets, work, concurrency)
