"""The ``--agents`` source syntax: ``local``, ``local:N`` or an inventory file.

Apart from the inventory's models (console/fleet/inventory.py) so that a run on local agents reads its
``--agents`` without importing pydantic or building the inventory's models: only a file is an inventory,
and only then are they needed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from console.errors import BadInput

#: Most local agents `local:N` may ask for.
MAX_LOCAL_AGENTS = 256


def local_agent_names(count: int) -> list[str]:
    """The names ``local:N`` agents get: ``local`` alone, else ``local-1`` .. ``local-N``."""
    return ["local"] if count == 1 else [f"local-{i + 1}" for i in range(count)]


def parse_agents_source(src: str | None) -> tuple[str, Any]:
    """``--agents``: ``local`` -> ("local", 1), ``local:N`` -> ("local", N), FILE -> ("inventory", path)."""
    if src is None or src == "" or src == "local":
        return ("local", 1)
    match = re.fullmatch(r"local:(.*)", src)
    if match:
        count = match.group(1)
        if not re.fullmatch(r"[0-9]{1,6}", count) or not 1 <= int(count) <= MAX_LOCAL_AGENTS:
            raise BadInput(
                f"local:N needs N between 1 and {MAX_LOCAL_AGENTS}, not {count[:20]!r}", field="--agents"
            )
        return ("local", int(count))
    if not src.isprintable() or src.startswith("-"):
        raise BadInput(f"{src[:60]!r} is not local, local:N or an inventory file", field="--agents")
    path = Path(src).expanduser()
    if not path.is_file():
        raise BadInput(f"{src!r} is not local, local:N or an existing inventory file", field="--agents")
    return ("inventory", str(path))
