"""The agent's fast start: stage 0's verified code cache, lazily imported tools, a clean import path.

Every test runs the real stage 0 in a subprocess with its own HOME, as a box would.
Which modules a start imported is read from ``PYTHONPROFILEIMPORTTIME`` (stderr), the
interpreter's own account, not from anything the agent says about itself.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentkit import agent as agent_module
from agentkit import tools as tools_module
from agentkit import wire
from agentkit.archive import build_archive
from agentkit.bootstrap import handshake, stage0_argv

PY38 = sorted(Path("/root/.pyenv/versions").glob("3.8.*/bin/python"))
SYSTEM_PYTHON = Path("/usr/bin/python3")
HEADER = 5 + 64  # b"FSAC1" + hex sha256 of the payload


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def box_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HOME"] = str(home)
    env.update(extra)
    return env


class Start:
    """One stage-0 start: the hello, whether the archive was pushed, and what got imported."""

    def __init__(self, home: Path, python: str = sys.executable, cwd: Path | None = None, **env: str) -> None:
        archive, digest = build_archive()
        self.proc = subprocess.Popen(
            stage0_argv(python, digest, len(archive)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=box_env(home, PYTHONPROFILEIMPORTTIME="1", **env),
            cwd=str(cwd or "/"),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stderr = b""
        self._errs = threading.Thread(target=self._drain, daemon=True)
        self._errs.start()
        self.hello, self.pushed = handshake(self.proc.stdin, self.proc.stdout, archive)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def request(self, line: bytes, until: bytes) -> list[bytes]:
        """Send one line, read lines until one contains ``until``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        lines = [self.proc.stdout.readline()]
        while until not in lines[-1]:
            assert lines[-1], lines
            lines.append(self.proc.stdout.readline())
        return lines

    def noop(self) -> None:
        lines = self.request(
            b'{"op":"task","id":"n","tool":"noop","targets":[],"params":{"records":1}}\n', b'"op":"done"'
        )
        assert b'"ok":true' in lines[-1], lines

    def finish(self) -> set[str]:
        """Close stdin (the agent exits), return the names of every module the process imported."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0
        self._errs.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        imported = set()
        for line in self.stderr.decode("utf-8", "replace").splitlines():
            if line.startswith("import time:") and line.count("|") == 2:
                imported.add(line.rsplit("|", 1)[1].strip())
        return imported


def cache_dir(home: Path) -> Path:
    return home / ".cache" / "fleetscan"


def code_cache(home: Path) -> Path:
    digest = build_archive()[1]
    return cache_dir(home) / f"agent-{digest}.{sys.implementation.cache_tag}.code"


def rewrite_cache(path: Path, change: Any, *, fix_digest: bool) -> None:
    """Decode the code cache, let ``change(modules)`` edit it, write it back (digest fixed or stale)."""
    blob = path.read_bytes()
    key, modules = marshal.loads(blob[HEADER:])
    change(modules)
    payload = marshal.dumps((key, modules))
    digest = hashlib.sha256(payload).hexdigest().encode() if fix_digest else blob[5:HEADER]
    path.write_bytes(b"FSAC1" + digest + payload)


def plant_marker(marker: Path) -> Any:
    """A change that makes ``agentkit.tools.noop`` create ``marker`` when it is executed."""

    def change(modules: dict[str, tuple[bool, str, bytes]]) -> None:
        package, filename, _ = modules["agentkit.tools.noop"]
        source = (Path(tools_module.__file__).parent / "noop.py").read_text()
        source += f"\nopen({str(marker)!r}, 'w').close()\n"
        modules["agentkit.tools.noop"] = (package, filename, marshal.dumps(compile(source, filename, "exec")))

    return change


# -- the code cache --------------------------------------------------------------------------------


def test_first_start_writes_a_private_code_cache_that_the_second_start_runs(home: Path) -> None:
    first = Start(home)
    assert first.pushed and first.hello["hash"] == build_archive()[1]
    first.noop()
    assert "zipfile" in first.finish()  # compiled from the archive
    path = code_cache(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in cache_dir(home).iterdir() if p.name.endswith(".tmp")]

    second = Start(home)
    assert not second.pushed and second.hello["hash"] == build_archive()[1]
    second.noop()
    imported = second.finish()
    assert "zipfile" not in imported and "agentkit.agent" in imported  # served from the code cache


def test_the_code_cache_is_what_runs(home: Path, tmp_path: Path) -> None:
    """Control for the tamper tests below: a well-formed cache file is executed as it is, so the
    refusals there are the checks at work (and this is why the checks and the 0700 dir matter)."""
    Start(home).finish()
    marker = tmp_path / "ran-from-cache"
    rewrite_cache(code_cache(home), plant_marker(marker), fix_digest=True)
    start = Start(home)
    start.noop()
    start.finish()
    assert marker.exists()


def test_a_tampered_code_cache_is_refused_and_rebuilt(home: Path, tmp_path: Path) -> None:
    Start(home).finish()
    marker = tmp_path / "tampered-code-ran"
    rewrite_cache(code_cache(home), plant_marker(marker), fix_digest=False)
    start = Start(home)
    assert not start.pushed  # the archive itself is intact: only the compiled form is redone
    start.noop()
    assert "zipfile" in start.finish()
    assert not marker.exists()
    again = Start(home)  # the rebuilt cache is good again
    again.noop()
    assert "zipfile" not in again.finish() and not marker.exists()


@pytest.mark.parametrize("how", ["group-writable", "other-writable", "foreign-owner"])
def test_a_code_cache_others_could_write_is_not_run(home: Path, tmp_path: Path, how: str) -> None:
    Start(home).finish()
    marker = tmp_path / "foreign-code-ran"
    path = code_cache(home)
    rewrite_cache(path, plant_marker(marker), fix_digest=True)
    if how == "group-writable":
        path.chmod(0o620)
    elif how == "other-writable":
        cache_dir(home).chmod(0o703)
    else:
        if os.geteuid() != 0:
            pytest.skip("only root can give a file away")
        os.chown(path, 65534, 65534)
    start = Start(home)
    start.noop()
    start.finish()
    assert not marker.exists()


def test_a_truncated_code_cache_and_a_foreign_key_are_rebuilt(home: Path) -> None:
    Start(home).finish()
    path = code_cache(home)
    path.write_bytes(path.read_bytes()[: HEADER + 100])
    start = Start(home)
    start.noop()
    assert "zipfile" in start.finish()

    blob = path.read_bytes()
    (magic, digest, optimize), modules = marshal.loads(blob[HEADER:])
    payload = marshal.dumps(((b"\x00\x00\r\n", digest, optimize), modules))  # another interpreter's
    path.write_bytes(b"FSAC1" + hashlib.sha256(payload).hexdigest().encode() + payload)
    start = Start(home)
    start.noop()
    assert "zipfile" in start.finish()
    assert marshal.loads(path.read_bytes()[HEADER:])[0][0] == magic


def test_an_unwritable_code_cache_still_starts(home: Path) -> None:
    """The cache path taken by a directory: nothing can be written there, the agent runs anyway."""
    Start(home).finish()
    path = code_cache(home)
    path.unlink()
    path.mkdir()
    for _ in range(2):
        start = Start(home)
        assert not start.pushed
        start.noop()
        assert "zipfile" in start.finish()
    assert path.is_dir()


@pytest.mark.skipif(not (PY38 and SYSTEM_PYTHON.exists()), reason="needs python 3.8 and /usr/bin/python3")
def test_each_python_keeps_its_own_code_cache(home: Path) -> None:
    for python in (str(PY38[0]), str(SYSTEM_PYTHON), str(PY38[0])):
        start = Start(home, python=python)
        start.noop()
        start.finish()
    names = sorted(p.name.rsplit(".", 2)[1] for p in cache_dir(home).glob("*.code"))
    assert "cpython-38" in names and len(names) == 2
    start = Start(home, python=str(PY38[0]))
    start.noop()
    assert "zipfile" not in start.finish()


# -- what a start imports ----------------------------------------------------------------------


def test_no_tool_is_imported_before_its_first_task(home: Path) -> None:
    Start(home).finish()
    start = Start(home)
    assert start.hello["tools"] == sorted(tools_module.BUILTIN_TOOLS)
    start.noop()
    imported = start.finish()
    assert "agentkit.tools.noop" in imported
    heavy = {"agentkit.tools.http_probe", "agentkit.tools.tls_cert", "agentkit.tools.baseline"}
    assert not imported & (heavy | {"ssl", "http.client", "email.parser", "xml.etree.ElementTree"})
    assert "site" not in imported  # stage 0 runs with -S: the box's site-packages are none of ours


def test_a_module_in_the_login_directory_cannot_shadow_the_stdlib(home: Path, tmp_path: Path) -> None:
    """SSH sessions start in the user's home: a stray json.py there must not be imported."""
    workdir = tmp_path / "login-dir"
    workdir.mkdir()
    marker = tmp_path / "shadow-ran"
    (workdir / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(9)\n")
    start = Start(home, cwd=workdir)
    start.noop()
    start.finish()
    assert not marker.exists()


def test_hello_has_exactly_the_wire_fields() -> None:
    import dataclasses

    message = agent_module.hello("0" * 64)
    assert [f.name for f in dataclasses.fields(wire.Hello)] == list(dataclasses.asdict(message))
    assert message.hostname == __import__("socket").gethostname()
    assert message.tools == sorted(tools_module.BUILTIN_TOOLS)


# -- the lazy registry and the PATH scan -------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[tools_module.ToolRegistry]:
    yield tools_module.ToolRegistry({"noop": "agentkit.tools.noop", "ghost": "agentkit.tools.no_such_tool"})


def test_registry_names_without_importing_and_imports_on_first_use(
    registry: tools_module.ToolRegistry,
) -> None:
    assert sorted(registry) == ["ghost", "noop"] and "ghost" in registry and len(registry) == 2
    assert not registry.loaded("noop")
    from agentkit.tools import noop

    assert registry["noop"] is noop.run and registry.loaded("noop")
    with pytest.raises(ImportError):
        registry["ghost"]
    with pytest.raises(KeyError):
        registry["absent"]


@pytest.fixture
def ghost_tool() -> Iterator[None]:
    """A registered tool whose module does not exist (as a box without ``_ssl`` sees tls_cert)."""
    tools_module.REGISTRY.add_module("ghost", "agentkit.tools.no_such_tool")
    try:
        yield
    finally:
        del tools_module.REGISTRY["ghost"]


@pytest.mark.usefixtures("ghost_tool")
def test_a_tool_that_cannot_be_imported_fails_its_task_not_the_agent() -> None:
    import io
    import json
    import time

    class Capture(io.BytesIO):
        def close(self) -> None:
            pass

    out = Capture()
    served = agent_module.Agent(agent_module.ProtocolWriter(out))
    read_end, write_end = os.pipe()
    os.write(
        write_end, b'{"op":"task","id":"g1","tool":"ghost","targets":[],"params":{}}\n{"op":"ping","seq":3}\n'
    )
    with os.fdopen(read_end, "rb") as stdin:
        server = threading.Thread(target=served.serve, args=(stdin,), daemon=True)
        server.start()
        deadline = time.monotonic() + 30
        while b'"done"' not in out.getvalue() or b'"pong"' not in out.getvalue():
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.02)
        os.close(write_end)
        server.join(10)
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    done = next(m for m in messages if m["op"] == "done")
    assert done["ok"] is False and "tool ghost is not available" in done["error"], done
    assert "no_such_tool" in done["error"]


def test_find_programs_agrees_with_shutil_which(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
    (first / "tool").write_text("#!/bin/sh\n")  # not executable: skipped
    (second / "tool").write_text("#!/bin/sh\n")
    (second / "tool").chmod(0o755)
    (first / "dirprog").mkdir()  # a directory is no program
    (second / "other").write_text("")
    (second / "other").chmod(0o755)
    search = os.pathsep.join(["", str(first), str(second)])
    names = ["tool", "dirprog", "other", "absent"]
    found = agent_module.find_programs(names, search)
    assert found == {"tool": str(second / "tool"), "other": str(second / "other")}
    expected = {n: shutil.which(n, path=search) for n in names}
    assert found == {n: p for n, p in expected.items() if p}
