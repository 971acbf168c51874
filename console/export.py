"""Results export: jsonl, csv and json, streamed in constant memory.

Records come from ``Store.iter_results`` (keyset-paginated, id order). JSON output is
written as it is produced: a million records never sit in memory at once.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from console.errors import BadInput

FORMATS = ("jsonl", "csv", "json")
CSV_COLUMNS = ("run", "stage", "type", "key", "target", "agent", "task", "ts", "data")

_dumps = json.JSONEncoder(ensure_ascii=False).encode


def _jsonl(records: Iterable[dict[str, Any]], out: TextIO) -> Iterator[None]:
    write = out.write
    for rec in records:
        write(_dumps(rec) + "\n")
        yield None


def _json(records: Iterable[dict[str, Any]], out: TextIO) -> Iterator[None]:
    write = out.write
    write("[")
    sep = "\n"
    for rec in records:
        write(sep + _dumps(rec))
        sep = ",\n"
        yield None
    write("\n]\n" if sep != "\n" else "]\n")


def _csv(records: Iterable[dict[str, Any]], out: TextIO) -> Iterator[None]:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rec in records:
        row = [rec.get(c) for c in CSV_COLUMNS[:-1]]
        row.append(_dumps(rec.get("data", {})))
        writer.writerow(row)
        yield None


_WRITERS = {"jsonl": _jsonl, "json": _json, "csv": _csv}


def export_results(
    store: Any, run_id: str, fmt: str, out: TextIO, *, stage: str | None = None, type_: str | None = None
) -> int:
    """Write the run's records (optionally one stage / one type) to ``out``; return how many."""
    if fmt not in _WRITERS:
        raise BadInput(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})", field="--format")
    records = store.iter_results(run_id, stage=stage, type=type_)
    return sum(1 for _ in _WRITERS[fmt](records, out))
