"""The baseline tool on Elkeid's real rule files and on a temporary file tree (``root``)."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.agent_process import AgentProcess

ELKEID = Path(__file__).parent / "data" / "elkeid-baseline"
RULE_FILES = ["1200.yaml", "1300.yaml", "1400.yaml", "5000.yaml"]
_ids = iter(range(1, 1_000_000))


#: the rule engine runs on the venv's Python and on the oldest supported one when this machine has it
AGENT_PYTHONS = [sys.executable] + [
    str(p) for p in sorted(Path("/root/.pyenv/versions").glob("3.8.*/bin/python"))[:1]
]


@pytest.fixture(scope="module", params=AGENT_PYTHONS, ids=lambda p: "py" + Path(p).parent.parent.name)
def agent(request: pytest.FixtureRequest) -> Iterator[AgentProcess]:
    process = AgentProcess.from_source(python=request.param)
    assert process.read()["op"] == "hello"
    try:
        yield process
    finally:
        process.stop()


def baseline(agent: AgentProcess, params: dict[str, Any]) -> list[dict[str, Any]]:
    done, records = agent.run_task(f"b{next(_ids)}", "baseline", [], params, timeout=120)
    assert done["ok"] is True, done
    assert all(r["type"] == "baseline" for r in records)
    return [r["data"] for r in records]


def status_of(agent: AgentProcess, tree: Path, check: dict[str, Any]) -> dict[str, Any]:
    rules = {
        "baseline_id": 9,
        "check_list": [dict({"check_id": 1, "title": "t", "security": "low"}, check=check)],
    }
    (data,) = baseline(agent, {"rules": rules, "root": str(tree)})
    return data


@pytest.mark.skipif(not ELKEID.exists(), reason="Elkeid rule files not present")
@pytest.mark.parametrize("name", RULE_FILES)
def test_real_elkeid_files_give_one_outcome_per_check(agent: AgentProcess, name: str, tmp_path: Path) -> None:
    document = yaml.safe_load((ELKEID / name).read_text())
    outcomes = baseline(agent, {"rules": document, "root": str(tmp_path)})
    assert [o["rule"] for o in outcomes] == [str(c["check_id"]) for c in document["check_list"]]
    for outcome, check in zip(outcomes, document["check_list"], strict=True):
        assert outcome["status"] in ("pass", "fail", "error")
        assert outcome["title"] == check["title"] and outcome["security"] == check["security"]
        assert outcome["baseline"] == str(document["baseline_id"])
        if outcome["status"] == "error":
            assert outcome["reason"]
    if name == "5000.yaml":
        assert outcomes[0]["status"] == "error" and "no rules" in outcomes[0]["reason"]


@pytest.mark.skipif(not ELKEID.exists(), reason="Elkeid rule files not present")
def test_a_hardened_tree_passes_and_a_weak_one_fails_the_debian_file_checks(
    agent: AgentProcess, tmp_path: Path
) -> None:
    document = yaml.safe_load((ELKEID / "1300.yaml").read_text())
    good, bad = tmp_path / "good", tmp_path / "bad"
    for tree, max_days, root_uid0, ssh in (
        (good, 90, "", "PermitEmptyPasswords no\nMaxAuthTries 4\nLogLevel INFO\n"),
        (
            bad,
            365,
            "toor:x:0:0::/root:/bin/sh\n",
            "PermitEmptyPasswords yes\nMaxAuthTries 6\nLogLevel QUIET\n",
        ),
    ):
        (tree / "etc/ssh").mkdir(parents=True)
        (tree / "etc/login.defs").write_text(
            f"# PASS_MAX_DAYS 1\nPASS_MAX_DAYS\t{max_days}\nPASS_MIN_DAYS 2\n"
        )
        (tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n" + root_uid0)
        (tree / "etc/ssh/sshd_config").write_text(ssh)
        (tree / "etc/shadow").write_text("root:!:19000:0:99999:7:::\n")
        for name, mode in (("passwd", 0o644), ("shadow", 0o400), ("group", 0o644), ("gshadow", 0o400)):
            path = tree / "etc" / name
            path.touch()
            os.chmod(path, mode if tree is good else 0o666)
    wanted = ["1", "2", "5", "7", "8", "9", "12", "16"]
    verdicts = {}
    for tree in (good, bad):
        outcomes = baseline(agent, {"rules": document, "root": str(tree), "checks": wanted})
        verdicts[tree.name] = {o["rule"]: o["status"] for o in outcomes}
    assert verdicts["good"] == dict.fromkeys(wanted, "pass") | {"7": "pass"}
    assert verdicts["bad"] == {"1": "fail", "2": "pass", "5": "fail", "7": "pass", "8": "fail", "9": "fail",
                               "12": "fail", "16": "fail"}  # fmt: skip


def test_file_permission_intended_meaning_exact_mode_passes(agent: AgentProcess, tmp_path: Path) -> None:
    target = tmp_path / "etc" / "passwd"
    target.parent.mkdir()
    target.write_text("x")
    check = {"rules": [{"type": "file_permission", "param": ["/etc/passwd", "644"]}]}
    for mode, expected in ((0o644, "pass"), (0o600, "pass"), (0o664, "fail"), (0o4644, "fail")):
        os.chmod(target, mode)
        outcome = status_of(agent, tmp_path, check)
        assert outcome["status"] == expected, (oct(mode), outcome)
    assert "mode" in outcome["evidence"]


def test_result_comparisons_not_and_conditions(agent: AgentProcess, tmp_path: Path) -> None:
    (tmp_path / "conf").write_text(
        "# MaxThing 1\nMaxThing 7\npassword pam_unix.so remember=3\nlevel = high\n"
    )

    def rule(result: str, filter: str | None = None, param: list[str] | None = None) -> dict[str, Any]:
        r: dict[str, Any] = {"type": "file_line_check", "param": param or ["/conf"], "result": result}
        if filter:
            r["filter"] = filter
        return r

    def outcome(*rules: dict[str, Any], condition: str | None = None) -> str:
        check: dict[str, Any] = {"rules": list(rules)}
        if condition:
            check["condition"] = condition
        return str(status_of(agent, tmp_path, check)["status"])

    num = r"MaxThing\s+(\d+)"
    assert outcome(rule("$(<=)7", num)) == "pass"
    assert outcome(rule("$(<)7", num)) == "fail"
    assert outcome(rule("$(>=)7", num), rule("$(>)6", num), rule("$(==)7", num)) == "pass"
    assert outcome(rule("$(<)2", num)) == "fail"  # the commented "MaxThing 1" line is skipped
    assert outcome(rule("pam_unix.so$(&&)$(<)5", r"remember=(\d+)")) == "pass"
    assert outcome(rule("pam_unix.so$(&&)$(not)remember")) == "fail"
    assert outcome(rule("^level"), rule("^nothing"), condition="any") == "pass"
    assert outcome(rule("^nothing"), rule("^zilch"), condition="none") == "pass"
    assert outcome(rule("^level"), rule("^zilch"), condition="none") == "fail"
    assert outcome(rule("high", param=["/conf", "level"])) == "pass"
    assert outcome(rule("high", param=["/conf", "MaxThing"])) == "fail"
    assert outcome(rule("anything", param=["/missing-file"])) == "fail"


def test_other_rule_types_and_errors(agent: AgentProcess, tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nbin:x:1:1::/:/bin/false\n")
    (tmp_path / "data").write_bytes(b"hello")
    md5 = hashlib.md5(b"hello").hexdigest()
    me = f"{os.getuid()}:{os.getgid()}"

    def one(rule: dict[str, Any]) -> dict[str, Any]:
        return status_of(agent, tmp_path, {"rules": [rule]})

    assert one({"type": "if_file_exist", "param": ["/data"]})["status"] == "pass"
    assert one({"type": "if_file_exist", "param": ["/nope"]})["status"] == "fail"
    assert one({"type": "file_md5_check", "param": ["/data", md5]})["status"] == "pass"
    assert one({"type": "file_md5_check", "param": ["/data", "0" * 32]})["status"] == "fail"
    assert one({"type": "file_md5_check", "param": ["/nope", md5]})["status"] == "error"
    assert one({"type": "file_user_group", "param": ["/data", me]})["status"] == "pass"
    assert one({"type": "file_user_group", "param": ["/data", "4242:4242"]})["status"] == "fail"
    assert one({"type": "func_check", "param": ["Ensure no duplicate user names exist"]})["status"] == "pass"
    unknown = one({"type": "func_check", "param": ["check_redis_weak_password"]})
    assert unknown["status"] == "error" and "unsupported func_check" in unknown["reason"]
    assert "unknown rule type" in one({"type": "registry_check", "param": ["x"]})["reason"]
    assert (
        "bad regex" in one({"type": "file_line_check", "param": ["/data"], "result": "(unclosed"})["reason"]
    )


def test_command_check_runs_argv_without_a_shell(agent: AgentProcess, tmp_path: Path) -> None:
    def one(rule: dict[str, Any]) -> dict[str, Any]:
        return status_of(agent, tmp_path, {"rules": [rule]})

    assert one({"type": "command_check", "param": ["echo enabled"], "result": "enabled"})["status"] == "pass"
    assert (
        one({"type": "command_check", "param": ["echo disabled"], "result": "^enabled"})["status"] == "fail"
    )
    # no shell: the ';' and the '$(...)' are plain arguments to echo
    shell_free = one({"type": "command_check", "param": ["echo a;$(id)"], "result": r"^a;\$\(id\)"})
    assert shell_free["status"] == "pass"
    assert one({"type": "command_check", "param": ["false"], "result": ".*"})["status"] == "fail"
    assert (
        one({"type": "command_check", "param": ["false", "ignore_exit"], "result": ".*"})["status"] == "pass"
    )
    assert (
        one({"type": "command_check", "param": ["fleetscan-no-such-cmd"], "result": ".*"})["status"] == "fail"
    )
    assert one({"type": "command_check", "param": ["echo 12"], "result": "$(>=)10"})["status"] == "pass"


def test_bad_rules_param_is_a_clean_task_error(agent: AgentProcess) -> None:
    done, _ = agent.run_task("bad-rules", "baseline", [], {"rules": [{"nope": 1}]})
    assert done["ok"] is False and "params.rules" in done["error"]
    done, _ = agent.run_task("no-rules", "baseline", [], {})
    assert done["ok"] is False and "params.rules" in done["error"]
