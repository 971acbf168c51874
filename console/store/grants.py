"""Rate budgets (``--max-rate``, ``--host-rate``): how much of a run's budget each claimed task gets.

The budget is handed out at claim time, inside the claim's transaction, from what the store
says is already granted: the ``rate`` of every task of the run that is leased now, by any
master. So several masters sharing a store never hand out more than the budget between them,
and a grant goes back to the budget the moment its task leaves ``leased`` (done, failed,
re-queued, given back, lease expired): the next claim re-balances it onto the tasks that
start then. The agent paces each task at its grant (the tools' own ``rate`` pacing, even from
the first probe), so the sum over the fleet stays under the budget in every 1 s window.

This module is the arithmetic only, shared by every backend (no SQL here): a backend reads
the run's budget, its leased grants and the candidate tasks, and writes back what
:func:`grant` returns.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from console.targets.values import host_of

#: tools whose agent side paces its probes by the task's ``rate``: a budget applies to their tasks
PACED_TOOLS = ("tcp_connect", "tcp_ping")
#: no task is started with less than this (probes/s): it waits for budget to come free instead
MIN_GRANT = 1.0


@dataclass
class RunBudget:
    """One run's budget and what of it is granted to its leased tasks right now."""

    max_rate: float | None
    host_rate: float | None
    granted: float = 0.0
    #: per target host: the sum of the grants of leased tasks that probe it
    by_host: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def hold(self, hosts: Iterable[str], rate: float) -> None:
        self.granted += rate
        for host in hosts:
            self.by_host[host] += rate


def task_hosts(targets_json: str) -> list[str]:
    """The hosts a task probes (its targets' hosts, deduplicated): what ``--host-rate`` is counted on."""
    try:
        targets = json.loads(targets_json)
    except ValueError:
        return []
    hosts = {host_of(str(t)) or str(t) for t in targets} if isinstance(targets, list) else set()
    return sorted(hosts)


def budget_of(max_rate: float | None, host_rate: float | None, leased: Iterable[tuple[str, float | None]]) -> RunBudget:
    """A run's budget, with the grants of its leased tasks (their targets JSON and rate) held."""
    budget = RunBudget(max_rate, host_rate)
    for targets_json, rate in leased:
        if rate:
            budget.hold(task_hosts(targets_json), float(rate))
    return budget


def grant(budget: RunBudget, candidates: list[tuple[int, str]], slots: int) -> dict[int, float]:
    """Grants for candidate tasks ``(id, targets JSON)`` of one run, in order, to at most ``slots`` of them.

    What is left of the budget is shared evenly over the tasks that start now (so a run's last tasks
    get all of it, and tasks starting when others end get what those gave back); a host's share is
    split over the tasks starting now that probe it. A candidate left with less than :data:`MIN_GRANT`
    (its host's share is held by running tasks) is passed over for the next one, and stays queued
    until budget comes free. ``budget`` is updated with what is granted.
    """
    hosts = {task_id: task_hosts(targets) for task_id, targets in candidates}
    #: per host, the candidates from here on that probe it
    ahead: Counter[str] = Counter(h for task_hosts_ in hosts.values() for h in task_hosts_)
    out: dict[int, float] = {}
    for index, (task_id, _) in enumerate(candidates):
        room = slots - len(out)
        if room <= 0:
            break
        rate = float("inf")
        if budget.max_rate is not None:
            rate = (budget.max_rate - budget.granted) / min(room, len(candidates) - index)
        if budget.host_rate is not None:
            for host in hosts[task_id]:
                rate = min(rate, (budget.host_rate - budget.by_host[host]) / min(room, ahead[host]))
        for host in hosts[task_id]:
            ahead[host] -= 1
        if rate == float("inf") or rate < MIN_GRANT:
            continue
        out[task_id] = rate
        budget.hold(hosts[task_id], rate)
    return out
