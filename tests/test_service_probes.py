"""The probe set's edges: greetings and hellos of services this machine does not run, STARTTLS preludes.

The real servers (nginx, s_server, exim4, redis, sshd) are in test_real_servers.py. Here,
for the protocols whose daemons are not installed, each answer is the protocol's own
documented bytes (RFC 959/1939/3501/4511/6120, the MySQL and PostgreSQL protocol docs)
fed to the parser, and each STARTTLS prelude is spoken against a loopback server that
then completes a real TLS handshake with a throwaway certificate.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from agentkit.tools.service_probes import HELLOS, Ident, hellos_for, read_greeting
from agentkit.tools.tls_cert import fetch_der
from tests.fixtures.servers import SelfSignedCert


def mysql_greeting(version: bytes) -> bytes:
    body = b"\x0a" + version + b"\x00" + struct.pack("<I", 7) + b"saltsalt\x00" + b"\xff\xf7"
    return len(body).to_bytes(3, "little") + b"\x00" + body


@pytest.mark.parametrize(
    ("greeting", "port", "expected"),
    [
        (b"220 (vsFTPd 3.0.3)\r\n", 2121, Ident("ftp", "vsFTPd", "3.0.3")),
        (b"220 ProFTPD 1.3.8 Server (Debian) [::ffff:127.0.0.1]\r\n", 21, Ident("ftp", "ProFTPD", "1.3.8")),
        (b"220 mx.example.test ESMTP Postfix (Debian/GNU)\r\n", 25, Ident("smtp", "Postfix", "")),
        (b"+OK Dovecot (Debian) ready.\r\n", 110, Ident("pop3", "Dovecot", "")),
        (b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot (Debian) ready.\r\n", 143, Ident("imap", "Dovecot", "")),
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", 2222, Ident("ssh", "OpenSSH", "9.2p1")),
        (b"RFB 003.008\n", 5900, Ident("vnc", "", "003.008")),
        (mysql_greeting(b"8.0.36"), 3306, Ident("mysql", "MySQL", "8.0.36")),
        (mysql_greeting(b"5.5.5-10.11.6-MariaDB-0+deb12u1"), 3307, Ident("mysql", "MariaDB", "10.11.6")),
    ],
)
def test_greetings_name_the_service(greeting: bytes, port: int, expected: Ident) -> None:
    found = read_greeting(greeting, port)
    assert found is not None
    assert (found.name, found.product, found.version) == (expected.name, expected.product, expected.version)


def test_an_unnamed_220_and_noise_are_left_open() -> None:
    assert read_greeting(b"220 ready\r\n", 2525) is None  # asked EHLO by the prober
    assert read_greeting(b"\x00\x01garbage", 9999) is None


def answering(*answers: bytes) -> tuple[Callable[[bytes], bytes], list[bytes]]:
    sent: list[bytes] = []
    queue = list(answers)

    def exchange(request: bytes) -> bytes:
        sent.append(request)
        return queue.pop(0) if queue else b""

    return exchange, sent


def hello(name: str) -> Callable[[Callable[[bytes], bytes], str], Ident | None]:
    return next(h.ask for h in HELLOS if h.name == name)


def test_hellos_read_their_protocols_answers() -> None:
    exchange, sent = answering(b"VERSION 1.6.21\r\n")
    assert hello("memcached")(exchange, "h") == Ident("memcached", "memcached", "1.6.21", "VERSION 1.6.21")
    assert sent == [b"version\r\n"]
    exchange, sent = answering(b"N")
    assert hello("postgresql")(exchange, "h") == Ident("postgresql", "PostgreSQL")
    assert sent == [bytes.fromhex("0000000804d2162f")]  # SSLRequest only: no startup packet, no user
    reply = struct.pack("<iiii", 60, 7, 1, 1) + b"\x00" * 20 + b"\x10ismaster\x00\x01\x00\x00\x00\x00"
    assert hello("mongodb")(answering(reply)[0], "h") == Ident("mongodb", "MongoDB")
    ldap_entry = bytes.fromhex("300c02010164070400300030003000")
    assert hello("ldap")(answering(ldap_entry)[0], "h") == Ident("ldap")
    rdp = bytes.fromhex("030000130ed000001234000200080001000000")
    assert hello("rdp")(answering(rdp)[0], "h") is not None
    smb = b"\x00\x00\x00\x80\xfeSMB" + b"\x00" * 124
    assert hello("smb")(answering(smb)[0], "h") == Ident("smb")
    exchange, sent = answering(b"-NOAUTH Authentication required.\r\n")
    assert hello("redis")(exchange, "h") == Ident("redis", "Redis", "", "-NOAUTH Authentication required.")
    assert len(sent) == 1  # no INFO, and never an AUTH


def test_no_hello_takes_an_http_answer_for_its_own() -> None:
    http = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n"
    for item in HELLOS:
        found = item.ask(answering(http)[0], "h")
        assert found is None or found.name == "http", item.name


def test_the_port_picks_the_first_hello_and_intensity_the_rest() -> None:
    assert [h.name for h in hellos_for(6379, 0)] == ["redis"]
    assert [h.name for h in hellos_for(12345, 1)] == ["http"]
    assert hellos_for(11211, 9)[0].name == "memcached" and len(hellos_for(11211, 9)) == len(HELLOS)


# -- STARTTLS preludes against loopback servers that then speak real TLS ------------------------

PRELUDES: dict[str, list[tuple[bytes | None, bytes]]] = {
    # (what the client must have sent before, or None: the server speaks first) -> what the server says
    "smtp": [(None, b"220 mx ESMTP\r\n"), (b"EHLO", b"250-mx\r\n250 STARTTLS\r\n"), (b"STARTTLS", b"220 go\r\n")],
    "imap": [(None, b"* OK IMAP4rev1\r\n"), (b"a1 STARTTLS", b"a1 OK Begin TLS\r\n")],
    "pop3": [(None, b"+OK POP3\r\n"), (b"STLS", b"+OK Begin TLS\r\n")],
    "ftp": [(None, b"220-Welcome\r\n220 FTP\r\n"), (b"AUTH TLS", b"234 AUTH TLS ok\r\n")],
    "ldap": [(b"1.3.6.1.4.1.1466.20037", bytes.fromhex("300c02010178070a010004000400"))],
    "postgres": [(bytes.fromhex("0000000804d2162f"), b"S")],
    "xmpp": [(b"<stream:stream", b"<stream:stream><stream:features><starttls/></stream:features>"),
             (b"<starttls", b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")],
}  # fmt: skip


@contextlib.contextmanager
def starttls_server(protocol: str, cert: SelfSignedCert) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert.cert), str(cert.key))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def serve() -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            conn, _ = listener.accept()
            conn.settimeout(5)
            received = b""
            for expect, answer in PRELUDES[protocol]:
                while expect is not None and expect not in received:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    received += chunk
                received = b""
                conn.sendall(answer)
            with context.wrap_socket(conn, server_side=True):
                time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        thread.join(3)


@pytest.mark.parametrize("protocol", sorted(PRELUDES))
def test_starttls_upgrades_each_protocol(protocol: str, self_signed_cert: SelfSignedCert) -> None:
    with starttls_server(protocol, self_signed_cert) as port:
        found = fetch_der("127.0.0.1", port, 5.0, protocol)
    assert found is not None, protocol
    assert found.der == ssl.PEM_cert_to_DER_cert(self_signed_cert.cert.read_text())
    assert found.protocol.startswith("TLSv1")
