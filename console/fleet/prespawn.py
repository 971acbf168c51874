"""Local agents started before the master has finished starting itself.

A headless ``run`` spends most of its first ~0.3 s importing and building what
validates workflows and agent messages; a local agent's own start (a Python,
stage 0, the agent's imports, its hello) takes ~50 ms more after that on the
critical path. Started first, on the other core, it is waiting with its hello
by the time the fleet asks for it: :func:`spawn` starts the processes (the
same stage-0 argv, session and pipes ``LocalLink`` uses) and
:func:`take` hands one to the ``LocalLink`` whose argv matches, which then
runs the same handshake over its pipes. One that is never taken (bad input
found later, an inventory fleet) reads EOF on its stdin when this process
exits and ends; :func:`discard` ends them earlier.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import subprocess
import sys
from typing import Any

_SPARE: list[tuple[list[str], subprocess.Popen[bytes]]] = []


def spawn(count: int, python: str | None = None) -> None:
    """Start ``count`` local agents now (nothing if the archive or a process cannot be had)."""
    from agentkit.archive import build_archive
    from agentkit.bootstrap import stage0_argv

    archive, sha = build_archive()
    argv = stage0_argv(python or sys.executable, sha, len(archive))
    for _ in range(count):
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            return
        if not _SPARE:
            atexit.register(discard)
        _confine(proc.pid)
        _SPARE.append((argv, proc))


def take(argv: list[str]) -> subprocess.Popen[bytes] | None:
    """A started agent with exactly this argv that is still alive, or None."""
    for index, (spare_argv, proc) in enumerate(_SPARE):
        if spare_argv == argv and proc.poll() is None:
            del _SPARE[index]
            _release(proc.pid)
            return proc
    return None


def _confine(pid: int) -> None:
    """Keep a starting agent off the first CPU this process may use, so that the master's own start (the
    longer one, on the critical path) always finds a CPU free instead of sharing one with its agents (on
    a 2-CPU machine, two agents and the master otherwise share two cores). With one CPU there is nothing
    to spare; with many, the agents still have all the others."""
    cpus = sorted(_cpus())
    if len(cpus) >= 2:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, set(cpus[1:]))


def _release(pid: int) -> None:
    """The agent has work to do: every CPU this process may use is its again."""
    cpus = _cpus()
    if len(cpus) >= 2:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


def _cpus() -> set[int]:
    getter = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere nothing is confined
    return set(getter(0)) if getter is not None else set()


def discard() -> None:
    """End the agents nobody took: EOF on stdin (stage 0 and the agent exit on it), then SIGKILL."""
    while _SPARE:
        _, proc = _SPARE.pop()
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(2.0)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()


class AdoptedProcess:
    """What ``LocalLink`` needs of an ``asyncio.subprocess.Process``, for a process started earlier."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin: asyncio.StreamWriter) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.stdin = stdin

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    async def wait(self) -> int:
        if self._proc.poll() is None:
            await _exited(self._proc)
        return int(self._proc.returncode)

    def terminate(self) -> None:
        self._proc.terminate()


async def _exited(proc: subprocess.Popen[bytes]) -> None:
    """Until ``proc`` has exited: woken by its pidfd where the kernel has them (the master waits for its
    agents at the end of every run; a 10 ms poll was a visible part of a short run), else polled."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)  # type: ignore[attr-defined, unused-ignore]
    except (AttributeError, OSError):
        fd = None
    if fd is None:
        while proc.poll() is None:
            await asyncio.sleep(0.01)
        return
    try:
        while proc.poll() is None:
            readable: asyncio.Future[None] = loop.create_future()

            def wake(future: asyncio.Future[None] = readable) -> None:
                if not future.done():
                    future.set_result(None)

            loop.add_reader(fd, wake)
            try:
                await asyncio.wait_for(readable, 1.0)  # a second's poll as well, whatever the pidfd says
            except (TimeoutError, asyncio.TimeoutError):
                pass
            finally:
                loop.remove_reader(fd)
    finally:
        os.close(fd)


async def adopt(proc: subprocess.Popen[bytes]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Any]:
    """Event-loop streams over a started process's pipes: (its stdout, its stdin, the process)."""
    assert proc.stdout is not None and proc.stdin is not None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20, loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), proc.stdout)
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop), proc.stdin
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return reader, writer, AdoptedProcess(proc, writer)
