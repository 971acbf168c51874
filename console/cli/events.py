"""`fleetscan events [RUN] [--follow] [--json]`: the event log in full, oldest first.

Without RUN every event is printed, the fleet's own (agents, leases) included. ``--follow`` keeps
printing new events as they are committed: it waits on the store's change token (the same watcher
the master uses), never on a busy loop, until Ctrl-C (exit 130) or, with RUN, until the run ends.
Texts are printed whole; one that could still carry a control character is escaped first, so no
escape sequence from a box reaches the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, TextIO

from console.status import RUN_TERMINAL
from console.targets.records import escape_text

if TYPE_CHECKING:
    from console.store.base import Store
    from console.store.rows import EventRow

EXIT_OK, EXIT_INTERRUPTED = 0, 130
PAGE = 1000
#: how long --follow sleeps between looks at the change token (it reads only when the token moved)
FOLLOW_POLL_S = 0.05


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _safe(text: str) -> str:
    """Texts from the store are escaped where they came in; escape again only what could still harm."""
    return text if text.isprintable() else escape_text(text, limit=len(text) + 16)


def format_event(event: EventRow, as_json: bool) -> str:
    if as_json:
        return json.dumps({
            "id": event.id, "ts": iso(event.ts), "run": event.run_id, "level": event.level,
            "kind": event.kind, "message": event.message,
        })
    run = event.run_id or "-"
    return f"{iso(event.ts)}  {run:<8}  {event.level:<7}  {event.kind:<10}  {_safe(event.message)}"


def print_events(store: Store, run_id: str | None, after: int, as_json: bool, out: TextIO) -> int:
    """Print every event after id ``after``; return the last id printed (``after`` when none)."""
    while True:
        page = store.events.since(run_id, after, PAGE)
        for event in page:
            out.write(format_event(event, as_json) + "\n")
        if page:
            after = page[-1].id
            out.flush()
        if len(page) < PAGE:
            return after


def follow(store: Store, run_id: str | None, after: int, as_json: bool, out: TextIO) -> None:
    """Print new events as they come, until Ctrl-C or (with a run) the run's end."""
    from console.store.watch import StoreWatcher

    watcher = StoreWatcher(store)  # this connection never writes: its token moves only for others' commits
    watcher.changed()
    while True:
        ended = run_id is not None and store.runs.get(run_id).state in RUN_TERMINAL
        after = print_events(store, run_id, after, as_json, out)
        if ended:
            return  # the run's last events were written before its end: all printed above
        while not watcher.changed():
            watcher.wait(FOLLOW_POLL_S)


def events_command(args: argparse.Namespace, store: Store) -> int:
    from console.cli.runids import resolve_run

    run_id = resolve_run(store, args.run) if args.run else None
    try:
        last = print_events(store, run_id, 0, args.json, sys.stdout)
        if args.follow:
            follow(store, run_id, last, args.json, sys.stdout)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK
