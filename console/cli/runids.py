"""What every command shares about its arguments: a RUN given by a unique prefix of its id, and
target specs that may be repeated.

One helper resolves a RUN for every command (``resolve_run``), so `status 3f2a`, `results 3f2a`,
`pause 3f2a` and the commands added later all accept the same prefixes and refuse the same way: an
unknown or ambiguous prefix is bad input (exit 2) naming the candidates.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from console.store.base import Store

RUN_HELP = "a run id, or any unique prefix of it (4 characters or more)"


def resolve_run(store: Store, text: str) -> str:
    """The full id of the run ``text`` names (RunNotFound, exit 2, when it names none or several)."""
    return store.runs.resolve(text)


class MergeSpecs(argparse.Action):
    """A repeated ``--targets``/``--scope``/``--exclude`` is MERGED: ``--targets a --targets b`` means
    ``--targets a,b``. Keeping only the last one silently dropped targets the operator asked for."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: str | Sequence[Any] | None, option_string: str | None = None,
    ) -> None:
        value = str(values)
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{before},{value}" if before else value)
