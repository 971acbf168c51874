"""Stage 0: the few lines that get the agent archive onto a box and running, fast.

The master starts ``stage0_argv(python, sha256, size)`` (locally, or joined with
``shlex.quote`` over SSH): ``python -Sc STAGE0 SHA256 SIZE``. ``-S`` skips
``site``: the agent is stdlib-only, and a box's site-packages ``.pth`` files
cost milliseconds on every start (35 ms in a big virtualenv). Stage 0 checks the
Python version (older than 3.8: prints ``ERROR python too old X.Y``, exit 3),
drops the login directory from ``sys.path`` (a stray ``json.py`` in the home
must not shadow the stdlib), looks for the cached archive
``~/.cache/fleetscan/agent-<sha256>.pyz`` and re-hashes it; when missing or
wrong it prints ``NEED``, reads exactly SIZE bytes of archive from stdin,
verifies the hash (mismatch: ``ERROR hash mismatch``, exit 4) and caches it
atomically (directory mode 0700, file mode 0600, tmp file + ``os.replace``).

The code cache. Compiling the agent's sources was a large part of every start
(zipimport keeps no bytecode cache), so stage 0 compiles the verified archive
once per interpreter into ``agent-<sha256>.<cache_tag>.code`` beside it: one
file, ``FSAC1`` + sha256 hex of the payload + ``marshal((key, modules))`` with
key = (the interpreter's bytecode magic, the archive's sha256, optimize level)
and modules = {name: (is package, filename, marshalled code)}. It is used only
when the archive itself checked out, the file's digest and key match, and both
the file and the cache directory belong to this user and are writable by no one
else; anything else is ignored and rebuilt from the archive (never run). Each
module's code is unmarshalled when it is imported, so tools imported lazily cost
nothing at start. Why not extract the sources and let Python write
``__pycache__``: CPython trusts a ``.pyc`` whose header matches the source's
mtime and size, so a tampered ``.pyc`` would run; it writes them lazily (an
integrity manifest could not cover them); and ``PYTHONDONTWRITEBYTECODE`` (set in
this project's own environment) turns it off. The digest catches corruption and
torn writes and the ownership check other users; the same user can always change
what their own python runs (they own ``~/.bashrc`` too), which no cache can stop.

A home where nothing can be written is no failure: the archive is then compiled
in memory on every start (the same importer over the zip bytes, as before).
Either way stage 0 calls ``agentkit.agent.main(sha256)``, whose first line is the
``hello``.

STAGE0 avoids f-strings and anything newer than the oldest Python that could
run it, so that even an old interpreter gets far enough to say it is too old.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

STAGE0 = r"""
import sys, os
if sys.version_info < (3, 8):
    sys.stdout.write("ERROR python too old %d.%d\n" % tuple(sys.version_info[:2]))
    sys.stdout.flush()
    sys.exit(3)
if sys.path and sys.path[0] == "":
    del sys.path[0]
try:
    from _sha256 import sha256
except ImportError:
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256
import marshal
from importlib.machinery import ModuleSpec
sha, size = sys.argv[1], int(sys.argv[2])
home = os.path.join(os.path.expanduser("~"), ".cache", "fleetscan")
path = os.path.join(home, "agent-%s.pyz" % sha)
tag = sys.implementation.cache_tag
code_path = tag and os.path.join(home, "agent-%s.%s.code" % (sha, tag))
try:
    import _frozen_importlib_external
    key = (_frozen_importlib_external.MAGIC_NUMBER, sha, sys.flags.optimize)
except (ImportError, AttributeError):
    import importlib.util
    key = (importlib.util.MAGIC_NUMBER, sha, sys.flags.optimize)
def read(name):
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError:
        return None
def private(name):
    try:
        st = os.stat(name)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022
def write(name, data):
    os.makedirs(home, mode=0o700, exist_ok=True)
    tmp = "%s.%d.tmp" % (name, os.getpid())
    try:
        os.unlink(tmp)
    except OSError:
        pass
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
        os.replace(tmp, name)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
data = read(path)
on_disk = data is not None and sha256(data).hexdigest() == sha
if not on_disk:
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
    if sha256(data).hexdigest() != sha:
        sys.stdout.write("ERROR hash mismatch\n")
        sys.stdout.flush()
        sys.exit(4)
    try:
        write(path, data)
        on_disk = True
    except OSError:
        pass
modules = None
blob = on_disk and code_path and private(home) and private(code_path) and read(code_path)
if blob and blob[:5] == b"FSAC1" and sha256(blob[69:]).hexdigest().encode() == blob[5:69]:
    try:
        cached_key, modules = marshal.loads(blob[69:])
    except Exception:
        cached_key = None
    if cached_key != key:
        modules = None
if modules is None:
    import io, zipfile
    zf = zipfile.ZipFile(io.BytesIO(data))
    modules = {}
    for name in zf.namelist():
        if name.startswith("agentkit/") and name.endswith(".py"):
            module = name[:-3].replace("/", ".")
            package = module.endswith(".__init__")
            if package:
                module = module[:-9]
            code = compile(zf.read(name), "<fleetscan-agent>/" + name, "exec", dont_inherit=True)
            modules[module] = (package, code.co_filename, marshal.dumps(code))
    if on_disk and code_path:
        payload = marshal.dumps((key, modules))
        try:
            write(code_path, b"FSAC1" + sha256(payload).hexdigest().encode() + payload)
        except OSError:
            pass
class AgentImporter(object):
    def find_spec(self, name, p=None, t=None):
        entry = modules.get(name)
        if entry is None:
            return None
        return ModuleSpec(name, self, origin=entry[1], is_package=entry[0])
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        exec(marshal.loads(modules[module.__name__][2]), module.__dict__)
sys.meta_path.insert(0, AgentImporter())
from agentkit.agent import main
sys.exit(main(sha))
""".strip()


def stage0_argv(python: str, sha256: str, size: int) -> List[str]:
    """The argv that bootstraps an agent: ``[python, "-Sc", STAGE0, sha256, size]`` (``-S``: no site;
    one flag word, so that the argv keeps its shape: STAGE0 at index 2, the hash at 3)."""
    return [python, "-Sc", STAGE0, sha256, str(size)]


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
