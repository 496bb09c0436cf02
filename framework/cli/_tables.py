"""Fitting rich tables to the terminal: wrap between words, drop columns rather than break a word."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ("fit_table",)

_FOLDABLE = 20
"""Cell words longer than this (ids, payloads, paths) may be folded over lines; shorter words never are."""
_BLANK_CELLS = frozenset({"", "0", "-", "no", "never"})


def _longest(text: object, *, word: bool) -> int:
    """The width of the longest word (or line) of ``text`` in terminal cells."""
    from rich.cells import cell_len  # noqa: PLC0415

    parts = str(text).split() if word else str(text).splitlines()
    return max((cell_len(part) for part in parts), default=0)


def fit_table(tbl: Table, width: int) -> list[str]:
    """Fix the column widths of ``tbl`` so that it fits ``width`` cells without breaking a word.

    Each column gets at least its longest header word (and its longest cell word, up to
    ``_FOLDABLE`` cells); what is left goes first to the columns that need least to show their
    content on one line, so only the widest columns wrap, between words. While
    even the minimums are too wide, columns are dropped: first those with nothing to say (every cell
    ``0``, ``-`` or empty), then from the right; the first column always stays, and the table's
    caption names the dropped ones. Returns the headers of the dropped columns.
    """
    columns = tbl.columns
    if not columns:
        return []
    padding = tbl.padding[1] + tbl.padding[3]
    lowest: dict[int, int] = {}
    wanted: dict[int, int] = {}
    longest_word: dict[int, int] = {}
    for column in columns:
        cells = [str(cell) for cell in column.cells]
        header = _longest(column.header, word=True)
        longest_word[id(column)] = max((_longest(cell, word=True) for cell in cells), default=0)
        lowest[id(column)] = max(header, min(longest_word[id(column)], _FOLDABLE), 1)
        wanted[id(column)] = max([_longest(column.header, word=False), *(_longest(c, word=False) for c in cells)])

    def room() -> int:
        edges = ((2 if tbl.show_edge else 0) + len(columns) - 1) if tbl.box else 0
        return width - edges - sum(lowest[id(column)] + padding for column in columns)

    headers = [str(column.header) for column in columns]
    blank = [c for c in columns[1:] if all(str(cell).strip() in _BLANK_CELLS for cell in c.cells)]
    dropped = []
    for column in blank[::-1] + [c for c in columns[:0:-1] if c not in blank]:
        if room() >= 0:
            break
        columns.remove(column)
        dropped.append(str(column.header))
    if dropped:
        hidden = ", ".join(h for h in headers if h in dropped)
        tbl.caption = f"not shown, too narrow: {hidden} (widen the terminal, or use --json)"
    extra = max(room(), 0)
    for column in sorted(columns, key=lambda c: wanted[id(c)] - lowest[id(c)]):
        give = max(0, min(wanted[id(column)] - lowest[id(column)], extra))
        column.width = lowest[id(column)] + give
        extra -= give
        if column.width < longest_word[id(column)]:
            column.overflow = "fold"  # a token longer than the column: fold it rather than cut it
    return dropped
