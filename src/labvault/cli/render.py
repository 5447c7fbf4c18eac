"""Rendering: human tables by default, one JSON document on stdout with ``--json``.

Progress and warnings go to stderr. Colour is off when stdout is not a terminal or NO_COLOR is set.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labvault.entities import json_safe

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "OUTPUT",
    "Output",
    "human_bytes",
    "print_json",
    "progress",
    "readable_number",
]


@dataclass(slots=True)
class Output:
    quiet: bool = False
    verbose: bool = False

    def _console(self, *, stderr: bool) -> Console:
        from rich.console import Console

        no_color = bool(os.environ.get("NO_COLOR"))
        stream = sys.stderr if stderr else sys.stdout
        # Piped output has no width to fit: never truncate a hash or a path to an assumed 80 columns.
        width = None if stream.isatty() else 100_000
        return Console(stderr=stderr, no_color=no_color, highlight=False, soft_wrap=True, width=width)

    @property
    def out(self) -> Console:
        return self._console(stderr=False)

    @property
    def err(self) -> Console:
        return self._console(stderr=True)

    def line(self, text: str) -> None:
        """A result line on stdout (suppressed by --quiet)."""
        if not self.quiet:
            sys.stdout.write(text + "\n")

    def info(self, text: str) -> None:
        """A note on stderr (suppressed by --quiet)."""
        if not self.quiet:
            sys.stderr.write(text + "\n")

    def debug(self, text: str) -> None:
        if self.verbose:
            sys.stderr.write(text + "\n")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
        if self.quiet:
            return
        cells = [[str(c) for c in columns], *(["" if v is None else str(v) for v in row] for row in rows)]
        if _writes_plain(sys.stdout) and _plain_table(cells, title):
            return
        self._rich_table(columns, rows, title=title)

    def _rich_table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, box=None, header_style="bold", pad_edge=False)
        for col in columns:
            table.add_column(col, overflow="fold")  # on a narrow terminal, wrap ids; never elide them
        for row in rows:
            # Cells hold user text (run names, paths, messages): a Text is printed as it is, where a
            # string would be read as markup ("[bold]") and emoji codes (":100:").
            table.add_row(*(Text("" if v is None else str(v)) for v in row))
        self.out.print(table)


OUTPUT = Output()

# The widest line the plain writer handles: rich's console is given 100,000 columns when piped.
_PLAIN_WIDTH = 99_000


def _writes_plain(stream: Any) -> bool:
    """True when rich would print to ``stream`` without escape codes (rich's ``Console.is_terminal``)."""
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "0"
    force = os.environ.get("FORCE_COLOR")
    if force is not None:
        return force == ""
    return not stream.isatty()


def _is_plain(text: str) -> bool:
    """A title or column name rich prints as it is: printable ASCII, no markup, no emoji code."""
    if not _is_plain_cell(text) or "[" in text:
        return False
    if text.count(":") < 2:
        return True
    from rich._emoji_replace import _emoji_replace

    return _emoji_replace(text) == text


def _is_plain_cell(text: str) -> bool:
    """A cell rich prints as it is (cells are never read as markup): printable ASCII."""
    return text.isascii() and text.isprintable()


def _plain_table(cells: list[list[str]], title: str | None) -> bool:
    """Write the table as rich does when piped (columns 2 spaces apart, every cell padded to its
    column's width, the title as it is), without importing rich: rendering a thousand rows with rich
    takes longer than the rest of ``labvault runs list``. False (nothing written) for any text rich
    would change (wide or control characters; markup or emoji codes in the title or a column name);
    the caller then uses rich.
    """
    if title and not _is_plain(title):
        return False
    if any(len(row) != len(cells[0]) for row in cells) or not (
        all(_is_plain(c) for c in cells[0]) and all(_is_plain_cell(c) for row in cells[1:] for c in row)
    ):
        return False
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    if not 0 < sum(widths) + 2 * len(widths) - 2 <= _PLAIN_WIDTH:
        return False  # rich prints an empty table as one space per line
    lines = [title] if title else []
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells)
    sys.stdout.write("\n".join(lines) + "\n")
    return True


def print_json(doc: Any) -> None:
    """One JSON document on stdout; NaN and infinities as strings, per the conventions."""
    sys.stdout.write(json.dumps(json_safe(doc), indent=2, sort_keys=True, allow_nan=False) + "\n")


def readable_number(value: float | int) -> str:
    """``50,213.4`` rather than ``5.021e+04``: thousands separated, a few significant digits below 1,000.

    Exponent notation is kept only where a number has no better short form (below 1e-4 or from 1e15).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 1e15 or (0 < size < 1e-4):
        return f"{value:.3e}"
    if size >= 1000:
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
    return f"{value:.4g}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; otherwise a no-op ``advance(done, total)``."""
    if OUTPUT.quiet or not sys.stderr.isatty():
        yield lambda done, total=None: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=OUTPUT.err,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(done: int, total: int | None = None) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
