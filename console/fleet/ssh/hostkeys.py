"""Which SSH host keys fleetscan trusts, and how the operator adds one.

Two known_hosts files are trusted together: the user's ``~/.ssh/known_hosts`` (boxes
the operator already reaches with ssh) and fleetscan's own file (platformdirs
``user_data_dir("fleetscan")/known_hosts``, or ``FLEETSCAN_KNOWN_HOSTS``), where
``fleetscan agents --trust NAME`` records new keys. fleetscan never writes the user's
file and never trusts a key silently.

asyncssh matches keys (it is the only SSH transport); paramiko's ``HostKeys`` is used for
one job only: editing fleetscan's known_hosts file, because it already reads and writes
the OpenSSH format faithfully (``[host]:port`` names, hashed ``|1|`` entries, comments).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import paramiko
import platformdirs

DEFAULT_SSH_PORT = 22


def fleetscan_known_hosts() -> Path:
    """fleetscan's own known_hosts file (``FLEETSCAN_KNOWN_HOSTS`` overrides, e.g. in tests)."""
    override = os.environ.get("FLEETSCAN_KNOWN_HOSTS")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("fleetscan")) / "known_hosts"


def user_known_hosts() -> Path:
    return Path("~/.ssh/known_hosts").expanduser()


def known_hosts_files() -> list[Path]:
    """Every known_hosts file whose keys are trusted, user's first."""
    return [user_known_hosts(), fleetscan_known_hosts()]


def host_entry_name(host: str, port: int) -> str:
    """The name a known_hosts line uses: ``host`` on port 22, else ``[host]:port``."""
    return host if port == DEFAULT_SSH_PORT else f"[{host}]:{port}"


def fingerprint(key: asyncssh.SSHKey) -> str:
    """The SHA256 fingerprint as OpenSSH prints it (``SHA256:base64``)."""
    return key.get_fingerprint("sha256")


_parsed: dict[tuple[tuple[str, int, int, int], ...], asyncssh.SSHKnownHosts] = {}


def load_trusted(files: list[Path] | None = None) -> asyncssh.SSHKnownHosts:
    """All trusted entries, parsed by asyncssh (so matching is asyncssh's, hashed names included).

    Missing or unreadable files simply contribute nothing: a first run has no file yet. The
    parse is reused while no file changes (inode, size, mtime), so fifty boxes connecting at once
    parse a big known_hosts once, and a key recorded by ``trust`` counts at the next connect.
    """
    paths = files if files is not None else known_hosts_files()
    stamp = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        stamp.append((str(path), st.st_ino, st.st_mtime_ns, st.st_size))
    key = tuple(stamp)
    cached = _parsed.get(key)
    if cached is not None:
        return cached
    chunks = []
    for name, *_ in stamp:
        try:
            chunks.append(Path(name).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    trusted = asyncssh.import_known_hosts("\n".join(chunks))
    _parsed.clear()  # one entry: the current files
    _parsed[key] = trusted
    return trusted


def trusted_fingerprints(
    host: str, port: int, address: str = "", files: list[Path] | None = None
) -> list[str]:
    """Fingerprints of the keys trusted for this host:port (empty: the box is unknown)."""
    keys = asyncssh.match_known_hosts(
        load_trusted(files), host, address, None if port == DEFAULT_SSH_PORT else port
    )[0]
    return [fingerprint(key) for key in keys]


class HostKeyWitness(asyncssh.SSHClient):
    """Remembers the key a server offered when known_hosts did not trust it, for the message.

    asyncssh calls ``validate_host_public_key`` only for a key absent from known_hosts;
    answering False makes it refuse the connection (strict checking, never trust-on-first-use).
    """

    def __init__(self) -> None:
        self.offered: asyncssh.SSHKey | None = None
        self.peer: tuple[str, str, int] | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.offered = key
        self.peer = (host, addr, port)
        return False


def refusal_message(box: str, host: str, port: int, offered: asyncssh.SSHKey, known: list[str]) -> str:
    """The one-line refusal: which box, which key, what the operator does about it."""
    where = host_entry_name(host, port)
    shown = fingerprint(offered)
    if known:
        return (
            f"{box}: host key for {where} CHANGED: it offers {shown}, known_hosts has "
            f"{', '.join(dict.fromkeys(known))}; refusing (possible impersonation). If the box was reinstalled, "
            f"verify the new key and run `fleetscan agents --trust {box}`"
        )
    return (
        f"{box}: host key for {where} is not trusted ({offered.get_algorithm()} {shown}); "
        f"verify it and run `fleetscan agents --trust {box}`"
    )


@dataclass(frozen=True)
class TrustRecord:
    """What ``trust`` did: the entry name, the key's fingerprint, and the keys it replaced."""

    entry: str
    fingerprint: str
    replaced: tuple[str, ...]
    path: Path


def record_host_key(host: str, port: int, key: asyncssh.SSHKey, path: Path | None = None) -> TrustRecord:
    """Add (or replace, same key type) the host's key in fleetscan's known_hosts, atomically.

    The file is written to a temporary sibling and renamed, mode 0600, so a crash never
    leaves a half-written trust store.
    """
    path = path or fleetscan_known_hosts()
    entry = host_entry_name(host, port)
    store = paramiko.HostKeys()
    if path.exists():
        store.load(str(path))
    keytype = key.get_algorithm()
    pkey = paramiko.PKey.from_type_string(keytype, key.public_data)
    previous: dict[str, paramiko.PKey] = dict(store.lookup(entry) or {})
    replaced = tuple(
        _paramiko_fingerprint(old)
        for old_type, old in previous.items()
        if old_type == keytype and old.asbytes() != pkey.asbytes()
    )
    store.add(entry, keytype, pkey)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o600)
        store.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return TrustRecord(entry=entry, fingerprint=fingerprint(key), replaced=replaced, path=path)


def _paramiko_fingerprint(key: paramiko.PKey) -> str:
    return fingerprint(asyncssh.import_public_key(key.get_name() + " " + key.get_base64()))
