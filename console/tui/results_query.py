"""Paged reads for the results browser: keyset pagination, never all rows.

A page is found by id (``id > last`` forward, ``id < first`` backward), so page 900
of a 100,000-record run costs the same as page 1. Filters: stage and type exactly,
and free text over key, target and the JSON data (LIKE, escaped).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from console.tui.viewdata import ResultRow, fetch_dicts, result_from_row

PAGE_SIZE = 50


@dataclass(frozen=True)
class ResultFilter:
    run_id: str
    stage: str | None = None
    type: str | None = None
    text: str = ""

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = ["run_id = ?"], [self.run_id]
        if self.stage:
            clauses.append("stage_id = ?")
            params.append(self.stage)
        if self.type:
            clauses.append("type = ?")
            params.append(self.type)
        text = self.text.strip()
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append(
                "(key LIKE ? ESCAPE '\\' OR target LIKE ? ESCAPE '\\' OR data LIKE ? ESCAPE '\\')"
            )
            params.extend([pattern, pattern, pattern])
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class ResultPage:
    rows: tuple[ResultRow, ...]
    offset: int  # how many matching rows come before this page
    total: int
    filter: ResultFilter

    @property
    def first_id(self) -> int | None:
        return self.rows[0].id if self.rows else None

    @property
    def last_id(self) -> int | None:
        return self.rows[-1].id if self.rows else None

    @property
    def has_next(self) -> bool:
        return self.offset + len(self.rows) < self.total

    @property
    def has_prev(self) -> bool:
        return self.offset > 0


def count_matching(conn: sqlite3.Connection, flt: ResultFilter) -> int:
    where, params = flt.where()
    return int(conn.execute(f"SELECT count(*) FROM results WHERE {where}", params).fetchone()[0])


def _page(conn: sqlite3.Connection, flt: ResultFilter, extra: str, extra_params: list[Any],
          order: str, limit: int) -> list[ResultRow]:
    where, params = flt.where()
    rows = fetch_dicts(
        conn,
        f"SELECT id, run_id, stage_id, type, key, target, agent, ts, data FROM results"
        f" WHERE {where}{extra} ORDER BY id {order} LIMIT ?",
        [*params, *extra_params, limit],
    )
    result = [result_from_row(r) for r in rows]
    return result if order == "ASC" else list(reversed(result))


def first_page(conn: sqlite3.Connection, flt: ResultFilter, limit: int = PAGE_SIZE) -> ResultPage:
    total = count_matching(conn, flt)
    rows = _page(conn, flt, "", [], "ASC", limit)
    return ResultPage(tuple(rows), 0, total, flt)


def last_page(conn: sqlite3.Connection, flt: ResultFilter, limit: int = PAGE_SIZE) -> ResultPage:
    total = count_matching(conn, flt)
    rows = _page(conn, flt, "", [], "DESC", limit)
    return ResultPage(tuple(rows), max(0, total - len(rows)), total, flt)


def next_page(conn: sqlite3.Connection, page: ResultPage, limit: int = PAGE_SIZE) -> ResultPage:
    """The page after ``page`` (the total is carried over: counting is the costly part of a text filter)."""
    if page.last_id is None:
        return first_page(conn, page.filter, limit)
    total = page.total
    rows = _page(conn, page.filter, " AND id > ?", [page.last_id], "ASC", limit)
    if not rows:
        return ResultPage(page.rows, page.offset, total, page.filter)
    offset = page.offset + len(page.rows)
    return ResultPage(tuple(rows), offset, max(total, offset + len(rows)), page.filter)


def prev_page(conn: sqlite3.Connection, page: ResultPage, limit: int = PAGE_SIZE) -> ResultPage:
    if page.first_id is None or page.offset == 0:
        return first_page(conn, page.filter, limit)
    total = page.total
    rows = _page(conn, page.filter, " AND id < ?", [page.first_id], "DESC", limit)
    return ResultPage(tuple(rows), max(0, page.offset - len(rows)), total, page.filter)


def same_page(conn: sqlite3.Connection, page: ResultPage, limit: int = PAGE_SIZE) -> ResultPage:
    """The page starting where ``page`` starts, re-read (new records may have filled it)."""
    if page.first_id is None:
        return first_page(conn, page.filter, limit)
    total = count_matching(conn, page.filter)
    rows = _page(conn, page.filter, " AND id >= ?", [page.first_id], "ASC", limit)
    return ResultPage(tuple(rows), page.offset, total, page.filter)


def result_types(conn: sqlite3.Connection, run_id: str) -> list[str]:
    """The types a run's stages produce, from its stored definition (``output`` of each stage);
    for a definition without them, the types present (an index walk)."""
    row = conn.execute("SELECT definition FROM runs WHERE id = ?", (run_id,)).fetchone()
    try:
        stages = json.loads(row[0]).get("stages", []) if row and row[0] else []
    except (TypeError, ValueError, AttributeError):
        stages = []
    declared = {str(t) for stage in stages if isinstance(stage, dict) for t in stage.get("output") or ()}
    if declared:
        return sorted(declared)
    rows = conn.execute(
        "SELECT DISTINCT type FROM results WHERE run_id = ? ORDER BY type", (run_id,)
    ).fetchall()
    return [str(r[0]) for r in rows]
