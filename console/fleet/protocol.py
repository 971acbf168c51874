"""The master's side of the wire protocol: validate what agents send, encode what we send.

The message shapes are defined once, as dataclasses in :mod:`agentkit.wire`;
here pydantic ``TypeAdapter``s over those very classes check every line a box
writes (discriminated by ``op``), with bounds on sizes, so a broken or hostile
agent produces an :class:`~console.errors.AgentError` with a reason instead of
a crash or an unbounded allocation. Record ``data`` is only shape-checked here;
:mod:`console.targets.records` validates it per result type.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any, TypeAlias

from pydantic import Field, TypeAdapter, ValidationError

from agentkit import wire
from console.errors import AgentError
from console.sanitize import safe_line

AgentMessage: TypeAlias = (
    wire.Hello | wire.Results | wire.Progress | wire.Done | wire.Blocked | wire.Pong | wire.Error
)
MasterMessage: TypeAlias = wire.Task | wire.Scope | wire.Cancel | wire.Ping | wire.Shutdown

_AGENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Annotated[AgentMessage, Field(discriminator="op")])
_MASTER_ADAPTER: TypeAdapter[Any] = TypeAdapter(Annotated[MasterMessage, Field(discriminator="op")])

#: Bounds on what an agent may send beyond the line limit.
MAX_ID = 200
MAX_TEXT = 64 * 1024


def _describe(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "message"
    return f"{where}: {err.get('msg', 'invalid')}"


def _check_bounds(msg: AgentMessage) -> None:
    """Size limits pydantic's shape check does not express."""
    ident = getattr(msg, "id", None)
    if isinstance(ident, str) and (len(ident) > MAX_ID or not ident.isprintable()):
        raise AgentError(f"invalid {msg.op} message: bad task id")
    if isinstance(msg, wire.Results):
        if len(msg.records) > wire.MAX_BATCH:
            raise AgentError(
                f"invalid results message: {len(msg.records)} records (at most {wire.MAX_BATCH})"
            )
    elif isinstance(msg, wire.Hello):
        if len(msg.tools) > 256 or len(msg.programs) > 256 or len(msg.hash) > 128:
            raise AgentError("invalid hello message: oversized fields")
    elif isinstance(msg, wire.Blocked):
        if len(msg.host) > 260 or len(msg.address) > 64 or len(msg.reason) > 200:
            raise AgentError("invalid blocked message: oversized fields")
    elif isinstance(msg, wire.Progress):
        if msg.done < 0 or msg.total < 0:
            raise AgentError("invalid progress message: negative counts")
    elif isinstance(msg, wire.Error | wire.Done):
        text = msg.error or ""
        if len(text) > MAX_TEXT:
            raise AgentError(f"invalid {msg.op} message: error text over {MAX_TEXT} characters")


def parse_agent_line(line: bytes) -> AgentMessage:
    """One line from an agent's stdout -> a wire dataclass, or AgentError with the reason.

    The trailing newline is optional. Lines longer than ``wire.MAX_LINE`` are refused
    without being parsed.
    """
    if len(line) > wire.MAX_LINE:
        raise AgentError(f"protocol line too long ({len(line)} bytes, at most {wire.MAX_LINE})")
    body = line.rstrip(b"\r\n")
    if not body.strip():
        raise AgentError("empty protocol line")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise AgentError("protocol line is not UTF-8") from None
    if b"NaN" in body or b"Infinity" in body:
        _refuse_constants(body)
    try:
        msg = _AGENT_ADAPTER.validate_json(body, strict=True)
    except ValidationError as exc:
        raise AgentError(_explain(exc)) from None
    _check_bounds(msg)
    return _sanitised(msg)


def _sanitised(msg: AgentMessage) -> AgentMessage:
    """Free text a box sends (its hello, its error texts) made printable before anything keeps it:
    no escape sequence a box writes can reach a terminal (console.sanitize)."""
    if isinstance(msg, wire.Hello):
        return dataclasses.replace(
            msg, python=safe_line(msg.python, 64), hostname=safe_line(msg.hostname, 255), hash=safe_line(msg.hash, 128),
            tools=[safe_line(t, 64) for t in msg.tools],
            programs={safe_line(k, 64): safe_line(v, 512) for k, v in msg.programs.items()},
        )
    if isinstance(msg, wire.Error | wire.Done) and msg.error is not None and not msg.error.isprintable():
        return dataclasses.replace(msg, error=safe_line(msg.error, MAX_TEXT))
    return msg


def _refuse_constants(body: bytes) -> None:
    """pydantic's JSON parser accepts NaN/Infinity, which are not JSON; refuse them (rare, so checked lazily)."""

    def constant(name: str) -> Any:
        raise AgentError(f"protocol line is not JSON: {name} is not a JSON value")

    try:
        json.loads(body, parse_constant=constant)
    except ValueError:
        pass  # malformed: validate_json reports it


def _explain(exc: ValidationError) -> str:
    """The reason an agent line was refused, in one short line."""
    err = exc.errors(include_url=False)[0]
    etype = err.get("type", "")
    if etype == "json_invalid":
        return f"protocol line is not JSON: {str(err.get('msg', ''))[:200]}"
    if etype == "union_tag_invalid":
        tag = str((err.get("ctx") or {}).get("tag", ""))[:40]
        return f"unknown message op {tag!r}"
    if etype == "union_tag_not_found":
        return "message has no op"
    if not err.get("loc"):
        return "protocol line is not a JSON object"
    loc = list(err.get("loc", ()))
    op = loc.pop(0) if loc else "message"
    return f"invalid {op} message: {_describe_loc(loc, err)}"


def _describe_loc(loc: list[Any], err: Any) -> str:
    where = ".".join(str(p) for p in loc) or "message"
    return f"{where}: {err.get('msg', 'invalid')}"


def _dumps(value: Any) -> str:
    """The one JSON form of everything the master writes on the wire (ASCII, compact, no NaN)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def encode(msg: MasterMessage) -> bytes:
    """One master -> agent message as a JSON line (UTF-8, ``\\n`` terminated)."""
    if not isinstance(msg, wire.MASTER_MESSAGES):
        raise TypeError(f"not a master message: {type(msg).__name__}")
    payload = dataclasses.asdict(msg)
    if isinstance(msg, wire.Task) and msg.scope_id is None:
        del payload["scope_id"]  # a task carrying its scope: the line as before scopes went by reference
    data = _dumps(payload).encode("ascii")
    _MASTER_ADAPTER.validate_json(
        data, strict=True
    )  # a malformed message is our bug: fail here, not on the box
    if len(data) >= wire.MAX_LINE:
        raise ValueError(f"message too long for one protocol line ({len(data)} bytes)")
    return data + b"\n"


def encode_many(messages: list[MasterMessage]) -> bytes:
    """Several master -> agent messages as one write (each its own line)."""
    return b"".join(encode(m) for m in messages)


#: a run's scope and exclusions up to this size (their JSON) travel in every task line; a larger one is
#: sent to each agent once, as ``scope`` messages, and its tasks name it by id
INLINE_SCOPE_BYTES = 16 * 1024
#: the largest ``scope`` message part (its entries' JSON), well inside ``wire.MAX_LINE``
SCOPE_PART_BYTES = 1024 * 1024


class ScopeRef:
    """A large scope sent by reference: its id and the ``scope`` lines that carry it to an agent."""

    def __init__(self, scope: list[str], exclude: list[str]) -> None:
        import hashlib

        body = _dumps([scope, exclude])
        self.id = hashlib.sha256(body.encode()).hexdigest()[:32]
        parts: list[tuple[list[str], list[str]]] = []
        for name, entries in (("scope", scope), ("exclude", exclude)):
            part: list[str] = []
            size = 0
            for entry in entries:
                if part and size + len(entry) + 4 > SCOPE_PART_BYTES:
                    parts.append((part, []) if name == "scope" else ([], part))
                    part, size = [], 0
                part.append(entry)
                size += len(entry) + 4
            if part:
                parts.append((part, []) if name == "scope" else ([], part))
        parts = parts or [([], [])]
        self.lines = b"".join(
            encode(wire.Scope(op="scope", id=self.id, scope=s, exclude=e, more=i < len(parts) - 1))
            for i, (s, e) in enumerate(parts)
        )

    @staticmethod
    def needed(scope: list[str], exclude: list[str]) -> bool:
        """Is this scope too large to travel in every task line?"""
        return sum(len(e) + 3 for e in scope) + sum(len(e) + 3 for e in exclude) > INLINE_SCOPE_BYTES


class TaskEncoder:
    """``encode`` for the dispatch path: a stage's ``task`` line with only id and targets left to fill.

    The constant part (tool, params, timeout, scope) is encoded once per stage and checked once
    through :func:`encode`, so dispatching a task is a string join, not a JSON encode and a
    validation per task; the line carries the same message in the same JSON form as ``encode``'s.
    With ``scope_ref`` the line names that scope by id instead of carrying it.
    """

    def __init__(
        self, tool: str, params: dict[str, Any], timeout: float, scope: list[str], exclude: list[str] | None = None,
        scope_ref: ScopeRef | None = None,
    ) -> None:
        exclude = exclude or []
        scope_id = None
        if scope_ref is not None:
            scope, exclude, scope_id = [], [], scope_ref.id
        encode(wire.Task(
            op="task", id="0.0", tool=tool, params=params, targets=[], timeout=timeout, scope=scope, exclude=exclude,
            scope_id=scope_id,
        ))
        by_ref = "" if scope_id is None else f',"scope_id":{_dumps(scope_id)}'
        self._middle = (
            f',"tool":{_dumps(tool)},"params":{_dumps(params)},"timeout":{_dumps(float(timeout))},'
            f'"scope":{_dumps(scope)},"exclude":{_dumps(exclude)}{by_ref},"targets":'
        )

    def line(self, exec_id: str, targets_json: str) -> bytes:
        """``targets_json``: the task's stored JSON list of target strings (one line, as the planner wrote it)."""
        if "\n" in targets_json or not targets_json.startswith("["):
            targets_json = _dumps([str(t) for t in json.loads(targets_json)])
        return f'{{"op":"task","id":{_dumps(exec_id)}{self._middle}{targets_json}}}\n'.encode()


def decode_master_line(line: bytes) -> MasterMessage:
    """Parse a master -> agent line (for tests and tools that replay a session)."""
    try:
        msg = _MASTER_ADAPTER.validate_json(line.rstrip(b"\r\n"), strict=True)
    except ValidationError as exc:
        raise AgentError(f"invalid master message: {_describe(exc)}") from None
    return msg  # type: ignore[no-any-return]
