"""Build the agent archive: a deterministic zipapp of the ``agentkit`` package.

Deterministic (fixed timestamps and modes, sorted entries, no ``__pycache__``)
so that its sha256 names one exact agent: the boxes cache it under that hash
and the hello proves which build answers. ``python -m agentkit.archive OUT``
writes it to a file (``python3 OUT`` then runs the agent).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from typing import List, Optional, Tuple

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_MAIN = b"""# fleetscan agent (zipapp): python3 THIS_FILE
import sys

from agentkit.agent import main

sys.exit(main())
"""
_CACHE: Optional[Tuple[bytes, str]] = None
#: changes whenever _zip's layout does, so an archive cached by an older build is never reused
_LAYOUT = b"fleetscan-archive-1\0"


def package_files() -> List[Tuple[str, bytes]]:
    """(archive name, content) of every ``.py`` file of the agentkit package, sorted."""
    root = os.path.dirname(os.path.abspath(__file__))
    files: List[Tuple[str, bytes]] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(names):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, os.path.dirname(root)).replace(os.sep, "/")
            with open(path, "rb") as handle:
                files.append((rel, handle.read()))
    return sorted(files)


def _zip(files: List[Tuple[str, bytes]]) -> bytes:
    import zipfile  # only when building: zipfile and its compressors cost a run's start ~10 ms

    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in [("__main__.py", _MAIN)] + files:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            archive.writestr(info, content, compresslevel=9)
    return buffer.getvalue()


def _cache_path(files: List[Tuple[str, bytes]]) -> str:
    """Where the archive of exactly these sources is kept: named by their hash (and this layout's)."""
    key = hashlib.sha256(_LAYOUT + _MAIN)
    for name, content in files:
        key.update(b"%s\0%d\0" % (name.encode(), len(content)))
        key.update(content)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fleetscan", "archive-%s.pyz" % key.hexdigest())


def _private(path: str) -> bool:
    """Ours alone (owner, no group/other write), the file and its folder: agent code is read from it."""
    for name in (path, os.path.dirname(path)):
        try:
            st = os.stat(name)
        except OSError:
            return False
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return False
    return True


def _read_cached(path: str) -> Optional[bytes]:
    if not _private(path):
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return data if data.startswith(b"#!/usr/bin/env python3\n") else None


def _write_cached(path: str, data: bytes) -> None:
    """Best effort (a read-only home just means building each time), atomic (never half a file)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def build_archive() -> Tuple[bytes, str]:
    """The archive bytes and their sha256 hex; built once per process.

    Building (deflating every module) costs a run's start ~20 ms, so the archive of the current
    sources is kept in the user's cache folder under the hash of those sources: reading the sources
    and one file is all a later run does. A cached file is used only when it is private to this user.
    """
    global _CACHE
    if _CACHE is None:
        files = package_files()
        path = _cache_path(files)
        data = _read_cached(path)
        if data is None:
            data = _zip(files)
            _write_cached(path, data)
        _CACHE = (data, hashlib.sha256(data).hexdigest())
    return _CACHE


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m agentkit.archive OUT\n")
        return 2
    data, digest = build_archive()
    tmp = argv[0] + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, argv[0])
    sys.stderr.write("%s %d bytes sha256 %s\n" % (argv[0], len(data), digest))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
