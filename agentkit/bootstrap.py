"""Stage 0: the few lines that get the agent archive onto a box and running.

The master starts ``stage0_argv(python, sha256, size)`` (locally, or joined with
``shlex.quote`` over SSH). Stage 0 checks the Python version (older than 3.8:
prints ``ERROR python too old X.Y``, exit 3), looks for the cached archive
``~/.cache/fleetscan/agent-<sha256>.pyz`` and re-hashes it; when missing or
wrong it prints ``NEED``, reads exactly SIZE bytes of archive from stdin,
verifies the hash (mismatch: ``ERROR hash mismatch``, exit 4) and caches it
atomically (directory mode 0700, tmp file + ``os.replace``). A cache that
cannot be written (read-only home) is no failure: the archive then runs from
memory through a small meta-path importer over the zip bytes. Either way it
calls ``agentkit.agent.main(sha256)``, whose first line is the ``hello``.

STAGE0 avoids f-strings and anything newer than the oldest Python that could
run it, so that even an old interpreter gets far enough to say it is too old.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

STAGE0 = r"""
import sys, os, hashlib
if sys.version_info < (3, 8):
    sys.stdout.write("ERROR python too old %d.%d\n" % tuple(sys.version_info[:2]))
    sys.stdout.flush()
    sys.exit(3)
sha, size = sys.argv[1], int(sys.argv[2])
home = os.path.join(os.path.expanduser("~"), ".cache", "fleetscan")
path = os.path.join(home, "agent-%s.pyz" % sha)
data = None
try:
    with open(path, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() == sha:
            data = True
except OSError:
    pass
if data is None:
    sys.stdout.write("NEED\n")
    sys.stdout.flush()
    parts, got = [], 0
    while got < size:
        chunk = sys.stdin.buffer.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    data = b"".join(parts)
    if hashlib.sha256(data).hexdigest() != sha:
        sys.stdout.write("ERROR hash mismatch\n")
        sys.stdout.flush()
        sys.exit(4)
    try:
        os.makedirs(home, mode=0o700, exist_ok=True)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        data = True
    except OSError:
        pass
if data is True:
    sys.path.insert(0, path)
else:
    import io, zipfile, importlib.util
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = set(zf.namelist())
    class ZipMemoryImporter(object):
        def find_spec(self, name, p=None, t=None):
            base = name.replace(".", "/")
            if base + "/__init__.py" in names:
                spec = importlib.util.spec_from_loader(name, self, is_package=True)
                spec.origin = "<fleetscan-agent>/" + base + "/__init__.py"
                return spec
            if base + ".py" in names:
                spec = importlib.util.spec_from_loader(name, self)
                spec.origin = "<fleetscan-agent>/" + base + ".py"
                return spec
            return None
        def create_module(self, spec):
            return None
        def exec_module(self, module):
            origin = module.__spec__.origin
            source = zf.read(origin[len("<fleetscan-agent>/"):])
            exec(compile(source, origin, "exec"), module.__dict__)
    sys.meta_path.insert(0, ZipMemoryImporter())
from agentkit.agent import main
sys.exit(main(sha))
""".strip()


def stage0_argv(python: str, sha256: str, size: int) -> List[str]:
    """The argv that bootstraps an agent: ``[python, "-c", STAGE0, sha256, size]``."""
    return [python, "-c", STAGE0, sha256, str(size)]


class BootstrapError(Exception):
    """Stage 0 refused (old python, hash mismatch) or the agent never said hello."""


def answer_stage0(first_line: bytes) -> str:
    """Classify stage 0's first line: ``"need"`` (send the archive), ``"hello"`` (cached), else raise."""
    text = first_line.decode("utf-8", "replace").strip()
    if text == "NEED":
        return "need"
    if text.startswith("ERROR "):
        raise BootstrapError("stage 0: " + text[len("ERROR ") :])
    try:
        message = json.loads(text)
    except ValueError:
        raise BootstrapError("stage 0: unexpected first line %r" % text[:200]) from None
    if isinstance(message, dict) and message.get("op") == "hello":
        return "hello"
    raise BootstrapError("stage 0: unexpected first line %r" % text[:200])


def handshake(stdin: IO[bytes], stdout: IO[bytes], archive: bytes) -> Tuple[Dict[str, Any], bool]:
    """Blocking master side of the bootstrap over a pipe pair: (hello message, archive was sent)."""
    line = stdout.readline()
    sent = False
    if answer_stage0(line) == "need":
        stdin.write(archive)
        stdin.flush()
        sent = True
        line = stdout.readline()
        if answer_stage0(line) != "hello":
            raise BootstrapError("stage 0: no hello after the archive")
    return json.loads(line.decode("utf-8")), sent


def start_local_agent(
    python: Optional[str] = None, env: Optional[Dict[str, str]] = None, extra: Sequence[str] = ()
) -> Tuple["subprocess.Popen[bytes]", Dict[str, Any], bool]:
    """Spawn a local agent through stage 0 and complete the handshake: (process, hello, archive sent)."""
    from agentkit.archive import build_archive

    archive, digest = build_archive()
    proc = subprocess.Popen(
        stage0_argv(python or sys.executable, digest, len(archive)) + list(extra),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        message, sent = handshake(proc.stdin, proc.stdout, archive)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, message, sent
