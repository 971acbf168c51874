"""Results export: jsonl, csv and json, streamed in constant memory.

Rows come a page at a time from ``store.results.pages`` (keyset pagination in id
order). A record's ``data`` is stored as validated JSON text, so JSON output splices it
in as it is rather than decoding and re-encoding a million small dicts, and each page is
written with one ``write`` call: a million records export in seconds, never sitting in
memory at once.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from console.errors import BadInput
from console.sanitize import json_for_terminal, safe_line
from console.store.base import Store
from console.store.rows import ResultFilter

FORMATS = ("jsonl", "csv", "json")
COLUMNS = ("run", "stage", "type", "key", "target", "agent", "master", "task", "ts")
CSV_COLUMNS = (*COLUMNS, "data")

_encode = json.JSONEncoder(ensure_ascii=False).encode

Row = tuple[Any, ...]


def _json_lines(page: list[Row]) -> Iterator[str]:
    """One JSON object per row, keys in SPEC order, ``data`` spliced from its stored text."""
    for row in page:
        head = _encode({
            "run": row[1], "stage": row[2], "type": row[3], "key": row[4], "target": row[5],
            "agent": row[6], "master": row[10], "task": None if row[7] is None else str(row[7]), "ts": row[8],
        })
        yield f'{head[:-1]}, "data": {row[9]}}}'


def _jsonl(pages: Iterable[list[Row]], out: TextIO) -> int:
    count = 0
    for page in pages:
        out.write(json_for_terminal("\n".join(_json_lines(page))) + "\n")
        count += len(page)
    return count


def _json(pages: Iterable[list[Row]], out: TextIO) -> int:
    count = 0
    out.write("[")
    for page in pages:
        out.write(("\n" if count == 0 else ",\n") + json_for_terminal(",\n".join(_json_lines(page))))
        count += len(page)
    out.write("\n]\n" if count else "]\n")
    return count


def _csv(pages: Iterable[list[Row]], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for page in pages:
        writer.writerows(
            [_cell(value) for value in (*row[1:7], row[10], None if row[7] is None else str(row[7]), row[8], row[9])]
            for row in page
        )
        count += len(page)
    return count


def _cell(value: Any) -> Any:
    """A CSV cell: text printable whatever the store holds (no escape sequence reaches a terminal)."""
    return safe_line(value, None) if isinstance(value, str) and not value.isprintable() else value


_WRITERS = {"jsonl": _jsonl, "json": _json, "csv": _csv}


def export_results(
    store: Store, run_id: str, fmt: str, out: TextIO, *, stage: str | None = None, type_: str | None = None
) -> int:
    """Write the run's records (optionally one stage / one type) to ``out``; return how many."""
    if fmt not in _WRITERS:
        raise BadInput(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})", field="--format")
    return _WRITERS[fmt](store.results.pages(run_id, stage=stage, type=type_), out)


def export_matching(store: Store, flt: ResultFilter, fmt: str, out: TextIO) -> int:
    """Write exactly what the results browser lists for ``flt`` (its filters, its order); return how many."""
    if fmt not in _WRITERS:
        raise BadInput(f"unknown format {fmt!r} (choose {', '.join(FORMATS)})", field="--format")
    pages = ([row.as_raw() for row in rows] for rows in store.results.matching(flt))
    return _WRITERS[fmt](pages, out)
