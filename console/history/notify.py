"""The end-of-run notification: one HTTP POST of ``{"run", "workflow", "state", "summary", "changes"}``.

Delivery is bookkept in the store (``store.history.notify_*``): an attempt is claimed by a compare-and-set,
so however many masters share the store each attempt is made once; a failed one is retried with backoff
(1 s, 2 s, 4 s ... up to 5 min, 8 attempts); every outcome is an event. The POST itself: http or https
only (checked again here, the URL came from the store), redirects are never followed (a 3xx is a failed
attempt), the answer is read to at most 64 KiB, and every step has a deadline.
"""

from __future__ import annotations

import json
import time
from itertools import islice
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from console.errors import BadInput
from console.store.base import Store

if TYPE_CHECKING:
    import http.client

TIMEOUT_S = 10.0
MAX_ANSWER = 64 * 1024
MAX_ATTEMPTS = 8
BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
#: while an attempt is in flight no other process takes it (longer than one POST can take)
LEASE_S = 60.0
#: at most this many changes travel in one message (``changes_total`` says how many there were)
MAX_CHANGES = 10_000


def payload(store: Store, run_id: str) -> dict[str, Any]:
    """The message: the run's summary and its changes against the previous run of its schedule (or of the
    same workflow and targets); ``changes`` is empty when there is no earlier run to compare with."""
    from console.history.diff import diff_runs

    summary = store.runs.summary(run_id)
    prev = store.history.previous_run(run_id, same_schedule=True)
    changes: list[dict[str, Any]] = []
    total = 0
    if prev is not None:
        stream = diff_runs(store, prev.id, run_id)
        changes = list(islice(stream, MAX_CHANGES))
        total = len(changes) + sum(1 for _ in stream)
    return {
        "run": run_id, "workflow": summary["workflow"], "state": summary["state"], "summary": summary,
        "changes": changes, "previous": prev.id if prev is not None else None, "changes_total": total,
    }


def post_json(url: str, body: dict[str, Any], timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    """POST ``body`` to ``url``: (delivered, what happened). Never raises for a network problem."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False, "not an http(s) URL"
    import http.client  # only when a run has a --notify URL: not on every master's start
    import ssl

    data = json.dumps(body).encode()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    try:
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request("POST", path, body=data, headers={
                "Content-Type": "application/json", "User-Agent": "fleetscan-notify",
            })
            answer = conn.getresponse()
            answer.read(MAX_ANSWER)  # bounded: a huge or endless answer is not read to its end
            status = answer.status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError) as err:
        return False, f"{type(err).__name__}: {err}"[:300]
    if 200 <= status < 300:
        return True, f"HTTP {status}"
    if 300 <= status < 400:
        return False, f"HTTP {status}: redirect not followed"
    return False, f"HTTP {status}"


def backoff(attempt: int) -> float:
    return float(min(MAX_BACKOFF_S, BACKOFF_S * 2 ** max(0, attempt - 1)))


def deliver(store: Store, run_id: str, now: float | None = None) -> bool | None:
    """Make the next due attempt of ``run_id``'s notification: True delivered, False failed (a retry is
    booked unless attempts ran out), None when it was not due or another process is making it."""
    now = time.time() if now is None else now
    attempt = store.history.notify_claim(run_id, now, LEASE_S)
    if not attempt:
        return None
    url = store.runs.get(run_id).notify or ""
    try:
        body = payload(store, run_id)
    except BadInput as err:
        body = {"run": run_id, "error": str(err)}
    ok, detail = post_json(url, body)
    host = urlsplit(url).hostname or "?"
    if ok:
        store.history.notify_outcome(run_id, attempt, "delivered", None, "info",
                                     f"notification delivered to {host} ({detail}, attempt {attempt})")
    elif attempt >= MAX_ATTEMPTS:
        store.history.notify_outcome(run_id, attempt, "failed", None, "error",
                                     f"notification to {host} failed for good after {attempt} attempts: {detail}")
    else:
        delay = backoff(attempt)
        store.history.notify_outcome(run_id, attempt, None, time.time() + delay, "warning",
                                     f"notification to {host} failed ({detail}); attempt {attempt + 1} in {delay:g} s")
    return ok


def deliver_due(store: Store, limit: int = 20) -> int:
    """Every due notification, one attempt each; how many were attempted."""
    attempted = 0
    for run in store.history.notify_due(time.time(), limit):
        if deliver(store, run.id) is not None:
            attempted += 1
    return attempted


def first_attempt(store: Store, run_id: str, log: TextIO) -> None:
    """`fleetscan run --notify`: the first delivery attempt before the command exits (a serving master
    makes the retries when it fails)."""
    ok = deliver(store, run_id)
    if ok:
        print("notification delivered", file=log)
    elif ok is False:
        print("notification failed; a serving master (console or `fleetscan master`) retries it", file=log)
