"""What each service says, and the harmless hellos that make a silent one speak.

Two halves: :func:`read_greeting` names a service from what it sends first (ssh,
smtp, ftp, pop3, imap, mysql/mariadb, vnc), and :data:`HELLOS` are requests a
service answers without being logged in and without anything being written:
an HTTP ``GET /``, redis ``PING`` (then ``INFO server`` when it answers PONG),
memcached ``version``, a PostgreSQL SSLRequest, a MongoDB ``isMaster``, an LDAP
rootDSE search, an RDP connection request and an SMB2 NEGOTIATE. Each hello has a
rarity (nmap's idea): ``intensity`` runs those at or below it, and the one the
port suggests always runs first.
"""

from __future__ import annotations

import re
import struct
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from agentkit.tools.text import collapse


class Ident(NamedTuple):
    """A service as identified: name, product, version, the text it said (may be empty)."""

    name: str
    product: str = ""
    version: str = ""
    banner: str = ""


#: IANA's names for the ports the probes know, for ``method: port`` and for the hinted hello
PORT_NAMES: Dict[int, str] = {
    21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 53: "domain", 80: "http", 110: "pop3",
    139: "smb", 143: "imap", 389: "ldap", 443: "http", 445: "smb", 465: "smtp", 587: "smtp",
    636: "ldap", 993: "imap", 995: "pop3", 1433: "ms-sql-s", 3306: "mysql", 3389: "rdp",
    5432: "postgresql", 5900: "vnc", 6379: "redis", 8000: "http", 8080: "http", 8443: "http",
    11211: "memcached", 27017: "mongodb",
}  # fmt: skip

_PRODUCT = re.compile(
    r"\b(Exim|Postfix|Sendmail|Microsoft ESMTP MAIL Service|OpenSMTPD|vsFTPd|ProFTPD|Pure-FTPd|"
    r"FileZilla Server|Dovecot|Courier|Cyrus)\b[ /(]*(?:version )?v?([0-9][\w.~+-]*)?",
    re.IGNORECASE,
)
_SSH = re.compile(r"^SSH-([\d.]+)-([^\s_-]+)(?:[_-]([^\s]+))?")


def _text(data: bytes, limit: int = 256) -> str:
    return collapse(data.decode("utf-8", "replace"), limit)


def _product(text: str) -> Tuple[str, str]:
    found = _PRODUCT.search(text)
    if not found:
        return "", ""
    return found.group(1), (found.group(2) or "").rstrip(".")


def _mysql(data: bytes) -> Optional[Ident]:
    """A MySQL/MariaDB server greeting (protocol 10) or its "host not allowed" error packet."""
    if len(data) < 6 or data[3] != 0:
        return None
    size = int.from_bytes(data[:3], "little")
    if size < 2 or size > 4096:
        return None
    if data[4] == 0x0A:
        version = data[5:].split(b"\x00", 1)[0].decode("ascii", "replace")
        if not re.match(r"^\d+\.\d+", version):
            return None
        if "mariadb" in version.lower():
            return Ident("mysql", "MariaDB", version.replace("5.5.5-", "").split("-")[0], version)
        return Ident("mysql", "MySQL", version.split("-")[0], version)
    if data[4] == 0xFF and (b"MySQL" in data or b"MariaDB" in data):
        return Ident("mysql", "MariaDB" if b"MariaDB" in data else "MySQL", "", _text(data[7:]))
    return None


def read_greeting(data: bytes, port: int) -> Optional[Ident]:
    """Name a service from what it said first, or None when the greeting tells nothing.

    An FTP or SMTP ``220`` that names neither is left to :func:`smtp_or_ftp`.
    """
    text = data.decode("utf-8", "replace")
    banner = _text(data)
    if text.startswith("SSH-"):
        found = _SSH.match(text)
        product, version = (found.group(2), found.group(3) or "") if found else ("", "")
        return Ident("ssh", product, version, banner)
    if text.startswith("RFB "):
        return Ident("vnc", "", text[4:11].strip(), banner)
    if text.startswith("+OK"):
        return Ident("pop3", *_product(text), banner=banner)
    if text.startswith("* OK") or text.startswith("* PREAUTH"):
        return Ident("imap", *_product(text), banner=banner)
    if text.startswith("220"):
        upper = text.upper()
        product, version = _product(text)
        if "FTP" in upper:
            return Ident("ftp", product, version, banner)
        if "SMTP" in upper or product.lower() in ("exim", "postfix", "sendmail", "opensmtpd"):
            return Ident("smtp", product, version, banner)
        return None
    return _mysql(data)


# -- hellos ---------------------------------------------------------------------------
#: A hello is (request bytes, reader of the answer); the request may depend on the host.

Exchange = Callable[[bytes], bytes]  # send these bytes, return what came back (b"" on silence)


def _http(exchange: Exchange, host: str) -> Optional[Ident]:
    shown = "[%s]" % host if ":" in host else host
    answer = exchange(
        b"GET / HTTP/1.0\r\nHost: %s\r\nUser-Agent: fleetscan-agent/1\r\nAccept: */*\r\n\r\n"
        % shown.encode("idna" if not shown.isascii() else "ascii")
    )
    if not re.match(rb"^HTTP/\d(\.\d)? \d{3}", answer):
        return None
    head = answer.split(b"\r\n\r\n", 1)[0]
    server = ""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"server":
            server = _text(value.strip())
    product, _, version = server.partition("/")
    return Ident("http", product.strip(), version.split(" ")[0].strip(), _text(head.split(b"\r\n", 1)[0]))


def _redis(exchange: Exchange, host: str) -> Optional[Ident]:
    answer = exchange(b"*1\r\n$4\r\nPING\r\n")
    if answer.startswith(b"+PONG"):
        info = exchange(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        found = re.search(rb"redis_version:([\w.]+)", info)
        return Ident("redis", "Redis", found.group(1).decode("ascii") if found else "", "+PONG")
    if answer.startswith((b"-NOAUTH", b"-DENIED", b"-ERR operation not permitted", b"-WRONGPASS")):
        return Ident("redis", "Redis", "", _text(answer))
    return None


def _memcached(exchange: Exchange, host: str) -> Optional[Ident]:
    answer = exchange(b"version\r\n")
    found = re.match(rb"^VERSION ([\w.]+)", answer)
    return Ident("memcached", "memcached", found.group(1).decode("ascii"), _text(answer)) if found else None


def _postgres(exchange: Exchange, host: str) -> Optional[Ident]:
    answer = exchange(bytes.fromhex("0000000804d2162f"))  # SSLRequest: the server says S or N, nothing more
    return Ident("postgresql", "PostgreSQL") if answer in (b"S", b"N") else None


def _bson_is_master() -> bytes:
    doc = b"\x10isMaster\x00" + struct.pack("<i", 1) + b"\x00"
    doc = struct.pack("<i", len(doc) + 4) + doc
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + doc
    return struct.pack("<iiii", 16 + len(body), 1, 0, 2004) + body  # OP_QUERY


def _mongodb(exchange: Exchange, host: str) -> Optional[Ident]:
    answer = exchange(_bson_is_master())
    if len(answer) >= 16 and struct.unpack("<i", answer[12:16])[0] in (1, 2013) and (
        b"ismaster" in answer.lower() or b"maxWireVersion" in answer
    ):
        return Ident("mongodb", "MongoDB")
    return None


#: LDAP SearchRequest, messageID 1: base "" (the rootDSE), scope base, (objectClass=*): readable anonymously
_LDAP_ROOT_DSE = bytes.fromhex("3025020101632004000a01000a0100020100020100010100870b") + b"objectClass" + b"\x30\x00"


def _ldap(exchange: Exchange, host: str) -> Optional[Ident]:
    answer = exchange(_LDAP_ROOT_DSE)
    if len(answer) > 7 and answer[0] == 0x30 and b"\x02\x01\x01" in answer[:8]:
        after = answer.index(b"\x02\x01\x01") + 3
        if answer[after : after + 1] in (b"\x64", b"\x65", b"\x78"):
            return Ident("ldap")
    return None


#: TPKT + X.224 Connection Request + RDP_NEG_REQ (TLS | CredSSP): no credentials, no session
_RDP_REQUEST = bytes.fromhex("030000130ee000000000000100080003000000")


def _rdp(exchange: Exchange, host: str) -> Optional[Ident]:
    answer = exchange(_RDP_REQUEST)
    if len(answer) >= 11 and answer[:2] == b"\x03\x00" and answer[5] == 0xD0:
        return Ident("rdp", "Microsoft Terminal Services" if len(answer) >= 19 else "")
    return None


def _smb_negotiate() -> bytes:
    header = b"\xfeSMB" + struct.pack("<HHIHHIIQIIQ16s", 64, 0, 0, 0, 1, 0, 0, 0, 0xFEFF, 0, 0, b"\x00" * 16)
    dialects = (0x0202, 0x0210, 0x0300)
    body = struct.pack("<HHHHI16sQ", 36, len(dialects), 1, 0, 0, b"fleetscan-probe!", 0)
    body += b"".join(struct.pack("<H", dialect) for dialect in dialects)
    message = header + body
    return struct.pack(">I", len(message)) + message  # NetBIOS session message


def _smb(exchange: Exchange, host: str) -> Optional[Ident]:
    answer = exchange(_smb_negotiate())
    if len(answer) >= 8 and answer[4:8] in (b"\xfeSMB", b"\xffSMB"):
        return Ident("smb")
    return None


class Hello(NamedTuple):
    name: str
    rarity: int
    ask: Callable[[Exchange, str], Optional[Ident]]


#: in the order tried when no port suggests one (the common first, the binary ones last)
HELLOS: List[Hello] = [
    Hello("http", 1, _http),
    Hello("redis", 3, _redis),
    Hello("postgresql", 3, _postgres),
    Hello("memcached", 4, _memcached),
    Hello("mongodb", 5, _mongodb),
    Hello("ldap", 5, _ldap),
    Hello("rdp", 6, _rdp),
    Hello("smb", 6, _smb),
]


def hellos_for(port: int, intensity: int) -> List[Hello]:
    """The hellos to try on ``port``: the one its number suggests first (always), then by rarity."""
    hinted = PORT_NAMES.get(port)
    first = [hello for hello in HELLOS if hello.name == hinted]
    if intensity < 0:
        return first
    rest = [hello for hello in HELLOS if hello.name != hinted and hello.rarity <= intensity]
    return first + rest
