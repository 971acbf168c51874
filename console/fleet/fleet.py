"""The fleet: every agent link, its free slots, and its health.

The scheduler asks the fleet for "a box with a free slot, least loaded first,
preferably one this task has not failed on"; the fleet keeps that answer true by
heartbeating every link (ping every second, three seconds of silence = dead),
setting aside boxes that keep failing, and reconnecting lost ones with backoff.
It never touches the store: it reports events and agent rows that the master
writes in its own batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agentkit import wire
from console.errors import AgentError, TransportError
from console.fleet.gate import ReadGate
from console.fleet.links import LOCAL_SLOTS, AgentLink, LocalLink
from console.fleet.stall import StallDetector
from console.sanitize import safe_line
from console.status import AGENT_LINKED, AgentState
from console.store.rows import AgentRow

PING_EVERY_S = 1.0
DEAD_AFTER_S = 3.0
#: consecutive failures (task failures or lost links) before a box is set aside
SET_ASIDE_AFTER = 5
SET_ASIDE_FOR_S = 60.0
RECONNECT_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
#: protocol errors on one link before it is dropped as broken
MAX_PROTOCOL_ERRORS = 20


@dataclass
class AgentHandle:
    """One box as the master sees it."""

    name: str
    kind: str
    slots: int
    factory: Callable[[], AgentLink]
    link: AgentLink | None = None
    state: AgentState = AgentState.STARTING
    busy: set[str] = field(default_factory=set)
    tasks_done: int = 0
    failures: int = 0
    consecutive: int = 0
    protocol_errors: int = 0
    last_seen: float = 0.0
    latency_ms: float | None = None
    error: str | None = None
    reconnects: int = 0
    retry_at: float = 0.0
    set_aside_until: float = 0.0
    reader: asyncio.Task[None] | None = None
    pings: dict[int, float] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.slots - len(self.busy) if self.state == AgentState.UP else 0

    def row(self, master_id: str) -> AgentRow:
        hello = self.link.hello if self.link is not None else None
        return AgentRow(
            name=self.name, kind=self.kind, address=self.link.address if self.link is not None else "",
            state=self.state, slots=self.slots, busy=len(self.busy), tasks_done=self.tasks_done,
            failures=self.failures,
            last_seen=time.time() - (time.monotonic() - self.last_seen) if self.last_seen else None,
            latency_ms=round(self.latency_ms, 2) if self.latency_ms is not None else None,
            python=hello.python if hello else None, programs=dict(hello.programs) if hello else {},
            hash=hello.hash if hello else None, error=safe_line(self.error) if self.error else self.error,
            master=master_id,
        )


MessageHandler = Callable[[AgentHandle, Any], None]
LostHandler = Callable[[AgentHandle, str], None]


def handles_for(source: str) -> list[AgentHandle]:
    """``local`` / ``local:N`` / an inventory file -> one handle per box (links built lazily)."""
    from console.fleet.agentsource import local_agent_names, parse_agents_source

    kind, value = parse_agents_source(source)
    if kind == "local":
        return [
            AgentHandle(name=n, kind="local", slots=LOCAL_SLOTS, factory=lambda n=n: LocalLink(n))  # type: ignore[misc]
            for n in local_agent_names(int(value))
        ]
    from console.fleet.inventory import load_inventory  # pydantic and the inventory's models: only for a file

    handles = []
    for spec in load_inventory(value):
        handles.append(AgentHandle(name=spec.name, kind="ssh", slots=int(spec.slots), factory=_ssh_factory(spec)))
    return handles


def _ssh_factory(spec: Any) -> Callable[[], AgentLink]:
    def build() -> AgentLink:
        from console.fleet.ssh.link import SshLink

        return SshLink(spec)

    return build


#: once one box is up, how long start() waits for the others before the master dispatches
START_GRACE_S = 1.0


class Fleet:
    """The set of links. ``on_message``/``on_lost`` are the master's synchronous callbacks."""

    def __init__(self, handles: list[AgentHandle], *, on_message: MessageHandler, on_lost: LostHandler) -> None:
        self.handles = {h.name: h for h in handles}
        self.on_message = on_message
        self.on_lost = on_lost
        #: (level, kind, message) for the master to store
        self.events: list[tuple[str, str, str]] = []
        self.changed = True
        self._archive: tuple[bytes, str] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seq = 0
        self.closing = False
        #: the master's own stalls restart the silence clocks (see console.fleet.stall)
        self.stall = StallDetector()
        self.stall.listeners.append(self._after_stall)
        #: backpressure: readers wait here while records wait for the store (console.fleet.gate)
        self.gate = ReadGate()
        self.gate.on_open.append(self._restart_silence)

    # -- start / stop -------------------------------------------------------------------

    async def start(self, archive: bytes, sha256: str) -> None:
        """Start every link concurrently. Return once all have answered, or START_GRACE_S after
        the first one is up: the boxes of a healthy fleet come up together and share the first
        tasks, while a box that hangs in its SSH login never holds the runs (it joins when it comes
        up). TransportError (with every reason) if none came up."""
        self._archive = (archive, sha256)
        pending: set[asyncio.Future[bool]] = set()
        for handle in self.handles.values():
            task = asyncio.ensure_future(self._connect(handle))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            pending.add(task)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if pending and any(not t.cancelled() and t.exception() is None and t.result() for t in done):
                await asyncio.wait(pending, timeout=START_GRACE_S)
                return
        if not any(h.state == AgentState.UP for h in self.handles.values()):
            reasons = "; ".join(f"{h.name}: {h.error}" for h in self.handles.values())
            raise TransportError(f"no agent came up ({reasons})")

    async def _connect(self, handle: AgentHandle) -> bool:
        assert self._archive is not None
        link = handle.factory()
        handle.link = link
        handle.state = AgentState.STARTING
        try:
            hello = await link.start(*self._archive)
        except Exception as err:  # noqa: BLE001 - any failure to start is this box's, reported
            handle.state = AgentState.DOWN
            handle.error = str(err)
            handle.failures += 1
            handle.retry_at = time.monotonic() + RECONNECT_BACKOFF_S[min(handle.reconnects, 5)]
            handle.reconnects += 1
            self._event("warning", "agent", f"agent {handle.name} down: {err}")
            self.changed = True
            return False
        handle.state = AgentState.UP
        handle.error = None
        handle.reconnects = 0
        handle.protocol_errors = 0
        handle.last_seen = time.monotonic()
        handle.pings.clear()
        cached = "pushed archive" if link.pushed else "archive cached"
        self._event(
            "info", "agent",
            f"agent {handle.name} up (python {hello.python}, {cached}, {link.bootstrap_s * 1000:.0f} ms)",
        )
        handle.reader = asyncio.create_task(self._read(handle, link))
        self.changed = True
        return True

    async def close(self) -> None:
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        links = []
        for handle in self.handles.values():
            if handle.reader is not None:
                handle.reader.cancel()
            if handle.link is not None:
                links.append(handle.link.close())
            if handle.state == AgentState.UP:
                handle.state = AgentState.DOWN
                handle.error = "master closed"
        await asyncio.gather(*links, return_exceptions=True)
        self.changed = True

    # -- reading ----------------------------------------------------------------------

    async def _read(self, handle: AgentHandle, link: AgentLink) -> None:
        reason = "agent closed its output"
        while True:
            try:
                message = await link.recv()
            except AgentError as err:
                handle.protocol_errors += 1
                self._event("warning", "protocol", str(err))
                if handle.protocol_errors >= MAX_PROTOCOL_ERRORS:
                    reason = f"too many protocol errors ({err})"
                    break
                continue
            except TransportError as err:
                reason = str(err)
                break
            except asyncio.CancelledError:
                return
            if message is None:
                break
            handle.last_seen = time.monotonic()
            if isinstance(message, wire.Pong):
                sent = handle.pings.pop(message.seq, None)
                if sent is not None:
                    handle.latency_ms = (handle.last_seen - sent) * 1000
                    self.changed = True
                continue
            try:
                self.on_message(handle, message)
            except Exception as err:  # noqa: BLE001 - a bad message never kills the reader
                self._event("error", "master", f"{handle.name}: handling {type(message).__name__}: {err!r}")
            if not self.gate.is_open:
                await self.gate.wait()  # not reading: the box's writes block until the store caught up
        if link is handle.link and not self.closing:
            self.lose(handle, reason)

    def lose(self, handle: AgentHandle, reason: str) -> None:
        """The link is gone: kill it, hand its tasks back (on_lost), plan a reconnect."""
        if handle.state not in AGENT_LINKED:
            return
        link = handle.link
        handle.state = AgentState.DOWN
        handle.error = reason
        handle.failures += 1
        handle.consecutive += 1
        handle.retry_at = time.monotonic() + RECONNECT_BACKOFF_S[min(handle.reconnects, 5)]
        self._event("warning", "agent", f"agent {handle.name} lost: {reason}")
        self.changed = True
        if handle.reader is not None and handle.reader is not asyncio.current_task():
            handle.reader.cancel()
        if link is not None:
            link.kill()
            self._spawn(link.close(grace=0.5))
        try:
            self.on_lost(handle, reason)
        finally:
            handle.busy.clear()

    # -- health -------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Ping up links every second; drop silent ones; reconnect lost ones with backoff.

        Silence is judged only after the stall detector had its say: a gap in the master's own
        loop restarts every agent's silence clock instead of losing them all."""
        self._spawn(self.stall.run())
        while True:
            await asyncio.sleep(PING_EVERY_S)
            self.stall.poll()
            now = time.monotonic()
            for handle in list(self.handles.values()):
                if handle.state == AgentState.SET_ASIDE and now >= handle.set_aside_until:
                    handle.state = AgentState.UP
                    handle.consecutive = SET_ASIDE_AFTER - 1
                    self._event("info", "agent", f"agent {handle.name} back from set-aside")
                    self.changed = True
                if handle.state in AGENT_LINKED and handle.link is not None:
                    if now - handle.last_seen > DEAD_AFTER_S and self.gate.is_open:
                        self.lose(handle, f"no answer for {DEAD_AFTER_S:g} s")
                        continue
                    self._seq += 1
                    handle.pings = {s: t for s, t in handle.pings.items() if now - t < 10}
                    handle.pings[self._seq] = now
                    try:
                        await asyncio.wait_for(handle.link.send(wire.Ping(op="ping", seq=self._seq)), 0.5)
                    except (TimeoutError, asyncio.TimeoutError):
                        pass  # a full pipe: the silence check above decides
                    except TransportError as err:
                        self.lose(handle, str(err))
                elif handle.state == AgentState.DOWN and now >= handle.retry_at and not self.closing:
                    handle.state = AgentState.STARTING
                    self._spawn(self._connect(handle))

    def _restart_silence(self) -> None:
        """Nobody's silence counts from before now (after a stall, or once the read gate opens)."""
        now = time.monotonic()
        for handle in self.handles.values():
            if handle.state in AGENT_LINKED:
                handle.last_seen = now
                handle.pings.clear()

    def _after_stall(self, gap: float) -> None:
        """The master stood still for ``gap`` s: nobody's silence counts from before it."""
        self._restart_silence()
        self._event(
            "warning", "stall",
            f"master stalled for {gap:.1f} s (suspend, SIGSTOP or a blocked loop): agents' silence clocks restarted",
        )
        self.changed = True

    def retry_now(self, names: Iterable[str]) -> list[str]:
        """The operator fixed a box (trusted its host key, or a check passed): a down one is
        reconnected at once, its backoff and give-up count reset. Returns the boxes reconnecting.
        Runs on the master's loop (the console's master shares the app's)."""
        started = []
        for name in names:
            handle = self.handles.get(name)
            if handle is None or handle.state != AgentState.DOWN or self.closing or self._archive is None:
                continue
            handle.reconnects = 0
            handle.retry_at = 0.0
            handle.state = AgentState.STARTING
            self._event("info", "agent", f"agent {name}: reconnecting now (operator)")
            self._spawn(self._connect(handle))
            started.append(name)
        self.changed = self.changed or bool(started)
        return started

    def task_failed(self, handle: AgentHandle) -> None:
        handle.failures += 1
        handle.consecutive += 1
        self.changed = True
        others = [h for h in self.handles.values() if h.state == AgentState.UP and h is not handle]
        if handle.consecutive >= SET_ASIDE_AFTER and handle.state == AgentState.UP and others:
            handle.state = AgentState.SET_ASIDE
            handle.set_aside_until = time.monotonic() + SET_ASIDE_FOR_S
            self._event(
                "warning", "agent", f"agent {handle.name} set aside after {handle.consecutive} failures in a row"
            )

    def task_ok(self, handle: AgentHandle) -> None:
        handle.tasks_done += 1
        handle.consecutive = 0
        self.changed = True

    # -- choosing ---------------------------------------------------------------------

    def up(self) -> list[AgentHandle]:
        return [h for h in self.handles.values() if h.state == AgentState.UP]

    def free_slots(self) -> int:
        return sum(h.free for h in self.handles.values())

    def total_slots(self) -> int:
        return sum(h.slots for h in self.up())

    def pick(self, avoid: Iterable[str] = (), pinned: str | None = None) -> AgentHandle | None:
        """Least loaded box with a free slot; one not in ``avoid`` when there is one."""
        if pinned is not None:
            handle = self.handles.get(pinned)
            if handle is not None and handle.state in AGENT_LINKED and len(handle.busy) < handle.slots:
                return handle
            return None
        free = [h for h in self.handles.values() if h.free > 0]
        if not free:
            return None
        avoid_set = set(avoid)
        fresh = [h for h in free if h.name not in avoid_set] or free
        return min(fresh, key=lambda h: (len(h.busy) / h.slots, len(h.busy), h.name))

    async def send(self, handle: AgentHandle, messages: list[Any]) -> bool:
        from console.fleet.protocol import encode_many

        return await self.send_raw(handle, encode_many(messages))

    async def send_raw(self, handle: AgentHandle, data: bytes) -> bool:
        """Write pre-encoded protocol lines to a linked box; a failed write loses the box (False)."""
        link = handle.link
        if link is None or handle.state not in AGENT_LINKED:
            return False
        try:
            await link.send_raw(data)
        except TransportError as err:
            self.lose(handle, str(err))
            return False
        return True

    def rows(self, master_id: str) -> list[AgentRow]:
        self.changed = False
        return [h.row(master_id) for h in self.handles.values()]

    # -- internals ----------------------------------------------------------------------

    def _event(self, level: str, kind: str, message: str) -> None:
        self.events.append((level, kind, safe_line(message)))  # box text (stderr, errors) inside

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def drain_events(self) -> list[tuple[str, str, str]]:
        events, self.events = self.events, []
        return events


async def cancel_quietly(task: asyncio.Task[Any] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
