"""The `fleetscan` command line."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

from console.cli.main import main

__all__ = ["entry", "main"]


def entry() -> NoReturn:
    """The ``fleetscan`` program: :func:`main`, then a quick exit.

    Once a command has returned, its work is done and written (every store write is its own committed
    transaction, agents are closed, output is flushed here). The interpreter's teardown after that
    (freeing every module and the validation models) cost ~30 ms at the end of every command, a tenth of
    a short ``run``; it is skipped, after the ``atexit`` hooks have run as usual. A command that leaves a
    thread running that may still have work takes the ordinary exit, which waits for it.
    """
    # pydantic looks for plugins (an entry-point scan of every installed distribution, ~5-10 ms) when it
    # builds its first validator; fleetscan's models want none. Set it to empty to have them loaded.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    code = main()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # `fleetscan results RUN | head`: the reader went away
        pass
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    run_exit_hooks = getattr(atexit, "_run_exitfuncs", None)  # CPython's; elsewhere, the ordinary exit
    if run_exit_hooks is None or any(
        not t.daemon for t in threading.enumerate() if t is not threading.main_thread()
    ):
        sys.exit(code)
    run_exit_hooks()
    os._exit(code)
