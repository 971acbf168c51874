"""What the master holds in memory about claimed tasks and their executions on agents.

The store is the truth; these are the master's working copies: a ``TaskRun`` is a
task this master leased (from claim to outcome), an ``Execution`` one copy of it
running on one agent under the wire id ``"<task id>.<attempt>"`` (a straggler
copy gets an attempt number of its own), a ``RunContext`` one owned run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from agentkit import wire
from console.fleet.fleet import AgentHandle
from console.fleet.protocol import ScopeRef, TaskEncoder
from console.master.planner import RunPlanner
from console.status import CancelReason, RunState
from console.store.rows import ClaimedTask
from console.targets.sets import host_of
from console.workflow.models import StageBase
from console.workflow.tools import Tool


@dataclass
class TaskRun:
    task_id: int
    run_id: str
    stage_id: str
    #: the task's targets as the JSON list text the planner stored (spliced into the task line as is)
    targets: str
    attempt: int
    max_attempts: int
    priority: int
    pinned: str | None
    tried: tuple[str, ...]
    #: parameter overrides stored with the task (a split_ports part), JSON object text
    params: str | None = None
    #: probes/s granted from the run's budget at claim time
    rate: float | None = None
    execs: set[str] = field(default_factory=set)
    copies: int = 0
    finished: bool = False

    @classmethod
    def from_claim(cls, claimed: ClaimedTask) -> TaskRun:
        return cls(
            task_id=claimed.id, run_id=claimed.run_id, stage_id=claimed.stage_id, targets=claimed.targets,
            attempt=claimed.attempts, max_attempts=claimed.max_attempts, priority=claimed.priority,
            pinned=claimed.pinned, tried=claimed.tried, params=claimed.params, rate=claimed.rate,
        )


@dataclass
class Execution:
    exec_id: str
    task: TaskRun
    agent: AgentHandle
    deadline: float
    started: float = field(default_factory=time.monotonic)
    #: why the master cancelled it (None while it runs uncancelled)
    cancelled: CancelReason | None = None
    cancel_sent: float = 0.0
    invalid: str | None = None
    progress: tuple[int, int] = (0, 0)


@dataclass
class RunContext:
    run_id: str
    priority: int
    state: RunState
    stages: dict[str, StageBase]
    planner: RunPlanner
    scope: list[str]
    #: the run's exclusions in the agent's wire form (empty: none)
    exclude: list[str] = field(default_factory=list)
    stopping: bool = False
    stop_since: float = 0.0
    dispatched: int = 0
    dispatched_to: set[str] = field(default_factory=set)
    encoders: dict[str, TaskEncoder] = field(default_factory=dict)
    _scope_cache: dict[str, bool] = field(default_factory=dict)
    _scope_ref: ScopeRef | None | bool = False  # False: not decided yet; None: the scope travels inline

    @property
    def scope_ref(self) -> ScopeRef | None:
        """The run's scope sent by reference (a large one), or None when it travels in every task line."""
        if self._scope_ref is False:
            self._scope_ref = ScopeRef(self.scope, self.exclude) if ScopeRef.needed(self.scope, self.exclude) else None
        return self._scope_ref  # type: ignore[return-value]

    def scope_lines(self, link: Any) -> bytes:
        """What ``link``'s agent must read before this run's next task line: the run's ``scope`` messages
        when its scope goes by reference and that agent may not hold it (see ``wire.Scope``), else nothing."""
        ref = self.scope_ref
        if ref is None or link is None:
            return b""
        held = getattr(link, "scopes_sent", None)
        if held is None:
            return ref.lines
        if ref.id in held:
            return b""
        held[ref.id] = None  # in the order the agent receives them: it drops the oldest first, as we do
        while len(held) > wire.MAX_SCOPES:
            held.popitem(last=False)
        return ref.lines

    def in_scope(self, record: Any, tool: Tool) -> bool:
        """Is this validated record about something inside the run's scope?

        Its host (or its url's host) must be in scope; the answer of a tool whose records
        are about the name asked for (dns) is in scope when that name (its target) is.
        Answers are cached per host: a port scan reports one host many times.
        """
        data = record.data
        host = data.get("host") or host_of(str(data.get("url") or "")) or ""
        verdict = self._scope_cache.get(host)
        if verdict is None:
            verdict = bool(host) and self.planner.scope.contains(host)
            if len(self._scope_cache) > 50_000:
                self._scope_cache.clear()
            self._scope_cache[host] = verdict
        if not verdict and tool.about_target_name:
            return bool(record.target) and self.planner.scope.contains(record.target)
        return verdict

    def task_line(self, stage_id: str, exec_id: str, targets: str, task: TaskRun | None = None) -> bytes:
        """The ``task`` line of one execution; a task with overrides (a split part, a granted rate) gets
        the stage's parameters with those merged in (encoded for it alone: the shared encoder is for the rest)."""
        if task is not None and (task.params is not None or task.rate is not None):
            stage = self.stages[stage_id]
            own = TaskEncoder(stage.tool, task_params(stage, task), stage.timeout, self.scope, self.exclude,
                              self.scope_ref)
            return own.line(exec_id, targets)
        encoder = self.encoders.get(stage_id)
        if encoder is None:
            stage = self.stages[stage_id]
            encoder = self.encoders[stage_id] = TaskEncoder(
                stage.tool, stage.agent_params, stage.timeout, self.scope, self.exclude, self.scope_ref
            )
        return encoder.line(exec_id, targets)


def task_params(stage: StageBase, task: TaskRun) -> dict[str, Any]:
    """The stage's agent parameters with the task's own overrides and its granted rate applied.

    A granted rate never raises the stage's own ``rate``: the task runs at the lower of the two."""
    params = dict(stage.agent_params)
    if task.params is not None:
        params.update(json.loads(task.params))
    if task.rate is not None:
        own = float(params.get("rate") or 0.0)
        params["rate"] = task.rate if own <= 0 else min(own, task.rate)
    return params

def may_copy(ex: Execution, runs: dict[str, RunContext]) -> bool:
    """May this slow execution get a straggler copy? Only in a stage that asked for it (``speculate: true``):
    a copy probes every target of the task again, from another box, so by default none is ever made."""
    ctx = runs.get(ex.task.run_id)
    stage = ctx.stages.get(ex.task.stage_id) if ctx is not None else None
    return stage is not None and stage.speculate


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
