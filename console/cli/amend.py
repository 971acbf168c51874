"""`fleetscan amend RUN --workflows FILE`: new definitions for the stages of RUN that have not started."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK = 0


def configure(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("run", metavar="RUN", help="the run whose stages that have not started take the new definitions")


def command(args: argparse.Namespace, store: Any) -> int:
    from console.cli.runids import resolve_run
    from console.errors import BadInput
    from console.history.amend import amend_run

    if not args.workflows:
        raise BadInput("required: the workflow file with the new definitions", field="--workflows")
    run_id = resolve_run(store, args.run)  # a unique prefix, like every command that takes RUN
    result = amend_run(store, run_id, args.workflows)
    if result.amended:
        print(f"run {run_id}: amended stage(s) {', '.join(result.amended)}", file=sys.stderr)
    else:
        print(f"run {run_id}: no stage that has not started differs; nothing changed", file=sys.stderr)
    if result.kept:
        print(f"run {run_id}: stage(s) {', '.join(result.kept)} already started and keep their definition",
              file=sys.stderr)
    return EXIT_OK
