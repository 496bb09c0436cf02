r"""Printing rich tables of stored data: shown as it is, fitted to the terminal.

What the tables show (payloads, errors, queue and cron names) comes from Redis and from whoever enqueued the
task, so it is text, never markup: ``[/x]`` in a payload is printed, not parsed (an unbalanced tag would end
the command with a traceback), ``:smile:`` stays as typed, and control characters (``ESC`` sequences that
clear the screen or set the window title, a carriage return that overwrites a line, bidirectional
overrides that reorder it) are printed as escapes such as ``\x1b`` instead of reaching the terminal.

The width: tables wrap between words and drop columns rather than break a word (:func:`fit_table`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.style import StyleType

__all__ = ("PlainTable", "fit_table", "plain_console", "print_fitted", "terminal_text")

_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Characters a terminal acts on rather than shows (every C0/C1 control but the newline, and the bidi controls)."""


def terminal_text(text: str) -> str:
    r"""``text`` with its control characters written as Python escapes (``\x1b``, ``\u202e``); newlines kept."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


class PlainTable(Table):
    """A rich table whose text cells are shown as they are: never read as markup, control characters escaped."""

    def add_row(
        self, *renderables: RenderableType | None, style: StyleType | None = None, end_section: bool = False
    ) -> None:
        """Add a row; each ``str`` cell becomes plain text (see :func:`terminal_text`)."""
        cells = [Text(terminal_text(cell)) if isinstance(cell, str) else cell for cell in renderables]
        super().add_row(*cells, style=style, end_section=end_section)


def plain_console(**options: Any) -> Console:
    """A console that reads no markup or emoji codes in the strings it prints (``options`` as for ``Console``)."""
    return Console(markup=False, emoji=False, **options)


def print_fitted(tbl: Table, console: Console) -> None:
    """Print ``tbl`` on ``console``, fitted to its width (:func:`fit_table`), title and caption as plain text."""
    fit_table(tbl, console.width)
    for part in ("title", "caption"):
        value = getattr(tbl, part)
        if isinstance(value, str):
            setattr(tbl, part, terminal_text(value))
    console.print(tbl)


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
