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
import zipfile
from typing import List, Optional, Tuple

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_MAIN = b"""# fleetscan agent (zipapp): python3 THIS_FILE
import sys

from agentkit.agent import main

sys.exit(main())
"""
_CACHE: Optional[Tuple[bytes, str]] = None


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


def build_archive() -> Tuple[bytes, str]:
    """The archive bytes and their sha256 hex; built once per process."""
    global _CACHE
    if _CACHE is None:
        buffer = io.BytesIO()
        buffer.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, content in [("__main__.py", _MAIN)] + package_files():
                info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info.create_system = 3
                archive.writestr(info, content, compresslevel=9)
        data = buffer.getvalue()
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
