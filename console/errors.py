"""One root exception, subclasses grouped by how the caller recovers.

* ``BadInput``: the operator fixes a file or an argument (exit code 2).
* ``TransportError``: a box could not be reached or dropped; the task goes elsewhere.
* ``AgentError``: a box answered, but wrongly (bad hello, invalid message, tool error).
* ``StoreError``: the database is unusable (``StoreBusy``: locked past the timeout; ``StoreCorrupt``:
  not a fleetscan store or a newer schema).

Every timeout is also a builtin ``TimeoutError`` so ``except TimeoutError`` works.
Third-party errors (asyncssh, sqlite3, yaml, pydantic) are mapped at the boundary
of the module that calls them, never leaked.
"""

from __future__ import annotations


class FleetscanError(Exception):
    """Root of every error fleetscan raises on purpose."""

    exit_code = 1


class BadInput(FleetscanError):
    """Operator input is wrong. ``str(err)`` is ONE line: ``FILE:LINE:COL: field: message``
    when a file is involved, else ``field: message``."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        col: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.field = field
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.col is not None:
                    where += f":{self.col}"
            where += ": "
        field = f"{self.field}: " if self.field else ""
        text = " ".join(self.message.split())  # always one line
        return f"{where}{field}{text}"


class TransportError(FleetscanError):
    """A box could not be reached, refused us, or the connection dropped."""


class HostKeyError(TransportError):
    """The box's host key is unknown or changed; trusting it is an explicit operator action."""

    exit_code = 2


class TransportTimeout(TransportError, TimeoutError):
    """A connect, login or bootstrap deadline passed."""


class AgentError(FleetscanError):
    """A box answered, but with something invalid (bad hello, bad message, wrong hash)."""


class StoreError(FleetscanError):
    """The store cannot be used (opened, read or written). Backends map their driver's errors to this
    class or a subclass at their boundary (``console/store/sqlite/database.py``); nothing above the store
    ever sees ``sqlite3.Error``."""


class StoreBusy(StoreError, TimeoutError):
    """Another process held the store's write lock past the busy timeout; trying again may work."""


class StoreCorrupt(StoreError):
    """The file is not a fleetscan store (not a database, damaged, or from a newer fleetscan)."""


class StaleDefinition(FleetscanError):
    """A planning write was refused: the run's stored definition changed (``fleetscan amend``) since the
    planner read it. Nothing was written; the master reloads the definition and plans again."""


class RunNotFound(BadInput):
    """No run with that id."""
