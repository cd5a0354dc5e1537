"""Renderers of an ``InspectResult``: a rich table, markdown and a JSON-ready dict.

They format and order the numbers of the result; they never compute a norm.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tfbound.adapters.base import HeadRow, LayerRow
from tfbound.errors import UsageError
from tfbound.inspect import InspectResult
from tfbound.measures.norms import NormValue, weakest_status
from tfbound.render.text import fmt, md_cell
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
_STATUS_STYLE = {
    "certified": "green",
    "estimated": "cyan",
    "assumed": "yellow",
    "proxy": "magenta",
    "diagnostic": "dim",
}
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


def _totals_line(result: InspectResult) -> str:
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
    return "; ".join(parts)


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


def inspect_skipped_table(result: InspectResult) -> Table:
    """Parameters no handler took, with the reason (never dropped silently)."""
    table = Table(title="skipped (not analysed)", title_justify="left")
    table.add_column("parameter", overflow="fold")
    table.add_column("shape", no_wrap=True)
    table.add_column("dtype", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for s in result.skipped:
        table.add_row(s.name, _shape(s.shape), s.dtype, s.reason)
    return table


def inspect_report(
    result: InspectResult, sort: str | None = None, top: int | None = None
) -> RenderableType:
    """Everything ``tfbound inspect`` prints as a table: the headline, the layer table, the head
    table, the skipped parameters and the notes."""
    parts: list[RenderableType] = [
        Text(headline(result), style="bold"),
        inspect_table(result, sort, top),
    ]
    if result.heads:
        parts.append(inspect_heads_table(result, sort, top))
    if result.skipped:
        parts.append(inspect_skipped_table(result))
    parts += [Text(f"note: {n}", style="dim") for n in result.notes]
    return Group(*parts)


def inspect_table(result: InspectResult, sort: str | None = None, top: int | None = None) -> Table:
    """The per-layer rich table (name, kind, shape, norms, status), totals as its caption."""
    rows = sorted_layers(result, sort, top)
    with_ref = result.reference is not None
    table = Table(
        title=f"tfbound inspect: {result.source}",
        title_justify="left",
        caption=_totals_line(result),
        caption_justify="left",
    )
    table.add_column("layer", overflow="fold", min_width=20)
    table.add_column("kind", no_wrap=True)
    table.add_column("shape", no_wrap=True)
    for header in ("spectral", "frobenius", "(2,1)", "stable rank"):
        table.add_column(header, justify="right", no_wrap=True)
    if with_ref:
        table.add_column("dist. to ref", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for r in rows:
        status = _row_status(r)
        cells = [
            r.name,
            r.kind,
            _shape(r.shape),
            fmt(_value(r.spectral_norm)),
            fmt(_value(r.frobenius_norm)),
            fmt(_value(r.l21_norm)),
            fmt(_value(r.stable_rank)),
        ]
        if with_ref:
            cells.append(fmt(_value(r.distance_to_reference)))
        table.add_row(*cells, Text(status, style=_STATUS_STYLE.get(status, "")))
    return table


def inspect_heads_table(
    result: InspectResult, sort: str | None = None, top: int | None = None
) -> Table:
    """Per-head attention products: ``QK_h`` and ``VO_h`` spectral and (2,1) norms, logit bias."""
    table = Table(
        title="attention heads (QK_h = Wq_h^T Wk_h, VO_h = Wo_h Wv_h)", title_justify="left"
    )
    table.add_column("block", overflow="fold", min_width=20)
    table.add_column("head", justify="right", no_wrap=True)
    for header in ("QK spectral", "QK (2,1)", "VO spectral", "VO (2,1)", "logit bias"):
        table.add_column(header, justify="right", no_wrap=True)
    for h in sorted_heads(result, sort, top):
        table.add_row(
            h.block,
            f"{h.head}/{h.heads}",
            fmt(h.qk_spectral_norm.value),
            fmt(h.qk_l21_norm.value),
            fmt(h.vo_spectral_norm.value),
            fmt(h.vo_l21_norm.value),
            fmt(h.logit_bias_norm),
        )
    return table


def inspect_markdown(result: InspectResult, sort: str | None = None, top: int | None = None) -> str:
    """Markdown: totals, the layer table, the head table, skipped parameters and notes."""
    rows = sorted_layers(result, sort, top)
    with_ref = result.reference is not None
    lines = [f"## tfbound inspect: `{result.source}`", ""]
    if result.reference is not None:
        lines.append(f"reference: `{result.reference}`  ")
    lines += [f"**{headline(result)}**  ", _totals_line(result), ""]
    header = "| layer | kind | shape | spectral | frobenius | (2,1) | stable rank |"
    rule = "|---|---|---|---:|---:|---:|---:|"
    if with_ref:
        header += " dist. to ref |"
        rule += "---:|"
    lines += [header + " status |", rule + "---|"]
    for r in rows:
        cells = [
            f"`{r.name}`",
            r.kind,
            _shape(r.shape),
            fmt(_value(r.spectral_norm)),
            fmt(_value(r.frobenius_norm)),
            fmt(_value(r.l21_norm)),
            fmt(_value(r.stable_rank)),
        ]
        if with_ref:
            cells.append(fmt(_value(r.distance_to_reference)))
        cells.append(_row_status(r))
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    heads = sorted_heads(result, sort, top)
    if heads:
        lines += [
            "",
            "### attention heads",
            "",
            "| block | head | QK spectral | QK (2,1) | VO spectral | VO (2,1) | logit bias |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for h in heads:
            lines.append(
                f"| `{h.block}` | {h.head}/{h.heads} | {fmt(h.qk_spectral_norm.value)} "
                f"| {fmt(h.qk_l21_norm.value)} | {fmt(h.vo_spectral_norm.value)} "
                f"| {fmt(h.vo_l21_norm.value)} | {fmt(h.logit_bias_norm)} |"
            )
    if result.skipped:
        lines += ["", "### skipped", ""]
        lines += [
            f"- `{s.name}` ({_shape(s.shape)}, {s.dtype}): {md_cell(s.reason)}"
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
