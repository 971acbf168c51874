"""The ``with:`` parameters of each built-in tool, and Elkeid baseline rule files.

One model per tool (SPEC's table), unknown keys rejected, sane defaults. Port
lists accept ``[22, 80]``, ``"1-1024,8080"`` or a mix, each port 1-65535.
The baseline tool reads rules in Elkeid's format (``baseline_id``,
``check_list`` of checks with ``check: {condition, rules: [...]}``); the
models here are loose where Elkeid's real files vary (extra descriptive keys
are kept) and strict where a mistake would silently check nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from console import yamlsrc
from console.errors import BadInput
from console.targets import records
from console.workflow.fielddocs import DocumentedModel

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"bad name {value[:70]!r}: letters, digits, '_' and '-' (at most 64), starting with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(_name)]
Scalar = str | int | float | bool
Seconds = Annotated[float, Field(gt=0, le=86400)]

#: A port list expanding to more than this is refused for tcp_ping (it probes each port per host).
MAX_PING_PORTS = 64
PLACEHOLDERS = ("{target}", "{host}", "{port}", "{ports}", "{targets_file}")
EXEC_PARSERS = ("nmap_xml", "masscan_json", "masscan_ndjson", "jsonl", "lines")
PARSER_OUTPUTS: dict[str, frozenset[str]] = {
    "nmap_xml": frozenset({"host_up", "port_open", "service"}),
    "masscan_json": frozenset({"port_open"}),
    "masscan_ndjson": frozenset({"port_open", "service"}),
    "jsonl": frozenset(records.RECORD_TYPES),
}


class StrictModel(DocumentedModel):
    """File-format models: unknown keys are errors; field docstrings become descriptions (fielddocs.py)."""

    model_config = ConfigDict(
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        defer_build=True,
    )


class ToolParams(StrictModel):
    """A tool's ``with:`` block: what the agent receives as the task's ``params``."""

    def agent_params(self) -> dict[str, Any]:
        """The JSON ``params`` the agent receives (defaults filled in, unset options left out)."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)

    def outputs(self) -> frozenset[str] | None:
        """The record types these parameters narrow the tool's reports to (None: all the tool reports)."""
        return None


# -- ports ----------------------------------------------------------------------------


def port_spans(value: Any) -> list[tuple[int, int]]:
    """Merged ``(first, last)`` spans from ``22``, ``"1-1024,8080"`` or a list of either."""
    items = value if isinstance(value, list) else [value]
    spans: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, bool):
            raise ValueError('ports must be numbers or ranges such as "1-1024,8080"')
        if isinstance(item, int):
            parts = [str(item)]
        elif isinstance(item, str):
            parts = [p.strip() for p in item.split(",")]
        else:
            raise ValueError('ports must be numbers or ranges such as "1-1024,8080"')
        for part in parts:
            match = re.fullmatch(r"([0-9]{1,5})(?:-([0-9]{1,5}))?", part)
            if not match:
                raise ValueError(f"bad port or range {part!r} (e.g. 22, 1-1024)")
            first = int(match.group(1))
            last = int(match.group(2) or first)
            if not (1 <= first <= 65535 and 1 <= last <= 65535):
                raise ValueError(f"port out of range in {part!r} (ports are 1-65535)")
            if last < first:
                raise ValueError(f"range {part!r} ends before it starts")
            spans.append((first, last))
    if not spans:
        raise ValueError("at least one port is needed")
    merged: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


def format_ports(spans: list[tuple[int, int]]) -> str:
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _port_range_text(value: Any) -> str:
    return format_ports(port_spans(value))


def _port_list(value: Any) -> list[int]:
    spans = port_spans(value)
    total = sum(last - first + 1 for first, last in spans)
    if total > MAX_PING_PORTS:
        raise ValueError(f"at most {MAX_PING_PORTS} ports for host discovery ({total} given)")
    return [port for first, last in spans for port in range(first, last + 1)]


PortRanges = Annotated[str, BeforeValidator(_port_range_text)]
PortList = Annotated[list[int], BeforeValidator(_port_list)]


# -- built-in tools -------------------------------------------------------------------


class TcpPingParams(ToolParams):
    ports: PortList = [22, 80, 443, 3389]
    """Ports to knock on; an accept or a reset means the host is up."""
    timeout: Seconds = 1.0
    """Seconds to wait for each probe."""
    icmp: bool = False
    """Also try the system ``ping`` (ICMP echo) when it is available."""
    concurrency: Annotated[int, Field(ge=1, le=1 << 20)] = 1024
    """Probes in flight at once per task."""
    rate: Annotated[float, Field(ge=0, le=10_000_000)] = 0
    """Probes per second, paced evenly; 0 means unbounded."""


class TcpConnectParams(ToolParams):
    ports: PortRanges = "1-1024"
    """Ports to scan: a list or ranges such as ``"1-1024,8080"``."""
    timeout: Seconds = 0.5
    """Seconds to wait for each connect."""
    concurrency: Annotated[int, Field(ge=1, le=1 << 20)] = 1024
    """Connects in flight at once per task (the agent also caps it by its open-file limit)."""
    rate: Annotated[float, Field(ge=0, le=10_000_000)] = 0
    """Probes per second, paced evenly; 0 means unbounded."""


class BannerParams(ToolParams):
    timeout: Seconds = 3.0
    """Seconds to wait for the service to speak."""
    max_bytes: Annotated[int, Field(ge=1, le=65536)] = 1024
    """Read at most this many bytes."""
    concurrency: Annotated[int, Field(ge=1, le=4096)] = 64
    """Ports probed at once per task."""


class ServiceParams(ToolParams):
    timeout: Seconds = 3.0
    """Seconds to wait for each answer (a greeting, a handshake, a hello's reply)."""
    intensity: Annotated[int, Field(ge=0, le=9)] = 7
    """Hellos of this rarity or below are tried (0: greeting, TLS and the port's own hello only)."""
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 32
    """Ports probed at once per task."""


class HttpProbeParams(ToolParams):
    timeout: Seconds = 5.0
    """Seconds for the whole request."""
    verify_tls: bool = False
    """Verify certificates (off: a scan wants to see self-signed services too)."""
    max_redirects: Annotated[int, Field(ge=0, le=20)] = 3
    """Redirects followed, and only to targets inside the scope."""
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 32
    """Requests in flight at once per task."""


class TlsCertParams(ToolParams):
    timeout: Seconds = 5.0
    """Seconds for the TLS handshake."""
    starttls: Literal["auto", "none", "smtp", "imap", "pop3", "ftp", "ldap", "postgres", "xmpp"] | None = None
    """Upgrade a plain-text protocol first; auto (the agent's default when unset): SMTP 25/587, IMAP 143,
    POP3 110, FTP 21, LDAP 389, PostgreSQL 5432, XMPP 5222 (TLS at once on other ports)."""
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 32
    """Handshakes in flight at once per task."""


class DnsParams(ToolParams):
    timeout: Seconds = 3.0
    """Seconds per name."""
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 16
    """Names resolved at once per task."""


class NoopParams(ToolParams):
    sleep: Annotated[float, Field(ge=0, le=86400)] = 0
    """Seconds to sleep (honouring cancel)."""
    records: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    """Synthetic host_up records to emit (for benchmarks and tests)."""


def _exec_arg(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("argv elements must be strings (quote numbers)")
    if not value.isprintable() or len(value) > 4096:
        raise ValueError(f"argv element {value[:40]!r} has control characters or is too long")
    if ("{" in value or "}" in value) and value not in PLACEHOLDERS:
        raise ValueError(
            f"bad placeholder in {value!r}: a placeholder is a whole element, one of {', '.join(PLACEHOLDERS)}"
        )
    return value


def _argv_list(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError("argv is a list of arguments, never a shell string: [program, arg, ...]")
    return value


class ExecParams(ToolParams):
    argv: Annotated[
        list[Annotated[str, BeforeValidator(_exec_arg)]],
        BeforeValidator(_argv_list),
        Field(min_length=1, max_length=256),
    ]
    """Program and arguments (never a shell); placeholders {target} {host} {port} {ports} {targets_file}, each a
    whole element ({ports}: the comma list of a ``host_ports`` target, or a port target's port)."""
    argv6: (
        Annotated[
            list[Annotated[str, BeforeValidator(_exec_arg)]],
            BeforeValidator(_argv_list),
            Field(min_length=1, max_length=256),
        ]
        | None
    ) = None
    """The argv for IPv6 targets (e.g. nmap's with ``-6``); a task with both families runs each with its own."""
    parser: Literal["nmap_xml", "masscan_json", "masscan_ndjson", "jsonl", "lines"]
    """How the program's output becomes records."""
    type: Literal["host_up", "port_open"] | None = None
    """What each output line is (``lines`` parser only): ``host_up`` (a host) or ``port_open`` (host:port)."""
    timeout: Seconds = 300.0
    """Seconds before the program (and its process group) is killed."""

    @model_validator(mode="after")
    def _consistent(self) -> ExecParams:
        for field, argv in (("argv", self.argv), ("argv6", self.argv6)):
            program = argv[0] if argv else "x"
            if program in PLACEHOLDERS or program.startswith("-") or not program:
                raise ValueError(f"{field}[0] must be a program name, not {program!r}")
        if self.parser == "lines" and self.type is None:
            raise ValueError("the lines parser needs `type` (the result type each line becomes)")
        if self.parser != "lines" and self.type is not None:
            raise ValueError(f"`type` is only for the lines parser; {self.parser} knows its result types")
        return self

    def outputs(self) -> frozenset[str]:
        """What the parser gives: ``lines`` its ``type``, the others their fixed set."""
        if self.parser == "lines":
            return frozenset({self.type or "host_up"})
        return PARSER_OUTPUTS[self.parser]


# -- baseline (Elkeid rule format) ----------------------------------------------------


def _param_text(value: Any) -> Any:
    if isinstance(value, list):
        return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
    return value


def _check_id(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("check_id must be a number or a short name")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
        return value
    raise ValueError("check_id must be a number or a short name ([A-Za-z0-9._-])")


class BaselineRule(DocumentedModel):
    """One Elkeid rule: a typed test with parameters, optional filter and expected result."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    """Rule type: file_line_check, file_permission, command_check, if_file_exist, ..."""
    param: Annotated[list[str], BeforeValidator(_param_text), Field(max_length=64)] = []
    """Parameters of the rule type (a path, a command, a mode...)."""
    filter: str | None = None
    """A regex whose first group is what gets compared."""
    result: str | None = None
    """A regex, or a comparison such as ``$(<=)90``; ``$(not)`` inverts, ``$(&&)`` joins."""
    require: str | None = None
    """A precondition (Elkeid's ``require``)."""

    @model_validator(mode="after")
    def _regex(self) -> BaselineRule:
        if self.filter is not None:
            try:
                re.compile(self.filter)
            except re.error as exc:
                raise ValueError(f"filter is not a valid regex: {exc}") from None
        return self


class BaselineCheckBody(DocumentedModel):
    model_config = ConfigDict(extra="allow")

    condition: Literal["all", "any", "none"] = "all"
    """How the rules combine."""
    rules: Annotated[list[BaselineRule], Field(min_length=1, max_length=256)]
    """The rules of the check."""


class BaselineCheck(DocumentedModel):
    """One check of a rule file: its id, title, severity and rules (other keys are kept as is)."""

    model_config = ConfigDict(extra="allow")

    check_id: Annotated[int | str, BeforeValidator(_check_id)]
    """The check's id (a record's ``rule``)."""
    title: Annotated[str, Field(min_length=1, max_length=1024)]
    """What the check ensures."""
    security: Annotated[str, Field(max_length=64)] = ""
    """Severity (high, medium, low)."""
    check: BaselineCheckBody | None = None
    """Condition and rules; a check without rules reports ``error`` (unsupported)."""


class RulesDocument(DocumentedModel):
    """An Elkeid baseline rule file."""

    model_config = ConfigDict(extra="allow")

    baseline_id: int | str | None = None
    """The baseline's id."""
    check_list: Annotated[list[BaselineCheck], Field(min_length=1, max_length=10_000)]
    """The checks."""


def _duplicate_check(checks: list[BaselineCheck]) -> int | None:
    seen: set[str] = set()
    for index, check in enumerate(checks):
        key = str(check.check_id)
        if key in seen:
            return index
        seen.add(key)
    return None


def load_rules_file(path: str | Path, *, display: str | None = None) -> list[BaselineCheck]:
    """Read an Elkeid rule file with the safe loader; BadInput with the rule file's line on error."""
    data, smap = yamlsrc.load_file(path, display=display)
    doc = yamlsrc.validate_document(
        RulesDocument, data, smap, "expected an Elkeid baseline document with `check_list:`"
    )
    dup = _duplicate_check(doc.check_list)
    if dup is not None:
        raise yamlsrc.bad_input_at(smap, ("check_list", dup, "check_id"), "duplicate check_id")
    return doc.check_list


class BaselineParams(ToolParams):
    rules: Annotated[list[BaselineCheck], Field(min_length=1, max_length=10_000)] | None = None
    """Inline checks in Elkeid's check_list format (or use rules_file)."""
    rules_file: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """An Elkeid rule file, relative to the workflow file; read when the file is loaded."""
    checks: Annotated[list[Annotated[int | str, BeforeValidator(_check_id)]], Field(min_length=1)] | None = (
        None
    )
    """Only these check ids (default: all)."""
    root: Annotated[str, Field(pattern=r"^/[^\x00]*$", max_length=4096)] = "/"
    """Read checked files under this directory instead of / (for tests against a prepared tree)."""
    command_timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """Seconds each command_check command may run."""

    @model_validator(mode="after")
    def _source(self) -> BaselineParams:
        if self.rules is None and self.rules_file is None:
            raise ValueError("baseline needs `rules` (inline) or `rules_file`")
        if self.rules is not None:
            dup = _duplicate_check(self.rules)
            if dup is not None:
                raise ValueError(f"duplicate check_id {self.rules[dup].check_id!r} in rules")
        return self

    def resolve(self, raw: Any, smap: yamlsrc.SourceMap, where: tuple[Any, ...], base_dir: Path) -> None:
        """Inline the rule file (at load time) and check ``checks`` against the rules."""
        if isinstance(raw, dict) and "rules" in raw and "rules_file" in raw:
            raise yamlsrc.bad_input_at(smap, (*where, "rules_file"), "give `rules` or `rules_file`, not both")
        if self.rules_file is not None and self.rules is None:
            path = Path(self.rules_file).expanduser()
            if not path.is_absolute():
                path = base_dir / path
            if not path.is_file():
                raise yamlsrc.bad_input_at(smap, (*where, "rules_file"), f"no such rule file: {path}")
            self.rules = load_rules_file(path)
        known = {str(c.check_id) for c in self.rules or []}
        for index, check in enumerate(self.checks or []):
            if str(check) not in known:
                raise yamlsrc.bad_input_at(
                    smap, (*where, "checks", index), f"no check {check!r} in the rules"
                )

    def agent_params(self) -> dict[str, Any]:
        """``{"rules": [check_list entries], "checks": [...], "root": "/"}`` for the agent."""
        if self.rules is None:
            raise BadInput(
                f"rules_file {self.rules_file!r} was not loaded (load the workflow file)",
                field="with.rules_file",
            )
        params: dict[str, Any] = {
            "rules": [c.model_dump(mode="json", exclude_none=True) for c in self.rules],
            "root": self.root,
            "command_timeout": self.command_timeout,
        }
        if self.checks is not None:
            params["checks"] = [str(c) for c in self.checks]
        return params
