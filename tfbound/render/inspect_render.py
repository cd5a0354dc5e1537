"""Renderers of an ``InspectResult``: a rich table, markdown and a JSON-ready dict.

They format and order the numbers of the result; they never compute a norm.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from tfbound.adapters.base import HeadRow, LayerRow
from tfbound.errors import UsageError
from tfbound.inspect import InspectResult
from tfbound.measures.norms import NormValue, weakest_status
from tfbound.render.layout import Column, FitTable
from tfbound.render.text import STATUS_STYLE, details, fmt, md_cell, md_code
from tfbound.report import envelope
from tfbound.terms import to_plain

SORT_KEYS = (
    "name",
    "spectral_norm",
    "frobenius_norm",
    "l21_norm",
    "stable_rank",
    "distance_to_reference",
    "n_params",
)
_HEAD_SORT = {
    "spectral_norm": "qk_spectral_norm",
    "frobenius_norm": "qk_frobenius_norm",
    "l21_norm": "qk_l21_norm",
}


def _natural_key(name: str) -> list[Any]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p]


def _value(v: NormValue | float | int | None) -> float | None:
    if isinstance(v, NormValue):
        return v.value
    return None if v is None else float(v)


def _check_sort(sort: str | None, top: int | None) -> None:
    if sort is not None and sort not in SORT_KEYS:
        raise UsageError(f"--sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
    if top is not None and top < 1:
        raise UsageError(f"--top must be >= 1, got {top}")


def sorted_layers(
    result: InspectResult, sort: str | None = None, top: int | None = None
) -> list[LayerRow]:
    """Layer rows in checkpoint order, or by ``sort`` (names ascending, numbers descending,
    missing values last), cut to the first ``top``."""
    _check_sort(sort, top)
    rows = list(result.layers)
    if sort == "name":
        rows.sort(key=lambda r: _natural_key(r.name))
    elif sort is not None:

        def key(r: LayerRow) -> tuple[bool, float]:
            v = _value(getattr(r, sort))
            return (v is None, -(v if v is not None else 0.0))

        rows.sort(key=key)
    return rows[:top] if top is not None else rows


def sorted_heads(
    result: InspectResult, sort: str | None = None, top: int | None = None
) -> list[HeadRow]:
    """Head rows in block order, or by the QK norm matching ``sort``, cut to ``top``."""
    _check_sort(sort, top)
    rows = list(result.heads)
    field = _HEAD_SORT.get(sort or "")
    if field is not None:
        rows.sort(key=lambda r: -getattr(r, field).value)
    return rows[:top] if top is not None else rows


def _row_status(row: LayerRow) -> str:
    values = (row.spectral_norm, row.frobenius_norm, row.l21_norm, row.stable_rank)
    return weakest_status(*(v.status for v in values if v is not None))


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _totals_line(result: InspectResult, sep: str = "; ") -> str:
    t = result.totals
    parts = [
        f"{t.n_layers} layers, {t.n_head_rows} head rows, {len(result.skipped)} skipped",
        f"params {t.n_params} ({t.n_params_analysed} analysed, {t.n_params_skipped} skipped)",
        f"frobenius_norm_sq_total {fmt(t.frobenius_norm_sq_total)}",
    ]
    if t.spectral_norm_product is not None:
        p = t.spectral_norm_product
        parts.append(
            f"spectral_norm_product {fmt(p.value)} ({p.status}, "
            f"{t.spectral_norm_product_factors} linear/conv rows)"
        )
    if t.distance_to_reference_sq_total is not None:
        parts.append(f"distance_to_reference_sq_total {fmt(t.distance_to_reference_sq_total)}")
    return sep.join(parts)


def largest_spectral(result: InspectResult) -> LayerRow | None:
    """The layer row with the largest spectral norm (any kind), or None."""
    rows = [r for r in result.layers if r.spectral_norm is not None]
    return max(rows, key=lambda r: _value(r.spectral_norm) or 0.0) if rows else None


def headline(result: InspectResult) -> str:
    """One line: the layer with the largest spectral norm, and the largest per-head QK norm."""
    parts = []
    top = largest_spectral(result)
    if top is not None and top.spectral_norm is not None:
        s = top.spectral_norm
        parts.append(
            f"largest spectral norm: {top.name} ({top.kind}, {_shape(top.shape)}) = "
            f"{fmt(s.value)} ({s.status})"
        )
    if result.heads:
        h = max(result.heads, key=lambda r: r.qk_spectral_norm.value)
        value = fmt(h.qk_spectral_norm.value)
        parts.append(f"largest ||QK_h||_2: {h.block} head {h.head}/{h.heads} = {value}")
    return "; ".join(parts) or "no layer with a spectral norm"


def inspect_skipped_table(result: InspectResult) -> FitTable:
    """Parameters no handler took, with the reason (never dropped silently)."""
    columns = [Column("parameter"), Column("shape"), Column("dtype"), Column("reason", wrap=True)]
    rows: list[list[str | Text]] = [
        [Text(s.name), _shape(s.shape), s.dtype, Text(s.reason)] for s in result.skipped
    ]
    return FitTable(columns, rows, title="skipped (not analysed)")


def inspect_report(
    result: InspectResult, sort: str | None = None, top: int | None = None
) -> RenderableType:
    """Everything ``tfbound inspect`` prints as a table: the headline, the layer table, the head
    table, the skipped parameters and the notes."""
    parts: list[RenderableType] = [
        Text(headline(result), style="bold"),
        Text(""),
        inspect_table(result, sort, top),
    ]
    if result.heads:
        parts += [Text(""), inspect_heads_table(result, sort, top)]
    if result.skipped:
        parts += [Text(""), inspect_skipped_table(result)]
    parts += [Text(f"note: {n}", style="dim") for n in result.notes]
    return Group(*parts)


def inspect_table(
    result: InspectResult, sort: str | None = None, top: int | None = None
) -> FitTable:
    """The per-layer table (name, kind, shape, norms, status), totals as its caption."""
    rows = sorted_layers(result, sort, top)
    with_ref = result.reference is not None
    columns = [Column("layer"), Column("kind", beside_name=True), Column("shape", beside_name=True)]
    columns += [
        Column(h, justify="right") for h in ("spectral", "frobenius", "(2,1)", "stable rank")
    ]
    if with_ref:
        columns.append(Column("dist. to ref", justify="right"))
    columns.append(Column("status"))
    cells = []
    for r in rows:
        status = _row_status(r)
        row: list[str | Text] = [
            Text(r.name),  # Text, not str: a parameter name is not rich markup
            r.kind,
            _shape(r.shape),
            fmt(_value(r.spectral_norm)),
            fmt(_value(r.frobenius_norm)),
            fmt(_value(r.l21_norm)),
            fmt(_value(r.stable_rank)),
        ]
        if with_ref:
            row.append(fmt(_value(r.distance_to_reference)))
        row.append(Text(status, style=STATUS_STYLE.get(status, "")))
        cells.append(row)
    title = Text(f"tfbound inspect: {result.source}", style="bold", overflow="fold")
    return FitTable(
        columns, cells, title=title, caption=Text(_totals_line(result, "\n"), style="dim")
    )


#: The head table's column headers and what they are (its title explains them).
HEAD_COLUMNS = ("QK 2", "QK 2,1", "VO 2", "VO 2,1", "bias")


def inspect_heads_table(
    result: InspectResult, sort: str | None = None, top: int | None = None
) -> FitTable:
    """Per-head attention products: ``QK_h`` and ``VO_h`` spectral and (2,1) norms, logit bias."""
    columns = [Column("block"), Column("head", justify="right")]
    columns += [Column(h, justify="right") for h in HEAD_COLUMNS]
    rows: list[list[str | Text]] = [
        [
            Text(h.block),
            f"{h.head}/{h.heads}",
            fmt(h.qk_spectral_norm.value),
            fmt(h.qk_l21_norm.value),
            fmt(h.vo_spectral_norm.value),
            fmt(h.vo_l21_norm.value),
            fmt(h.logit_bias_norm),
        ]
        for h in sorted_heads(result, sort, top)
    ]
    title = (
        "attention heads: spectral (2) and (2,1) norms of QK_h = Wq_h^T Wk_h and "
        "VO_h = Wo_h Wv_h; bias: the logit bias norm"
    )
    return FitTable(columns, rows, title=title)


def inspect_markdown(result: InspectResult, sort: str | None = None, top: int | None = None) -> str:
    """Markdown: totals, the layer table, the head table, skipped parameters and notes."""
    rows = sorted_layers(result, sort, top)
    with_ref = result.reference is not None
    lines = [f"## tfbound inspect: {md_code(result.source)}", ""]
    if result.reference is not None:
        lines.append(f"reference: {md_code(result.reference)}  ")
    lines += [f"**{md_cell(headline(result))}**  ", md_cell(_totals_line(result)), ""]
    header = "| layer | kind | shape | spectral | frobenius | (2,1) | stable rank |"
    rule = "|---|---|---|---:|---:|---:|---:|"
    if with_ref:
        header += " dist. to ref |"
        rule += "---:|"
    table = [header + " status |", rule + "---|"]
    for r in rows:
        cells = [
            md_code(r.name, in_table=True),
            md_cell(r.kind),
            _shape(r.shape),
            fmt(_value(r.spectral_norm)),
            fmt(_value(r.frobenius_norm)),
            fmt(_value(r.l21_norm)),
            fmt(_value(r.stable_rank)),
        ]
        if with_ref:
            cells.append(fmt(_value(r.distance_to_reference)))
        cells.append(_row_status(r))
        table.append("| " + " | ".join(cells) + " |")
    lines += details(f"{len(rows)} layers", table)
    heads = sorted_heads(result, sort, top)
    if heads:
        body = [
            "| block | head | QK spectral | QK (2,1) | VO spectral | VO (2,1) | logit bias |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for h in heads:
            body.append(
                f"| {md_code(h.block, in_table=True)} | {h.head}/{h.heads} "
                f"| {fmt(h.qk_spectral_norm.value)} | {fmt(h.qk_l21_norm.value)} "
                f"| {fmt(h.vo_spectral_norm.value)} | {fmt(h.vo_l21_norm.value)} "
                f"| {fmt(h.logit_bias_norm)} |"
            )
        lines += details(f"{len(heads)} attention heads", body)
    if result.skipped:
        lines += ["", "### skipped", ""]
        lines += [
            f"- {md_code(s.name)} ({_shape(s.shape)}, {md_cell(s.dtype)}): {md_cell(s.reason)}"
            for s in result.skipped
        ]
    if result.notes:
        lines += ["", "### notes", ""]
        lines += [f"- {md_cell(n)}" for n in result.notes]
    return "\n".join(lines) + "\n"


def inspect_json(result: InspectResult) -> dict[str, Any]:
    """The whole result as a JSON-ready dict with sorted keys and plain floats (versioned)."""
    body = {**to_plain(result), **envelope("tfbound.inspect")}
    return {k: body[k] for k in sorted(body)}
