"""What the master holds in memory about claimed tasks and their executions on agents.

The store is the truth; these are the master's working copies: a ``TaskRun`` is a
task this master leased (from claim to outcome), an ``Execution`` one copy of it
running on one agent under the wire id ``"<task id>.<attempt>"`` (a straggler
copy gets an attempt number of its own), a ``RunContext`` one owned run.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from console.fleet.fleet import AgentHandle
from console.master.planner import RunPlanner
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
    tried: list[str]
    execs: set[str] = field(default_factory=set)
    copies: int = 0
    finished: bool = False

    @classmethod
    def from_claim(cls, row: dict[str, Any]) -> TaskRun:
        return cls(
            task_id=int(row["id"]), run_id=row["run_id"], stage_id=row["stage_id"],
            targets=row["targets"], attempt=int(row["attempts"]),
            max_attempts=int(row["max_attempts"]), priority=int(row["priority"]), pinned=row["pinned"],
            tried=json.loads(row["tried"]) if row["tried"] and row["tried"] != "[]" else [],
        )


@dataclass
class Execution:
    exec_id: str
    task: TaskRun
    agent: AgentHandle
    deadline: float
    started: float = field(default_factory=time.monotonic)
    #: why the master cancelled it: "stop", "loser" (another copy won), "timeout", "invalid"
    cancelled: str | None = None
    cancel_sent: float = 0.0
    invalid: str | None = None
    progress: tuple[int, int] = (0, 0)


class TaskTemplate:
    """A stage's ``task`` line with only id and targets left to fill: dispatch is a string join.

    The constant part is encoded (and checked once through ``console.fleet.protocol.encode``)
    when the run is loaded, not per task.
    """

    def __init__(self, stage: StageBase, scope: list[str]) -> None:
        from agentkit import wire
        from console.fleet.protocol import encode

        params = stage.agent_params
        sample = wire.Task(
            op="task", id="0.0", tool=stage.tool, params=params, targets=[], timeout=stage.timeout, scope=scope
        )
        encode(sample)  # shape check, once
        dumps = functools.partial(json.dumps, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        self._middle = (
            f',"tool":{dumps(stage.tool)},"params":{dumps(params)},"timeout":{dumps(float(stage.timeout))},'
            f'"scope":{dumps(scope)},"targets":'
        )
        self._dumps = dumps

    def line(self, exec_id: str, targets_json: str) -> bytes:
        """``targets_json`` is the stored JSON list (written by the planner with json.dumps: one line)."""
        if "\n" in targets_json or not targets_json.startswith("["):
            targets_json = self._dumps([str(t) for t in json.loads(targets_json)])
        return f'{{"op":"task","id":{self._dumps(exec_id)}{self._middle}{targets_json}}}\n'.encode()


@dataclass
class RunContext:
    run_id: str
    priority: int
    state: str
    stages: dict[str, StageBase]
    planner: RunPlanner
    scope: list[str]
    stopping: bool = False
    stop_since: float = 0.0
    dispatched: int = 0
    dispatched_to: set[str] = field(default_factory=set)
    templates: dict[str, TaskTemplate] = field(default_factory=dict)
    _scope_cache: dict[str, bool] = field(default_factory=dict)

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

    def task_line(self, stage_id: str, exec_id: str, targets: str) -> bytes:
        template = self.templates.get(stage_id)
        if template is None:
            template = self.templates[stage_id] = TaskTemplate(self.stages[stage_id], self.scope)
        return template.line(exec_id, targets)


def iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
