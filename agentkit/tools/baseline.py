"""baseline: run Elkeid-format baseline checks on this box; one record per check.

params:
* ``rules``: the rule document(s) as JSON (the master parses the YAML file and
  ships it): one document ``{baseline_id, check_list: [...]}``, a list of such
  documents, or a bare list of ``check_list`` entries.
* ``checks`` (optional): only these check ids (ints or strings).
* ``root`` (optional, default "/"): every file a rule names is read under
  this prefix, so tests and audits of a mounted image can point the rules at
  another tree. ``command_check`` commands are NOT affected by it.
* ``command_timeout`` (optional, default 30 s per command).

A check's ``condition`` is ``all`` (default), ``any`` or ``none``, evaluated
in order and short-circuited as Elkeid does; a rule that cannot be evaluated
makes the whole check an ``error`` with the reason. A check without rules
(Elkeid's 5000 weak-password file is implemented in code there) is an
``error`` too, never a silent pass. Rule semantics: :mod:`agentkit.tools.baseline_rules`.

Results: ``baseline {rule: str(check_id), title, security, status:
pass|fail|error, evidence, reason (errors only), baseline (the document's
baseline_id)}``, target = this box's hostname (the master sets the host).
"""

from __future__ import annotations

import socket
from typing import Any, Dict, List, Optional, Tuple

from agentkit.context import TaskContext, TaskStopped, ToolError
from agentkit.params import get_float, get_str
from agentkit.tools.baseline_rules import RuleError, evaluate_rule, evidence
from agentkit.tools.text import collapse

CONDITIONS = ("all", "any", "none")


def collect_checks(rules: Any) -> List[Tuple[Optional[Any], Dict[str, Any]]]:
    """(baseline_id, check entry) for every check in the shipped document(s)."""
    documents = rules if isinstance(rules, list) else [rules]
    found: List[Tuple[Optional[Any], Dict[str, Any]]] = []
    for index, item in enumerate(documents):
        if isinstance(item, dict) and isinstance(item.get("check_list"), list):
            for check in item["check_list"]:
                if not isinstance(check, dict):
                    raise ToolError("params.rules[%d].check_list: every check must be a mapping" % index)
                found.append((item.get("baseline_id"), check))
        elif isinstance(item, dict) and "check_id" in item:
            found.append((None, item))
        else:
            raise ToolError(
                "params.rules[%d]: neither a baseline document (check_list) nor a check (check_id)" % index
            )
    return found


def evaluate_check(check: Dict[str, Any], root: str, run_command: Any) -> Tuple[str, str, str]:
    """(status, evidence, reason) of one check."""
    body = check.get("check")
    rules = body.get("rules") if isinstance(body, dict) else None
    if not isinstance(rules, list) or not rules:
        return "error", "", "check has no rules (not a rule-based check)"
    condition = body.get("condition") or "all"  # type: ignore[union-attr]
    if condition not in CONDITIONS:
        return "error", "", "unknown condition %r" % str(condition)[:32]
    seen: List[str] = []
    for number, rule in enumerate(rules):
        try:
            holds, said = evaluate_rule(rule, root, run_command)
        except RuleError as err:
            return "error", "", "rule %d: %s" % (number + 1, err)
        if holds and condition == "any":
            return "pass", evidence(said), ""
        if holds and condition == "none":
            return "fail", evidence(said), ""
        if not holds and condition == "all":
            return "fail", evidence(said), ""
        seen.append(said)
    if condition == "any":
        return "fail", evidence("no rule held: " + " | ".join(seen)), ""
    if condition == "none":
        return "pass", evidence("no rule held: " + " | ".join(seen)), ""
    return "pass", evidence(" | ".join(seen)), ""


def run(ctx: TaskContext, targets: List[str], params: Dict[str, Any]) -> None:
    if "rules" not in params:
        raise ToolError("params.rules: missing (the master ships the parsed rule file here)")
    checks = collect_checks(params["rules"])
    wanted = params.get("checks")
    if wanted is not None:
        if not isinstance(wanted, list):
            raise ToolError("params.checks: must be a list of check ids")
        keep = {str(item) for item in wanted}
        checks = [(doc, check) for doc, check in checks if str(check.get("check_id")) in keep]
    root = get_str(params, "root", "/")
    command_timeout = get_float(params, "command_timeout", 30.0, 0.1, 3600.0)
    hostname = socket.gethostname()

    def run_command(argv: List[str]) -> Tuple[Optional[int], str]:
        try:
            code, out, err = ctx.run_program(argv, timeout=command_timeout)
        except FileNotFoundError:
            return None, ""
        except PermissionError:
            return None, ""
        except TaskStopped as stopped:
            if ctx.should_stop():
                raise
            raise RuleError("command %s: %s" % (argv[0], stopped)) from None
        return code, out.decode("utf-8", "replace")

    for done, (baseline_id, check) in enumerate(checks):
        ctx.check()
        status, said, reason = evaluate_check(check, root, run_command)
        data: Dict[str, Any] = {
            "rule": str(check.get("check_id", "")),
            "title": collapse(str(check.get("title") or ""), 512),
            "security": collapse(str(check.get("security") or ""), 32),
            "status": status,
            "evidence": said,
        }
        if reason:
            data["reason"] = collapse(reason, 512)
        if baseline_id is not None:
            data["baseline"] = str(baseline_id)
        ctx.emit("baseline", hostname, data)
        ctx.progress(done + 1, len(checks))
