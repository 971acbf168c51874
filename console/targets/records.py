"""Typed result records: validate what a box reports, derive keys and next targets.

Nothing a box sends is trusted. Each record's ``data`` is checked against the
model of its type (SPEC's result table): hosts must be addresses or hostnames,
ports 1-65535, urls http(s) only, text bounded with control characters escaped.
The record's key is derived here from the validated data, never taken from the
box, so a retried task or a resumed run can never duplicate or forge a record.

The planner turns kept records into the next stage's targets with
:func:`derive_target`; every derived value passes
:func:`console.targets.sets.validate_value` before the scope check.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from agentkit import wire
from console.errors import AgentError, BadInput
from console.sanitize import MAX_TEXT, escape_text
from console.targets import sets as targets

#: Bound on the whole JSON size of one record's data (rough, counted on str()).
MAX_DATA_FIELDS = 64

RECORD_TYPES: tuple[str, ...] = ("host_up", "port_open", "service", "http", "tls_cert", "baseline")
RecordType = Literal["host_up", "port_open", "service", "http", "tls_cert", "baseline"]


def _text(value: Any) -> Any:
    if isinstance(value, str):
        return escape_text(value)
    return value


def _target_value(kind: str) -> Callable[[Any], Any]:
    """A pydantic before-validator: a string that ``targets.validate_value(kind, ...)`` accepts."""

    def check(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        try:
            return targets.validate_value(kind, value)
        except BadInput as exc:
            raise ValueError(exc.message) from None

    return check


_host = _target_value("host")
_url = _target_value("url")


_BOX = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,127}\Z")


def _box_or_host(value: Any) -> Any:
    """A baseline record's host: the box's inventory name (charset [A-Za-z0-9._-]) or a host."""
    if isinstance(value, str) and _BOX.match(value):
        return value
    return _host(value)


def _rule_id(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a check id")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable() and not value.startswith("-"):
        return value
    raise ValueError("must be a check id (printable, at most 128 characters)")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Text = Annotated[str, BeforeValidator(_text)]
Host = Annotated[str, BeforeValidator(_host)]
Url = Annotated[str, BeforeValidator(_url)]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
RuleId = Annotated[str, BeforeValidator(_rule_id)]
Number = Annotated[float, Field(ge=0), AfterValidator(_finite)]


def _extra_value(value: Any, depth: int = 0) -> Any:
    """Extra fields a tool adds: JSON scalars, bounded text, small lists/maps of them."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return escape_text(value)
    if depth < 2 and isinstance(value, list):
        return [_extra_value(v, depth + 1) for v in value[:256]]
    if depth < 2 and isinstance(value, dict):
        return {escape_text(str(k), 64): _extra_value(v, depth + 1) for k, v in list(value.items())[:64]}
    return escape_text(repr(value)[:256])


class _Data(BaseModel):
    """Common config: extra fields allowed (a tool may add fields) but sanitised."""

    #: built on the first record, not at import: a run whose stages report nothing never pays for it
    model_config = ConfigDict(extra="allow", str_max_length=MAX_TEXT + 16, defer_build=True)

    def clean(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        extras = self.model_extra or {}
        if len(extras) > MAX_DATA_FIELDS:
            raise ValueError(f"too many extra fields ({len(extras)}, at most {MAX_DATA_FIELDS})")
        for key in extras:
            data.pop(key, None)
        for key, value in extras.items():
            data[escape_text(str(key), 64)] = _extra_value(value)
        return data


class HostUp(_Data):
    host: Host
    """The live host (an address; dns also gives the ``name`` it resolved)."""
    via: Text = ""
    """How it answered, e.g. ``tcp/22``, ``icmp``, ``dns``."""
    rtt_ms: Number | None = None
    """Round-trip time of the answering probe."""
    name: Text | None = None
    """For dns: the name that resolved to ``host``."""


class PortOpen(_Data):
    host: Host
    """Host with the open port."""
    port: Port
    """The open port."""
    proto: Literal["tcp", "udp", "sctp"] = "tcp"
    """Transport protocol."""


class Service(_Data):
    host: Host
    """Host of the service."""
    port: Port
    """Port of the service."""
    banner: Text = ""
    """What the service said first (escaped, bounded); empty when it stayed silent."""
    name: Text | None = None
    """From ``service``: what answers (ssh, http, smtp, ftp, redis, ...; ``ssl`` for an unnamed TLS port)."""
    product: Text | None = None
    """From ``service``: the software, when the answer names it (OpenSSH, nginx, Exim ...)."""
    version: Text | None = None
    """From ``service``: its version, when the answer tells it."""
    tls: bool | None = None
    """From ``service``: the port completed a TLS handshake."""
    method: Literal["probe", "port"] | None = None
    """From ``service``: named by an answer (probe) or only by the port number (port)."""


class Http(_Data):
    url: Url
    """The probed url (canonical)."""
    status: Annotated[int, Field(ge=0, le=999, strict=True)]
    """HTTP status code (0: a redirect target did not answer)."""
    title: Text = ""
    """HTML <title>, whitespace collapsed."""
    server: Text = ""
    """Server header."""
    redirects: list[Text] | None = None
    """Absolute URLs followed, in order (only those inside the scope)."""
    final_url: Text | None = None
    """The URL that answered last (https when a plain request was answered as an HTTPS port)."""


class TlsCert(_Data):
    host: Host
    """Host that presented the certificate."""
    port: Port
    """Its port."""
    subject: Text = ""
    """Certificate subject."""
    issuer: Text = ""
    """Certificate issuer."""
    not_before: Text = ""
    """Start of validity (ISO-8601 UTC)."""
    not_after: Text = ""
    """Expiry as the certificate states it."""
    sans: list[Text] | None = None
    """Subject alternative names (``DNS:x``, ``IP Address:y``)."""
    protocol: Text = ""
    """The TLS version negotiated (TLSv1 ... TLSv1.3)."""


class Baseline(_Data):
    host: Annotated[str, BeforeValidator(_box_or_host)] | None = None
    """The box checked (set by the master: the box's name)."""
    rule: RuleId
    """The check id of the rule file."""
    title: Text = ""
    """The check's title."""
    security: Text = ""
    """The check's severity as the rule file gives it."""
    status: Literal["pass", "fail", "error"]
    """Outcome."""
    evidence: Text = ""
    """The line or output that decided it."""
    reason: Text | None = None
    """Why the outcome is ``error``."""


MODELS: dict[str, type[_Data]] = {
    "host_up": HostUp,
    "port_open": PortOpen,
    "service": Service,
    "http": Http,
    "tls_cert": TlsCert,
    "baseline": Baseline,
}


class CheckedRecord(NamedTuple):
    """A validated record: unpacks as ``(type, key, target, data)``."""

    type: str
    key: str
    target: str
    data: dict[str, Any]


def record_key(rtype: str, data: Mapping[str, Any]) -> str:
    """The record's identity within (run, stage, type), per SPEC's result table."""
    if rtype == "host_up":
        return str(data["host"])
    if rtype == "port_open":
        return f"{targets.format_hostport(data['host'], data['port'])}/{data.get('proto', 'tcp')}"
    if rtype in ("service", "tls_cert"):
        return targets.format_hostport(data["host"], data["port"])
    if rtype == "http":
        return str(data["url"])
    if rtype == "baseline":
        return f"{data.get('host', '')}:{data['rule']}"
    raise KeyError(rtype)


def validate(
    record: wire.Record | Mapping[str, Any], reports: Collection[str] | None = None, *, box: str | None = None
) -> CheckedRecord:
    """Check one record from an agent; AgentError with the reason when it is not acceptable.

    ``reports`` limits the types the record may have: what the task's tool reports
    (``console.workflow.tools``; a tcp_connect task cannot report baseline results).
    ``box`` is the agent box's name, given when the tool's records are about the box
    itself: a baseline record's host is then the box, whatever the agent wrote.
    """
    rtype: Any
    target: Any
    raw: Any
    if isinstance(record, wire.Record):
        rtype, target, raw = record.type, record.target, record.data
    elif isinstance(record, Mapping):
        rtype, target, raw = record.get("type"), record.get("target", ""), record.get("data")
    else:
        raise AgentError("record is not an object")
    if not isinstance(rtype, str) or rtype not in MODELS:
        raise AgentError(f"record of unknown type {escape_text(str(rtype), 40)!r}")
    if reports is not None and rtype not in reports:
        raise AgentError(f"the task's tool cannot report {rtype} records (it reports {', '.join(sorted(reports))})")
    if not isinstance(raw, Mapping):
        raise AgentError(f"{rtype} record: data is not an object")
    if not isinstance(target, str):
        raise AgentError(f"{rtype} record: target is not a string")
    data = dict(raw)
    if rtype == "baseline" and box is not None:
        data["host"] = box
    try:
        model = MODELS[rtype].model_validate(data)
        clean = model.clean()
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "data"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise AgentError(f"{rtype} record: {where}: {escape_text(msg, 200)}") from None
    except ValueError as exc:
        raise AgentError(f"{rtype} record: {exc}") from None
    if rtype == "baseline" and "host" not in clean:
        raise AgentError("baseline record: no host (box) known")
    clean_target = _clean_target(target, rtype, clean)
    return CheckedRecord(rtype, record_key(rtype, clean), clean_target, clean)


def _clean_target(target: str, rtype: str, data: Mapping[str, Any]) -> str:
    """The record's target, validated as some target kind; empty means "the record's host"."""
    if target == "":
        return str(data.get("host") or data.get("url") or "")
    for kind in ("host", "port", "url"):
        try:
            return targets.validate_value(kind, target)
        except BadInput:
            continue
    if rtype == "baseline":
        return str(data.get("host", ""))
    raise AgentError(f"{rtype} record: target {escape_text(target, 60)!r} is not a valid target")


def _type_and_data(record: Any) -> tuple[str, Mapping[str, Any]]:
    if isinstance(record, CheckedRecord | wire.Record):
        return record.type, record.data
    if isinstance(record, Mapping):
        data = record.get("data")
        if isinstance(data, str):  # a row straight from the store
            data = json.loads(data)
        return str(record.get("type")), data if isinstance(data, Mapping) else {}
    raise TypeError(f"not a record: {type(record).__name__}")


def derive_target(record: Any, kind: str) -> str | None:
    """The next stage's target from a kept record, or None when it gives none of ``kind``.

    host: its host (an http record's url host). port: ``host:port``. url: the record's
    own url for http records; for a service record that says whether the port spoke TLS,
    https exactly when it did; else ``http://host:port/`` (https for 443 and 8443).
    Every value is checked with :func:`console.targets.sets.validate_value`; a value that
    fails it gives None (the planner counts it as dropped).
    """
    rtype, data = _type_and_data(record)
    host = data.get("host")
    port = data.get("port")
    url = data.get("url") if rtype == "http" else None
    if isinstance(url, str):
        parts = targets.parse_url(url)
        if parts is None:
            return None
        scheme, url_host, url_port, _tail = parts
        host = url_host
        port = url_port if url_port is not None else (443 if scheme == "https" else 80)
    try:
        if kind in ("host", "ip"):
            return targets.validate_value(kind, host) if isinstance(host, str) else None
        if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
            return None
        if kind == "port":
            return targets.validate_value("port", targets.format_hostport(host, port))
        if kind == "url":
            if isinstance(url, str):
                return targets.validate_value("url", url)
            host = targets.validate_value("host", host)
            if rtype == "service" and isinstance(data.get("tls"), bool):  # the service tool saw TLS or not
                return targets.validate_value("url", targets.format_url("https" if data["tls"] else "http", host, port))
            return targets.validate_value("url", targets.url_for(host, port))
    except BadInput:
        return None
    return None


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual or str(expected).lower() == str(actual).lower()
    return bool(expected == actual) or str(expected) == str(actual)


def matches_where(record: Any, where: Mapping[str, Any] | None) -> bool:
    """Does the record pass a stage's ``where`` filter?

    Keys are ``type`` and data fields; a list in ``where`` matches any of its items, and a
    list-valued field (``sans``) matches when any of its members does.
    """
    if not where:
        return True
    rtype, data = _type_and_data(record)
    for key, expected in where.items():
        actual = rtype if key == "type" else data.get(key)
        if actual is None:
            return False
        options = expected if isinstance(expected, list) else [expected]
        values = actual if isinstance(actual, list) else [actual]  # list fields (sans) match by member
        if not any(_same(option, value) for option in options for value in values):
            return False
    return True


#: Fields known for each type, for checking ``where`` keys in workflow files: the models'
#: fields, every data field SPEC's Results table documents, and the extras the built-in
#: tools and parsers add (tcp_connect's addr, http_probe's location/redirect_blocked/error,
#: nmap_xml's service/product/version/tls/cpe/extrainfo, tls_cert's serial/sha256).
_KNOWN_EXTRAS: dict[str, set[str]] = {
    "host_up": {"host", "via", "rtt_ms", "name"},
    "port_open": {"host", "port", "proto", "addr", "name", "service", "product", "version", "tls", "cpe", "extrainfo"},
    "service": {"host", "port", "banner", "name", "product", "version", "tls", "method", "cpe", "extrainfo"},
    "http": {"url", "status", "title", "server", "redirects", "final_url", "location", "redirect_blocked", "error"},
    "tls_cert": {"host", "port", "subject", "issuer", "not_before", "not_after", "sans", "protocol", "serial", "sha256",
                 "cipher", "starttls"},
    "baseline": {"rule", "title", "security", "status", "evidence", "baseline"},
}
FIELDS: dict[str, frozenset[str]] = {
    name: frozenset(model.model_fields) | _KNOWN_EXTRAS.get(name, set()) for name, model in MODELS.items()
}
