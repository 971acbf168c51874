"""How the results browser draws a record: fixed columns, and a Detail column per record type.

A page is drawn as ONE cell per row (the columns laid out in the line itself): a DataTable
renders cell by cell, and 50 rows x 8 cells made the first paint of a page several times
slower. Every value came from a scanned machine: it goes into ``Text`` (never markup) and is
cut to its column.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from rich.text import Text

from console.store.rows import ResultRow
from console.tui.formatting import safe

#: (sort key or "" when the column cannot be sorted, label, width)
COLUMNS = [("", "#", 5), ("stage", "Stage", 9), ("type", "Type", 9), ("key", "Key", 24), ("", "Detail", 46),
           ("target", "Target", 15), ("agent", "Agent", 9), ("ts", "Time", 20)]
#: the order ``s`` walks through (``id``: arrival order, the default)
SORT_CYCLE = ("id", "stage", "type", "key", "target", "agent", "ts")
SORT_LABELS = {"id": "arrival", "stage": "Stage", "type": "Type", "key": "Key", "target": "Target", "agent": "Agent",
               "ts": "Time"}

PASS, FAIL, WARN, DIM, ACCENT = "bold #5fd75f", "bold #ff5f5f", "bold #ffaf00", "#a0a0a0", "bold #5fafd7"


def _cut(value: str, width: int, style: str = "") -> Text:
    value = safe(value)
    return Text(value if len(value) <= width else value[: width - 1] + "…", style=style, no_wrap=True)


def data_summary(data: dict[str, Any]) -> str:
    return safe(", ".join(f"{k}={v}" for k, v in data.items() if k not in ("host",)))


def _safe_data(data: dict[str, Any]) -> dict[str, Any]:
    """A record's data with every text value printable (the sinks clean again what the store cleaned)."""
    return {k: safe(v) if isinstance(v, str) else v for k, v in data.items()}


def _baseline(data: dict[str, Any], now: float) -> Text:
    status = str(data.get("status", ""))
    style = {"pass": PASS, "fail": FAIL}.get(status, WARN)
    return Text.assemble((f"{status.upper():<5} ", style), (f"{data.get('rule', '')} ", "bold"),
                         (str(data.get("title", "")), DIM))


def _service(data: dict[str, Any], now: float) -> Text:
    name = str(data.get("name") or "?")
    product = " ".join(str(data[k]) for k in ("product", "version") if data.get(k))
    text = Text.assemble((f"{name} ", ACCENT), (product, ""))
    if data.get("tls"):
        text.append(" tls", style=PASS)
    if not product and data.get("banner"):
        text.append(str(data["banner"]).replace("\r", "").replace("\n", " "), style=DIM)
    return text


def http_style(status: Any) -> str:
    code = status if isinstance(status, int) else 0
    return PASS if 200 <= code < 300 else ACCENT if 300 <= code < 400 else WARN if 400 <= code < 500 else FAIL


def _http(data: dict[str, Any], now: float) -> Text:
    status = data.get("status")
    return Text.assemble((f"{status} ", http_style(status)), (str(data.get("title") or ""), ""),
                         (f"  {data.get('server') or ''}", DIM))


def tls_expiry(not_after: Any, now: float) -> tuple[str, str]:
    """``not_after`` as a date and the style that says how close it is (expired, < 30 days, fine)."""
    try:
        when = datetime.fromisoformat(str(not_after).replace("Z", "+00:00"))
    except ValueError:
        return str(not_after), WARN
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    left = when.timestamp() - now
    style = FAIL if left < 0 else WARN if left < 30 * 86400 else PASS
    return ("expired " if left < 0 else "expires ") + when.date().isoformat(), style


def _tls(data: dict[str, Any], now: float) -> Text:
    expiry, style = tls_expiry(data.get("not_after"), now)
    return Text.assemble((expiry, style), (f"  {data.get('subject', '')}", ""), (f"  {data.get('protocol', '')}", DIM))


def _port(data: dict[str, Any], now: float) -> Text:
    return Text.assemble((f"{data.get('port')}/{data.get('proto', 'tcp')}", ACCENT))


def _host_up(data: dict[str, Any], now: float) -> Text:
    rtt = data.get("rtt_ms")
    return Text.assemble((f"via {data.get('via', '?')}", ""), (f"  {rtt} ms" if rtt is not None else "", DIM))


DETAIL: dict[str, Callable[[dict[str, Any], float], Text]] = {
    "baseline": _baseline, "service": _service, "http": _http, "tls_cert": _tls, "port_open": _port,
    "host_up": _host_up,
}


def detail_cell(row: ResultRow, now: float) -> Text:
    data = _safe_data(row.data_dict())
    draw = DETAIL.get(row.type)
    text = draw(data, now) if draw is not None else Text(data_summary(data), style=DIM)
    text.no_wrap = True
    text.truncate(_WIDTH_DETAIL, overflow="ellipsis")
    return text


_WIDTH_DETAIL = COLUMNS[4][2]


def header(sort: str, descending: bool) -> Text:
    """The header line; the sorted column carries an arrow."""
    cells = []
    for key, label, _ in COLUMNS:
        arrow = (" ▼" if descending else " ▲") if key and key == sort else ""
        if sort == "id" and label == "#":
            arrow = " ▼" if descending else ""
        cells.append(Text(label + arrow, style="bold"))
    return _join(cells)


def page_line(number: int, row: ResultRow, now: float | None = None) -> Text:
    """One record as one line; ``number`` is its place in the view (1..N), not its id."""
    when = time.time() if now is None else now
    widths = [w for _, _, w in COLUMNS]
    return _join([
        _cut(str(number), widths[0], "dim"),
        _cut(row.stage_id, widths[1], "#87afd7"),
        _cut(row.type, widths[2], "#5fd75f"),
        _cut(row.key, widths[3]),
        detail_cell(row, when),
        _cut(row.target, widths[5]),
        _cut(row.agent, widths[6], "dim"),
        _cut(row.ts, widths[7], "dim"),
    ])


def _join(cells: list[Text]) -> Text:
    """The cells side by side, each padded to its column and two spaces; the padding takes the cell's
    own style, so a cell is one stretch of one style (every style change is one more segment for the
    table to draw: a page of lines of few segments draws in half the time)."""
    line = Text(no_wrap=True)
    for (_, _, width), cell in zip(COLUMNS, cells, strict=True):
        cell.truncate(width, overflow="ellipsis")
        cell.pad_right(width - cell.cell_len + 2)
        line.append_text(cell)
    return line


LINE_WIDTH = header("id", False).cell_len


def record_json(row: ResultRow) -> str:
    """The record in the SPEC's export shape (what ``y`` copies)."""
    return json.dumps({"run": row.run_id, "stage": row.stage_id, "type": row.type, "key": row.key,
                       "target": row.target, "agent": row.agent,
                       "task": None if row.task_id is None else str(row.task_id), "ts": row.ts,
                       "data": row.data_dict()}, ensure_ascii=False)


def record_text(number: int, total: int | None, row: ResultRow, now: float) -> Text:
    """The detail pane: every field of one record, data pretty-printed, plain text throughout
    (``total`` None: not counted yet)."""
    text = Text()
    text.append(f"Record {number:,}" + ("" if total is None else f" of {total:,}") + "\n", style="bold")
    for label, value in (("stage", row.stage_id), ("type", row.type), ("key", row.key), ("target", row.target),
                         ("agent", row.agent), ("time", row.ts)):
        text.append(f"{label:>7} ", style="bold #87afd7")
        text.append(f"{safe(value)}\n")
    text.append("\n")
    text.append_text(detail_cell(row, now))
    text.append("\n\n")
    pretty = json.dumps(row.data_dict(), indent=2, ensure_ascii=False, sort_keys=True)
    text.append("\n".join(safe(line) for line in pretty.splitlines()))
    return text
