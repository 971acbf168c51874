"""`fleetscan amend RUN --workflows FILE`: new definitions for the stages of RUN that have not started."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK = 0


def configure(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("run", metavar="RUN", help="the run whose stages that have not started take the new definitions")


def command(args: argparse.Namespace, store: Any) -> int:
    from console.errors import BadInput
    from console.history.amend import amend_run

    if not args.workflows:
        raise BadInput("required: the workflow file with the new definitions", field="--workflows")
    result = amend_run(store, args.run, args.workflows)
    if result.amended:
        print(f"run {args.run}: amended stage(s) {', '.join(result.amended)}", file=sys.stderr)
    else:
        print(f"run {args.run}: no stage that has not started differs; nothing changed", file=sys.stderr)
    if result.kept:
        print(f"run {args.run}: stage(s) {', '.join(result.kept)} already started and keep their definition",
              file=sys.stderr)
    return EXIT_OK
