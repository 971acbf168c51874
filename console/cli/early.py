"""What ``run`` starts before it imports the rest of itself: its local agents (see fleet/prespawn.py)."""

from __future__ import annotations

import re

#: at most this many agents are started early; more start the usual way, when the fleet asks
EARLY_AGENTS = 8


def start_local_agents(source: str) -> None:
    """``local`` / ``local:N``: start the agents now; anything else (an inventory, bad input) waits for
    the full validation, which reports it."""
    match = re.fullmatch(r"local(?::([1-9][0-9]{0,5}))?", source)
    if match is None:
        return
    from console.fleet import prespawn

    prespawn.spawn(min(int(match.group(1) or 1), EARLY_AGENTS))
