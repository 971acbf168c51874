"""Run a per-target function over a task's targets with bounded threads, progress and cancel.

For tools whose probes are a few blocking calls each (banner, http_probe,
tls_cert, dns): threads keep them simple, the bound keeps them polite, and a
cancelled task stops handing out new targets at once.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional, Sequence, TypeVar

from agentkit.context import TaskContext, ToolError
from agentkit.targets import TargetError

T = TypeVar("T")


def parse_each(targets: Sequence[str], parse: Callable[[str], T]) -> Dict[str, T]:
    """Every target through ``parse`` (e.g. host_port): a task's targets are all valid, or the
    task fails whole with a ToolError naming the bad one (the master validated them already)."""
    parsed = {}  # type: Dict[str, T]
    for target in targets:
        try:
            parsed[target] = parse(target)
        except TargetError as err:
            raise ToolError("target %s" % err) from None
    return parsed


def for_each(
    ctx: TaskContext,
    items: Sequence[str],
    work: Callable[[str], None],
    concurrency: int,
) -> None:
    """Call ``work(item)`` for every item on up to ``concurrency`` threads; re-raise the first failure."""
    lock = threading.Lock()
    position = [0, 0]  # next index, finished count
    failures: List[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if failures or position[0] >= len(items) or ctx.should_stop():
                    return
                item = items[position[0]]
                position[0] += 1
            try:
                work(item)
            except BaseException as err:  # noqa: B036 - handed to the caller's thread
                with lock:
                    failures.append(err)
                return
            with lock:
                position[1] += 1
                done = position[1]
            ctx.progress(done, len(items))

    threads = [
        threading.Thread(target=worker, daemon=True, name="%s-%d" % (ctx.task_id, n))
        for n in range(max(1, min(concurrency, len(items))))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.1)
            if ctx.should_stop():
                break
    first: Optional[BaseException] = failures[0] if failures else None
    if first is not None:
        raise first
    ctx.check()
