"""The `fleetscan` command: argument parsing, exit codes, and the headless paths.

Exit codes (SPEC): 0 the run completed; 1 it ended failed or stopped; 2 bad input
(one line on stderr naming file, line and field); 130 interrupted (the run stays
resumable). Textual is imported only for `fleetscan` / `fleetscan tui`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from console.errors import FleetscanError
from console.status import RUN_TERMINAL, RunState

if TYPE_CHECKING:
    from console.store.base import Store

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE line on stderr (exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"fleetscan: {self.prog}: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--db, --workflows, --agents: accepted before or after the sub-command."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--db", default=default, metavar="PATH",
                        help="SQLite state file (default: $FLEETSCAN_DB, else fleetscan.db in the user data dir)")
    parser.add_argument("--workflows", default=default, metavar="FILE",
                        help="workflow file (default: ./workflows.yaml if present, else the packaged one)")
    parser.add_argument("--agents", default=default, metavar="SRC",
                        help="local, local:N, or an inventory YAML file (default: local)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fleetscan", description="Operator console for distributed, multi-stage network scans.")
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        _common(sp, top=False)
        return sp

    cmd("tui", "open the console (runs the master while open)")
    for name, help_ in (("run", "plan, dispatch, wait for the end, print a summary"),
                        ("submit", "enqueue a run, print its id, return at once")):
        sp = cmd(name, help_)
        sp.add_argument("workflow")
        sp.add_argument("--targets", metavar="SPEC", help="addresses, CIDRs, ranges, hosts, host:port, @file")
        sp.add_argument("--scope", metavar="SPEC", help="what derived targets may be (default: the targets)")
        sp.add_argument("--priority", type=int, default=0, help="higher runs are dispatched first (default 0)")
        sp.add_argument("--exclude", metavar="SPEC",
                        help="addresses, ranges and hosts never contacted (target syntax, @file too)")
        sp.add_argument("--max-rate", type=int, metavar="N", help="probes per second summed over the whole fleet")
        sp.add_argument("--host-rate", type=int, metavar="N",
                        help="probes per second any one target address receives from the whole fleet")
        sp.add_argument("--notify", metavar="URL", help="POST a JSON summary (with changes) here when the run ends")
        if name == "run":
            sp.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    cmd("master", "headless master: serves submitted runs until interrupted")
    sp = cmd("resume", "continue a paused or interrupted run until it ends")
    sp.add_argument("run")
    sp.add_argument("--json", action="store_true")
    for name, help_ in (("pause", "stop dispatching a run's tasks"), ("stop", "cancel a run's tasks; it ends stopped")):
        cmd(name, help_).add_argument("run")
    sp = cmd("rerun", "submit a new run with the same inputs as a finished RUN; print its id")
    sp.add_argument("run", help="the run to repeat (its stored workflow definition, targets, scope and options)")
    sp = cmd("status", "runs, or one run: state, per-stage progress, counts")
    sp.add_argument("run", nargs="?")
    sp.add_argument("--json", action="store_true")
    sp = cmd("results", "print a run's result records")
    sp.add_argument("run")
    sp.add_argument("--stage")
    sp.add_argument("--type")
    sp.add_argument("--format", choices=("jsonl", "csv", "json"), default="jsonl")
    sp.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    sp = cmd("workflows", "list the workflows, or validate the file and exit")
    sp.add_argument("--check", action="store_true")
    sp = cmd("agents", "list the boxes; --check connects, bootstraps, reports")
    sp.add_argument("--check", action="store_true")
    sp.add_argument("--trust", metavar="NAME", help="show NAME's host key fingerprint and record it as trusted")
    sp.add_argument("--yes", action="store_true", help="with --trust: do not ask for confirmation")
    return p


# -- helpers ------------------------------------------------------------------


def _store(args: argparse.Namespace) -> Store:
    from console.store import open_store

    return open_store(args.db)


def _workflows_path(args: argparse.Namespace) -> Path:
    from console.workflow.models import default_workflows_path

    return Path(args.workflows) if args.workflows else default_workflows_path()


def _agents_source(args: argparse.Namespace) -> str:
    from console.fleet.inventory import parse_agents_source

    src = args.agents or os.environ.get("FLEETSCAN_AGENTS") or "local"
    parse_agents_source(src)  # validates (and loads an inventory file) before anything is written
    return src


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    from console.cli.progress import format_summary

    print(format_summary(summary))


def _exit_for(state: str) -> int:
    return EXIT_OK if state == RunState.COMPLETED else EXIT_RUN_FAILED


# -- commands -----------------------------------------------------------------


def cmd_tui(args: argparse.Namespace) -> int:
    from console.tui.app import run_console

    return run_console(db_path=args.db, workflows_file=args.workflows, agents_source=_agents_source(args)) or 0


def _create_run(args: argparse.Namespace, agents: str) -> tuple[Store, str]:
    """Validate everything, then write the run in one transaction (nothing half-written on bad input)."""
    from console.workflow.submit import prepare_run

    prepared = prepare_run(
        workflows_file=_workflows_path(args), workflow=args.workflow, targets=args.targets,
        scope=args.scope, priority=args.priority, agents=agents, exclude=args.exclude,
        max_rate=args.max_rate, host_rate=args.host_rate, notify=args.notify,
    )
    store = _store(args)
    return store, prepared.create(store)


def cmd_submit(args: argparse.Namespace) -> int:
    store, run_id = _create_run(args, _agents_source(args))
    store.close()
    print(run_id)
    return EXIT_OK


def _drive(store: Store, run_id: str, agents: str, as_json: bool) -> int:
    """Run one run to its end on an embedded master, with progress on stderr."""
    from console.cli.progress import ProgressPrinter
    from console.master.scheduler import Master

    async def main() -> str:
        master = Master(store, agents)
        printer = ProgressPrinter(store, run_id, sys.stderr)
        watcher = asyncio.create_task(printer.follow())
        try:
            state = await master.run_until_done(run_id)
        finally:
            watcher.cancel()
            printer.finish()
        return str(state)

    state = asyncio.run(main())
    _print_summary(store.runs.summary(run_id), as_json)
    return _exit_for(state)


def cmd_run(args: argparse.Namespace) -> int:
    agents = _agents_source(args)
    store, run_id = _create_run(args, agents)
    print(f"run {run_id}", file=sys.stderr)
    return _drive(store, run_id, agents, args.json)


def cmd_resume(args: argparse.Namespace) -> int:
    store = _store(args)
    run = store.runs.get(args.run)
    if run.state in RUN_TERMINAL:
        _print_summary(store.runs.summary(args.run), args.json)
        return _exit_for(run.state)
    store.runs.resume(args.run)
    agents = args.agents or run.agents or "local"
    return _drive(store, args.run, agents, args.json)


def cmd_master(args: argparse.Namespace) -> int:
    from console.master.scheduler import Master

    store = _store(args)
    master = Master(store, _agents_source(args))
    print(f"master {master.master_id} serving {store.location}; Ctrl-C to stop", file=sys.stderr)
    asyncio.run(master.serve())
    return EXIT_OK


def cmd_control(args: argparse.Namespace) -> int:
    store = _store(args)
    store.runs.get(args.run)  # RunNotFound -> exit 2
    (store.runs.pause if args.command == "pause" else store.runs.stop)(args.run)
    print(f"{args.command} requested for run {args.run}", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from console.cli.progress import format_runs

    store = _store(args)
    if args.run:
        _print_summary(store.runs.summary(args.run), args.json)
        return EXIT_OK
    summaries = store.runs.summaries()
    if args.json:
        print(json.dumps({"runs": summaries}))
    else:
        print(format_runs(summaries))
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    from console.store.export import export_results

    store = _store(args)
    store.runs.get(args.run)
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            n = export_results(store, args.run, args.format, out, stage=args.stage, type_=args.type)
        print(f"{n} records written to {args.output}", file=sys.stderr)
    else:
        export_results(store, args.run, args.format, sys.stdout, stage=args.stage, type_=args.type)
    return EXIT_OK


def cmd_workflows(args: argparse.Namespace) -> int:
    from console.workflow.models import describe, load_workflows

    path = _workflows_path(args)
    wf_file = load_workflows(path)
    if args.check:
        print(f"{path}: ok ({len(wf_file.workflows)} workflows)", file=sys.stderr)
        return EXIT_OK
    for line in describe(wf_file):
        print(line)
    return EXIT_OK


def cmd_agents(args: argparse.Namespace) -> int:
    from console.cli.agents import agents_command

    return agents_command(args, _agents_source(args))


def _cmd_rerun(args: argparse.Namespace) -> int:
    from console.cli.rerun import cmd_rerun

    return cmd_rerun(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "tui": cmd_tui, "run": cmd_run, "submit": cmd_submit, "master": cmd_master, "resume": cmd_resume,
    "pause": cmd_control, "stop": cmd_control, "status": cmd_status, "results": cmd_results,
    "workflows": cmd_workflows, "agents": cmd_agents, "rerun": _cmd_rerun,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "tui"
    try:
        return COMMANDS[command](args)
    except KeyboardInterrupt:
        print("interrupted: the run stays resumable (fleetscan resume RUN)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `fleetscan results RUN | head`: the reader went away; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except FleetscanError as err:
        print(f"fleetscan: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
