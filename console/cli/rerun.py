"""`fleetscan rerun RUN`: a new run with the same inputs as RUN (its stored definition, targets,
scope, exclusions, agents, priority, rate budgets, notify URL); prints the new id, like `submit`.

The console's ``R`` calls the same core, ``console.workflow.rerun.rerun_run``.
"""

from __future__ import annotations

import argparse


def cmd_rerun(args: argparse.Namespace) -> int:
    from console.cli.runids import resolve_run
    from console.store import open_store
    from console.workflow.rerun import rerun_run

    with open_store(args.db) as store:
        print(rerun_run(store, resolve_run(store, args.run)))
    return 0
