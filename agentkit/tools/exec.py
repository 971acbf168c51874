"""exec: run an external scanner from an argv template and parse what it prints. Never a shell.

params: ``argv`` (list of strings; ``argv[0]`` is looked up on PATH),
``argv6`` (optional: the argv for IPv6 targets, e.g. nmap's with ``-6``),
``parser`` (nmap_xml, masscan_json, masscan_ndjson, jsonl, lines), ``type``
(the record type ``lines`` produces), ``timeout`` (s per run, default: the task's).

IPv6 targets are never skipped silently: with ``argv6`` they run with it (a
task holding both families runs each with its own argv); without it, nmap
given an IPv6 target and no ``-6`` fails the task and says so. A parser that
recognises nothing in non-empty output fails the task with the reason.

Placeholders ``{target}``, ``{host}``, ``{port}``, ``{targets_file}`` are
replaced only when they are a WHOLE argv element (``"-p{port}"`` is refused:
put ``"-p", "{port}"``). Values are typed and validated first: a host is an
IP address or DNS name, a port 1..65535, a target a host, ``host:port`` or an
http(s) URL; anything that starts with ``-`` or holds whitespace or control
characters is refused, so a value from a scanned machine can never become an
option. With ``{target}``/``{host}``/``{port}`` the program runs once per
target; otherwise once for the whole task (``{targets_file}`` is a private
temporary file, one validated target a line).

The program runs in its own process group: cancel and timeout kill the group.
A missing program ends the task with ``program not found: NAME``; a non-zero
exit with no parsable output is an error naming the exit code and stderr's tail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional

from agentkit.context import TaskContext, ToolError
from agentkit.guard import Blocked
from agentkit.params import get_float, get_str
from agentkit.targets import (
    TargetError,
    host_port,
    is_host_ports,
    parse_ip,
    split_host_port,
    split_host_ports,
    url_host_port,
    valid_host,
)
from agentkit.tools import parsers
from agentkit.tools.text import collapse

#: an error text is kept whole up to this many characters (the master keeps as much)
ERROR_TEXT = 4096

PLACEHOLDERS = ("{target}", "{host}", "{port}", "{ports}", "{targets_file}")
PER_TARGET = ("{target}", "{host}", "{port}", "{ports}")
#: not a placeholder: the target a parser's records fall back to (a host_ports target's host)
RECORD_TARGET = "record-target"


def safe_value(value: str, what: str) -> str:
    if (
        not value
        or value.startswith("-")
        or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
    ):
        raise ToolError(
            "%s %r refused: empty, option-like, or contains whitespace/control characters"
            % (what, value[:ERROR_TEXT - 100])
        )
    return value


def target_values(target: str) -> Dict[str, str]:
    """{target}, {host}, {port}, {ports} for one task target (``{port}`` and ``{ports}`` only when it has ports).

    A ``host_ports`` target (``host:22,80``) gives ``{ports}`` = ``22,80`` and no ``{port}``; a port
    target gives both. Records its program reports fall back to the host as their target.
    """
    safe_value(target, "target")
    try:
        if is_host_ports(target):
            host, ports = split_host_ports(target)
            joined = ",".join(str(port) for port in ports)
            return {"{target}": target, "{host}": safe_value(host, "host"), "{ports}": joined, RECORD_TARGET: host}

        if "://" in target:
            host, port = url_host_port(target)
            return {"{target}": target, "{host}": safe_value(host, "host"), "{port}": str(port), "{ports}": str(port)}
        host, maybe_port = split_host_port(target)
        if maybe_port is not None:
            host, port = host_port(target)
            return {"{target}": target, "{host}": safe_value(host, "host"), "{port}": str(port), "{ports}": str(port)}
    except TargetError as err:
        raise ToolError("target %s" % err) from None
    if not valid_host(host):
        raise ToolError("target %r is not a host, host:port or URL" % target[:ERROR_TEXT - 100])
    return {"{target}": target, "{host}": safe_value(host, "host")}


def check_template(argv: Any) -> List[str]:
    if not isinstance(argv, list) or not argv or not all(isinstance(item, str) for item in argv):
        raise ToolError("params.argv: must be a non-empty list of strings")
    if argv[0] in PLACEHOLDERS or "{" in argv[0]:
        raise ToolError("params.argv[0]: the program cannot be a placeholder")
    for index, item in enumerate(argv):
        for name in PLACEHOLDERS:
            if name in item and item != name:
                raise ToolError(
                    "params.argv[%d]: %s must be a whole argv element, not part of %r" % (index, name, item)
                )
    return list(argv)


def fill(template: List[str], values: Dict[str, str]) -> List[str]:
    argv = []
    for item in template:
        if item in PLACEHOLDERS:
            if item not in values:
                raise ToolError("placeholder %s has no value for this target" % item)
            argv.append(values[item])
        else:
            argv.append(item)
    return argv


def _contactable(ctx: TaskContext, values: Dict[str, str]) -> bool:
    """The program resolves the host itself: every address it could reach must be allowed."""
    port = int(values["{port}"]) if "{port}" in values else None
    try:
        ctx.guard.check_host(values["{host}"], port)
    except Blocked:
        return False  # reported by the guard
    except OSError:
        return True  # does not resolve here: the program finds that out and says so
    return True


def is_ipv6_target(target: str) -> bool:
    """Whether a task target's host is an IPv6 address (``::1``, ``[::1]:80``, ``[::1]:22,80``, a URL)."""
    try:
        if "://" in target:
            host = url_host_port(target)[0]
        elif is_host_ports(target):
            host = split_host_ports(target)[0]
        else:
            host = split_host_port(target)[0]
    except TargetError:
        return False
    return ":" in host and parse_ip(host) is not None


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    """Each address family with its own argv (``argv6`` for IPv6 targets, when given)."""
    six = [target for target in targets if is_ipv6_target(target)]
    if "argv6" in params and params["argv6"] is not None:
        argv6 = check_template(params["argv6"])
        four = [target for target in targets if target not in six]
        if four:
            run_family(ctx, four, params, check_template(params.get("argv")))
        if six:
            run_family(ctx, six, params, argv6)
        return
    template = check_template(params.get("argv"))
    if six and os.path.basename(template[0]) == "nmap" and "-6" not in template:
        raise ToolError(
            "nmap without -6 cannot scan IPv6 targets (%s): give the stage an argv6 with -6"
            % collapse(", ".join(six[:3]), 200)
        )
    run_family(ctx, targets, params, template)


def run_family(ctx: TaskContext, targets: List[str], params: Dict[str, Any], template: List[str]) -> None:
    parser_name = get_str(params, "parser", "lines")
    parser = parsers.PARSERS.get(parser_name)
    if parser is None:
        raise ToolError(
            "params.parser: unknown parser %r (known: %s)" % (parser_name, ", ".join(sorted(parsers.PARSERS)))
        )
    record_type = get_str(params, "type", "line")
    run_timeout = get_float(params, "timeout", ctx.timeout, 0.01, 7 * 86400.0)
    program = shutil.which(template[0])
    if program is None:
        raise ToolError("program not found: %s" % collapse(template[0], ERROR_TEXT - 100))
    per_target = any(item in PER_TARGET for item in template)
    checked = [values for values in (target_values(target) for target in targets) if _contactable(ctx, values)]
    if targets and not checked:
        return  # every target was refused by the guard (each reported to the master)
    targets_file: Optional[str] = None
    try:
        if "{targets_file}" in template:
            fd, targets_file = tempfile.mkstemp(prefix="fleetscan-targets-", suffix=".txt")
            with os.fdopen(fd, "w") as handle:
                handle.write("".join(values["{target}"] + "\n" for values in checked))
        runs = checked if per_target else [{}]
        for done, values in enumerate(runs):
            ctx.check()
            if targets_file is not None:
                values = dict(values, **{"{targets_file}": targets_file})
            argv = [program] + fill(template, values)[1:]
            code, out, err = ctx.run_program(argv, timeout=run_timeout)
            default_target = values.get(RECORD_TARGET) or values.get("{target}", targets[0] if len(targets) == 1 else "")
            try:
                records = parser(out, record_type, default_target)
            except parsers.Unrecognised as problem:
                if code == 0:
                    raise ToolError(
                        "%s: parser %s recognised nothing in %d bytes of output: %s"
                        % (os.path.basename(program), parser_name, len(out), collapse(str(problem), 200))
                    ) from None
                records = []  # a failed run: its exit code and stderr say why (below)
            if code != 0 and not records:
                tail = collapse(err.decode("utf-8", "replace")[-(ERROR_TEXT - 200):], ERROR_TEXT - 200)
                raise ToolError("%s exited %d: %s" % (os.path.basename(program), code, tail))
            for record in records:
                ctx.emit(record.type, record.target, record.data)
            ctx.progress(done + 1, len(runs))
    finally:
        if targets_file is not None:
            os.unlink(targets_file)
