"""Headless progress and summaries for the CLI (stderr for progress, stdout for summaries).

On a terminal, one live line per stage, redrawn in place a few times a second; otherwise
(a pipe, a CI log) a plain line whenever a stage's counts change, at most once a second.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TextIO

from console.sanitize import safe_line


def _stage_line(stage: dict[str, Any]) -> str:
    total, done, failed = stage["tasks_total"], stage["tasks_done"], stage["tasks_failed"]
    dropped = stage.get("dropped") or 0
    extra = f", {dropped} out of scope" if dropped else ""
    fail = f", {failed} failed" if failed else ""
    return f"  {stage['id']:<12} {stage['state']:<10} tasks {done}/{total}{fail}, results {stage['results']}{extra}"


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"run {summary['run']} ({summary.get('workflow', '?')}): {summary['state']}, "
        f"{summary['results']} results in {summary['duration_s']:.1f}s"
    ]
    lines += [_stage_line(s) for s in summary["stages"]]
    return "\n".join(lines)


def format_runs(summaries: list[dict[str, Any]]) -> str:
    if not summaries:
        return "no runs"
    head = f"{'RUN':<14} {'WORKFLOW':<12} {'STATE':<10} {'TASKS':>12} {'RESULTS':>9} {'DURATION':>9}"
    rows = [head]
    for s in summaries:
        total = sum(st["tasks_total"] for st in s["stages"])
        done = sum(st["tasks_done"] for st in s["stages"])
        rows.append(
            f"{s['run']:<14} {s.get('workflow', ''):<12} {s['state']:<10} {f'{done}/{total}':>12} "
            f"{s['results']:>9} {s['duration_s']:>8.1f}s"
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
        lines = [safe_line(_stage_line(s), None) for s in summary["stages"]]
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
