"""What an agent says about itself in its ``hello``: the archive it runs from, its Python, its
tools, the external programs on the box's PATH, and the box's name.

Runs before anything else on every box at every start, so it imports nothing it can do without
(no shutil, no socket).
"""

from __future__ import annotations

import os
import sys
from typing import Dict, Optional, Sequence

from agentkit import wire

#: External programs worth telling the master about (exec templates, icmp ping, baseline commands).
PROGRAMS = (
    "nmap",
    "masscan",
    "zmap",
    "naabu",
    "ping",
    "curl",
    "openssl",
    "dig",
    "sh",
    "systemctl",
    "sysctl",
    "dpkg",
)


def archive_hash() -> str:
    """The sha256 of the archive this code runs from, or of ``build_archive()`` in a source tree."""
    import agentkit

    if not getattr(agentkit, "__file__", None):
        return "unknown"  # imported from memory without a hash handed over (stage 0 always hands one)
    container = os.path.dirname(os.path.dirname(os.path.abspath(agentkit.__file__ or "")))
    if os.path.isfile(container):
        import hashlib

        with open(container, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    from agentkit.archive import build_archive

    return build_archive()[1]


def find_programs(names: Sequence[str], search_path: Optional[str] = None) -> Dict[str, str]:
    """name -> first executable file of that name on PATH (``shutil.which`` without importing
    shutil, and one pass over PATH for all names: ``hello`` runs it before anything else)."""
    if search_path is None:
        search_path = os.environ.get("PATH", os.defpath)
    found: Dict[str, str] = {}
    for folder in search_path.split(os.pathsep):
        if not folder:
            continue
        for name in names:
            if name in found:
                continue
            path = os.path.join(folder, name)
            if os.access(path, os.X_OK) and os.path.isfile(path):
                found[name] = path
    return {name: found[name] for name in names if name in found}


def hello(archive_sha: str) -> wire.Hello:
    from agentkit.tools import REGISTRY  # names only: no tool module is imported here

    return wire.Hello(
        op="hello",
        protocol=wire.PROTOCOL_VERSION,
        hash=archive_sha,
        python="%d.%d.%d" % sys.version_info[:3],
        pid=os.getpid(),
        tools=sorted(REGISTRY),
        programs=find_programs(PROGRAMS),
        hostname=os.uname().nodename,  # what socket.gethostname() returns, without importing socket
    )
