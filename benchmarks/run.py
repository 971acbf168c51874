"""Run every benchmark module and print one table of figures, goals and the command behind each.

    python -m benchmarks.run                 # all of them
    python -m benchmarks.run master ssh      # only bench_master and bench_ssh

Each ``benchmarks/bench_<topic>.py`` exposes ``run() -> list[dict]`` with rows
``{"figure", "value", "goal", "command"}``. Timings are measured side by side in one
run (fleetscan vs nmap, 1 agent vs N) and never asserted in tests.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback
from pathlib import Path


def modules(only: list[str]) -> list[str]:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    return [n for n in names if not only or n.removeprefix("bench_") in only]


def table(rows: list[dict[str, str]]) -> str:
    cols = ("figure", "value", "goal", "command")
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    rows: list[dict[str, str]] = []
    for name in modules(argv):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            rows += importlib.import_module(f"benchmarks.{name}").run()
        except Exception as err:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            rows.append({"figure": name, "value": f"error: {err}", "goal": "", "command": ""})
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
