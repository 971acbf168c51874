"""Headless progress and summaries for the CLI (stderr for progress, stdout for summaries).

On a terminal, one live line per stage, redrawn in place a few times a second; otherwise
(a pipe, a CI log) a plain line whenever a stage's counts change, at most once a second.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TextIO


def _stage_line(stage: dict[str, Any]) -> str:
    total, done, failed = stage["tasks_total"], stage["tasks_done"], stage["tasks_failed"]
    dropped = stage.get("dropped") or 0
    extra = f", {dropped} out of scope" if dropped else ""
    fail = f", {failed} failed" if failed else ""
    return f"  {stage['id']:<12} {stage['state']:<10} tasks {done}/{total}{fail}, results {stage['results']}{extra}"


WAITING = "waiting for a master: none serves this run (start `fleetscan master` or the console)"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "?"


def _request_lines(summary: dict[str, Any]) -> list[str]:
    """What the run was asked to do: the SPEC's status object, as text."""
    rates = [f"{summary['max_rate']}/s over the fleet" if summary.get("max_rate") else "",
             f"{summary['host_rate']}/s per target address" if summary.get("host_rate") else ""]
    by = summary.get("submitted_by") or "?"
    sched = f" by schedule {summary['schedule']}" if summary.get("schedule") else ""
    lines = [
        f"  targets      {summary.get('targets') or '-'}",
        f"  scope        {summary.get('scope') or '-'}",
        f"  exclude      {summary.get('exclude') or '-'}",
        f"  agents       {summary.get('agents') or 'local'}",
        f"  priority     {summary.get('priority', 0)}",
        f"  rate budget  {', '.join(r for r in rates if r) or 'none'}",
        f"  submitted    {_when(summary.get('created'))} by {by}{sched}",
    ]
    if summary.get("notify"):
        lines.append(f"  notify       {summary['notify']}")
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"run {summary['run']} ({summary.get('workflow', '?')}): {summary['state']}, "
        f"{summary['results']} results in {summary['duration_s']:.1f}s"
    ]
    lines += _request_lines(summary)
    if summary.get("waiting_for_master"):
        lines.append(f"  {WAITING}")
    if summary.get("error"):
        lines.append(f"  error        {summary['error']}")
    failures = summary.get("failures") or []
    named = 1 if summary.get("state") == "failed" else 0  # the error line above already names the first
    for failure in failures[named:]:
        where = f" on {failure['agent']}" if failure.get("agent") else ""
        lines.append(f"  failed task  {failure['task']} ({failure['stage']}){where}: {failure['error']}")
    if "baseline" in summary:
        b = summary["baseline"]
        lines.append(f"  baseline     {b['pass']} pass, {b['fail']} fail, {b['error']} error")
    lines.append("  stages:")
    lines += [_stage_line(s) for s in summary["stages"]]
    return "\n".join(lines)


def _short(text: str | None, width: int) -> str:
    text = text or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def format_runs(summaries: list[dict[str, Any]]) -> str:
    if not summaries:
        return "no runs"
    head = (f"{'RUN':<10} {'WORKFLOW':<12} {'STATE':<10} {'TASKS':>11} {'RESULTS':>8} {'DURATION':>9}  "
            f"{'TARGETS':<28} NOTE")
    rows = [head]
    for s in summaries:
        total = sum(st["tasks_total"] for st in s["stages"])
        done = sum(st["tasks_done"] for st in s["stages"])
        note = "waiting for a master" if s.get("waiting_for_master") else ""
        if not note and s.get("state") == "failed" and s.get("failures"):
            f = s["failures"][0]
            note = _short(f"task {f['task']} ({f['stage']}): {f['error']}", 60)
        rows.append(
            f"{s['run']:<10} {_short(s.get('workflow'), 12):<12} {s['state']:<10} {f'{done}/{total}':>11} "
            f"{s['results']:>8} {s['duration_s']:>8.1f}s  {_short(s.get('targets'), 28):<28} {note}".rstrip()
        )
    return "\n".join(rows)


class ProgressPrinter:
    """Follows one run in the store and reports its stages on ``out``."""

    def __init__(self, store: Any, run_id: str, out: TextIO, interval: float = 0.25) -> None:
        self.store, self.run_id, self.out, self.interval = store, run_id, out, interval
        self.live = out.isatty()
        self._drawn = 0
        self._last_plain: dict[str, str] = {}
        self._last_plain_at = 0.0

    async def follow(self) -> None:
        while True:
            try:
                summary = await asyncio.to_thread(self.store.runs.summary, self.run_id)
            except Exception:  # a busy DB is not worth killing the run over; try next tick
                summary = None
            if summary is not None:
                self.draw(summary)
            await asyncio.sleep(self.interval)

    def draw(self, summary: dict[str, Any]) -> None:
        lines = [_stage_line(s) for s in summary["stages"]]
        if self.live:
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self.out.flush()
            self._drawn = len(lines)
            return
        now = time.monotonic()
        if now - self._last_plain_at < 1.0:
            return
        for stage, line in zip(summary["stages"], lines, strict=True):
            if self._last_plain.get(stage["id"]) != line:
                self._last_plain[stage["id"]] = line
                self.out.write(line.strip() + "\n")
        self.out.flush()
        self._last_plain_at = now

    def finish(self) -> None:
        """Leave the final state on screen (live mode) and force a last plain report."""
        try:
            summary = self.store.runs.summary(self.run_id)
        except Exception:
            return
        self._last_plain_at = 0.0
        self.draw(summary)
