"""fleetscan's thin agent: stdlib-only Python (>= 3.8) speaking JSON lines on stdin/stdout.

The agent is stateless: it runs the tasks it is told to run and forgets them.
Everything about "what comes next" is the master's. This docstring is the
protocol's reference; the message shapes themselves are defined once, in
:mod:`agentkit.wire`.

Framing
    One JSON object per line, UTF-8, ``\\n``-terminated, both directions. A
    line longer than ``wire.MAX_LINE`` (4 MiB) is never buffered whole: the
    agent answers ``error`` and skips to the next newline. Blank lines are
    ignored. A malformed line (bad JSON, not an object, no ``op``, unknown
    ``op``, wrong field types) gets one ``error`` line (with ``id`` when the
    message named a task) and the agent keeps serving.

Start-up and bootstrap
    The master runs stage 0 (:mod:`agentkit.bootstrap`):
    ``python3 -Sc STAGE0 SHA256 SIZE``. Stage 0 prints ``ERROR python too old
    X.Y`` (exit 3) on Python < 3.8; runs the cached
    ``~/.cache/fleetscan/agent-<sha256>.pyz`` when its hash checks out
    (from a digest-checked code cache compiled from it once per interpreter);
    otherwise prints ``NEED``, reads exactly SIZE archive bytes from stdin,
    verifies them (``ERROR hash mismatch``, exit 4), caches them atomically
    (or, with a read-only home, runs them from memory) and starts the agent.
    ``python3 agent.pyz`` (the archive from :mod:`agentkit.archive`) starts
    the agent directly. Either way the agent's first line is ``hello``:
    ``{op, protocol, hash (sha256 of the archive it runs from), python, pid,
    tools (built-in names), programs (name -> path on PATH: nmap, masscan,
    ping, ...), hostname}``. The master waits for it before sending anything.

master -> agent
    ``task {id, tool, params, targets, timeout, scope, exclude}``: start a task
    (``scope`` and ``exclude`` in the wire form of :mod:`agentkit.targets`); tasks
    run concurrently (a thread each; the master decides how many it sends).
    ``id`` is the master's opaque execution id; a second task with an id that
    is still running gets an ``error``. An unknown tool or bad parameters end
    the task at once with ``done`` ok=false.
    ``cancel {id}``: stop that task; its tool and ALL its child processes
    (each in its own process group) are killed within 1 s, then ``done``
    ok=false error="cancelled". Cancelling an unknown or finished id gets an
    ``error`` with that id.
    ``ping {seq}``: answered by ``pong {seq}`` right away, even while tasks run.
    ``shutdown``, or EOF on stdin: every task is cancelled (each still gets its
    ``done`` when time allows) and the agent exits promptly, so the agents of
    a dead master end by themselves.

agent -> master
    ``hello`` (first line, once). ``results {id, records}``: batches of records
    ``{type, target, data}`` streamed while the task runs (every ~100 ms, or
    as soon as ``wire.MAX_BATCH`` records wait). ``progress {id, done,
    total}``: throttled to a few per second per task, the last one always
    sent. ``done {id, ok, error}``: exactly one per task, always after that
    task's last ``results``/``progress``; a tool's exception is a ``done``
    with ok=false and the reason, never a crash. A task that outlives its
    ``timeout`` is stopped like a cancel and ends ``done`` ok=false
    error="timeout after Ns". ``blocked {id, host, address, reason}``: the
    task's guard did not contact ``address`` (what ``host`` resolved to),
    ``reason`` excluded / out of scope. ``pong {seq}``. ``error {error, id?}``.

Stream hygiene
    At start the agent duplicates the real stdout to a private descriptor and
    points fd 1 at /dev/null (``sys.stdout`` at stderr): no child process and
    no stray print can ever write into the protocol stream. Every protocol
    line goes through one locked writer.

Trust
    The master trusts nothing an agent says: it validates each line with
    pydantic over the same dataclasses and derives record keys itself. The
    agent in turn validates every task: tools never run a shell, and exec
    placeholders take only typed, validated values as whole argv elements.
"""
