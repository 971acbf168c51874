"""What a run asks for beyond its workflow, targets and scope.

A neutral module (like ``errors`` and ``status``): the submit path builds it, the store keeps it, the
master and the front ends read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What a run asks for beyond workflow, targets and scope; stored with the run as given."""

    exclude: str | None = None
    max_rate: int | None = None
    host_rate: int | None = None
    notify: str | None = None
    submitted_by: str | None = None
    schedule_id: str | None = None
