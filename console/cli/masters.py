"""``fleetscan masters [--json]``: the masters sharing this store, from their heartbeats."""

from __future__ import annotations

import argparse
import json
import time

from console.status import MASTER_DEAD_AFTER_S
from console.store import open_store


def add_parser(sub: argparse._SubParsersAction, common: object) -> None:  # type: ignore[type-arg]
    """Register the sub-command (``common`` adds --db and friends)."""
    help_ = "the masters sharing this database: id, host, agents, tasks in flight, heartbeat"
    sp = sub.add_parser("masters", help=help_, description=help_)
    common(sp, top=False)  # type: ignore[operator]
    sp.add_argument("--json", action="store_true", help="one JSON object: {\"masters\": [...]}")


def masters_command(args: argparse.Namespace) -> int:
    with open_store(args.db) as store:
        rows = store.queue.masters()
    now = time.time()
    if args.json:
        print(json.dumps({"masters": [r.record() for r in rows]}))
        return 0
    if not rows:
        print("no master is running")
        return 0
    print(f"{'ID':<36} {'HOST':<20} {'AGENTS':>6} {'IN FLIGHT':>9}  HEARTBEAT")
    for r in rows:
        age = now - r.seen if r.seen is not None else None
        beat = "never" if age is None else f"{max(age, 0.0):.1f}s ago" + (
            " (presumed dead)" if age > MASTER_DEAD_AFTER_S else ""
        )
        print(f"{r.id:<36} {r.host:<20} {r.agents:>6} {r.in_flight:>9}  {beat}")
    return 0
