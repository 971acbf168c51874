"""A DataTable that is kept in sync by row key (Dolphie's way): never clear-and-refill.

Each refresh hands the table the rows it should show, in order. Rows that are new
are added, rows that are gone are removed, and for rows that stay only the cells
whose value changed are updated (``update_cell``). The cursor stays on the same row
key, so a live table does not jump under the operator's hands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist


class KeyedCell(Text):
    """The first cell of a row: its text, plus the row key (so sorting can use it)."""

    def __init__(self, text: str, row_key: str, style: str = "") -> None:
        super().__init__(text, style=style)
        self.row_key = row_key


def _keyed(first: Any, key: str) -> KeyedCell:
    if isinstance(first, KeyedCell):
        return first
    if isinstance(first, Text):
        cell = KeyedCell(first.plain, key, style=str(first.style))
        cell.spans = list(first.spans)
        return cell
    return KeyedCell(str(first), key)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and str(a.style) == str(b.style) and a.spans == b.spans
    return bool(a == b)


class KeyedTable(DataTable[Any]):
    """DataTable with ``sync(rows)``; the first column holds the row's label and sort order."""

    def __init__(self, columns: Sequence[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._column_spec = list(columns)
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label in self._column_spec:
            self.add_column(label, key=key)

    @property
    def row_keys(self) -> list[str]:
        return list(self._order)

    def selected_key(self) -> str | None:
        """The row key under the cursor, or None on an empty table."""
        if not self._order or self.row_count == 0:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except (CellDoesNotExist, RowDoesNotExist):
            return None
        return str(row_key.value) if row_key.value is not None else None

    def move_to(self, key: str) -> None:
        try:
            index = self.get_row_index(key)
        except RowDoesNotExist:
            return
        if index != self.cursor_row:
            self.move_cursor(row=index, animate=False)

    def sync(self, rows: Sequence[tuple[str, tuple[Any, ...]]]) -> bool:
        """Make the table show ``rows`` (key, cells) in that order; True if anything changed."""
        keep = self.selected_key()
        wanted = {key for key, _ in rows}
        changed = False
        for key in [k for k in self._order if k not in wanted]:
            self.remove_row(key)
            del self._cells[key]
            changed = True
        column_keys = [key for key, _ in self._column_spec]
        for key, raw in rows:
            cells = (_keyed(raw[0], key), *raw[1:])
            old = self._cells.get(key)
            if old is None:
                self.add_row(*cells, key=key)
                changed = True
            else:
                for column, before, after in zip(column_keys, old, cells, strict=True):
                    if not _same(before, after):
                        self.update_cell(key, column, after, update_width=True)
                        changed = True
            self._cells[key] = cells
        order = [key for key, _ in rows]
        if order != self._order_in_table():
            position = {key: i for i, key in enumerate(order)}
            # DataTable.sort hands only cell values to the key function; the first cell of
            # every row is a KeyedCell that carries its row key, so the order is exact.
            self.sort(self._column_spec[0][0], key=lambda cell: position.get(getattr(cell, "row_key", ""), 0))
            changed = True
        self._order = order
        if keep is not None and keep in wanted:
            self.move_to(keep)
        return changed

    def _order_in_table(self) -> list[str]:
        return [str(row.key.value) for row in self.ordered_rows]
