"""Elkeid baseline rule semantics: one rule -> (holds, evidence), or a RuleError.

Mirrors ByteDance Elkeid's baseline engine (plugins/baseline/src/check) so the
published rule files mean the same here, with these deliberate choices:

* file_permission uses the INTENDED meaning: the rule holds when the file's
  mode grants no permission bit beyond ``param[1]`` (octal), i.e.
  ``mode & ~wanted == 0``. Elkeid's engine compares the two numbers with a
  strict ``<``, which fails a file that has exactly the wanted mode (0644
  against "644"); fleetscan does not copy that bug. A missing file holds, as
  in Elkeid (nothing to protect).
* file_line_check: lines are trimmed for the comment test (``#`` unless
  ``param[2]`` names another marker) and, when ``param[1]`` is given, only
  lines containing it are looked at. ``filter`` must match the line and its
  group 1 is what ``$(op)N`` comparisons read; plain regex parts of
  ``result`` search the whole line (as in Elkeid, so
  ``password.*pam_unix.so$(&&)$(<)5`` works). A rule without ``result``
  holds on the first line the filter (or nothing) accepts. A missing file
  does not hold; an unreadable one is an error.
* command_check: ``param[0]`` split on spaces, run without a shell. A failing
  (or missing) command does not hold unless ``param[1] == "ignore_exit"``.
  Otherwise ``filter``/``result`` apply to the whole output (no MULTILINE: ``^``
  is the start of the output, as in Go). Without ``result``: success holds.
* ``$(not)`` inverts one part, ``$(&&)`` joins parts that must all hold;
  comparisons ``$(<)``, ``$(<=)``, ``$(>)``, ``$(>=)``, ``$(==)``, ``$(!=)``
  are numeric (``==``/``!=`` fall back to text when either side is not an integer).
* ``require: allow_ssh_passwd`` makes a rule hold outright when password
  login is off in sshd_config; any other ``require`` is an error.
* func_check knows "Ensure no duplicate user names exist"; any other
  function is an error outcome with the reason (never a silent pass).

Every path is read under ``root`` (default "/"), so tests (and audits of a
mounted image) can point the rules at another tree; commands are unaffected.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Callable, Dict, List, Optional, Pattern, Tuple

from agentkit.tools.text import collapse

MAX_EVIDENCE = 512
_COMPARISON = re.compile(r"^\$\((<=|>=|==|!=|<|>)\)(.*)$", re.DOTALL)

RunCommand = Callable[[List[str]], Tuple[Optional[int], str]]


class RuleError(Exception):
    """The rule cannot be evaluated (bad rule, unreadable file, unsupported type)."""


def evidence(text: str) -> str:
    return collapse(text, MAX_EVIDENCE)


def under_root(root: str, path: str) -> str:
    if not isinstance(path, str) or not path:
        raise RuleError("param[0] must be a path")
    return os.path.join(root, path.lstrip("/")) if root not in ("", "/") else path


def compile_regex(pattern: Any, field: str) -> Pattern[str]:
    if not isinstance(pattern, str):
        raise RuleError("%s must be a string" % field)
    try:
        return re.compile(pattern)
    except re.error as err:
        raise RuleError("%s: bad regex %r: %s" % (field, pattern, err)) from None


def result_holds(result: str, value: str, group: Optional[str]) -> bool:
    """Evaluate an Elkeid ``result`` expression against a value (and the filter's group 1)."""
    for part in result.split("$(&&)"):
        invert = part.startswith("$(not)")
        if invert:
            part = part[len("$(not)") :]
        comparison = _COMPARISON.match(part)
        if comparison:
            holds = compare(
                comparison.group(1), group if group is not None else value.strip(), comparison.group(2)
            )
        else:
            holds = compile_regex(part, "result").search(value) is not None
        if invert:
            holds = not holds
        if not holds:
            return False
    return True


def check_result(result: str) -> None:
    """Compile every regex part up front, so a bad rule is an error, not a quiet "no line matched"."""
    for part in result.split("$(&&)"):
        if part.startswith("$(not)"):
            part = part[len("$(not)") :]
        if not _COMPARISON.match(part):
            compile_regex(part, "result")


def compare(operator: str, actual: str, wanted: str) -> bool:
    try:
        left, right = int(actual.strip()), int(wanted.strip())
    except ValueError:
        if operator == "==":
            return actual.strip() == wanted.strip()
        if operator == "!=":
            return actual.strip() != wanted.strip()
        raise RuleError("need a number, got %r" % actual[:64]) from None
    return {
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
        "==": left == right,
        "!=": left != right,
    }[operator]


def params_of(rule: Dict[str, Any], minimum: int) -> List[str]:
    param = rule.get("param")
    if (
        not isinstance(param, list)
        or len(param) < minimum
        or not all(isinstance(p, (str, int)) for p in param)
    ):
        raise RuleError("%s needs at least %d param(s)" % (rule.get("type"), minimum))
    return [str(p) for p in param]


def file_line_check(rule: Dict[str, Any], root: str) -> Tuple[bool, str]:
    param = params_of(rule, 1)
    path = under_root(root, param[0])
    flag = param[1] if len(param) >= 2 else ""
    note = param[2] if len(param) >= 3 else "#"
    line_filter = compile_regex(rule["filter"], "filter") if rule.get("filter") else None
    result = rule.get("result")
    if result is not None and not isinstance(result, str):
        raise RuleError("result must be a string for file_line_check")
    if result is not None:
        check_result(result)
    try:
        handle = open(path, "r", encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return False, "no file %s" % param[0]
    except OSError as err:
        raise RuleError("cannot read %s: %s" % (param[0], err.strerror or err)) from None
    candidate = ""  # the first line the filter accepted but the result rejected: the best evidence of a fail
    with handle:
        for raw in handle:
            line = raw.rstrip("\r\n")
            stripped = line.strip()
            if len(stripped) > len(note) and stripped.startswith(note):
                continue
            if flag and flag not in stripped:
                continue
            group = None
            if line_filter is not None:
                match = line_filter.search(line)
                if match is None:
                    continue
                group = match.group(1) if match.re.groups else None
            if result is None:
                return True, line
            try:
                if result_holds(result, line, group):
                    return True, line
            except RuleError:
                pass  # a line that does not compare (e.g. not a number) is not a match, as in Elkeid
            if line_filter is not None and not candidate:
                candidate = line
    if candidate:
        return False, "%s: %s" % (param[0], candidate)
    return False, "no line of %s matched" % param[0]


def command_check(rule: Dict[str, Any], run_command: RunCommand) -> Tuple[bool, str]:
    param = params_of(rule, 1)
    argv = [part for part in param[0].split(" ") if part]
    if not argv:
        raise RuleError("command_check: empty command")
    ignore_exit = len(param) >= 2 and param[1] == "ignore_exit"
    code, output = run_command(argv)
    if code != 0:
        what = "not found" if code is None else "exited %d" % code
        return ignore_exit, "%s %s%s" % (argv[0], what, " (ignore_exit)" if ignore_exit else "")
    group = None
    if rule.get("filter"):
        match = compile_regex(rule["filter"], "filter").search(output)
        if match is None:
            return False, "filter did not match the output of %s" % param[0]
        group = match.group(1) if match.re.groups else None
    result = rule.get("result")
    if result is None:
        return True, output
    if not isinstance(result, str):
        raise RuleError("result must be a string for command_check")
    check_result(result)
    return result_holds(result, output, group), output


def file_permission(rule: Dict[str, Any], root: str) -> Tuple[bool, str]:
    param = params_of(rule, 2)
    try:
        wanted = int(param[1], 8)
    except ValueError:
        raise RuleError("file_permission: %r is not an octal mode" % param[1]) from None
    try:
        mode = os.stat(under_root(root, param[0])).st_mode & 0o7777
    except FileNotFoundError:
        return True, "no file %s (nothing to protect)" % param[0]
    except OSError as err:
        raise RuleError("cannot stat %s: %s" % (param[0], err.strerror or err)) from None
    extra = mode & ~wanted
    text = "%s mode %04o, allowed %04o" % (param[0], mode, wanted)
    return extra == 0, text if extra == 0 else "%s, extra bits %04o" % (text, extra)


def if_file_exist(rule: Dict[str, Any], root: str) -> Tuple[bool, str]:
    param = params_of(rule, 1)
    exists = os.path.exists(under_root(root, param[0]))
    wanted = rule.get("result", True)
    expect_exists = not (wanted is False or (isinstance(wanted, str) and wanted.lower() == "false"))
    return exists == expect_exists, "%s %s" % (param[0], "exists" if exists else "does not exist")


def file_user_group(rule: Dict[str, Any], root: str) -> Tuple[bool, str]:
    param = params_of(rule, 2)
    wanted = param[1].split(":")
    if len(wanted) != 2:
        raise RuleError("file_user_group: param[1] must be uid:gid")
    try:
        info = os.stat(under_root(root, param[0]))
    except OSError as err:
        raise RuleError("cannot stat %s: %s" % (param[0], err.strerror or err)) from None
    actual = "%d:%d" % (info.st_uid, info.st_gid)
    return actual == "%s:%s" % (wanted[0], wanted[1]), "%s owned by %s" % (param[0], actual)


def file_md5_check(rule: Dict[str, Any], root: str) -> Tuple[bool, str]:
    param = params_of(rule, 2)
    try:
        with open(under_root(root, param[0]), "rb") as handle:
            digest = hashlib.md5(handle.read()).hexdigest()
    except OSError as err:
        raise RuleError("cannot read %s: %s" % (param[0], err.strerror or err)) from None
    return digest == param[1].lower(), "%s md5 %s" % (param[0], digest)


def func_check(rule: Dict[str, Any], root: str) -> Tuple[bool, str]:
    param = params_of(rule, 1)
    if param[0] == "Ensure no duplicate user names exist":
        seen = set()
        try:
            with open(under_root(root, "/etc/passwd"), encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    name = line.split(":", 1)[0]
                    if ":" in line and name in seen:
                        return False, "duplicate user %s" % name
                    seen.add(name)
        except OSError as err:
            raise RuleError("cannot read /etc/passwd: %s" % (err.strerror or err)) from None
        return True, "%d distinct users" % len(seen)
    raise RuleError("unsupported func_check: %s" % param[0])


def ssh_password_login(root: str) -> bool:
    try:
        with open(under_root(root, "/etc/ssh/sshd_config"), encoding="utf-8", errors="replace") as handle:
            for line in handle:
                line = line.strip()
                if line.startswith("#"):
                    continue
                if "PasswordAuthentication" in line and "yes" in line:
                    return True
    except OSError:
        pass
    return False


def evaluate_rule(rule: Any, root: str, run_command: RunCommand) -> Tuple[bool, str]:
    """One rule -> (holds, evidence); RuleError when it cannot be evaluated."""
    if not isinstance(rule, dict):
        raise RuleError("a rule must be a mapping")
    require = rule.get("require") or ""
    if require == "allow_ssh_passwd":
        if not ssh_password_login(root):
            return True, "ssh password login is off: rule not required"
    elif require:
        raise RuleError("unknown require %r" % str(require)[:64])
    kind = rule.get("type")
    if kind == "file_line_check":
        return file_line_check(rule, root)
    if kind == "command_check":
        return command_check(rule, run_command)
    file_rules = {
        "file_permission": file_permission,
        "if_file_exist": if_file_exist,
        "file_user_group": file_user_group,
        "file_md5_check": file_md5_check,
        "func_check": func_check,
    }
    if kind in file_rules:
        return file_rules[kind](rule, root)
    raise RuleError("unknown rule type %r" % str(kind)[:64])
