"""What changed between two runs: records matched by (stage, type, key), measured values ignored.

Both runs are read in key order (``store.history.keyed_pages``) and merged as they stream, so a diff of
two million-record runs holds two pages in memory, never a run. A record's data is decoded only when its
text differs from the other side's: most records of two scans of the same fleet are byte-identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from console.errors import BadInput
from console.store.base import KeyedRecord, Store
from console.store.rows import RunRow

#: data fields that are measurements, not facts about the host: they differ from scan to scan with nothing
#: changed on the machine. Per record type; "*" for every type. host_up's ``via`` is which probe answered
#: first (a race between open ports), not a property of the host.
MEASURED: dict[str, frozenset[str]] = {
    "*": frozenset({"rtt_ms", "latency_ms", "elapsed_ms", "duration_ms", "duration_s"}),
    "host_up": frozenset({"via"}),
}

ADDED, REMOVED, CHANGED = "added", "removed", "changed"


def facts(rtype: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without its measured values (what a change is judged on)."""
    skip = MEASURED["*"] | MEASURED.get(rtype, frozenset())
    return {k: v for k, v in data.items() if k not in skip}


def _change(kind: str, rec: KeyedRecord, old: Any, new: Any) -> dict[str, Any]:
    return {"change": kind, "stage": rec[0], "type": rec[1], "key": rec[2], "old": old, "new": new}


def merge_diff(old: Iterable[KeyedRecord], new: Iterable[KeyedRecord]) -> Iterator[dict[str, Any]]:
    """The changes between two streams of records, each sorted by (stage, type, key)."""
    a_it, b_it = iter(old), iter(new)
    a = next(a_it, None)
    b = next(b_it, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[:3] < b[:3]):
            assert a is not None
            yield _change(REMOVED, a, json.loads(a[3]), None)
            a = next(a_it, None)
        elif a is None or b[:3] < a[:3]:
            yield _change(ADDED, b, None, json.loads(b[3]))
            b = next(b_it, None)
        else:
            if a[3] != b[3]:
                old_data, new_data = json.loads(a[3]), json.loads(b[3])
                if facts(a[1], old_data) != facts(b[1], new_data):
                    yield _change(CHANGED, b, old_data, new_data)
            a = next(a_it, None)
            b = next(b_it, None)


def _flatten(pages: Iterable[list[KeyedRecord]]) -> Iterator[KeyedRecord]:
    for page in pages:
        yield from page


def diff_runs(store: Store, old_id: str, new_id: str) -> Iterator[dict[str, Any]]:
    """The changes from run ``old_id`` to run ``new_id`` (RunNotFound for an unknown one)."""
    store.runs.get(old_id)
    store.runs.get(new_id)
    return merge_diff(_flatten(store.history.keyed_pages(old_id)), _flatten(store.history.keyed_pages(new_id)))


def previous_comparable(store: Store, run_id: str, *, same_schedule: bool = False) -> RunRow:
    """The run ``diff RUN`` compares with; BadInput when there is none."""
    run = store.runs.get(run_id)
    prev = store.history.previous_run(run_id, same_schedule=same_schedule)
    if prev is None:
        raise BadInput(
            f"no earlier completed run of {run.workflow!r} with the same targets to compare run {run_id} with",
            field="run",
        )
    return prev


def count_changes(changes: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = {ADDED: 0, REMOVED: 0, CHANGED: 0}
    for change in changes:
        counts[change["change"]] += 1
    return counts


def describe(change: dict[str, Any]) -> str:
    """One line for people: ``+ ports port_open 127.0.0.1:22/tcp`` or ``~ ... field: old -> new``."""
    sign = {ADDED: "+", REMOVED: "-", CHANGED: "~"}[change["change"]]
    head = f"{sign} {change['stage']} {change['type']} {change['key']}"
    if change["change"] != CHANGED:
        return head
    old, new = facts(change["type"], change["old"]), facts(change["type"], change["new"])
    fields = sorted(set(old) | set(new))
    moved = [f"{f}: {_short(old.get(f))} -> {_short(new.get(f))}" for f in fields if old.get(f) != new.get(f)]
    return f"{head}  " + "; ".join(moved)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
