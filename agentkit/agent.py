"""The agent's JSON-lines loop: tasks in threads, batched results, cancel, ping, shutdown.

Read :mod:`agentkit` (the package docstring) for the protocol. The shape here:
the main thread reads stdin line by line and never blocks on a task; each task
gets a supervisor thread that starts the tool in a worker thread and watches
for completion, cancel, and the task's timeout; one flusher thread turns every
task's queued records into ``results`` messages every ~100 ms; every line
written goes through one locked writer on a private copy of the real stdout
(fd 1 itself points at /dev/null, so a child process or a stray print can
never corrupt the stream).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Dict, Optional, Sequence

from agentkit import wire

if TYPE_CHECKING:
    from agentkit.context import TaskContext

# Start-up cost matters (every box, every run, before its hello): what only tasks need
# (agentkit.context and its subprocess, the tools, traceback) is imported when a task
# first needs it, and ``hello`` below does without shutil and socket.

#: External programs worth telling the master about (exec templates, icmp ping, baseline commands).
PROGRAMS = (
    "nmap",
    "masscan",
    "zmap",
    "naabu",
    "ping",
    "curl",
    "openssl",
    "dig",
    "sh",
    "systemctl",
    "sysctl",
    "dpkg",
)
FLUSH_INTERVAL = 0.1
#: After cancel/timeout, how long the tool thread may take to notice before ``done`` goes out anyway.
STOP_GRACE = 0.5


class ProtocolWriter:
    """The one way to write a protocol line: serialized by a lock, flushed per line."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
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
        with self._lock:
            if self.broken.is_set():
                return
            try:
                self._stream.write(line)
                self._stream.flush()
            except (OSError, ValueError):
                self.broken.set()  # the master is gone: the read loop ends at EOF


def encode_line(message: Any) -> bytes:
    """Compact JSON + newline; NaN/Infinity are refused (ValueError): they are not JSON."""
    text = json.dumps(
        as_payload(message), separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
    )
    return text.encode("utf-8", "replace") + b"\n"


def as_payload(message: Any) -> Any:
    """A message as plain JSON data. ``results`` skip ``dataclasses.asdict``: its recursive deep
    copy made batching ~10x slower than the JSON encoding itself."""
    if isinstance(message, wire.Results):
        records = [{"type": r.type, "target": r.target, "data": r.data} for r in message.records]
        return {"op": message.op, "id": message.id, "records": records}
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return dataclasses.asdict(message)
    return message


def take_stdout() -> IO[bytes]:
    """Keep the real stdout for the protocol; point fd 1 (and ``sys.stdout``) elsewhere."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    private = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.stdout = sys.stderr
    return os.fdopen(private, "wb")


def archive_hash() -> str:
    """The sha256 of the archive this code runs from, or of ``build_archive()`` in a source tree."""
    import agentkit

    if not getattr(agentkit, "__file__", None):
        return "unknown"  # imported from memory without a hash handed over (stage 0 always hands one)
    container = os.path.dirname(os.path.dirname(os.path.abspath(agentkit.__file__ or "")))
    if os.path.isfile(container):
        import hashlib

        with open(container, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    from agentkit.archive import build_archive

    return build_archive()[1]


def find_programs(names: Sequence[str], search_path: Optional[str] = None) -> Dict[str, str]:
    """name -> first executable file of that name on PATH (``shutil.which`` without importing
    shutil, and one pass over PATH for all names: ``hello`` runs it before anything else)."""
    if search_path is None:
        search_path = os.environ.get("PATH", os.defpath)
    found: Dict[str, str] = {}
    for folder in search_path.split(os.pathsep):
        if not folder:
            continue
        for name in names:
            if name in found:
                continue
            path = os.path.join(folder, name)
            if os.access(path, os.X_OK) and os.path.isfile(path):
                found[name] = path
    return {name: found[name] for name in names if name in found}


def hello(archive_sha: str) -> wire.Hello:
    from agentkit.tools import REGISTRY  # names only: no tool module is imported here

    return wire.Hello(
        op="hello",
        protocol=wire.PROTOCOL_VERSION,
        hash=archive_sha,
        python="%d.%d.%d" % sys.version_info[:3],
        pid=os.getpid(),
        tools=sorted(REGISTRY),
        programs=find_programs(PROGRAMS),
        hostname=os.uname().nodename,  # what socket.gethostname() returns, without importing socket
    )


class RunningTask:
    def __init__(self, task: wire.Task, ctx: TaskContext) -> None:
        self.task = task
        self.ctx = ctx
        self.cancel_requested = threading.Event()
        self.thread: Optional[threading.Thread] = None


class Agent:
    """Serves one master over a byte stream pair until shutdown or EOF."""

    def __init__(self, writer: ProtocolWriter) -> None:
        self.writer = writer
        self._lock = threading.Lock()
        self._tasks: Dict[str, RunningTask] = {}
        self._stopping = threading.Event()

    # -- the read loop -----------------------------------------------------------

    def serve(self, stdin: IO[bytes]) -> int:
        flusher = threading.Thread(target=self._flush_loop, name="flusher", daemon=True)
        flusher.start()
        try:
            while not self.writer.broken.is_set():
                line = stdin.readline(wire.MAX_LINE + 1)
                if not line:
                    break
                if len(line) > wire.MAX_LINE and not line.endswith(b"\n"):
                    self._error("line longer than %d bytes" % wire.MAX_LINE)
                    if not self._skip_rest_of_line(stdin):
                        break
                    continue
                if not line.strip():
                    continue
                if not self.handle_line(line):
                    break
        finally:
            self.shutdown()
        return 0

    @staticmethod
    def _skip_rest_of_line(stdin: IO[bytes]) -> bool:
        while True:
            chunk = stdin.readline(wire.MAX_LINE + 1)
            if not chunk:
                return False
            if chunk.endswith(b"\n"):
                return True

    def handle_line(self, line: bytes) -> bool:
        """Handle one message; False means stop serving (shutdown)."""
        try:
            message = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            self._error("malformed JSON: %s" % str(err)[:200])
            return True
        except RecursionError:
            self._error("malformed JSON: nested too deeply")
            return True
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            self._error("a message must be a JSON object with an 'op' string")
            return True
        op = message["op"]
        if op == "task":
            self._start_task(message)
        elif op == "cancel":
            self._cancel(message)
        elif op == "ping":
            seq = message.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                self.writer.send(wire.Pong(op="pong", seq=seq))
            else:
                self._error("ping: seq must be an integer")
        elif op == "shutdown":
            return False
        else:
            self._error("unknown op %r" % op[:64])
        return True

    def _error(self, text: str, task_id: Optional[str] = None) -> None:
        self.writer.send(wire.Error(op="error", error=text, id=task_id))

    # -- tasks -------------------------------------------------------------------

    def _start_task(self, message: Dict[str, Any]) -> None:
        from agentkit.context import TaskContext
        from agentkit.tools import REGISTRY

        task_id = message.get("id")
        if not isinstance(task_id, str) or not task_id:
            self._error("task: id must be a non-empty string")
            return
        problem = _task_problem(message)
        if problem:
            self._error("task: %s" % problem, task_id)
            return
        task = wire.Task(
            op="task",
            id=task_id,
            tool=message["tool"],
            params=message.get("params") or {},
            targets=list(message.get("targets") or []),
            timeout=float(message.get("timeout", 600.0)),
            scope=list(message.get("scope") or []),
        )
        with self._lock:
            if task_id in self._tasks:
                self._error("task: id %r is already running" % task_id, task_id)
                return
            if self._stopping.is_set():
                self.writer.send(wire.Done(op="done", id=task_id, ok=False, error="agent is shutting down"))
                return
            ctx = TaskContext(
                task_id,
                task.timeout,
                task.scope,
                lambda records: self.writer.send(wire.Results(op="results", id=task_id, records=records)),
                lambda done, total: self.writer.send(
                    wire.Progress(op="progress", id=task_id, done=done, total=total)
                ),
            )
            running = RunningTask(task, ctx)
            self._tasks[task_id] = running
        if task.tool not in REGISTRY:
            self._finish(running, "unknown tool: %s" % task.tool[:64])
            return
        running.thread = threading.Thread(
            target=self._supervise, args=(running,), name="task-" + task_id, daemon=True
        )
        running.thread.start()

    def _supervise(self, running: RunningTask) -> None:
        from agentkit.context import TaskStopped, ToolError
        from agentkit.tools import REGISTRY

        task, ctx = running.task, running.ctx
        finished = threading.Event()
        outcome: Dict[str, Optional[str]] = {"error": "tool ended without a result"}

        def work() -> None:
            try:
                try:
                    tool = REGISTRY[task.tool]  # the tool's module is imported on its first task
                except ImportError as err:
                    raise ToolError("tool %s is not available on this box: %s" % (task.tool, err)) from err
                tool(ctx, task.targets, task.params)
                outcome["error"] = None
            except TaskStopped as err:
                outcome["error"] = str(err)
            except ToolError as err:
                outcome["error"] = str(err) or type(err).__name__
            except Exception as err:  # a tool bug is the task's failure, never the agent's crash
                import traceback

                where = traceback.extract_tb(err.__traceback__)[-1:]
                place = " (%s:%s)" % (os.path.basename(where[0].filename), where[0].lineno) if where else ""
                outcome["error"] = "%s: %s%s" % (type(err).__name__, err, place)
            finally:
                finished.set()

        worker = threading.Thread(target=work, name="tool-" + task.id, daemon=True)
        worker.start()
        reason: Optional[str] = None
        while not finished.wait(0.05):
            if running.cancel_requested.is_set():
                reason = "cancelled"
            elif time.monotonic() >= ctx.deadline:
                reason = "timeout after %gs" % task.timeout
            if reason:
                ctx.stop()
                finished.wait(STOP_GRACE)
                break
        ctx.kill_processes()
        if reason is None and outcome["error"] is not None and ctx.cancelled.is_set():
            # the tool failed BECAUSE it was stopped (e.g. its killed child exited -9): say why
            reason = "cancelled" if running.cancel_requested.is_set() else "timeout after %gs" % task.timeout
        self._finish(running, reason or outcome["error"])

    def _finish(self, running: RunningTask, error: Optional[str]) -> None:
        running.ctx.close()
        with self._lock:
            self._tasks.pop(running.task.id, None)
        self.writer.send(wire.Done(op="done", id=running.task.id, ok=error is None, error=error))

    def _cancel(self, message: Dict[str, Any]) -> None:
        task_id = message.get("id")
        if not isinstance(task_id, str):
            self._error("cancel: id must be a string")
            return
        with self._lock:
            running = self._tasks.get(task_id)
        if running is None:
            self._error("cancel: no running task %r" % task_id[:64], task_id)
            return
        running.cancel_requested.set()
        running.ctx.stop()  # kill child processes now, not at the supervisor's next tick

    def _flush_loop(self) -> None:
        while not self._stopping.wait(FLUSH_INTERVAL):
            with self._lock:
                contexts = [running.ctx for running in self._tasks.values()]
            for ctx in contexts:
                ctx.flush()

    def kill_everything(self) -> None:
        """Last resort (SIGTERM/SIGHUP): kill every tool process group, no waiting."""
        with self._lock:
            running = list(self._tasks.values())
        for item in running:
            item.ctx.stop()

    def shutdown(self) -> None:
        """Cancel everything, let the supervisors write their ``done`` lines, stop flushing."""
        with self._lock:
            self._stopping.set()
            running = list(self._tasks.values())
        for item in running:
            item.cancel_requested.set()
            item.ctx.stop()
        ends = time.monotonic() + 2 * STOP_GRACE + 0.5
        for item in running:
            if item.thread is not None:
                item.thread.join(max(0.0, ends - time.monotonic()))


def _task_problem(message: Dict[str, Any]) -> Optional[str]:
    if not isinstance(message.get("tool"), str):
        return "tool must be a string"
    params = message.get("params", {})
    if params is not None and not isinstance(params, dict):
        return "params must be an object"
    targets = message.get("targets", [])
    if targets is not None and (
        not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)
    ):
        return "targets must be a list of strings"
    scope = message.get("scope", [])
    if scope is not None and (not isinstance(scope, list) or not all(isinstance(s, str) for s in scope)):
        return "scope must be a list of strings"
    timeout = message.get("timeout", 600.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 7 * 86400:
        return "timeout must be a positive number of seconds"
    return None


def install_signal_handlers(agent: Agent) -> None:
    """SIGTERM/SIGHUP (a dropped SSH session): take the tools' process groups down with us.

    Tool children live in their own sessions (so cancel can kill their whole
    tree), which also means a signal to the agent alone would not reach them.
    """

    def on_signal(signum: int, frame: Any) -> None:
        agent.kill_everything()
        os._exit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            try:
                signal.signal(number, on_signal)
            except (OSError, ValueError):
                pass


def main(archive_sha: Optional[str] = None) -> int:
    """Run the agent on this process's stdin/stdout; the hello carries ``archive_sha``."""
    stream = take_stdout()
    writer = ProtocolWriter(stream)
    writer.send(hello(archive_sha or archive_hash()))
    # after the hello (the master is reading it meanwhile), before any task: scans keep
    # thousands of sockets in flight, and the tools' children inherit the higher limit too
    from agentkit.tools.connect_engine import raise_fd_limit

    raise_fd_limit()
    agent = Agent(writer)
    install_signal_handlers(agent)
    code = agent.serve(sys.stdin.buffer)
    try:
        stream.flush()
    except (OSError, ValueError):
        pass
    return code
