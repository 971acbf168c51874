"""A sqlite3.Connection look-alike over psycopg 3, so the shared part classes' SQL runs unchanged.

The store's portable SQL is written once with ``?`` placeholders (console/store/sqlite/*). This
adapter translates the few spellings where the two engines differ, once per statement text
(cached): placeholders, ``INSERT OR IGNORE`` / ``INSERT OR REPLACE``, an empty ``IN ()``,
SQLite's case-insensitive ``LIKE`` and ``json_extract(col, '$.member')`` (or with the path a
parameter: an SQL/JSON path then, ``jsonb_path_query_first``). Anything else must be
written portably (``CASE`` rather than two-argument ``max``, ``RETURNING id`` rather than
``lastrowid``) or go through a ``Database`` hook. Statement results keep sqlite3's shape: tuples from
``fetchone``/``fetchall``, ``rowcount``, and ``total_changes`` summed over the connection's life.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import pq

_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\s", re.IGNORECASE)
_REPLACE = re.compile(r"^\s*INSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)\s*\(([^)]*)\)", re.IGNORECASE)
_RETURNING = re.compile(r"\sRETURNING\s", re.IGNORECASE)
_EMPTY_IN = re.compile(r"\bIN\s*\(\s*\)", re.IGNORECASE)
_LIKE = re.compile(r"\bLIKE\b")
_JSON_EXTRACT = re.compile(r"json_extract\(\s*([\w.]+)\s*,\s*'\$\.([\w.]+)'\s*\)", re.IGNORECASE)
#: ``json_extract(col, ?)``: the path a parameter (``$.member``), after ``?`` became ``%s``
_JSON_EXTRACT_PARAM = re.compile(r"json_extract\(\s*([\w.]+)\s*,\s*%s\s*\)", re.IGNORECASE)

#: the conflict target of ``INSERT OR REPLACE`` per table (its primary key)
PRIMARY_KEYS = {"agents": ("name",), "masters": ("id",), "runs": ("id",), "stages": ("run_id", "id")}


def _on_conflict(sql: str, clause: str) -> str:
    match = _RETURNING.search(sql)
    if match:
        return f"{sql[:match.start()]} {clause}{sql[match.start():]}"
    return f"{sql.rstrip().rstrip(';')} {clause}"


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """The PostgreSQL spelling of one of the store's SQLite statements."""
    out = sql.replace("%", "%%").replace("?", "%s")
    out = _EMPTY_IN.sub("IN (SELECT NULL WHERE false)", out)
    out = _LIKE.sub("ILIKE", out)  # SQLite's LIKE ignores ASCII case; keep that meaning
    # JSON is stored as text on both engines: json_extract(col, '$.a.b') reads the same member (as text)
    out = _JSON_EXTRACT.sub(lambda m: f"({m.group(1)}::jsonb #>> '{{{m.group(2).replace('.', ',')}}}')", out)
    # a path given as a parameter is an SQL/JSON path on PostgreSQL too ('$.a.b' means the same member)
    out = _JSON_EXTRACT_PARAM.sub(lambda m: f"(jsonb_path_query_first({m.group(1)}::jsonb, %s::jsonpath) #>> '{{}}')", out)
    if _IGNORE.match(out):
        out = _on_conflict(_IGNORE.sub("INSERT INTO ", out, count=1), "ON CONFLICT DO NOTHING")
    else:
        match = _REPLACE.match(out)
        if match:
            table, columns = match.group(1), [c.strip() for c in match.group(2).split(",")]
            key = PRIMARY_KEYS[table]
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
            clause = f"ON CONFLICT ({', '.join(key)}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING")
            out = _on_conflict(re.sub(r"^\s*INSERT\s+OR\s+REPLACE\s+INTO", "INSERT INTO", out, count=1, flags=re.I), clause)
    return out


class Cursor:
    """What the part classes use of a sqlite3 cursor."""

    lastrowid = None  # never used on PostgreSQL: the shared SQL says RETURNING id

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def description(self) -> Any:
        return self._cur.description

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cur.fetchone() if self._cur.description else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cur.fetchall() if self._cur.description else []

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())


class Connection:
    """One psycopg connection (autocommit: transactions are explicit, as with the SQLite store)."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.total_changes = 0

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] | Iterable[Any] = ()) -> Cursor:
        cur = self.raw.cursor()
        cur.execute(translate(sql), tuple(params))  # type: ignore[arg-type]  # our SQL, translated
        if cur.rowcount > 0 and not sql.lstrip()[:6].upper() == "SELECT":
            self.total_changes += cur.rowcount
        return Cursor(cur)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        cur = self.raw.cursor()
        params = [tuple(r) for r in rows]
        if not params:
            return Cursor(cur)  # nothing to send: no round trip (sqlite3 does nothing either)
        cur.executemany(translate(sql), params)  # type: ignore[arg-type]
        if cur.rowcount > 0:
            self.total_changes += cur.rowcount
        return Cursor(cur)

    def close(self) -> None:
        self.raw.close()
