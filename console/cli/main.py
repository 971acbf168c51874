"""The `fleetscan` command: argument parsing, exit codes, and the headless paths.

Exit codes (SPEC): 0 the run completed; 1 it ended failed or stopped; 2 bad input
(one line on stderr naming file, line and field); 130 interrupted (the run stays
resumable). Textual is imported only for `fleetscan` / `fleetscan tui`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from console.cli.runids import RUN_HELP, MergeSpecs, resolve_run
from console.errors import BadInput, FleetscanError
from console.sanitize import for_terminal, safe_line
from console.status import RUN_TERMINAL, RunState

if TYPE_CHECKING:
    from console.store.base import Store

T = TypeVar("T")

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE line on stderr (exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        # one `fleetscan:` prefix, then the sub-command when there is one ("fleetscan: status: ...")
        command = self.prog.removeprefix("fleetscan").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_BAD_INPUT, f"fleetscan: {where}{message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--db, --workflows, --agents: accepted before or after the sub-command."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--db", default=default, metavar="PATH|URL",
                        help="SQLite state file or postgresql://USER@HOST:PORT/DBNAME"
                             " (default: $FLEETSCAN_DB, else fleetscan.db in the user data dir)")
    parser.add_argument("--workflows", default=default, metavar="FILE",
                        help="workflow file (default: ./workflows.yaml if present, else the packaged one)")
    parser.add_argument("--agents", default=default, metavar="SRC",
                        help="local, local:N, or an inventory YAML file (default: local)")


#: the options accepted before the sub-command that take a value
_TOP_VALUE_OPTIONS = ("--db", "--workflows", "--agents")


def command_named(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names, found without parsing (None: help, a typo, or none given)."""
    args = iter(argv)
    for arg in args:
        if arg in _TOP_VALUE_OPTIONS:
            next(args, None)
        elif arg.startswith(tuple(f"{o}=" for o in _TOP_VALUE_OPTIONS)):
            continue
        elif arg.startswith("-"):
            return None
        else:
            return arg
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``only``, that sub-command's alone (each costs its share of a
    short command's start: the rest are built when the command is unknown or help is asked for)."""
    p = _Parser(prog="fleetscan", description="Operator console for distributed, multi-stage network scans.")
    _common(p, top=True)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                           help="what to do (default: tui); `fleetscan COMMAND --help` for its options")

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return _Unused()  # type: ignore[return-value]
        sp = sub.add_parser(name, help=help_, description=help_)
        _common(sp, top=False)
        return sp

    cmd("tui", "open the console (runs the master while open)")
    for name, help_ in (("run", "plan, dispatch, wait for the end, print a summary"),
                        ("submit", "enqueue a run, print its id, return at once")):
        sp = cmd(name, help_)
        sp.add_argument("workflow", help="the workflow's name in the workflows file (see `fleetscan workflows`)")
        sp.add_argument("--targets", metavar="SPEC", action=MergeSpecs,
                        help="addresses, CIDRs, ranges, hosts, host:port, @file (repeatable: merged)")
        sp.add_argument("--scope", metavar="SPEC", action=MergeSpecs,
                        help="what derived targets may be (default: the targets; repeatable: merged)")
        sp.add_argument("--priority", type=int, default=0, help="higher runs are dispatched first (default 0)")
        sp.add_argument("--exclude", metavar="SPEC", action=MergeSpecs,
                        help="addresses, ranges and hosts never contacted (target syntax, @file too; repeatable: merged)")
        sp.add_argument("--max-rate", type=int, metavar="N", help="probes per second summed over the whole fleet")
        sp.add_argument("--host-rate", type=int, metavar="N",
                        help="probes per second any one target address receives from the whole fleet")
        sp.add_argument("--notify", metavar="URL", help="POST a JSON summary (with changes) here when the run ends")
        if name == "run":
            sp.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    cmd("master", "headless master: serves submitted runs until interrupted")
    sp = cmd("resume", "continue a paused or interrupted run until it ends")
    sp.add_argument("run", metavar="RUN", help=RUN_HELP)
    sp.add_argument("--json", action="store_true", help="print the end summary as one JSON object")
    sp.add_argument("--retry-failed", action="store_true",
                    help="a failed run: queue its failed tasks again (attempts from zero) and run it to its end")
    for name, help_ in (
        ("pause", "cancel a run's running tasks and queue them again; nothing is dispatched until resume"),
        ("stop", "cancel a run's tasks; it ends stopped"),
    ):
        cmd(name, help_).add_argument("run", metavar="RUN", help=RUN_HELP)
    sp = cmd("rerun", "submit a new run with the same inputs as a finished RUN; print its id")
    sp.add_argument("run", metavar="RUN",
                    help="the run to repeat (its stored workflow definition, targets, scope and options)")
    sp = cmd("status", "runs, or one run: its request, state, per-stage progress, counts, failures")
    sp.add_argument("run", metavar="RUN", nargs="?", help=f"{RUN_HELP}; without it, the newest runs")
    sp.add_argument("--json", action="store_true", help="one JSON object (without RUN: {\"runs\": [...]})")
    sp = cmd("results", "print a run's result records")
    sp.add_argument("run", metavar="RUN", help=RUN_HELP)
    sp.add_argument("--stage", metavar="ID", help="only this stage's records (an unknown stage is bad input)")
    sp.add_argument("--type", metavar="T",
                    help="only records of this type: host_up, port_open, service, http, tls_cert, baseline, "
                         "or an exec stage's own (an unknown type is bad input)")
    sp.add_argument("--format", choices=("jsonl", "csv", "json"), default="jsonl",
                    help="jsonl: one record a line (default); csv: one row a record; json: one array")
    sp.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    sp = cmd("events", "the event log, full text, oldest first (without RUN: every event, the fleet's included)")
    sp.add_argument("run", metavar="RUN", nargs="?", help=f"{RUN_HELP}; without it, every event")
    sp.add_argument("--follow", "-f", action="store_true",
                    help="keep printing new events until Ctrl-C (with RUN: until the run ends)")
    sp.add_argument("--json", action="store_true", help="one JSON object a line: id, ts, run, level, kind, message")
    sp = cmd("workflows", "list the workflows, or validate the file and exit")
    sp.add_argument("--check", action="store_true", help="validate the workflows file and exit (2 on bad input)")
    sp = cmd("agents", "list the boxes; --check connects, bootstraps, reports")
    sp.add_argument("--check", action="store_true", help="connect to every box, bootstrap the agent, ping it")
    sp.add_argument("--json", action="store_true", help='print {"agents": [...]}, one object per box')
    sp.add_argument("--trust", metavar="NAME", help="show NAME's host key fingerprint and record it as trusted")
    sp.add_argument("--yes", action="store_true", help="with --trust: do not ask for confirmation")
    if only is None or only in ("diff", "amend", "schedule", "assets"):
        # runs over time: each command in its own module
        from console.cli import amend, assets, diff, schedule

        diff.configure(cmd("diff", "what changed between two runs (exit 1 when something did)"))
        amend.configure(cmd("amend", "new definitions (--workflows FILE) for stages of a run that have not started"))
        schedule.configure(cmd("schedule", "recurring runs: add, list, rm, pause, resume"), _common)
        assets.configure(cmd("assets", "the latest known state of every host across runs"))
    if only is None or only == "masters":
        from console.cli.masters import add_parser as add_masters

        add_masters(sub, _common)
    return p


class _Unused:
    """Stands in for a sub-command's parser that :func:`build_parser` does not build: takes anything."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """``argv`` parsed by the parser of the sub-command it names (every sub-command's when in doubt)."""
    words = sys.argv[1:] if argv is None else list(argv)
    only = command_named(words)
    if only is not None and only not in COMMANDS:
        only = None
    return build_parser(only).parse_args(words)


# -- helpers ------------------------------------------------------------------


def _store(args: argparse.Namespace) -> Store:
    from console.store import open_store

    return open_store(args.db)


def _workflows_path(args: argparse.Namespace) -> Path:
    from console.workflow.models import default_workflows_path

    return Path(args.workflows) if args.workflows else default_workflows_path()


def _agents_source(args: argparse.Namespace) -> str:
    from console.fleet.agentsource import parse_agents_source

    src = args.agents or os.environ.get("FLEETSCAN_AGENTS") or "local"
    parse_agents_source(src)  # validates (and loads an inventory file) before anything is written
    return src


def _run_summary(store: Store, run_id: str) -> dict[str, Any]:
    """The run's summary for `run`, `resume` and `status RUN`: with the baseline's pass/fail/error counts
    when the run has a baseline stage (read once here, not on every progress tick)."""
    summary = store.runs.summary(run_id)
    if any(s.tool == "baseline" for s in store.runs.stages(run_id)):
        counts = store.results.baseline_counts(run_id)
        summary["baseline"] = {"pass": counts.get("pass", 0), "fail": counts.get("fail", 0),
                               "error": counts.get("error", 0)}
    return summary


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    from console.cli.progress import format_summary

    print(for_terminal(format_summary(summary)))


def _exit_for(state: str) -> int:
    return EXIT_OK if state == RunState.COMPLETED else EXIT_RUN_FAILED


#: after Ctrl-C, how long a master may take to hand its leases back and close its agents before the
#: process exits anyway (the store is the source of truth: the run stays resumable either way)
SHUTDOWN_DEADLINE_S = 15.0


async def _bounded_shutdown(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; once Ctrl-C cancels it, its clean-up has SHUTDOWN_DEADLINE_S before the process
    exits with 130 regardless: a stuck agent, store or thread never keeps an interrupted master alive."""
    import signal

    armed: list[threading.Timer] = []

    def arm() -> None:
        if not armed:  # a timer thread: it fires even if the loop itself is stuck
            armed.append(threading.Timer(SHUTDOWN_DEADLINE_S, _exit_interrupted))
            armed[0].daemon = True
            armed[0].start()

    previous = signal.getsignal(signal.SIGINT)
    if callable(previous) and threading.current_thread() is threading.main_thread():

        def on_sigint(signum: int, frame: Any) -> None:
            arm()
            previous(signum, frame)  # asyncio's own: cancels this task

        signal.signal(signal.SIGINT, on_sigint)
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        arm()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    return task.result()


def _exit_interrupted() -> None:
    with contextlib.suppress(Exception):
        print(f"fleetscan: shutdown took over {SHUTDOWN_DEADLINE_S:g} s; exiting (runs stay resumable)",
              file=sys.stderr, flush=True)
    os._exit(EXIT_INTERRUPTED)


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

    async def main() -> str | FleetscanError:
        master = Master(store, agents)
        printer = ProgressPrinter(store, run_id, sys.stderr)
        watcher = asyncio.create_task(printer.follow())
        try:
            state = await master.run_until_done(run_id)
        except FleetscanError as err:
            # e.g. the disk is full: one line, and the master's agents and pipes go away with this
            # loop (a traceback kept past it would hold them and spill warnings after the line)
            err.__traceback__ = err.__context__ = err.__cause__ = None
            del master
            import gc

            gc.collect()  # pipes of the closed agents still in reference cycles: closed while the loop runs
            return err
        finally:
            watcher.cancel()
            printer.finish()
        return str(state)

    state = asyncio.run(_bounded_shutdown(main()))
    if isinstance(state, FleetscanError):
        raise state
    _print_summary(_run_summary(store, run_id), as_json)
    return _exit_for(state)


def cmd_run(args: argparse.Namespace) -> int:
    from console.cli.early import start_local_agents

    start_local_agents(args.agents or os.environ.get("FLEETSCAN_AGENTS") or "local")
    agents = _agents_source(args)
    store, run_id = _create_run(args, agents)
    print(f"run {run_id}", file=sys.stderr)
    code = _drive(store, run_id, agents, args.json)
    if args.notify:
        from console.history.notify import first_attempt

        first_attempt(store, run_id, sys.stderr)
    return code


def cmd_resume(args: argparse.Namespace) -> int:
    store = _store(args)
    run_id = resolve_run(store, args.run)
    run = store.runs.get(run_id)
    if args.retry_failed and run.state == RunState.FAILED:
        count = store.runs.retry_failed(run_id)
        print(f"run {run_id}: {count} failed task(s) queued again", file=sys.stderr)
        run = store.runs.get(run_id)
    if run.state in RUN_TERMINAL:
        _print_summary(_run_summary(store, run_id), args.json)
        return _exit_for(run.state)
    store.runs.resume(run_id)
    agents = args.agents or run.agents or "local"
    return _drive(store, run_id, agents, args.json)


def cmd_master(args: argparse.Namespace) -> int:
    from console.master.scheduler import Master

    store = _store(args)
    master = Master(store, _agents_source(args))
    print(f"master {master.master_id} serving {store.location}; Ctrl-C to stop", file=sys.stderr)
    asyncio.run(_bounded_shutdown(master.serve()))
    return EXIT_OK


def cmd_control(args: argparse.Namespace) -> int:
    store = _store(args)
    run_id = resolve_run(store, args.run)  # unknown or ambiguous -> exit 2
    (store.runs.pause if args.command == "pause" else store.runs.stop)(run_id)
    print(f"{args.command} requested for run {run_id}", file=sys.stderr)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from console.cli.progress import format_runs

    store = _store(args)
    if args.run:
        _print_summary(_run_summary(store, resolve_run(store, args.run)), args.json)
        return EXIT_OK
    summaries = store.runs.summaries()
    if args.json:
        print(json.dumps({"runs": summaries}))
    else:
        print(for_terminal(format_runs(summaries)))
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    from console.store.export import export_results

    store = _store(args)
    run_id = resolve_run(store, args.run)
    _check_filters(store, run_id, args.stage, args.type)
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            n = export_results(store, run_id, args.format, out, stage=args.stage, type_=args.type)
        print(f"{n} records written to {args.output}", file=sys.stderr)
    else:
        export_results(store, run_id, args.format, sys.stdout, stage=args.stage, type_=args.type)
    return EXIT_OK


def _check_filters(store: Store, run_id: str, stage: str | None, type_: str | None) -> None:
    """An unknown --stage or --type is bad input naming the known ones, never an empty answer."""
    from console.targets.records import RECORD_TYPES

    if stage is not None:
        stages = [s.id for s in store.runs.stages(run_id)]
        if stage not in stages:
            raise BadInput(f"run {run_id} has no stage {stage!r} (its stages: {', '.join(stages) or 'none'})",
                           field="--stage")
    if type_ is not None:
        known = sorted(set(RECORD_TYPES) | set(store.results.types(run_id)))
        if type_ not in known:
            raise BadInput(f"unknown record type {type_!r} (known: {', '.join(known)})", field="--type")


def cmd_events(args: argparse.Namespace) -> int:
    from console.cli.events import events_command

    return events_command(args, _store(args))


def cmd_workflows(args: argparse.Namespace) -> int:
    from console.workflow.models import describe, load_workflows

    path = _workflows_path(args)
    wf_file = load_workflows(path)
    if args.check:
        print(f"{path}: ok ({len(wf_file.workflows)} workflows)", file=sys.stderr)
        return EXIT_OK
    for line in describe(wf_file):
        print(for_terminal(line))  # a description's text is the file's, never an escape sequence
    return EXIT_OK


def cmd_masters(args: argparse.Namespace) -> int:
    from console.cli.masters import masters_command

    return masters_command(args)


def cmd_agents(args: argparse.Namespace) -> int:
    from console.cli.agents import agents_command

    return agents_command(args, _agents_source(args))


def cmd_history(args: argparse.Namespace) -> int:
    """diff, amend, assets, schedule: console/cli/{diff,amend,assets,schedule}.py."""
    from console.cli import amend, assets, diff, schedule

    if args.command == "schedule":
        return schedule.command(args, _store, _workflows_path, _agents_source)
    store = _store(args)
    try:
        return {"diff": diff.command, "amend": amend.command, "assets": assets.command}[args.command](args, store)
    finally:
        store.close()


def _cmd_rerun(args: argparse.Namespace) -> int:
    from console.cli.rerun import cmd_rerun

    return cmd_rerun(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "tui": cmd_tui, "run": cmd_run, "submit": cmd_submit, "master": cmd_master, "resume": cmd_resume,
    "pause": cmd_control, "stop": cmd_control, "status": cmd_status, "results": cmd_results,
    "workflows": cmd_workflows, "agents": cmd_agents, "events": cmd_events, "masters": cmd_masters,
    "diff": cmd_history, "amend": cmd_history, "assets": cmd_history, "schedule": cmd_history, "rerun": _cmd_rerun,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
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
        print(f"fleetscan: {safe_line(str(err))}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
