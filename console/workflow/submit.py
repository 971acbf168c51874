"""Turning operator input into a run: validate everything first, then write once.

Shared by the CLI (`run`, `submit`) and the console's new-run modal, so both refuse the
same bad input with the same one-line message, and neither writes a half-made run.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from console.errors import BadInput
from console.runoptions import RunOptions
from console.targets.sets import canonical, parse_scope, parse_targets
from console.workflow.definition import freeze
from console.workflow.models import load_workflows


@dataclass(frozen=True)
class PreparedRun:
    """A validated run, ready to be written."""

    workflow: str
    definition: dict[str, Any]
    targets: str | None
    scope: str | None
    agents: str | None
    priority: int
    workflows_file: str
    options: RunOptions = field(default_factory=RunOptions)

    def create(self, store: Any) -> str:
        return str(
            store.runs.create(
                self.workflow, self.definition, self.targets, scope=self.scope, agents=self.agents,
                priority=self.priority, workflows_file=self.workflows_file, options=self.options,
            )
        )


#: the largest --max-rate / --host-rate accepted (probes per second)
MAX_RATE = 10_000_000


def check_rate(value: int | None, field: str) -> int | None:
    """A rate budget: None (unbounded) or a positive whole number of probes per second."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RATE:
        raise BadInput(f"must be a whole number of probes per second from 1 to {MAX_RATE}", field=field)
    return value


def check_notify_url(url: str | None, field: str = "--notify") -> str | None:
    """An http(s) URL with a host, at most 2,048 characters, no whitespace or control characters."""
    if url is None or not url.strip():
        return None
    if len(url) > 2048 or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise BadInput("not a usable URL (too long, or whitespace/control characters)", field=field)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as err:
        raise BadInput(f"not a URL: {err}", field=field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput("must be an http:// or https:// URL with a host", field=field)
    return url


def submitter() -> str:
    """``user@host`` of whoever submits (shown in the run's header)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment: still a run
        user = "?"
    return f"{user}@{socket.gethostname()}"


def prepare_run(
    *,
    workflows_file: str | Path | None,
    workflow: str,
    targets: str | None,
    scope: str | None = None,
    priority: int = 0,
    agents: str | None = None,
    exclude: str | None = None,
    max_rate: int | None = None,
    host_rate: int | None = None,
    notify: str | None = None,
    schedule_id: str | None = None,
) -> PreparedRun:
    """Load the workflow, check targets and scope; BadInput (one line) on anything wrong."""
    wf_file = load_workflows(workflows_file)
    wf = wf_file.get(workflow)
    readers = [s.id for s in wf.stages if s.source == "input"]
    canonical_targets: str | None = None
    if targets is not None and targets.strip():
        target_set = parse_targets(targets, field="--targets")
        if len(target_set) == 0:
            raise BadInput("no targets given", field="--targets")
        canonical_targets = canonical(target_set)
    elif readers:
        raise BadInput(f"required: stage {readers[0]!r} of {workflow!r} reads input", field="--targets")
    canonical_scope = canonical(parse_scope(scope, field="--scope")) if scope and scope.strip() else None
    if not -1_000_000 <= priority <= 1_000_000:
        raise BadInput("must be between -1000000 and 1000000", field="--priority")
    canonical_exclude = canonical(parse_scope(exclude, field="--exclude")) if exclude and exclude.strip() else None
    options = RunOptions(
        exclude=canonical_exclude, max_rate=check_rate(max_rate, "--max-rate"),
        host_rate=check_rate(host_rate, "--host-rate"), notify=check_notify_url(notify),
        submitted_by=submitter(), schedule_id=schedule_id,
    )
    return PreparedRun(
        workflow=workflow,
        definition=freeze(workflow, wf),
        targets=canonical_targets,
        scope=canonical_scope,
        agents=agents,
        priority=priority,
        workflows_file=str(wf_file.path or workflows_file or ""),
        options=options,
    )
