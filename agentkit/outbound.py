"""The agent's way out: one ordered writer of protocol lines that batches what piles up.

Every line the agent writes goes through :class:`ProtocolWriter`, on a private copy
of the real stdout. Flushing once per line made a short task's ``done`` cost a
write system call of its own; here lines queue in order and whoever finds the
writer idle writes them all at once, so batching never adds a delay.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import IO, Any, List

from agentkit import wire

#: senders wait while this much output is queued behind a write the master is slow to read
MAX_PENDING_BYTES = 8 * 1024 * 1024


class ProtocolWriter:
    """The one way to write a protocol line: lines are queued in order and written in batches.

    A sender appends its line; if no other thread is writing, it writes everything
    queued (its line and whatever piled up meanwhile) and flushes once; otherwise the
    thread already writing takes it along. So a line never waits for a timer, and a
    burst of ``done`` lines costs one write instead of one each. The reading thread
    may ``hold`` its own lines while it works through one chunk of input (at most
    ``HOLD_MAX_S``): the answers to a batch of quick tasks leave in one write.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Condition(threading.Lock())
        self._pending: List[bytes] = []
        self._pending_bytes = 0
        self._writing = False
        #: thread ident whose lines are held until ``flush`` (0: nobody's)
        self._held_thread = 0
        self.broken = threading.Event()

    def send(self, message: Any) -> None:
        """Write one message as one line; a batch too big for ``wire.MAX_LINE`` is split, a single
        record that cannot be written (too big, NaN) is replaced by an ``error`` naming the task."""
        try:
            line = encode_line(message)
        except ValueError:
            line = b""
        if not line or len(line) >= wire.MAX_LINE:
            if isinstance(message, wire.Results) and len(message.records) > 1:
                half = len(message.records) // 2
                for part in (message.records[:half], message.records[half:]):
                    self.send(wire.Results(op="results", id=message.id, records=part))
                return
            reason = "%s message dropped: not encodable within %d bytes" % (
                getattr(message, "op", "?"),
                wire.MAX_LINE,
            )
            line = encode_line(wire.Error(op="error", error=reason, id=getattr(message, "id", None)))
        self.send_line(line)

    def send_line(self, line: bytes) -> None:
        hold = self._held_thread == threading.get_ident()
        with self._lock:
            if self.broken.is_set():
                return
            while self._writing and self._pending_bytes >= MAX_PENDING_BYTES and not self.broken.is_set():
                self._lock.wait(0.5)  # the master reads slowly: senders wait instead of piling up memory
            self._pending.append(line)
            self._pending_bytes += len(line)
            if hold or self._writing:
                return
            self._writing = True
        self._write_pending()

    def hold(self) -> None:
        """Keep this thread's lines queued until :meth:`flush` (other threads' sends still write)."""
        self._held_thread = threading.get_ident()

    def flush(self) -> None:
        """Write whatever is queued now (unless another thread is writing it already); stop holding."""
        if self._held_thread == threading.get_ident():
            self._held_thread = 0
        with self._lock:
            if self._writing or not self._pending:
                return
            self._writing = True
        self._write_pending()

    def wait_written(self, timeout: float) -> None:
        """Until nothing is queued or being written (at exit), at most ``timeout`` seconds."""
        self.flush()
        ends = time.monotonic() + timeout
        with self._lock:
            while (self._writing or self._pending) and not self.broken.is_set():
                left = ends - time.monotonic()
                if left <= 0:
                    return
                self._lock.wait(left)

    def _write_pending(self) -> None:
        while True:
            with self._lock:
                if not self._pending or self.broken.is_set():
                    self._writing = False
                    self._lock.notify_all()
                    return
                data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
                self._pending = []
                self._pending_bytes = 0
                self._lock.notify_all()
            try:
                self._stream.write(data)
                self._stream.flush()
            except (OSError, ValueError):
                self.broken.set()  # the master is gone: the read loop ends at EOF


#: compact JSON; NaN/Infinity refused (they are not JSON); one encoder, not one per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def encode_line(message: Any) -> bytes:
    """Compact JSON + newline; NaN/Infinity are refused (ValueError): they are not JSON."""
    return _ENCODER.encode(as_payload(message)).encode("utf-8", "replace") + b"\n"


def as_payload(message: Any) -> Any:
    """A message as plain JSON data. ``results`` skip ``dataclasses.asdict``: its recursive deep
    copy made batching ~10x slower than the JSON encoding itself; the other messages are flat
    (their fields are plain JSON values), so their ``__dict__`` is already the payload."""
    if isinstance(message, wire.Results):
        records = [{"type": r.type, "target": r.target, "data": r.data} for r in message.records]
        return {"op": message.op, "id": message.id, "records": records}
    if isinstance(message, _FLAT_MESSAGES):
        return message.__dict__
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return dataclasses.asdict(message)
    return message


_FLAT_MESSAGES = (wire.Done, wire.Pong, wire.Progress, wire.Error, wire.Hello)
