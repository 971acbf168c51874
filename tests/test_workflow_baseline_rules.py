"""The shipped baseline rules mean what their titles say: run them (agent engine) on prepared trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkit.tools.baseline import evaluate_check
from console.workflow.models import load_workflows

ROOT = Path(__file__).resolve().parents[1]

HARDENED = {
    "etc/ssh/sshd_config": ("# hardened\nPermitRootLogin no\nPasswordAuthentication no\nMaxAuthTries 3\n"
                            "X11Forwarding no\nProtocol 2\n#PermitEmptyPasswords yes\n", 0o600),
    "etc/passwd": ("root:x:0:0:root:/root:/bin/bash\nscan:x:1000:1000::/home/scan:/bin/sh\n", 0o644),
    "etc/shadow": ("root:*:19000:0:99999:7:::\n", 0o640),
    "etc/group": ("root:x:0:\n", 0o644),
    "etc/gshadow": ("root:*::\n", 0o640),
    "etc/login.defs": ("PASS_MAX_DAYS   90\nPASS_MIN_DAYS   1\nPASS_WARN_AGE   7\n", 0o644),
}

WEAK = {
    "etc/ssh/sshd_config": ("PermitRootLogin yes\nPasswordAuthentication yes\nPermitEmptyPasswords yes\n"
                            "MaxAuthTries 10\nX11Forwarding yes\nProtocol 2,1\nHostbasedAuthentication yes\n",
                            0o644),
    "etc/passwd": ("root:x:0:0:root:/root:/bin/bash\ntoor:x:0:0::/root:/bin/sh\n", 0o666),
    "etc/shadow": ("root:*:19000:0:99999:7:::\n", 0o644),
    "etc/group": ("root:x:0:\n", 0o664),
    "etc/gshadow": ("root:*::\n", 0o644),
    "etc/login.defs": ("PASS_MAX_DAYS   99999\nPASS_MIN_DAYS   0\nPASS_WARN_AGE   3\n", 0o644),
}


def _tree(base: Path, files: dict[str, tuple[str, int]]) -> str:
    for rel, (text, mode) in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    return str(base)


def _outcomes(root: str) -> dict[str, str]:
    params = load_workflows(ROOT / "workflows.yaml").get("baseline").stage("checks").agent_params

    def no_commands(argv: list[str]) -> tuple[int | None, str]:
        raise AssertionError(f"the shipped rules run no commands, got {argv}")

    return {str(check["check_id"]): evaluate_check(check, root, no_commands)[0] for check in params["rules"]}


def test_hardened_tree_passes_every_check(tmp_path: Path) -> None:
    outcomes = _outcomes(_tree(tmp_path, HARDENED))
    assert outcomes == {key: "pass" for key in outcomes}, outcomes
    assert len(outcomes) == 15


def test_weak_tree_fails_every_check(tmp_path: Path) -> None:
    outcomes = _outcomes(_tree(tmp_path, WEAK))
    assert outcomes == {key: "fail" for key in outcomes}, outcomes


@pytest.mark.parametrize(("line", "check"), [("PermitRootLogin prohibit-password", "1"),
                                             ("PasswordAuthentication yes", "2")])
def test_single_weakness_fails_only_its_check(tmp_path: Path, line: str, check: str) -> None:
    files = dict(HARDENED)
    text, mode = files["etc/ssh/sshd_config"]
    files["etc/ssh/sshd_config"] = (text.replace(line.split()[0] + " no", line), mode)
    outcomes = _outcomes(_tree(tmp_path, files))
    assert {key for key, status in outcomes.items() if status != "pass"} == {check}
