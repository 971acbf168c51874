"""Tool processes die with their agent: cancel, stop, timeout, kill -9 of the agent, setsid included.

Why three mechanisms: a tool runs in a session of its own (so cancel can kill its whole
process group), which also means no signal to the agent reaches it, and a tool that calls
``setsid`` itself (or double-forks) leaves that group too. So:

* every tool process carries ``FLEETSCAN_AGENT_MARK=<agent mark>:<task id>`` in its
  environment, which its descendants inherit whatever session they move to; a sweep over
  ``/proc`` finds and kills them by that mark (cancel and timeout of one task, the agent's
  stop, its SIGTERM/SIGHUP);
* in the child between fork and exec, ``PR_SET_PDEATHSIG`` (SIGKILL) ties the tool to the
  agent's life, and the agent is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so an orphaned
  grandchild reparents to the agent (which reaps it) rather than to init while the agent lives;
* a tiny watchdog process in a session of its own, started with the agent's first tool, holds
  the read end of a pipe whose write end only the agent has: when the agent dies in any way
  (kill -9 included) the read ends, and the watchdog sweeps the agent's mark from ``/proc``.

Linux only for prctl and ``/proc``; elsewhere (or without ctypes) the agent still kills the
process groups it started and the rest degrades to nothing, never to an error. Stdlib only,
python 3.8.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set

MARK_ENV = "FLEETSCAN_AGENT_MARK"
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: passes over /proc per sweep (a tool forking while it is swept is caught by the next pass)
SWEEP_PASSES = 3

#: The watchdog's whole program (``python -c``): wait for EOF on the pipe, then sweep the mark.
WATCHDOG_SOURCE = r"""
import os, signal, sys, time
if os.fork():
    os._exit(0)  # the agent reaps this parent at once; the watchdog is nobody's child of the agent's
fd, needle = int(sys.argv[1]), ("%s=%s:" % (sys.argv[2], sys.argv[3])).encode()
while True:
    try:
        if not os.read(fd, 4096):
            break
    except InterruptedError:
        continue
    except OSError:
        break
me = os.getpid()
for _ in range(5):
    hit = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if (b"\0" + environ).find(b"\0" + needle) >= 0:
            hit += 1
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    if not hit:
        break
    time.sleep(0.1)
"""


def _prctl() -> Optional[Callable[..., int]]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


class Reaper:
    """The agent's one record of what it must take down with it (thread-safe)."""

    def __init__(self) -> None:
        self.mark = "%d-%s" % (os.getpid(), os.urandom(6).hex())
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._started = False
        self._keep_alive_fd: Optional[int] = None
        #: pids of children a Popen object waits for (never reaped here)
        self._own: Set[int] = set()
        self._prctl = _prctl()
        self.proc_available = os.path.isdir("/proc/self")

    # -- start ---------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Become a subreaper and start the watchdog (once, before the first tool process)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            if self.proc_available:
                self._start_watchdog()
            if self._prctl is not None:  # after the watchdog left: it must not reparent to us
                self._prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def _start_watchdog(self) -> None:
        """A process outside the agent's tree (double fork, own session) that sweeps the agent's mark
        once the agent is gone, however it went (kill -9 included)."""
        read_fd, write_fd = os.pipe()  # both non-inheritable: no tool ever holds the write end
        try:
            watchdog = subprocess.Popen(
                [sys.executable or "python3", "-S", "-c", WATCHDOG_SOURCE, str(read_fd), MARK_ENV, self.mark],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(read_fd,), start_new_session=True, close_fds=True,
            )
            watchdog.wait(10)  # the first fork's parent exits at once
            self._keep_alive_fd = write_fd
        except (OSError, subprocess.TimeoutExpired):
            os.close(write_fd)
        finally:
            os.close(read_fd)

    # -- spawning ------------------------------------------------------------------

    def popen_kwargs(self, task_id: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        """The Popen keyword arguments that tie a tool process to this agent and task."""
        self.ensure_started()
        env = dict(kwargs.get("env") or os.environ)
        env[MARK_ENV] = "%s:%s" % (self.mark, task_id)
        kwargs = dict(kwargs, env=env)
        if self._prctl is not None:
            kwargs["preexec_fn"] = self._in_child
        return kwargs

    def _in_child(self) -> None:
        """Between fork and exec: die with the agent (and at once if it is already gone)."""
        assert self._prctl is not None
        self._prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != self._pid:
            os._exit(137)

    def started(self, pid: int) -> None:
        with self._lock:
            self._own.add(pid)

    def ended(self, pid: int) -> None:
        with self._lock:
            self._own.discard(pid)

    # -- sweeping ------------------------------------------------------------------

    def sweep(self, task_id: Optional[str] = None) -> int:
        """SIGKILL every live process carrying this agent's mark (one task's, or all); reap
        the orphans that reparented to us. Returns how many were signalled."""
        if not self._started or not self.proc_available:
            return 0
        needle = ("%s=%s:%s" % (MARK_ENV, self.mark, "" if task_id is None else task_id + "\0")).encode()
        skip = {self._pid}
        total = 0
        for _ in range(SWEEP_PASSES):
            hits = _kill_marked(needle, skip)
            total += len(hits)
            if not hits:
                break
            time.sleep(0.02)
        self.reap_orphans()
        return total

    def reap_orphans(self) -> None:
        """Reap zombie orphans that reparented to this subreaper (children no Popen waits for)."""
        if not self._started or not self.proc_available:
            return
        with self._lock:
            own = set(self._own)
        try:
            entries = os.listdir("/proc")
        except OSError:
            return
        for pid in _children_of(self._pid, entries):
            if pid not in own:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except (ChildProcessError, OSError):
                    pass


def _children_of(parent: int, entries: List[str]) -> List[int]:
    found = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[0] == b"Z" and int(fields[1]) == parent:
            found.append(int(entry))
    return found


def _kill_marked(needle: bytes, skip: Set[int]) -> List[int]:
    hits: List[int] = []
    probe = b"\0" + needle
    try:
        entries = os.listdir("/proc")
    except OSError:
        return hits
    for entry in entries:
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as handle:
                environ = b"\0" + handle.read()
        except OSError:
            continue
        if probe in environ:
            try:
                os.kill(int(entry), signal.SIGKILL)
                hits.append(int(entry))
            except OSError:
                pass
    return hits


_REAPER: Optional[Reaper] = None
_REAPER_LOCK = threading.Lock()


def reaper() -> Reaper:
    """This process's one reaper (created on first use: most agents never start a process)."""
    global _REAPER
    with _REAPER_LOCK:
        if _REAPER is None or _REAPER._pid != os.getpid():
            _REAPER = Reaper()
        return _REAPER
