"""Agents on remote boxes over SSH: one asyncssh connection and one channel per box.

The box needs only sshd and a python3 >= 3.8: no root, no SFTP, no install. The one command
ever run is stage-0 (``agentkit.bootstrap.stage0_argv`` joined with ``shlex.quote``); the
archive goes down that same channel's stdin when stage-0 says ``NEED``, and from then on
the channel carries the JSON-lines protocol for every task of the box, multiplexed by task
id (``AgentLink`` does the framing). No per-task channel or process: a box costs the master
one TCP connection and one SSH session however many tasks it runs.

Host keys are strict: only keys in known_hosts (``console.fleet.ssh.hostkeys``) are accepted; an
unknown or changed key is refused with the box, the offered SHA256 fingerprint and the
command that trusts it. asyncssh errors are mapped to ``console.errors`` here, at the
boundary, so nothing above this module sees an asyncssh exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from agentkit import wire
from console.errors import AgentError, FleetscanError, HostKeyError, TransportError, TransportTimeout
from console.fleet.links import AgentLink, ByteReader, ByteWriter
from console.fleet.ssh import hostkeys
from console.fleet.ssh.pipe import ChannelReader, ChannelWriter, ack_promptly, error_reason
from console.sanitize import safe_line

if TYPE_CHECKING:
    from console.fleet.inventory import BoxSpec

#: sshd drops unauthenticated connections beyond MaxStartups (default 10:30:100), so the master
#: never has more than this many handshakes in flight at once, whatever the fleet size.
MAX_CONCURRENT_HANDSHAKES = 8
CONNECT_TIMEOUT_S = 15.0
LOGIN_TIMEOUT_S = 20.0
KEEPALIVE_INTERVAL_S = 15.0
KEEPALIVE_COUNT_MAX = 3
#: from an open connection to the agent's hello (archive push included)
BOOTSTRAP_DEADLINE_S = 30.0
STDERR_TAIL = 2048
#: AES-GCM first: asyncssh runs chacha20-poly1305 as several cipher objects per packet in
#: Python (~30x the master CPU of one AES-GCM call); every cipher OpenSSH offers stays listed,
#: so a box that only allows chacha20 still negotiates it.
CIPHER_PREFERENCE = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)

_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def handshake_gate() -> asyncio.Semaphore:
    """The running loop's bound on concurrent SSH handshakes (one semaphore per event loop)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        limit = int(os.environ.get("FLEETSCAN_SSH_HANDSHAKES", MAX_CONCURRENT_HANDSHAKES))
        gate = _gates[loop] = asyncio.Semaphore(max(1, limit))
    return gate


@dataclass
class SshSettings:
    """Deadlines, keepalives and files of an SSH link (defaults suit a real fleet)."""

    connect_timeout: float = CONNECT_TIMEOUT_S
    login_timeout: float = LOGIN_TIMEOUT_S
    keepalive_interval: float = KEEPALIVE_INTERVAL_S
    keepalive_count_max: int = KEEPALIVE_COUNT_MAX
    #: trusted known_hosts files (default: ~/.ssh/known_hosts and fleetscan's own)
    known_hosts: list[Path] | None = None
    #: ssh_config files for aliases (default: ~/.ssh/config when it exists)
    ssh_config: list[Path] | None = None


def box_target(spec: BoxSpec) -> str:
    """What to connect to: the ~/.ssh/config alias when there is one, else the host."""
    target = spec.ssh or spec.host
    if not target:
        raise TransportError(f"{spec.name}: neither host nor ssh alias given")
    return target


def box_address(spec: BoxSpec) -> str:
    """A display address: ``user@host:port`` or the alias."""
    if spec.ssh:
        return f"ssh:{spec.ssh}"
    user = f"{spec.user}@" if spec.user else ""
    return f"{user}{spec.host}:{spec.port}"


def _config_paths(settings: SshSettings) -> list[str]:
    if settings.ssh_config is not None:
        return [str(p) for p in settings.ssh_config]
    default = Path("~/.ssh/config").expanduser()
    return [str(default)] if default.is_file() else []


def _endpoint_kwargs(spec: BoxSpec, settings: SshSettings) -> dict[str, Any]:
    """Where to connect: the ssh_config files, and the port when the inventory gives one
    (a port it leaves out is ~/.ssh/config's, else 22, as with `ssh HOST`)."""
    kwargs: dict[str, Any] = {"config": _config_paths(settings)}
    if "port" in spec.model_fields_set:
        kwargs["port"] = spec.port
    return kwargs


def _connect_kwargs(spec: BoxSpec, settings: SshSettings) -> dict[str, Any]:
    """asyncssh options for this box; what the inventory leaves out, ~/.ssh/config decides."""
    kwargs = _endpoint_kwargs(spec, settings)
    kwargs.update(
        connect_timeout=settings.connect_timeout,
        login_timeout=settings.login_timeout,
        keepalive_interval=settings.keepalive_interval,
        keepalive_count_max=settings.keepalive_count_max,
        encryption_algs=list(CIPHER_PREFERENCE),
    )
    if spec.user:
        kwargs["username"] = spec.user
    if spec.key:
        key_path = Path(spec.key).expanduser()
        try:
            kwargs["client_keys"] = [asyncssh.read_private_key(str(key_path))]
        except (OSError, ValueError) as err:  # KeyImportError and KeyEncryptionError are ValueErrors
            hint = ""
            if "assphrase" in str(err):
                hint = " (an encrypted key: add it to ssh-agent and leave `key` out of the inventory)"
            raise TransportError(
                f"{spec.name}: cannot read key {key_path}: {error_reason(err)}{hint}"
            ) from err
    return kwargs


async def connect_box(spec: BoxSpec, settings: SshSettings | None = None) -> asyncssh.SSHClientConnection:
    """Open and authenticate one SSH connection to the box, errors mapped to console.errors.

    The whole connect (TCP, key exchange, login) holds a slot of ``handshake_gate()``: sshd
    counts a connection against MaxStartups from the moment it accepts the TCP connection
    until login, so the TCP connect cannot be left outside the bound. The deadline runs
    from when the slot is taken, so a box queued behind slow ones is not failed for waiting.
    """
    settings = settings or SshSettings()
    target = box_target(spec)
    kwargs = _connect_kwargs(spec, settings)
    known_files = settings.known_hosts if settings.known_hosts is not None else hostkeys.known_hosts_files()
    witness = hostkeys.HostKeyWitness()
    deadline = settings.connect_timeout + settings.login_timeout
    try:
        async with handshake_gate():
            return await asyncio.wait_for(
                asyncssh.connect(
                    target,
                    known_hosts=hostkeys.load_trusted(known_files),
                    client_factory=lambda: witness,
                    **kwargs,
                ),
                deadline,
            )
    except BaseException as err:
        mapped = _mapped(err, spec, box_address(spec), deadline, witness, known_files)
        if mapped is err:
            raise
        raise mapped from err


def _mapped(
    err: BaseException,
    spec: BoxSpec,
    where: str,
    deadline: float,
    witness: hostkeys.HostKeyWitness,
    known_files: list[Path],
) -> BaseException:
    """The console.errors exception for what asyncssh.connect raised (others pass unchanged)."""
    if isinstance(err, asyncssh.HostKeyNotVerifiable):
        if witness.offered is None or witness.peer is None:
            return HostKeyError(f"{spec.name}: host key refused: {error_reason(err)}")
        host, addr, port = witness.peer
        known = hostkeys.trusted_fingerprints(host, port, addr, known_files)
        return HostKeyError(hostkeys.refusal_message(spec.name, host, port, witness.offered, known))
    login_expired = isinstance(err, asyncssh.ConnectionLost) and "timeout" in str(err.reason).lower()
    if isinstance(err, (TimeoutError, asyncio.TimeoutError)) or login_expired:
        return TransportTimeout(f"{spec.name}: no SSH login to {where} within {deadline:g} s")
    if isinstance(err, asyncssh.PermissionDenied):
        return TransportError(f"{spec.name}: {where} refused our keys (permission denied)")
    if isinstance(err, asyncssh.Error):
        return TransportError(f"{spec.name}: SSH to {where} failed: {error_reason(err)}")
    if isinstance(err, OSError):
        return TransportError(f"{spec.name}: cannot connect to {where}: {error_reason(err)}")
    return err


class SshLink(AgentLink):
    """An agent on a remote box, reached by one asyncssh connection with one long-lived channel."""

    kind = "ssh"

    def __init__(
        self,
        spec: BoxSpec,
        *,
        known_hosts: list[Path] | None = None,
        settings: SshSettings | None = None,
    ) -> None:
        super().__init__(spec.name, spec.slots, address=box_address(spec))
        self.spec = spec
        self.settings = settings or SshSettings()
        if known_hosts is not None:
            self.settings = dataclasses.replace(self.settings, known_hosts=list(known_hosts))
        self.conn: asyncssh.SSHClientConnection | None = None
        self.process: asyncssh.SSHClientProcess[bytes] | None = None
        #: the one command this link runs on the box (stage-0), set when the link opens
        self.command = ""
        self._stderr_tail = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None

    async def _open(self, sha256: str, size: int) -> tuple[ByteReader, ByteWriter]:
        from agentkit.bootstrap import stage0_argv

        if self.conn is None:
            self.conn = await connect_box(self.spec, self.settings)
        self.command = shlex.join(stage0_argv(self.spec.python, sha256, size))
        ack_promptly(self.conn)
        try:
            self.process = await self.conn.create_process(self.command, encoding=None)
        except asyncssh.Error as err:
            self.conn.abort()
            raise TransportError(f"{self.name}: cannot start the agent: {error_reason(err)}") from err
        self._stderr_task = asyncio.create_task(self._collect_stderr(self.process))
        return ChannelReader(self.process.stdout), ChannelWriter(self.process.stdin)

    async def start(
        self, archive: bytes, sha256: str, *, deadline: float = BOOTSTRAP_DEADLINE_S
    ) -> wire.Hello:
        """Connect (own deadlines, see ``connect_box``), bootstrap within ``deadline``, return the hello.

        ``bootstrap_s`` covers both: what a box costs from nothing to a ready agent. A failed
        bootstrap says what the box printed on stderr (e.g. that its python is missing).
        """
        started = time.monotonic()
        self.conn = await connect_box(self.spec, self.settings)
        try:
            hello = await super().start(archive, sha256, deadline=deadline)
        except (AgentError, TransportError) as err:
            if isinstance(err, HostKeyError) or self._stderr_task is None:
                raise
            with contextlib.suppress(Exception):  # let the reader take what the box already sent
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
            if not self._stderr_tail:
                raise
            tail = safe_line(" ".join(self._stderr_tail.decode("utf-8", "replace").split())[-300:], 400)
            raise type(err)(f"{err} (box stderr: {tail})") from err
        self.bootstrap_s = time.monotonic() - started
        return hello

    async def _collect_stderr(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        """Keep the last bytes of the channel's stderr (e.g. "python3: not found") for error messages.

        Reading it also keeps the channel's window open however much the box writes there.
        """
        with contextlib.suppress(Exception):
            while True:
                chunk = await process.stderr.read(4096)
                if not chunk:
                    return
                self._stderr_tail += chunk
                del self._stderr_tail[:-STDERR_TAIL]

    async def _terminate(self, grace: float) -> None:
        process, conn = self.process, self.conn
        if process is not None:
            with contextlib.suppress(Exception):
                process.stdin.write_eof()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait_closed(), grace)
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 2.0)
            except Exception:  # noqa: BLE001 - a hung box: drop the socket rather than wait on it
                conn.abort()
        if self._stderr_task is not None and not self._stderr_task.done():
            self._stderr_task.cancel()

    def kill(self) -> None:
        """Drop the connection at once; the box's sshd then hangs up the agent's channel
        (the agent exits at stdin EOF). The stderr reader ends by itself at the EOF."""
        if self.conn is not None:
            self.conn.abort()


# -- trust and check (the `fleetscan agents` commands) ------------------------------------------


async def resolve_endpoint(spec: BoxSpec, settings: SshSettings | None = None) -> tuple[str, int]:
    """The (host, port) a box's known_hosts entry is named by, after ~/.ssh/config aliases."""
    settings = settings or SshSettings()
    kwargs = _endpoint_kwargs(spec, settings)
    options = await asyncssh.SSHClientConnectionOptions.construct(
        config=kwargs["config"], host=box_target(spec), port=kwargs.get("port", ())
    )
    host = options.host_key_alias or options.host
    return host, int(options.port)


async def fetch_host_key(spec: BoxSpec, settings: SshSettings | None = None) -> asyncssh.SSHKey:
    """The key the box presents in its handshake (not yet trusted: nothing is authenticated)."""
    settings = settings or SshSettings()
    kwargs = _endpoint_kwargs(spec, settings)
    port = kwargs.get("port", ())
    async with handshake_gate():
        try:
            key = await asyncio.wait_for(
                asyncssh.get_server_host_key(box_target(spec), port, config=kwargs["config"]),
                settings.connect_timeout,
            )
        except (TimeoutError, asyncio.TimeoutError) as err:
            raise TransportTimeout(f"{spec.name}: no SSH handshake from {box_address(spec)}") from err
        except (asyncssh.Error, OSError) as err:
            raise TransportError(
                f"{spec.name}: cannot reach {box_address(spec)}: {error_reason(err)}"
            ) from err
    if key is None:
        raise HostKeyError(f"{spec.name}: {box_address(spec)} presented no host key")
    return key


async def trust(
    spec: BoxSpec, settings: SshSettings | None = None, path: Path | None = None
) -> hostkeys.TrustRecord:
    """Fetch the box's host key and record it in fleetscan's known_hosts (an explicit operator act).

    Returns the record: entry name, the new key's fingerprint (show it so the operator can
    compare it with the box's own ``ssh-keygen -lf``), and fingerprints it replaced.
    """
    key = await fetch_host_key(spec, settings)
    host, port = await resolve_endpoint(spec, settings)
    return hostkeys.record_host_key(host, port, key, path)


@dataclass
class BoxReport:
    """One line of ``fleetscan agents --check``."""

    name: str
    address: str
    ok: bool
    error: str = ""
    python: str = ""
    hostname: str = ""
    latency_ms: float | None = None
    programs: dict[str, str] = field(default_factory=dict)
    #: "cached" (the box had this archive), "pushed" (sent on this connect), "" (never got there)
    archive: str = ""
    bootstrap_ms: float | None = None
    hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def ping(link: AgentLink, seq: int = 1, timeout: float = 10.0) -> float:
    """Round-trip time (seconds) of one ping/pong over a started link with no task running."""
    started = time.perf_counter()
    await link.send(wire.Ping(op="ping", seq=seq))

    async def pong() -> None:
        while True:
            message = await link.recv()
            if message is None:
                raise TransportError(f"{link.name}: agent closed the channel before pong")
            if isinstance(message, wire.Pong) and message.seq == seq:
                return

    try:
        await asyncio.wait_for(pong(), timeout)
    except (TimeoutError, asyncio.TimeoutError) as err:
        raise TransportTimeout(f"{link.name}: no pong within {timeout:g} s") from err
    return time.perf_counter() - started


async def check_box(
    spec: BoxSpec, archive: bytes, sha256: str, settings: SshSettings | None = None
) -> BoxReport:
    """Connect, bootstrap and ping one box; every failure becomes the report's one-line error."""
    link = SshLink(spec, settings=settings)
    report = BoxReport(name=spec.name, address=link.address, ok=False)
    try:
        hello = await link.start(archive, sha256)
        report.python = hello.python
        report.hostname = hello.hostname
        report.programs = dict(hello.programs)
        report.hash = hello.hash
        report.archive = "pushed" if link.pushed else "cached"
        report.bootstrap_ms = round(link.bootstrap_s * 1000, 1)
        report.latency_ms = round(await ping(link) * 1000, 2)
        report.ok = True
    except FleetscanError as err:
        report.error = str(err)
    finally:
        with contextlib.suppress(Exception):
            await link.close()
    return report


async def check(
    specs: Sequence[BoxSpec], settings: SshSettings | None = None, concurrency: int = 32
) -> list[BoxReport]:
    """``fleetscan agents --check``: every box connected, bootstrapped and pinged concurrently.

    Reports come back in inventory order; handshakes stay bounded by ``handshake_gate()``.
    """
    from agentkit.archive import build_archive

    archive, sha256 = build_archive()
    bound = asyncio.Semaphore(max(1, concurrency))

    async def one(spec: BoxSpec) -> BoxReport:
        async with bound:
            return await check_box(spec, archive, sha256, settings)

    return list(await asyncio.gather(*(one(spec) for spec in specs)))


def list_boxes(specs: Sequence[BoxSpec], settings: SshSettings | None = None) -> list[dict[str, Any]]:
    """``fleetscan agents`` without --check: the inventory as rows, with whether the host key is
    already trusted (no network: an alias is shown as written)."""
    settings = settings or SshSettings()
    files = settings.known_hosts if settings.known_hosts is not None else hostkeys.known_hosts_files()
    rows = []
    for spec in specs:
        trusted: bool | None = None
        if spec.host:
            trusted = bool(hostkeys.trusted_fingerprints(spec.host, spec.port, "", files))
        rows.append(
            {
                "name": spec.name,
                "address": box_address(spec),
                "slots": spec.slots,
                "python": spec.python,
                "host_key": {True: "trusted", False: "unknown", None: "see ssh config"}[trusted],
            }
        )
    return rows
