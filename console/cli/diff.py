"""`fleetscan diff OLD NEW | diff RUN [--format text|jsonl|json]`: what changed between two runs.

Exit codes like diff(1): 0 nothing changed, 1 something did, 2 bad input (an unknown run, or a RUN with
no earlier comparable run). Changes stream to stdout as the two runs are merged.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

EXIT_SAME, EXIT_CHANGED = 0, 1
FORMATS = ("text", "jsonl", "json")


def configure(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("runs", nargs="+", metavar="RUN",
                    help="OLD NEW, or one RUN (against the run before it); each a run id or a unique prefix of 4+")
    sp.add_argument("--format", choices=FORMATS, default="text",
                    help="text: one line a change (default); jsonl: one object a line; json: one object")


def write_changes(changes: Any, fmt: str, out: TextIO, old: str, new: str) -> dict[str, int]:
    """Write ``changes`` in ``fmt``; return the counts per kind."""
    from console.history.diff import describe

    counts = {"added": 0, "removed": 0, "changed": 0}
    encode = json.JSONEncoder(ensure_ascii=False).encode
    if fmt == "json":
        out.write(f'{{"old": {encode(old)}, "new": {encode(new)}, "changes": [')
    elif fmt == "text":
        out.write(f"diff {old} -> {new}\n")
    first = True
    for change in changes:
        counts[change["change"]] += 1
        if fmt == "text":
            out.write(describe(change) + "\n")
        elif fmt == "jsonl":
            out.write(encode(change) + "\n")
        else:
            out.write(("" if first else ", ") + encode(change))
        first = False
    if fmt == "json":
        out.write(f'], "counts": {encode(counts)}}}\n')
    elif fmt == "text":
        out.write(f"{counts['added']} added, {counts['removed']} removed, {counts['changed']} changed\n")
    return counts


def command(args: argparse.Namespace, store: Any) -> int:
    from console.cli.runids import resolve_run
    from console.errors import BadInput
    from console.history.diff import diff_runs, previous_comparable

    if len(args.runs) > 2:
        raise BadInput("give OLD NEW, or one RUN", field="diff")
    if len(args.runs) == 2:
        old, new = (resolve_run(store, run) for run in args.runs)
    else:
        new = resolve_run(store, args.runs[0])
        old = previous_comparable(store, new).id
    counts = write_changes(diff_runs(store, old, new), args.format, sys.stdout, old, new)
    return EXIT_CHANGED if any(counts.values()) else EXIT_SAME
