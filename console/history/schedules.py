"""A schedule's timing: ``--every`` durations, ``--window`` local-time windows, and due-time arithmetic.

Pure functions of timestamps, so the rules are tested without a clock: a new schedule is due at once (or
when its window next opens); after an occurrence fires at ``now`` the next is the first period boundary
strictly after ``now`` (occurrences missed while no master ran collapse into the one that fires), moved to
the next window opening when it falls outside the window. Windows are in the local time of the master
that fires, and may wrap midnight (``22:00-04:00``).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

from console.errors import BadInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d{1,7})([smhdw])")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
#: shortest and longest period accepted
MIN_EVERY_S = 60
MAX_EVERY_S = 366 * 86400

Window = tuple[int, int]  # (start, end) in minutes after local midnight


def parse_every(text: str, field: str = "--every") -> int:
    """``30m``, ``6h``, ``1d``, ``1h30m`` -> seconds (1 minute to 366 days)."""
    value = (text or "").strip().lower()
    pos, total = 0, 0
    for match in _DURATION.finditer(value):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not value or pos != len(value):
        raise BadInput(f"{text!r} is not a duration (like 30m, 6h, 1d, 1h30m)", field=field)
    if not MIN_EVERY_S <= total <= MAX_EVERY_S:
        raise BadInput(f"{text!r}: must be from 1m to 366d", field=field)
    return total


def parse_window(text: str | None, field: str = "--window") -> Window | None:
    """``HH:MM-HH:MM`` (24 h, local time; the end may be before the start: the window wraps midnight)."""
    if text is None:
        return None
    match = _WINDOW.match(text.strip())
    if not match:
        raise BadInput(f"{text!r} is not a window HH:MM-HH:MM (24-hour local time)", field=field)
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise BadInput(f"{text!r}: the window is empty (start equals end)", field=field)
    return start, end


def format_window(window: Window) -> str:
    (h1, m1), (h2, m2) = divmod(window[0], 60), divmod(window[1], 60)
    return f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d}"


def format_every(seconds: int) -> str:
    """``3600`` -> ``1h``: the largest unit that divides the period."""
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _minute_of_day(ts: float) -> float:
    t = datetime.fromtimestamp(ts)
    return t.hour * 60 + t.minute + (t.second + t.microsecond / 1e6) / 60


def in_window(ts: float, window: Window | None) -> bool:
    if window is None:
        return True
    start, end = window
    minute = _minute_of_day(ts)
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps midnight


def window_opens(ts: float, window: Window | None) -> float:
    """The first instant at or after ``ts`` inside the window (``ts`` itself when it is inside)."""
    if window is None or in_window(ts, window):
        return ts
    day = datetime.fromtimestamp(ts).replace(hour=0, minute=0, second=0, microsecond=0)
    for offset in range(3):
        # a naive local datetime's .timestamp() goes through mktime: DST is the local clock's business
        opening = (day + timedelta(days=offset, minutes=window[0])).timestamp()
        if opening >= ts:
            return opening
    return ts  # unreachable: a window opens every day


def first_due(now: float, window: Window | None) -> float:
    """A new schedule is due at once, or when its window next opens."""
    return window_opens(now, window)


def next_due(due: float, every_s: int, now: float, window: Window | None) -> float:
    """After the occurrence due at ``due`` fired at ``now``: the first boundary ``due + k*every`` after
    ``now`` (missed ones collapse), moved into the window."""
    periods = max(1, math.floor((now - due) / every_s) + 1)
    candidate = due + periods * every_s
    while candidate <= now:  # float edge
        candidate += every_s
    return window_opens(candidate, window)
