"""`fleetscan assets [--json]`: the latest known state of every host across runs."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_OK = 0


def configure(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--json", action="store_true", help='print {"assets": [...]}')


def command(args: argparse.Namespace, store: Any) -> int:
    from console.history.assets import collect, lines

    assets = collect(store)
    if args.json:
        print(json.dumps({"assets": assets}, ensure_ascii=False))
    else:
        for line in lines(assets):
            print(line)
    return EXIT_OK
