"""The master's side of rate budgets: how many budgeted tasks to claim, never more than can start.

A grant (see :mod:`console.store.grants`) is budget held from claim to outcome; a task claimed
only to wait in the dispatcher's queue would hold budget no probe uses. So a claim asks for
at most as many budgeted tasks as there are agent slots with nothing running or waiting:
every grant handed out is spent at once, and what a task gives back when it ends goes to the
task that takes its slot.
"""

from __future__ import annotations

from collections.abc import Sized


def budget_slots(total_slots: int, ready: Sized, running: Sized) -> int:
    """Agent slots neither running a task nor promised to one already claimed."""
    return max(0, total_slots - len(ready) - len(running))
