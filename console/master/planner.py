"""Stage -> tasks, lazily, from the store alone.

Input stages are planned a window at a time (``stages.cursor`` = the next target
index, advanced in the same transaction as the task inserts), so a /8 costs
constant memory and a crash never plans a chunk twice. Derived stages read their
source's results past ``stages.cursor`` (the last results.id read), keep what
``where`` selects, derive typed targets, deduplicate them in ``stage_targets``
and drop what falls outside the run's scope (counted, logged, never dispatched).
``from: boxes`` plans one task per box, pinned to it. A ``stream`` stage plans as
its source's results arrive; any other waits for its source to end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

from agentkit import wire
from console.errors import StaleDefinition
from console.master.split import stage_parts
from console.status import STAGE_TERMINAL, RunState, StageState, run_outcome
from console.store.base import Store
from console.store.rows import OwnedRun, StageRow
from console.store.writes import TaskPlan
from console.workflow.definition import load_definition
from console.workflow.models import StageBase

#: at most this many queued tasks per input stage at a time (more are planned as they drain)
WINDOW_TASKS = 512
#: a stream stage plans a partial chunk once its source has been quiet this long
STREAM_QUIET_S = 0.5
READ_BATCH = 5000


class RunPlanner:
    """Plans one run. Called from the master's store thread; every step is one or a few transactions."""

    def __init__(self, store: Store, run: OwnedRun, boxes: list[str], window: int = WINDOW_TASKS) -> None:
        self.store = store
        self.run_id = run.id
        self.priority = run.priority
        self.stages = {s.id: s for s in load_definition(run.definition).stages}
        #: the stored definition these stages came from (an amended run is noticed by its change)
        self.definition_json = run.definition_json
        self.targets_spec: str = run.targets or ""
        self.scope_spec: str | None = run.scope
        self.exclude_spec: str | None = run.exclude
        self._exclusions: Any = None
        self.boxes = boxes
        self.window = max(1, window)
        self._targets: Any = None
        self._scope: Any = None
        self._last_source_result: dict[str, float] = {}
        #: the last step found the run amended since ``definition_json`` was read (nothing was written)
        self.stale = False

    # -- lazily parsed inputs ------------------------------------------------------------

    @property
    def target_set(self) -> Any:
        if self._targets is None:
            from console.targets.sets import TargetSet, parse_targets

            self._targets = parse_targets(self.targets_spec, stored=True) if self.targets_spec else TargetSet([], [])
        return self._targets

    @property
    def scope(self) -> Any:
        if self._scope is None:
            from console.targets.sets import Scope, parse_scope

            if self.scope_spec:
                self._scope = parse_scope(self.scope_spec, stored=True)
            elif self.targets_spec:
                self._scope = Scope.from_targets(self.target_set)
            else:
                self._scope = Scope([], [])
        return self._scope

    @property
    def exclusions(self) -> Any:
        """The run's ``--exclude`` as a Scope (empty when none): what is never planned nor contacted."""
        if self._exclusions is None:
            from console.targets.sets import Scope, parse_scope

            self._exclusions = (
                parse_scope(self.exclude_spec, field="--exclude", stored=True) if self.exclude_spec else Scope([], [])
            )
        return self._exclusions

    def excluded(self, value: str) -> bool:
        """Is this target (ip, host, host:port or url) excluded by the run's ``--exclude``?"""
        return bool(self.exclude_spec) and self.exclusions.contains(value)

    def _plan(self, spec: StageBase) -> TaskPlan:
        return TaskPlan(self.run_id, spec.id, self.priority, spec.retries + 1, self.definition_json)

    # -- one planning step -------------------------------------------------------------------

    def step(self) -> RunState | None:
        """Plan what can be planned, complete what is complete. Returns the run's final state if it ended.

        A write refused because the run was amended since its definition was read leaves the rest of the
        step to the next one, which the master runs with the amended stages (``pick_up_amendment``)."""
        self.stale = False
        try:
            return self._step()
        except StaleDefinition:
            self.stale = True
            return None

    def _step(self) -> RunState | None:
        plans = self.store.plans
        rows = {r.id: r for r in self.store.runs.stages(self.run_id)}
        for spec in self.stages.values():
            row = rows.get(spec.id)
            if row is None or row.state in STAGE_TERMINAL:
                continue
            sources_done = all(rows[d].state in STAGE_TERMINAL for d in spec.depends if d in rows)
            if not row.planned:
                if spec.source == "input":
                    self._plan_input(spec, row)
                elif spec.source == "boxes":
                    self._plan_boxes(spec)
                elif spec.stream or sources_done:
                    self._plan_derived(spec, row, sources_done)
                row = rows[spec.id] = plans.stage(self.run_id, spec.id)
            if row.planned and (spec.source in ("input", "boxes") or sources_done):
                if plans.complete_stage(self.run_id, spec.id) is not None:
                    rows[spec.id] = plans.stage(self.run_id, spec.id)
        outcome = run_outcome([r.state for r in rows.values()])
        if outcome is None:
            return None
        failed = [r.id for r in rows.values() if r.state == StageState.FAILED]
        error = f"stage(s) failed: {', '.join(failed)}" if failed else None
        self.store.queue.finish_run(self.run_id, outcome, error)
        return outcome

    # -- input ---------------------------------------------------------------------------------

    def _plan_input(self, spec: StageBase, row: StageRow) -> None:
        room = self.window - self.store.plans.queued(self.run_id, spec.id)
        if room <= 0:
            return
        targets = self.target_set
        explicit_scope = self.scope_spec is not None
        parts = stage_parts(spec)
        # a split stage plans whole hosts, each as one task per part, still a window of tasks at a time
        take = room * spec.chunk if parts is None else max(1, room // len(parts))
        chunks: list[list[str]] = []
        dropped: list[str] = []
        excluded: list[str] = []
        taken = 0
        current: list[str] = []
        for value in islice(self._input_values(targets, row.cursor, spec.targets.type), take):
            taken += 1
            if not value or (explicit_scope and not self.scope.contains(value)):
                dropped.append(value or "(unconvertible)")
                continue
            if self.excluded(value):
                excluded.append(value)
                continue
            current.append(value)
            if parts is not None or len(current) == spec.chunk:
                chunks.append(current)
                current = []
        if current:
            chunks.append(current)
        overrides: list[str | None] | None = None
        if parts is not None:
            overrides = [part for _ in chunks for part in parts]
            chunks = [chunk for chunk in chunks for _ in parts]
        new_cursor = row.cursor + taken
        self.store.plans.add_input_tasks(
            self._plan(spec), chunks, cursor=row.cursor, new_cursor=new_cursor, finished=new_cursor >= targets.size,
            dropped=len(dropped) + len(excluded), note=self._drop_notes(spec.id, dropped, excluded), params=overrides,
        )

    @staticmethod
    def _input_values(targets: Any, cursor: int, kind: str | None) -> Iterator[str]:
        """Input targets from ``cursor`` as ``kind``; an address is already a host (no per-value parsing)."""
        if not kind:
            return iter(targets.iter_from(cursor))
        if kind not in ("host", "ip"):
            return iter(targets.iter_from(cursor, kind))
        from console.targets.sets import as_kind

        addresses = sum(span.size for span in targets.spans)
        raw = targets.iter_from(cursor)
        return (
            value if index < addresses else (as_kind(value, kind) or "")
            for index, value in enumerate(raw, start=cursor)
        )

    def _plan_boxes(self, spec: StageBase) -> None:
        note = None if self.boxes else f"stage {spec.id}: no box is up"
        self.store.plans.add_box_tasks(self._plan(spec), self.boxes, note)

    # -- derived ----------------------------------------------------------------------------

    def _plan_derived(self, spec: StageBase, row: StageRow, sources_done: bool) -> None:
        from console.targets.records import derive_target, matches_where

        if spec.targets.type == "host_ports":
            self._plan_host_ports(spec, row, sources_done)
            return
        plans = self.store.plans
        plan = self._plan(spec)
        cursor = row.cursor
        now = time.monotonic()
        fresh = False
        while batch := plans.source_records(self.run_id, spec.depends[0], cursor, READ_BATCH):
            fresh = True
            values: list[str] = []
            for source in batch:
                record = wire.Record(type=source.type, target=source.target, data=source.data)
                if spec.targets.where and not matches_where(record, spec.targets.where):
                    continue
                value = derive_target(record, spec.targets.type or "host")
                if value:
                    values.append(value)
            cursor = batch[-1].id
            kept, out, excluded = self._split_derived(values)
            plans.add_targets(
                plan, kept, out + excluded, cursor,
                self._drop_notes(spec.id, sorted(set(out)), sorted(set(excluded))),
            )
        if fresh:
            self._last_source_result[spec.id] = now
        quiet = now - self._last_source_result.get(spec.id, 0.0) >= STREAM_QUIET_S
        plans.chunk_targets(
            plan, spec.chunk, partial_ok=sources_done or quiet, finish=sources_done, parts=stage_parts(spec)
        )

    def _plan_host_ports(self, spec: StageBase, row: StageRow, sources_done: bool) -> None:
        """One target per host with all its ports: read the ended source whole, group, add in one step.

        Each ``host:port`` is held against scope and exclusions before grouping (drops counted per
        port); the targets and the final cursor go in together, so a crash never half-plans the stage.
        """
        from console.targets.hostports import MAX_PORTS_PER_TARGET, group_host_ports
        from console.targets.records import derive_target, matches_where

        if not sources_done:
            return
        plans = self.store.plans
        plan = self._plan(spec)
        cursor = row.cursor
        kept: list[str] = []
        out: list[str] = []
        excluded: list[str] = []
        while batch := plans.source_records(self.run_id, spec.depends[0], cursor, READ_BATCH):
            for source in batch:
                record = wire.Record(type=source.type, target=source.target, data=source.data)
                if spec.targets.where and not matches_where(record, spec.targets.where):
                    continue
                value = derive_target(record, "port")
                if value:
                    k, o, e = self._split_derived([value])
                    kept += k
                    out += o
                    excluded += e
            cursor = batch[-1].id
        notes = self._drop_notes(spec.id, sorted(set(out)), sorted(set(excluded)))
        groups = group_host_ports(kept, spec.split_ports or MAX_PORTS_PER_TARGET)
        whole = [targets[0] for targets in groups if len(targets) == 1]
        cut = [target for targets in groups if len(targets) > 1 for target in targets]
        if cut:
            # split_ports: a host cut into parts gets one task per part (the fleet shares it); the hosts
            # that fit one part are chunked as usual first. The cursor moves with the parts: a crash in
            # between plans again from the old cursor, and targets already remembered are not added twice.
            plans.add_targets(plan, whole, [], row.cursor)
            plans.chunk_targets(plan, spec.chunk, partial_ok=True, finish=False)
            plans.add_targets(plan, cut, out + excluded, cursor, notes)
            plans.chunk_targets(plan, 1, partial_ok=True, finish=True)
            return
        plans.add_targets(plan, whole, out + excluded, cursor, notes)
        plans.chunk_targets(plan, spec.chunk, partial_ok=True, finish=True)

    def _split_derived(self, values: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Derived targets -> (kept, out of scope, excluded); the last two are dropped and counted."""
        kept: list[str] = []
        out: list[str] = []
        excluded: list[str] = []
        for value in values:
            if not self.scope.contains(value):
                out.append(value)
            elif self.excluded(value):
                excluded.append(value)
            else:
                kept.append(value)
        return kept, out, excluded

    def _drop_notes(self, stage_id: str, out: list[str], excluded: list[str]) -> str | None:
        """One event text for a planning step's drops (None when nothing was dropped)."""
        notes = [self._drop_note(stage_id, out)] if out else []
        if excluded:
            notes.append(self._drop_note(stage_id, excluded, "excluded"))
        return "; ".join(notes) or None

    def _drop_note(self, stage_id: str, values: list[str], why: str = "out-of-scope") -> str:
        shown = ", ".join(values[:5]) + (f" (+{len(values) - 5} more)" if len(values) > 5 else "")
        return f"stage {stage_id}: dropped {len(values)} {why} target(s): {shown}"
