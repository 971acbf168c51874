"""An asyncssh channel as the byte pipe ``AgentLink`` speaks JSON lines over.

``AgentLink`` (console.fleet.links) only needs ``read`` / ``write`` / ``drain`` / ``close``; these
adapters give it the channel's stdout and stdin with asyncssh's exceptions turned into
``ConnectionError`` (which the base class reports as TransportError), so no asyncssh type
escapes the SSH transport. ``ack_promptly`` is the one TCP tweak the channel's opening needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import asyncssh

from console.sanitize import safe_line


def error_reason(err: BaseException) -> str:
    """A short one-line reason for an OS or asyncssh error (errno text when there is one)."""
    errno = getattr(err, "errno", None)
    if errno:
        return os.strerror(errno)
    text = getattr(err, "reason", "") or getattr(err, "strerror", "") or str(err) or type(err).__name__
    return safe_line(" ".join(str(text).split()), 400)  # a server's disconnect reason is the box's text


def ack_promptly(conn: asyncssh.SSHClientConnection) -> None:
    """Make the kernel ACK the server's next segments at once while the channel opens.

    sshd leaves Nagle on until a session starts, and right after login it sends an unsolicited
    host-keys notice; its channel-open confirmation then waits behind that segment's ACK, which
    Linux delays ~40 ms because our last send made the socket look interactive. Leaving that
    mode (TCP_QUICKACK) just after the channel-open request goes out, before the loop reads
    the notice, takes ~40 ms off every bootstrap. The callback is queued first so it runs
    after create_process sent its request and before the loop handles the reply.
    """
    sock = conn.get_extra_info("socket")
    option = getattr(socket, "TCP_QUICKACK", None)
    if sock is None or option is None:  # not Linux: nothing to tune
        return

    def quickack() -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)

    asyncio.get_running_loop().call_soon(quickack)


class ChannelReader:
    """The channel's stdout as a ByteReader: a lost connection is a ConnectionError (the base
    class turns it into TransportError), never an asyncssh exception."""

    def __init__(self, stream: asyncssh.SSHReader[bytes]) -> None:
        self._stream = stream

    async def read(self, n: int = -1) -> bytes:
        try:
            return await self._stream.read(n)
        except asyncssh.Error as err:
            raise ConnectionResetError(error_reason(err)) from err


class ChannelWriter:
    """The channel's stdin as a ByteWriter, asyncssh errors mapped like ``ChannelReader``."""

    def __init__(self, stream: asyncssh.SSHWriter[bytes]) -> None:
        self._stream = stream

    def write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
        except asyncssh.Error as err:
            raise ConnectionResetError(error_reason(err)) from err

    async def drain(self) -> None:
        try:
            await self._stream.drain()
        except asyncssh.Error as err:
            raise ConnectionResetError(error_reason(err)) from err

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()
