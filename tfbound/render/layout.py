"""Tables that fit the terminal: nothing truncated, secondary columns dropped, then stacked.

Every table of every command is a :class:`FitTable`. It chooses its layout when rich renders it,
from the width it is given (a terminal's, ``COLUMNS``, or 80 in a pipe):

1. every column, each as wide as its widest cell (wrapping columns get what is left);
2. the optional columns dropped one by one (highest ``optional`` first) until the rest fit;
3. when even the essential columns do not fit: a stacked layout, the row's name on its own line
   and ``header value`` pairs under it, each pair whole.

Names, numbers, intervals and statuses are never cut: a column that does not wrap is exactly as
wide as its widest cell, and only columns declared ``wrap`` (notes, formulas, sources) break, at
spaces. No cell ever ends in an ellipsis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

#: What a cell may be: plain text (never markup) or a styled ``Text``.
Cell = str | Text
Row = Sequence[Cell]

#: Columns between two columns in the compact box (two spaces of padding and a separator).
GUTTER = 3
#: Indent of the ``header value`` pairs under a row in the stacked layout.
STACK_INDENT = 4
#: Indent of a row's cells under its name in the name-above layout.
NAME_ABOVE_INDENT = 2
#: Spaces between two columns in the name-above layout.
NAME_ABOVE_GUTTER = 2
#: A wrapping column is never narrower than this (or its longest word, if longer).
WRAP_MIN = 12


@dataclass(frozen=True)
class Column:
    """One column. ``optional``: 0 is always shown; k > 0 is dropped (largest k first) when the
    table does not fit. ``wrap``: the cells may break at spaces (notes, formulas); any other
    column is as wide as its widest cell. ``stack``: shown in the stacked layout."""

    header: str
    justify: str = "left"
    wrap: bool = False
    optional: int = 0
    stack: bool = True
    beside_name: bool = False  # when rows are laid out under their names: on the name's line


def _text(cell: Cell) -> Text:
    return cell.copy() if isinstance(cell, Text) else Text(cell)


def _lines(cell: Cell) -> list[str]:
    return str(cell.plain if isinstance(cell, Text) else cell).split("\n")


def _longest_word(cell: Cell) -> int:
    return max((len(w) for line in _lines(cell) for w in line.split()), default=0)


def _natural(cell: Cell) -> int:
    return max(len(line) for line in _lines(cell))


class FitTable:
    """A table that lays itself out for the width it is rendered at (see the module doc).

    ``notes`` (one per row, or None) print under the row's first cell, dim, wrapped within that
    column: a line of explanation that does not widen the table.
    """

    def __init__(
        self,
        columns: Sequence[Column],
        rows: Iterable[Row],
        *,
        title: str | Text | None = None,
        caption: str | Text | None = None,
        notes: Sequence[str | None] | None = None,
        row_styles: Sequence[str] | None = None,
    ) -> None:
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"a row of {len(row)} cells for {len(self.columns)} columns")
        self.title = title
        self.caption = caption
        self.notes = list(notes) if notes is not None else [None] * len(self.rows)
        self.row_styles = list(row_styles) if row_styles is not None else [""] * len(self.rows)

    # -- width ---------------------------------------------------------------------------
    def _bounds(self, index: int) -> tuple[int, int]:
        """(min, natural) width of a column: its header and cells, notes not counted."""
        col = self.columns[index]
        cells: list[Cell] = [col.header, *(r[index] for r in self.rows)]
        natural = max(_natural(c) for c in cells)
        if not col.wrap:
            return natural, natural
        longest = max(_longest_word(c) for c in cells)
        return max(longest, min(natural, WRAP_MIN)), natural

    def _fit(self, shown: list[int], width: int, gutter: int = GUTTER) -> dict[int, int] | None:
        """Widths of the ``shown`` columns within ``width``, or None if they cannot fit."""
        bounds = {i: self._bounds(i) for i in shown}
        need = sum(lo for lo, _ in bounds.values()) + gutter * (len(shown) - 1)
        if need > width:
            return None
        out = {i: lo for i, (lo, _) in bounds.items()}
        spare = width - need
        for i in shown:  # wrapping columns grow first (never past their natural width)
            if self.columns[i].wrap:
                grow = min(spare, bounds[i][1] - out[i])
                out[i] += grow
                spare -= grow
        notes = [len(n) + 2 for n in self.notes if n]
        if notes and shown[0] == 0:  # then the first column, for the notes under its cells
            out[0] += min(spare, max(0, max(notes) - out[0]))
        return out

    def widths(self, width: int) -> dict[int, int] | None:
        """Column index -> width for the widest one-line-per-row layout that fits, dropping
        optional columns (largest ``optional`` first); None if even the rest do not fit."""
        shown = list(range(len(self.columns)))
        droppable = sorted(
            (i for i, c in enumerate(self.columns) if c.optional),
            key=lambda i: (-self.columns[i].optional, -i),
        )
        while True:
            out = self._fit(shown, width)
            if out is not None or not droppable:
                return out
            shown.remove(droppable.pop(0))

    def layout(self, width: int) -> tuple[str, dict[int, int] | None]:
        """("table", widths), ("name-above", widths of the other columns) or ("stacked", None)."""
        widths = self.widths(width)
        if widths is not None:
            return "table", widths
        rest = [i for i, c in enumerate(self.columns) if i and not c.optional and not c.beside_name]
        if rest and len(self.columns) > 2:
            widths = self._fit(rest, width - NAME_ABOVE_INDENT, NAME_ABOVE_GUTTER)
            if widths is not None:
                return "name-above", widths
        return "stacked", None

    # -- rendering -----------------------------------------------------------------------
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        if self.title is not None:
            yield self.title.copy() if isinstance(self.title, Text) else Text(self.title, "bold")
        mode, widths = self.layout(width)
        if mode == "table" and widths is not None:
            yield self._table(widths)
        elif mode == "name-above" and widths is not None:
            yield from self._name_above(console, widths)
        else:
            yield from self._stacked(width)
        if self.caption is not None:
            yield _text(self.caption)

    def _name_line(self, row: Sequence[Cell], style: str) -> Text:
        """A row's name in bold, then its ``beside_name`` cells, dim (the name-above and stacked
        layouts)."""
        name = _text(row[0])
        name.stylize("bold")
        beside = [
            _text(c).plain for c, col in zip(row, self.columns, strict=True) if col.beside_name
        ]
        if beside:
            name.append("  " + "  ".join(b for b in beside if b), style="dim")
        if style:
            name.stylize(style)
        name.overflow = "fold"
        return name

    def _name_above(self, console: Console, widths: dict[int, int]) -> RenderResult:
        """Each row's name on its own line, its other cells aligned in columns under it."""
        pad = " " * NAME_ABOVE_INDENT
        order = sorted(widths)
        header = Text(pad, style="bold")
        for n, i in enumerate(order):
            col = self.columns[i]
            head = col.header.rjust(widths[i]) if col.justify == "right" else col.header
            header.append((" " * NAME_ABOVE_GUTTER if n else "") + head.ljust(widths[i]))
        yield header
        yield Text(pad + "─" * (len(header) - NAME_ABOVE_INDENT), style="dim")
        previous: Text | None = None
        for row, note, style in zip(self.rows, self.notes, self.row_styles, strict=True):
            name = self._name_line(row, style)
            if previous is None or name.plain != previous.plain:  # a run of one name: once
                yield name
            previous = name
            columns = []
            for i in order:
                text = _text(row[i])
                lines = text.wrap(console, widths[i]) if self.columns[i].wrap else text.split("\n")
                columns.append(list(lines))
            for k in range(max(len(c) for c in columns)):
                line = Text(pad)
                for n, (i, cells) in enumerate(zip(order, columns, strict=True)):
                    cell = cells[k].copy() if k < len(cells) else Text("")
                    cell.rstrip()
                    gap = Text(" " * (widths[i] - len(cell)))
                    right = self.columns[i].justify == "right"
                    line.append(" " * NAME_ABOVE_GUTTER if n else "")
                    line.append_text(
                        Text.assemble(gap, cell) if right else Text.assemble(cell, gap)
                    )
                line.rstrip()
                if style:
                    line.stylize(style)
                yield line
            if note:
                yield Padding(Text("↳ " + note, style="dim"), (0, 0, 0, NAME_ABOVE_INDENT))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, options.max_width)

    def _table(self, widths: dict[int, int]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False)
        noted = any(self.notes)
        for i in sorted(widths):
            col = self.columns[i]
            table.add_column(
                col.header,
                justify=col.justify,  # type: ignore[arg-type]
                width=widths[i],
                overflow="fold",
                # a note under the first cell wraps in that column; the cell itself fits whole
                no_wrap=not (col.wrap or (noted and i == 0)),
            )
        for row, note, style in zip(self.rows, self.notes, self.row_styles, strict=True):
            cells = [_text(row[i]) for i in sorted(widths)]
            if note:
                cells[0].append("\n↳ " + note, style="dim")
            table.add_row(*cells, style=style or None)
        return table

    def _stacked(self, width: int) -> RenderResult:
        pad = " " * STACK_INDENT
        for row, note, style in zip(self.rows, self.notes, self.row_styles, strict=True):
            yield self._name_line(row, style)
            fields: list[Text] = []
            for col, cell in zip(self.columns[1:], row[1:], strict=True):
                if not col.stack or col.beside_name or not _text(cell).plain.strip():
                    continue
                field = Text(f"{col.header} ", style="dim")
                field.append_text(_text(cell))
                fields.append(Text(" ").join(_text(x) for x in field.split("\n")))
            line = Text(pad)
            for field in fields:
                if len(line) > STACK_INDENT and len(line) + 3 + len(field) > width:
                    line.overflow = "fold"
                    yield line
                    line = Text(pad)
                if len(line) > STACK_INDENT:
                    line.append("   ")
                line.append_text(field)
            if len(line) > STACK_INDENT:
                line.overflow = "fold"
                yield line
            if note:
                yield Padding(
                    Text("↳ " + note, style="dim", overflow="fold"), (0, 0, 0, STACK_INDENT)
                )


def render_text(renderable: object, width: int) -> str:
    """``renderable`` as plain text at ``width`` columns (no colour codes)."""
    import io

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()
