"""How the commands write to a terminal: a console as wide as the terminal, and text as data.

Every value in a table that comes from an event, a vault, a policy or a file is data, never rich
markup: a caller's UPN or a role name may hold `[/]` (rich would raise `MarkupError`, after the
work is done and before the report is out) or `[bold]…[/bold]` (rich would hide it). So cells
are built by `cell`, which attaches styles to literal text and never parses it.

The width is rich's own detection (the terminal's size, else `COLUMNS`, else 80). `--wide` prints
every id in full on one line: the table is then as wide as its longest row needs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.text import Text

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

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


class Steps:
    """The progress of long work (listing, reading, judging), as rich progress bars on stderr and
    only when stderr is a terminal: stdout stays the command's output (the report, `--json` lines
    a script reads), and a log file or a pipe gets no bars. Quiet, every method does nothing."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      console=Console(file=sys.stderr), transient=True)

    def __enter__(self) -> Steps:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: int | None = None) -> TaskID | None:
        """A new bar (`total` None: a count not known yet). `description` is text, never markup."""
        if self._progress is None:
            return None
        return self._progress.add_task(escape(description), total=total)

    def update(self, task: TaskID | None, description: str | None = None, total: int | None = None) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, total=total,
                                  description=None if description is None else escape(description))

    def print(self, line: str) -> None:
        """A line on stderr, above the bars while they run (as text, never markup)."""
        if self._progress is None:
            sys.stderr.write(line + "\n")
        else:
            self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def advance(self, task: TaskID | None, steps: int = 1) -> None:
        if self._progress is not None and task is not None:
            self._progress.advance(task, steps)


def escape(text: str) -> str:
    """`text` for a place where rich reads markup (a progress bar's description): shown as it is."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)
