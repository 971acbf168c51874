"""The one place that speaks SQL: the store interface, its read models, export, and the backends.

``open_store(where)`` opens the store a path or URL names (the backend is imported only then);
callers hold a :class:`console.store.base.Store` and never learn which engine answers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from console.store.base import Store

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def default_db_path() -> Path:
    """``$FLEETSCAN_DB``, else ``fleetscan.db`` in the platformdirs user data dir."""
    env = os.environ.get("FLEETSCAN_DB")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("fleetscan")) / "fleetscan.db"


def open_store(where: str | os.PathLike[str] | None = None) -> Store:
    """Open the store at a file path (SQLite, created and migrated as needed), a ``postgresql://``
    URL (PostgreSQL, schema created or migrated), or the default one.

    Any other URL is bad input: a ``file://`` or ``mysql://`` string must never quietly become a
    local file of that name. psycopg is imported only here, when a PostgreSQL URL asks for it.
    """
    from console.errors import BadInput

    if where is None or str(where) == "":
        where = default_db_path()
    text = os.fspath(where)
    match = _URL.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("postgresql", "postgres"):
            from console.store.postgres.store import PostgresStore

            return PostgresStore.open(text)
        raise BadInput(f"no store backend for {scheme}:// URLs (give a file path for the SQLite store)", field="--db")
    from console.store.sqlite.store import SQLiteStore

    return SQLiteStore.open(Path(text).expanduser())
