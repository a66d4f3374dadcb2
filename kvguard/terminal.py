"""How the commands write to a terminal: a console as wide as the terminal, and text as data.

Every value in a table that comes from an event, a vault, a policy or a file is data, never rich
markup: a caller's UPN or a role name may hold `[/]` (rich would raise `MarkupError`, after the
work is done and before the report is out) or `[bold]…[/bold]` (rich would hide it). So cells
are built by `cell`, which attaches styles to literal text and never parses it.

The width is rich's own detection (the terminal's size, else `COLUMNS`, else 80). `--wide` prints
every id in full on one line: the table is then as wide as its longest row needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TextIO

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.text import Text

# As wide as a table may be measured with `--wide` (a vault's resource id is under 400 characters).
UNBOUNDED = 4000


def cell(*parts: str | tuple[str, str]) -> Text:
    """A table cell: each part is literal text, or `(text, style)`; nothing in it is markup."""
    return Text.assemble(*parts)


def lines(rows: Iterable[Text]) -> Text:
    """Several cells in one, one per line."""
    return Text("\n").join(rows)


def console(out: TextIO) -> Console:
    """A console on `out` whose width rich detects (terminal, then `COLUMNS`, then 80)."""
    return Console(file=out, highlight=False)


def print_table(target: Console, table: RenderableType, *, wide: bool = False) -> None:
    """`table` at the console's width, or with `wide` as wide as it needs to keep each cell's
    longest line whole (ids are not folded)."""
    if not wide:
        target.print(table)
        return
    needed = Measurement.get(target, target.options.update_width(UNBOUNDED), table).maximum
    target.width = max(needed, target.width)  # what follows (the summary) may use that width too
    target.print(table)


def print_tokens(target: Console, tokens: Sequence[Text | str]) -> None:
    """A line of tokens (`KV-PROT-03 x1,`) wrapped at the console's width between tokens only,
    never inside one: rich wraps at every space, and a count apart from its rule reads as another."""
    width = target.width
    line = Text()
    for token in tokens:
        piece = token if isinstance(token, Text) else Text(token)
        if line and line.cell_len + 1 + piece.cell_len > width:
            target.print(line, soft_wrap=True)
            line = Text()
        if line:
            line.append(" ")
        line.append_text(piece)
    if line:
        target.print(line, soft_wrap=True)
