"""One protocol, two pipes: the JSON-lines framing over any byte pipe, and the local subprocess pipe.

``AgentLink`` owns everything about speaking to an agent — the stage-0 bootstrap
handshake (answer ``NEED`` with the archive, wait for a valid ``hello`` carrying
the archive's hash), bounded line framing, message validation — so a transport
only supplies the pipe: ``LocalLink`` a subprocess's stdin/stdout here, and
``console.fleet.ssh.link.SshLink`` one asyncssh channel. Nothing above this module knows
which one it has.
"""

from __future__ import annotations

import abc
import asyncio
import os
import signal
import sys
import time
from collections import OrderedDict, deque
from typing import Any, Protocol

from agentkit import wire
from console.errors import AgentError, TransportError, TransportTimeout
from console.sanitize import safe_line

READ_CHUNK = 256 * 1024
#: default deadline for spawn/connect + archive push + hello
START_DEADLINE_S = 30.0
#: tasks at once on a local agent (no network in between: cheap to keep more in flight)
LOCAL_SLOTS = 8


class ByteReader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class ByteWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


class AgentLink(abc.ABC):
    """A connection to one agent. Subclasses supply ``_open`` (the pipe), ``_terminate`` and ``kill``."""

    kind = "agent"

    def __init__(self, name: str, slots: int, address: str = "") -> None:
        self.name = name
        self.slots = max(1, int(slots))
        self.address = address
        self.hello: wire.Hello | None = None
        #: ids of the ``scope`` messages sent on this link, oldest first (the agent keeps the newest
        #: ``wire.MAX_SCOPES``; a new link, a new agent process, holds none)
        self.scopes_sent: OrderedDict[str, None] = OrderedDict()
        #: the archive was pushed on this start (False: the box had it cached)
        self.pushed = False
        self.bootstrap_s = 0.0
        self._reader: ByteReader | None = None
        self._writer: ByteWriter | None = None
        #: complete lines read ahead; None marks an over-long line (reported in order)
        self._lines: deque[bytes | None] = deque()
        self._partial = bytearray()
        self._skipping = False
        self._eof = False
        self.closed = False

    # -- subclass hooks -------------------------------------------------------------

    @abc.abstractmethod
    async def _open(self, sha256: str, size: int) -> tuple[ByteReader, ByteWriter]:
        """Spawn or connect and run stage-0 for (sha256, size); return the agent's stdout/stdin."""

    @abc.abstractmethod
    async def _terminate(self, grace: float) -> None:
        """After shutdown was sent: wait up to ``grace`` for a clean exit, then force it."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Drop the agent at once (no goodbye)."""

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, archive: bytes, sha256: str, *, deadline: float = START_DEADLINE_S) -> wire.Hello:
        """Bootstrap the agent and return its validated hello (TransportTimeout past ``deadline``)."""
        started = time.monotonic()
        try:
            hello = await asyncio.wait_for(self._handshake(archive, sha256), deadline)
        except (TimeoutError, asyncio.TimeoutError) as err:
            await self._abandon()
            raise TransportTimeout(f"{self.name}: no hello within {deadline:g} s") from err
        except Exception:
            await self._abandon()
            raise
        except BaseException:
            self._force_kill()
            raise
        self.bootstrap_s = time.monotonic() - started
        self.hello = hello
        return hello

    async def _handshake(self, archive: bytes, sha256: str) -> wire.Hello:
        self._reader, self._writer = await self._open(sha256, len(archive))
        line = await self._raw_line()
        if line == b"NEED":
            self.pushed = True
            self._writer.write(archive)
            await self._writer.drain()
            line = await self._raw_line()
        if line.startswith(b"ERROR"):
            # the box's own words, whole (up to 4,096 characters) and made printable: they reach events and the console
            raise AgentError(f"{self.name}: bootstrap failed: {safe_line(line.decode('utf-8', 'replace'))}")
        message = self._parse(line)
        if not isinstance(message, wire.Hello):
            raise AgentError(f"{self.name}: expected hello, got {type(message).__name__.lower()}")
        if message.protocol != wire.PROTOCOL_VERSION:
            raise AgentError(
                f"{self.name}: agent speaks protocol {message.protocol}, master {wire.PROTOCOL_VERSION}"
            )
        if message.hash != sha256:
            raise AgentError(f"{self.name}: agent runs archive {message.hash[:12]}, expected {sha256[:12]}")
        return message

    async def _raw_line(self) -> bytes:
        while not self._lines:
            if self._eof:
                raise TransportError(f"{self.name}: agent exited during bootstrap")
            await self._fill()
        line = self._lines.popleft()
        if line is None:
            raise AgentError(f"{self.name}: line longer than {wire.MAX_LINE} bytes during bootstrap")
        return line.rstrip(b"\r")

    async def _abandon(self) -> None:
        """A start that failed: kill and reap whatever was spawned, so nothing outlives the loop."""
        self._force_kill()
        self.closed = True
        try:
            await asyncio.wait_for(self._terminate(0.2), 3.0)
        except Exception:  # noqa: BLE001 - best effort
            pass

    def _force_kill(self) -> None:
        try:
            self.kill()
        except Exception:  # noqa: BLE001 - best effort on a link that never came up
            pass

    async def close(self, grace: float = 2.0) -> None:
        """Ask the agent to shut down (cancelling its tasks), then terminate it after ``grace``."""
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            try:
                self._writer.write(_encode(wire.Shutdown(op="shutdown")))
                await asyncio.wait_for(self._writer.drain(), 1.0)
            except Exception:  # noqa: BLE001 - the pipe may already be gone
                pass
        await self._terminate(grace)

    # -- messages ---------------------------------------------------------------------

    async def send(self, message: Any) -> None:
        await self.send_many([message])

    async def send_many(self, messages: list[Any]) -> None:
        """Write several messages with one drain (a dispatch batch costs one syscall-ish)."""
        from console.fleet.protocol import encode_many

        await self.send_raw(encode_many(messages))

    async def send_raw(self, data: bytes) -> None:
        """Write pre-encoded protocol lines (the master's dispatch fast path)."""
        if self._writer is None or self.closed:
            raise TransportError(f"{self.name}: link is not open")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, BrokenPipeError, OSError) as err:
            raise TransportError(f"{self.name}: write failed: {err}") from err

    async def recv(self) -> Any | None:
        """The next validated message, or None at EOF. An invalid or over-long line raises AgentError
        (the stream stays usable: the next call returns the line after it)."""
        while not self._lines:
            if self._eof:
                return None
            await self._fill()
        line = self._lines.popleft()
        if line is None:
            raise AgentError(f"{self.name}: line longer than {wire.MAX_LINE} bytes")
        return self._parse(line)

    async def _fill(self) -> None:
        assert self._reader is not None
        try:
            chunk = await self._reader.read(READ_CHUNK)
        except (ConnectionError, OSError) as err:
            self._eof = True
            raise TransportError(f"{self.name}: read failed: {err}") from err
        if not chunk:
            self._eof = True
            return
        parts = chunk.split(b"\n")
        for index, part in enumerate(parts[:-1]):
            if index == 0:
                if self._skipping:  # the rest of an over-long line: already reported
                    self._skipping = False
                    self._partial.clear()
                    continue
                self._partial += part
                part = bytes(self._partial)
                self._partial.clear()
            self._lines.append(part if len(part) <= wire.MAX_LINE else None)
        if len(parts) == 1 and self._skipping:
            return
        self._partial += parts[-1]
        if len(self._partial) > wire.MAX_LINE:
            self._partial.clear()
            self._skipping = True
            self._lines.append(None)

    def _parse(self, line: bytes) -> Any:
        from console.fleet.protocol import parse_agent_line

        try:
            return parse_agent_line(line)
        except AgentError as err:
            raise AgentError(f"{self.name}: {err}") from err


def _encode(message: Any) -> bytes:
    from console.fleet.protocol import encode

    return encode(message)


class LocalLink(AgentLink):
    """An agent subprocess on this machine, bootstrapped exactly like a remote one."""

    kind = "local"

    def __init__(self, name: str, slots: int = LOCAL_SLOTS, *, python: str | None = None) -> None:
        super().__init__(name, slots, address="localhost")
        self.python = python or sys.executable
        #: the agent process (an asyncio one, or a prespawn.AdoptedProcess started before the loop)
        self.process: Any = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def _open(self, sha256: str, size: int) -> tuple[ByteReader, ByteWriter]:
        from agentkit.bootstrap import stage0_argv

        argv = stage0_argv(self.python, sha256, size)
        from console.fleet import prespawn

        started = prespawn.take(argv)
        if started is not None:  # started while the master was still starting: same argv, same pipes
            reader, writer, self.process = await prespawn.adopt(started)
            return reader, writer
        try:
            # own session: a Ctrl-C in the operator's terminal does not reach the agent;
            # the master shuts it down (or it exits at stdin EOF when the master dies)
            self.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as err:
            raise TransportError(f"{self.name}: cannot start {self.python}: {err.strerror or err}") from err
        assert self.process.stdout is not None and self.process.stdin is not None
        return self.process.stdout, self.process.stdin

    async def _terminate(self, grace: float) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except Exception:  # noqa: BLE001
                pass
        try:
            await asyncio.wait_for(proc.wait(), grace)
            return
        except (TimeoutError, asyncio.TimeoutError):
            pass
        try:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 1.0)
        except (ProcessLookupError, TimeoutError, asyncio.TimeoutError):
            self.kill()
            try:
                await asyncio.wait_for(proc.wait(), 2.0)
            except (TimeoutError, asyncio.TimeoutError):
                pass

    def kill(self) -> None:
        """SIGKILL the agent and the process groups of its tools (they run in sessions of their own)."""
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        groups = _child_groups(proc.pid)
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _child_groups(pid: int) -> set[int]:
    """Process groups of ``pid``'s children (Linux /proc; empty elsewhere), never our own group."""
    groups: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return groups
    own = os.getpgrp()
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[1]) == pid and int(fields[2]) != own:
            groups.add(int(fields[2]))
    if pid != own:
        groups.add(pid)  # the agent's own session (start_new_session): anything left in it
    return groups
