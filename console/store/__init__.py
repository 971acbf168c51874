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


def default_location() -> str | Path:
    """What ``open_store()`` opens: ``$FLEETSCAN_DB`` as given when it is a URL, else :func:`default_db_path`."""
    env = os.environ.get("FLEETSCAN_DB", "")
    return env if _URL.match(env) else default_db_path()


def is_url(where: str | os.PathLike[str]) -> bool:
    """A ``scheme://`` store address (never to be taken for a file name, nor put through ``Path``)."""
    return bool(_URL.match(os.fspath(where)))


def redact(url: str) -> str:
    """A store URL without its password: what every message and ``Store.location`` shows. Works on
    the text alone (a malformed port or host must not turn an error message into a traceback)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, hostport = parts.netloc.rsplit("@", 1)
    if ":" not in userinfo:
        return url
    netloc = f"{userinfo.split(':', 1)[0]}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def store_label(where: str | os.PathLike[str]) -> str:
    """A short name for a title bar: the file name, or the URL without its password."""
    return redact(os.fspath(where)) if is_url(where) else Path(where).name


def open_store(where: str | os.PathLike[str] | None = None) -> Store:
    """Open the store at a file path (SQLite, created and migrated as needed), a ``postgresql://``
    URL (PostgreSQL, schema created or migrated), or the default one.

    Any other URL is bad input: a ``file://`` or ``mysql://`` string must never quietly become a
    local file of that name. psycopg is imported only here, when a PostgreSQL URL asks for it.
    """
    from console.errors import BadInput

    if where is None or str(where) == "":
        where = default_location()
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
