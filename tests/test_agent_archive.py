"""The agent archive, stage-0 bootstrap, and the stdlib-only / Python 3.8 promises."""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentkit import archive as archive_module
from agentkit.archive import build_archive, package_files
from agentkit.bootstrap import (
    STAGE0,
    BootstrapError,
    answer_stage0,
    handshake,
    stage0_argv,
    start_local_agent,
)
from tests.fixtures.agent_process import AgentProcess

AGENTKIT = Path(archive_module.__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
PYENV = Path("/root/.pyenv/versions")
#: the venv's python, the system python3, and (when this machine has it) the oldest supported one
PYTHONS = [sys.executable] + [
    str(p) for p in [Path(SYSTEM_PYTHON), *sorted(PYENV.glob("3.8.*/bin/python"))] if p.exists()
]
TOO_OLD = [
    str(p)
    for p in [*sorted(PYENV.glob("2.7.*/bin/python")), *sorted(PYENV.glob("3.7.*/bin/python"))]
    if p.exists()
]


def agent_sources() -> list[Path]:
    return sorted(p for p in AGENTKIT.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.fixture
def archive_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.pyz"
    assert archive_module.main([str(path)]) == 0
    return path


@pytest.fixture
def clean_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HOME"] = str(home)
    yield env


def test_archive_is_deterministic_and_holds_every_module() -> None:
    data, digest = build_archive()
    assert digest == hashlib.sha256(data).hexdigest()
    archive_module._CACHE = None
    try:
        again, digest_again = build_archive()
    finally:
        archive_module._CACHE = (data, digest)
    assert (again, digest_again) == (data, digest)
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert names[0] == "__main__.py"
        assert names[1:] == sorted(names[1:])
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    expected = {p.relative_to(AGENTKIT.parent).as_posix() for p in agent_sources()}
    assert set(names[1:]) == expected == {name for name, _ in package_files()}


@pytest.mark.parametrize("python", PYTHONS)
def test_archive_runs_under_each_python_and_says_its_own_hash(
    python: str, archive_file: Path, clean_env: dict
) -> None:
    agent = AgentProcess([python, str(archive_file)], env=clean_env, cwd=archive_file.parent)
    try:
        hello = agent.read()
        assert hello is not None and hello["op"] == "hello"
        assert hello["hash"] == hashlib.sha256(archive_file.read_bytes()).hexdigest() == build_archive()[1]
        done, records = agent.run_task("n", "noop", [], {"records": 2})
        assert done["ok"] and len(records) == 2
        agent.close_stdin()
        assert agent.proc.wait(10) == 0
    finally:
        agent.stop()


def run_stage0(python: str, env: dict, archive: bytes, digest: str) -> tuple[subprocess.Popen, dict, bool]:
    proc = subprocess.Popen(
        stage0_argv(python, digest, len(archive)), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, env=env, cwd="/",
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    hello, sent = handshake(proc.stdin, proc.stdout, archive)
    return proc, hello, sent


def finish(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b'{"op":"ping","seq":9}\n')
    proc.stdin.flush()
    assert proc.stdout is not None
    assert proc.stdout.readline() == b'{"op":"pong","seq":9}\n'
    proc.stdin.close()
    assert proc.wait(10) == 0
    proc.stdout.close()


@pytest.mark.parametrize("python", PYTHONS)
def test_stage0_needs_then_caches_then_uses_the_cache(python: str, clean_env: dict) -> None:
    archive, digest = build_archive()
    proc, hello, sent = run_stage0(python, clean_env, archive, digest)
    assert sent and hello["hash"] == digest
    finish(proc)
    cached = Path(clean_env["HOME"]) / ".cache" / "fleetscan" / f"agent-{digest}.pyz"
    assert cached.read_bytes() == archive
    assert (cached.parent.stat().st_mode & 0o777) == 0o700
    assert not [p for p in cached.parent.iterdir() if p.name.endswith(".tmp")]
    proc, hello, sent = run_stage0(python, clean_env, archive, digest)
    assert not sent and hello["hash"] == digest
    finish(proc)


def test_stage0_replaces_a_corrupt_cache(clean_env: dict) -> None:
    archive, digest = build_archive()
    cached = Path(clean_env["HOME"]) / ".cache" / "fleetscan" / f"agent-{digest}.pyz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the archive")
    proc, hello, sent = run_stage0(sys.executable, clean_env, archive, digest)
    assert sent and hello["hash"] == digest
    finish(proc)
    assert cached.read_bytes() == archive


def test_stage0_runs_from_memory_when_home_is_not_writable(clean_env: dict, tmp_path: Path) -> None:
    """A home where nothing can be created (a plain file: even root cannot mkdir under it)."""
    home_file = tmp_path / "home-is-a-file"
    home_file.write_text("")
    env = dict(clean_env, HOME=str(home_file))
    archive, digest = build_archive()
    proc, hello, sent = run_stage0(sys.executable, env, archive, digest)
    assert sent and hello["hash"] == digest
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(
        b'{"op":"task","id":"m","tool":"tcp_ping","targets":["127.0.0.1"],"params":{"ports":[1]}}\n'
    )
    proc.stdin.flush()
    lines = [proc.stdout.readline()]
    while b'"op":"done"' not in lines[-1]:
        lines.append(proc.stdout.readline())
        assert lines[-1], lines
    assert any(b'"via":"tcp/1"' in line for line in lines), lines
    finish(proc)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_stage0_runs_from_memory_with_a_read_only_cache_dir(clean_env: dict) -> None:
    cache = Path(clean_env["HOME"]) / ".cache"
    cache.mkdir(mode=0o500)
    archive, digest = build_archive()
    proc, hello, sent = run_stage0(sys.executable, clean_env, archive, digest)
    assert sent and hello["hash"] == digest
    finish(proc)


def test_stage0_refuses_bytes_with_the_wrong_hash(clean_env: dict) -> None:
    archive, digest = build_archive()
    proc = subprocess.Popen(
        stage0_argv(sys.executable, "0" * 64, len(archive)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=clean_env,
    )
    out, _ = proc.communicate(archive, timeout=30)
    assert out == b"NEED\nERROR hash mismatch\n" and proc.returncode == 4
    with pytest.raises(BootstrapError, match="hash mismatch"):
        answer_stage0(out.splitlines()[1])


def test_stage0_refuses_an_old_python(clean_env: dict) -> None:
    """The version gate itself, run with the version faked (no Python 3.7 on this machine)."""
    fake = "import sys\nsys.version_info = (3, 7, 9)\n" + STAGE0
    proc = subprocess.run(
        [sys.executable, "-c", fake, "0" * 64, "1"], capture_output=True, timeout=30, env=clean_env
    )
    assert proc.stdout == b"ERROR python too old 3.7\n" and proc.returncode == 3


@pytest.mark.parametrize("python", TOO_OLD)
def test_stage0_refuses_a_real_old_python(python: str, clean_env: dict) -> None:
    proc = subprocess.run(stage0_argv(python, "0" * 64, 1), capture_output=True, timeout=30, env=clean_env)
    assert proc.stdout.startswith(b"ERROR python too old ") and proc.returncode == 3
    with pytest.raises(BootstrapError, match="too old"):
        answer_stage0(proc.stdout)


def test_stage0_argv_survives_a_shell_when_quoted(clean_env: dict) -> None:
    """Over SSH the argv is joined with shlex.quote and run by the login shell: same program."""
    import shlex

    archive, digest = build_archive()
    line = " ".join(shlex.quote(part) for part in stage0_argv(sys.executable, digest, len(archive)))
    sh = shutil.which("sh")
    assert sh is not None
    proc = subprocess.Popen([sh, "-c", line], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=clean_env)
    assert proc.stdin is not None and proc.stdout is not None
    hello, sent = handshake(proc.stdin, proc.stdout, archive)
    assert sent and hello["hash"] == digest
    finish(proc)


def test_start_local_agent_helper(clean_env: dict) -> None:
    proc, hello, sent = start_local_agent(env=clean_env)
    assert hello["op"] == "hello" and hello["hash"] == build_archive()[1] and sent
    finish(proc)


def test_agentkit_imports_only_the_standard_library() -> None:
    stdlib = set(sys.stdlib_module_names)
    offenders = []
    for path in agent_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top != "agentkit":
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_agentkit_parses_as_python_3_8() -> None:
    for path in agent_sources():
        ast.parse(path.read_text(), str(path), feature_version=(3, 8))
    ast.parse(STAGE0, "<stage0>", feature_version=(3, 8))


def test_the_stdlib_check_can_fail() -> None:
    """The import walker above is not vacuous: it flags a third-party import."""
    tree = ast.parse("import yaml\nfrom pydantic import BaseModel\n")
    tops = {
        (n.names[0].name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    assert tops - set(sys.stdlib_module_names) == {"yaml", "pydantic"}
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1: pass\n", feature_version=(3, 8))
