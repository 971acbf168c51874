"""The wire protocol's message shapes, defined once.

Both sides speak JSON lines (one JSON object per line, UTF-8, ``\\n``
terminated) over the agent's stdin (master -> agent) and stdout
(agent -> master). The agent builds these dataclasses and writes
``dataclasses.asdict(msg)``; the master validates every line it reads with
pydantic over these very classes (``console/fleet/protocol.py``), never trusting
a box. Stdlib only, Python 3.8 syntax: this file runs on the scan boxes.

No ``from __future__ import annotations``: the annotations are typing objects at class creation, so
the master's adapters read them as they are instead of compiling and evaluating each as a string.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

PROTOCOL_VERSION = 1
#: A line longer than this is a protocol error on either side (never buffered whole).
MAX_LINE = 4 * 1024 * 1024
#: At most this many records in one ``results`` message; tools flush earlier on time.
MAX_BATCH = 512
#: An agent keeps this many scopes (``Scope`` messages) at once.
MAX_SCOPES = 8


# -- master -> agent ---------------------------------------------------------


@dataclass
class Task:
    """Run one task. ``id`` is the master's execution id (opaque to the agent)."""

    op: Literal["task"]
    id: str
    tool: str
    params: Dict[str, Any]
    targets: List[str]
    #: seconds the task may run before the agent cancels it itself
    timeout: float = 600.0
    #: the run's scope in the wire form of :mod:`agentkit.targets` (redirects are followed only inside
    #: it; every resolved address is held against it before a tool connects)
    scope: List[str] = field(default_factory=list)
    #: the run's exclusions, same form: never contacted, whatever name led to them
    exclude: List[str] = field(default_factory=list)
    #: instead of ``scope`` and ``exclude`` (then empty): those of the :class:`Scope` sent earlier with
    #: this id (a large scope travels once per agent, not in every task line)
    scope_id: Optional[str] = None


@dataclass
class Scope:
    """A run's scope and exclusions, for the tasks that name it by ``id``; a large one comes in several
    parts (``more``: further parts of the same id follow; each part's entries are appended). An agent
    keeps the last :data:`MAX_SCOPES` complete ones, oldest dropped first; the master, which sent them,
    sends one again when the agent can no longer have it."""

    op: Literal["scope"]
    id: str
    scope: List[str] = field(default_factory=list)
    exclude: List[str] = field(default_factory=list)
    more: bool = False


@dataclass
class Cancel:
    """Kill the task's tool and all its child processes (within 1 s)."""

    op: Literal["cancel"]
    id: str


@dataclass
class Ping:
    op: Literal["ping"]
    seq: int


@dataclass
class Shutdown:
    """Cancel everything and exit. Closing stdin means the same."""

    op: Literal["shutdown"]


# -- agent -> master ---------------------------------------------------------


@dataclass
class Hello:
    """First line the agent writes."""

    op: Literal["hello"]
    protocol: int
    #: sha256 of the archive the agent runs from (hex)
    hash: str
    python: str
    pid: int
    #: built-in tools
    tools: List[str]
    #: external programs found on PATH: name -> absolute path
    programs: Dict[str, str] = field(default_factory=dict)
    hostname: str = ""


@dataclass
class Record:
    """One result. The master derives the record's key from ``type`` and ``data``."""

    type: str
    target: str
    data: Dict[str, Any]


@dataclass
class Results:
    op: Literal["results"]
    id: str
    records: List[Record]


@dataclass
class Progress:
    op: Literal["progress"]
    id: str
    done: int
    total: int


@dataclass
class Done:
    """The task ended: ``ok`` or not, with the reason."""

    op: Literal["done"]
    id: str
    ok: bool
    error: Optional[str] = None


@dataclass
class Blocked:
    """A tool did not contact ``address`` (what ``host`` resolved to): excluded or out of scope."""

    op: Literal["blocked"]
    id: str
    host: str
    address: str
    reason: str


@dataclass
class Pong:
    op: Literal["pong"]
    seq: int


@dataclass
class Error:
    """A malformed or unknown message (``id`` set when it named a task)."""

    op: Literal["error"]
    error: str
    id: Optional[str] = None


MASTER_MESSAGES = (Task, Scope, Cancel, Ping, Shutdown)
AGENT_MESSAGES = (Hello, Results, Progress, Done, Blocked, Pong, Error)
