"""`fleetscan schedule add|list|rm|pause|resume`: recurring runs, fired by any running master.

``add`` validates the whole request like `submit` (the same ``prepare_run``) plus ``--every`` and
``--window`` before writing anything, then prints the new schedule's id alone on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

EXIT_OK = 0


def configure(sp: argparse.ArgumentParser, common: Any) -> None:
    sub = sp.add_subparsers(dest="schedule_command", metavar="ACTION", required=True, parser_class=type(sp),
                            help="add, list, rm, pause or resume")
    add = sub.add_parser("add", help="add a schedule; prints its id")
    common(add, top=False)
    add.add_argument("workflow", help="the workflow's name in the workflows file")
    add.add_argument("--targets", metavar="SPEC", help="addresses, CIDRs, ranges, hosts, host:port, @file")
    add.add_argument("--every", required=True, metavar="DURATION", help="30m, 6h, 1d, 1h30m (1m to 366d)")
    add.add_argument("--window", metavar="HH:MM-HH:MM", help="local time; runs start only inside it (may wrap midnight)")
    add.add_argument("--scope", metavar="SPEC", help="what derived targets may be (default: the targets)")
    add.add_argument("--priority", type=int, default=0, help="higher runs are dispatched first (default 0)")
    add.add_argument("--exclude", metavar="SPEC", help="addresses, ranges and hosts never contacted")
    add.add_argument("--max-rate", type=int, metavar="N", help="probes per second summed over the whole fleet")
    add.add_argument("--host-rate", type=int, metavar="N", help="probes per second any one target address receives")
    add.add_argument("--notify", metavar="URL", help="POST a JSON summary (with changes) here when each run ends")
    lst = sub.add_parser("list", help="the schedules: next run, last run and its changes")
    common(lst, top=False)
    lst.add_argument("--json", action="store_true", help='print {"schedules": [...]}')
    for name, help_ in (("rm", "remove a schedule (its runs stay)"), ("pause", "stop starting runs"),
                        ("resume", "start runs again (a missed occurrence starts once)")):
        action = sub.add_parser(name, help=help_)
        common(action, top=False)
        action.add_argument("id", metavar="ID", help="the schedule's id or its first 4+ characters (schedule list)")


def command(args: argparse.Namespace, store_for: Any, workflows_path: Any, agents_source: Any) -> int:
    action = args.schedule_command
    if action == "add":
        return _add(args, store_for, workflows_path, agents_source)
    store = store_for(args)
    try:
        if action == "list":
            return _list(store, args.json)
        args.id = store.schedules.resolve(args.id)
        if action == "rm":
            store.schedules.remove(args.id)
        elif action == "pause":
            store.schedules.set_paused(args.id, True)
        else:
            from console.history.schedules import parse_window, window_opens

            row = store.schedules.get(args.id)
            now = time.time()
            due = window_opens(max(now, row.next_due), parse_window(row.window))
            store.schedules.set_paused(args.id, False, due)
        print(f"schedule {args.id}: {action} done", file=sys.stderr)
        return EXIT_OK
    finally:
        store.close()


def _add(args: argparse.Namespace, store_for: Any, workflows_path: Any, agents_source: Any) -> int:
    from console.history.schedules import first_due, parse_every, parse_window
    from console.store.writes import NewSchedule
    from console.workflow.submit import prepare_run

    every = parse_every(args.every)
    window = parse_window(args.window)
    agents = agents_source(args) if args.agents else None
    prepared = prepare_run(
        workflows_file=workflows_path(args), workflow=args.workflow, targets=args.targets, scope=args.scope,
        priority=args.priority, agents=agents, exclude=args.exclude, max_rate=args.max_rate,
        host_rate=args.host_rate, notify=args.notify,
    )
    from console.history.schedules import format_window

    opts = prepared.options
    schedule = NewSchedule(
        workflow=prepared.workflow, definition=prepared.definition, every_s=every,
        window=format_window(window) if window else None, first_due=first_due(time.time(), window),
        targets=prepared.targets, scope=prepared.scope, agents=prepared.agents, priority=prepared.priority,
        workflows_file=prepared.workflows_file, exclude=opts.exclude, max_rate=opts.max_rate,
        host_rate=opts.host_rate, notify=opts.notify, submitted_by=opts.submitted_by,
    )
    store = store_for(args)
    try:
        print(store.schedules.add(schedule))
    finally:
        store.close()
    return EXIT_OK


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _list(store: Any, as_json: bool) -> int:
    from console.history.overview import schedule_view
    from console.history.schedules import format_every

    views = [schedule_view(store, row) for row in store.schedules.all()]
    if as_json:
        print(json.dumps({"schedules": views}))
        return EXIT_OK
    print(f"{'ID':<9} {'WORKFLOW':<12} {'EVERY':<6} {'WINDOW':<12} {'STATE':<7} {'NEXT RUN':<17} LAST RUN")
    for v in views:
        last = "-"
        if v["last_run"]:
            changes = "" if v["last_changes"] is None else f", {v['last_changes']} change(s)"
            last = f"{v['last_run']} {v['last_state'] or '?'}{changes}"
        print(f"{v['id']:<9} {v['workflow'][:12]:<12} {format_every(v['every_s']):<6} {v['window'] or 'any time':<12} "
              f"{'paused' if v['paused'] else 'active':<7} {_when(v['next_due']):<17} {last}")
    return EXIT_OK
