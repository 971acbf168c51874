"""How states, counts and times look on screen: one place, so every table agrees.

Everything here is a pure function of its arguments (the clock is passed in), so
snapshot tests get the same pixels every run.
"""

from __future__ import annotations

from rich.text import Text

from console.sanitize import for_terminal, safe_line

#: Colour per state, shared by runs, stages, tasks and agents. A state that is not
#: listed (a newer state the store grew) is drawn plain rather than crashing.
STATE_STYLES: dict[str, str] = {
    "pending": "bold #a0a0a0",
    "running": "bold #5fafff",
    "paused": "bold #ffaf00",
    "completed": "bold #5fd75f",
    "failed": "bold #ff5f5f",
    "stopped": "bold #d75fd7",
    "stopping": "bold #d75fd7",
    "waiting for a master": "bold #ffaf00",
    "queued": "#a0a0a0",
    "leased": "#5fafff",
    "done": "#5fd75f",
    "cancelled": "#d75fd7",
    # agents
    "up": "bold #5fd75f",
    "idle": "bold #5fd75f",
    "ready": "bold #5fd75f",
    "busy": "bold #5fafff",
    "connecting": "bold #ffaf00",
    "starting": "bold #ffaf00",
    "bootstrapping": "bold #ffaf00",
    "down": "bold #ff5f5f",
    "set_aside": "bold #ff5f5f",
    "set-aside": "bold #ff5f5f",
    "unknown": "#a0a0a0",
}

LEVEL_STYLES: dict[str, str] = {
    "debug": "dim",
    "info": "#87afd7",
    "warning": "bold #ffaf00",
    "warn": "bold #ffaf00",
    "error": "bold #ff5f5f",
}


def state_text(state: str | None) -> Text:
    """A state word in its colour."""
    word = state or "-"
    return Text(word, style=STATE_STYLES.get(word, ""))


def safe(value: object) -> str:
    """Untrusted text (a box's, a scanned service's) for one line on screen: printable only."""
    return safe_line(value, None)


def plain(value: object, style: str = "", *, lines: bool = False) -> Text:
    """Untrusted text as a Text: never parsed as markup, no control or escape sequence in it."""
    return Text(for_terminal(value) if lines else safe_line(value, None), style=style)


def level_style(level: str | None) -> str:
    return LEVEL_STYLES.get((level or "").lower(), "")


def short_id(run_id: str, width: int = 8) -> str:
    """Run ids are long; the first characters are enough to tell them apart on screen."""
    return run_id[:width]


def count(value: int | None) -> str:
    """Counts with thousands separators: 100,000 reads faster than 100000."""
    return f"{value or 0:,}"


def duration(seconds: float | None) -> str:
    """Compact h/m/s: ``42s``, ``3m05s``, ``2h07m``."""
    if seconds is None:
        return "-"
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def clock_time(ts: float | None) -> str:
    """UTC wall-clock time of day of an epoch timestamp, e.g. ``14:03:09``."""
    if ts is None:
        return "-"
    import time

    return time.strftime("%H:%M:%S", time.gmtime(ts))


def run_duration(started: float | None, ended: float | None, now: float) -> float | None:
    if started is None:
        return None
    return (ended if ended is not None else now) - started


def percent(done: int, total: int) -> str:
    if total <= 0:
        return "-"
    return f"{100.0 * done / total:5.1f}%"


def progress_text(done: int, total: int) -> str:
    """``12/40  30.0%``: tasks finished out of tasks planned so far."""
    if total <= 0:
        return "0/0"
    return f"{done:,}/{total:,} {percent(done, total).strip()}"


def eta_seconds(done: int, total: int, started: float | None, now: float) -> float | None:
    """Remaining time at the rate seen so far; None until there is a rate to go by."""
    if started is None or done <= 0 or total <= done:
        return None
    elapsed = now - started
    if elapsed <= 0:
        return None
    rate = done / elapsed
    return (total - done) / rate


def age(ts: float | None, now: float) -> str:
    """How long ago: heartbeats read better as ``3s ago`` than as a time of day."""
    if ts is None:
        return "never"
    return f"{duration(now - ts)} ago"


def latency(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 10:
        return f"{ms:.1f} ms"
    return f"{ms:.0f} ms"


def served_state(state: str, owner: str | None, owner_seen: float | None, now: float, dead_after_s: float) -> str:
    """A pending or running run that no live master holds says so: "waiting for a master"."""
    if state not in ("pending", "running"):
        return state
    if owner is None or owner_seen is None or now - owner_seen > dead_after_s:
        return "waiting for a master"
    return state
