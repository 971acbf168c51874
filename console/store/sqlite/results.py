"""Reading records: counts, raw pages for export, the live feed, and the results browser's pages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

from console.store import base
from console.store.rows import COLUMN_FIELDS, ResultFilter, ResultRow
from console.store.sqlite.database import Database, maps_errors

_ROW_COLUMNS = "id, run_id, stage_id, type, key, target, agent, task_id, ts, data, master"


def result_row(r: tuple[Any, ...]) -> ResultRow:
    return ResultRow(
        id=int(r[0]), run_id=r[1] or "", stage_id=r[2] or "", type=r[3] or "", key=r[4] or "", target=r[5] or "",
        agent=r[6] or "", task_id=r[7], ts=r[8] or "", data=r[9] or "{}", master=r[10],
    )


def _exact(run_id: str, stage: str | None, type: str | None) -> tuple[list[str], list[Any]]:
    clauses, params = ["run_id = ?"], [run_id]
    if stage is not None:
        clauses.append("stage_id = ?")
        params.append(stage)
    if type is not None:
        clauses.append("type = ?")
        params.append(type)
    return clauses, params


#: a filter field or sort key -> its column (anything else in a filter is a key of ``data``)
_COLUMNS = {"id": "id", "stage": "stage_id", "type": "type", "key": "key", "target": "target", "agent": "agent",
            "ts": "ts"}


def _matching(flt: ResultFilter) -> tuple[str, list[Any]]:
    clauses, params = _exact(flt.run_id, flt.stage or None, flt.type or None)
    for name, value in flt.fields:
        column = _COLUMNS.get(name) if name in COLUMN_FIELDS else None
        if column is not None:
            clauses.append(f"lower({column}) = lower(?)")
            params.append(value)
        else:  # the name is an identifier (ResultFilter checks it); the path is a parameter all the same
            clauses.append("lower(CAST(json_extract(data, ?) AS TEXT)) = lower(?)")
            params.extend([f"$.{name}", value])
    text = flt.text.strip()
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append("(key LIKE ? ESCAPE '\\' OR target LIKE ? ESCAPE '\\' OR data LIKE ? ESCAPE '\\')")
        params.extend([pattern, pattern, pattern])
    return " AND ".join(clauses), params


@maps_errors
class SQLiteResults(base.Results):
    def __init__(self, db: Database) -> None:
        self.db = db

    def pages(
        self, run_id: str, stage: str | None = None, type: str | None = None, batch: int = 5000
    ) -> Iterator[list[base.RawResult]]:
        clauses, params = _exact(run_id, stage, type)
        sql = f"SELECT {_ROW_COLUMNS} FROM results WHERE {' AND '.join(clauses)} AND id > ? ORDER BY id LIMIT ?"
        last = 0
        while True:
            rows = self.db.conn.execute(sql, (*params, last, batch)).fetchall()
            if rows:
                yield rows
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def count(self, run_id: str, stage: str | None = None, type: str | None = None) -> int:
        clauses, params = _exact(run_id, stage, type)
        return int(self.db.conn.execute(f"SELECT count(*) FROM results WHERE {' AND '.join(clauses)}", params).fetchone()[0])

    def latest(self, limit: int) -> list[ResultRow]:
        rows = self.db.conn.execute(f"SELECT {_ROW_COLUMNS} FROM results ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [result_row(r) for r in reversed(rows)]

    def types(self, run_id: str) -> list[str]:
        row = self.db.conn.execute("SELECT definition FROM runs WHERE id = ?", (run_id,)).fetchone()
        try:
            stages = json.loads(row[0]).get("stages", []) if row and row[0] else []
        except (TypeError, ValueError, AttributeError):
            stages = []
        declared = {str(t) for stage in stages if isinstance(stage, dict) for t in stage.get("output") or ()}
        if declared:
            return sorted(declared)
        rows = self.db.conn.execute("SELECT DISTINCT type FROM results WHERE run_id = ? ORDER BY type", (run_id,))
        return [str(r[0]) for r in rows.fetchall()]

    def baseline_counts(self, run_id: str) -> dict[str, int]:
        rows = self.db.conn.execute(
            "SELECT json_extract(data, '$.status'), count(*) FROM results WHERE run_id = ? AND type = 'baseline'"
            " GROUP BY 1",
            (run_id,),
        ).fetchall()
        return {str(status): int(n) for status, n in rows if status is not None}

    def _count_matching(self, flt: ResultFilter) -> int:
        where, params = _matching(flt)
        return int(self.db.conn.execute(f"SELECT count(*) FROM results WHERE {where}", params).fetchone()[0])

    def _read_page(
        self, flt: ResultFilter, bound: tuple[Literal[">", "<", ">=", "<="], ResultRow] | None, descending: bool,
        limit: int,
    ) -> list[ResultRow]:
        where, params = _matching(flt)
        column = _COLUMNS[flt.sort]
        if column != "id":
            # text in code-point order on both backends (PostgreSQL's own collation may differ), and a
            # missing value as "" (what the row shows, so the keyset bound matches it)
            column = f"coalesce({column}, ''){self.db.collate_binary}"
        if bound is not None:
            op, row = bound
            assert op in (">", "<", ">=", "<=")
            if column == "id":
                where += f" AND id {op} ?"
                params.append(row.id)
            else:  # a row-value comparison: ties on the sort column are broken by id
                where += f" AND ({column}, id) {op} (?, ?)"
                params.extend([row.sort_value(flt.sort), row.id])
        order = "DESC" if descending else "ASC"
        by = "id" if column == "id" else f"{column} {order}, id"
        rows = self.db.conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM results WHERE {where} ORDER BY {by} {order} LIMIT ?", [*params, limit]
        ).fetchall()
        return [result_row(r) for r in rows]
