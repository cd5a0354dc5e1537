"""A comparison of two reports as a rich table and as markdown. Input: ``Comparison.to_dict()``."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from tfbound.keys import TermKey
from tfbound.render.layout import Column, FitTable
from tfbound.render.text import md_cell, md_code

HEADLINE_KEYS = (TermKey.CERTIFIED.value, TermKey.BEST.value)


def num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.4g}"


def percent(row: dict[str, Any]) -> str:
    rel = row["relative"]
    if rel is None:
        return "from 0" if row["note"] == "from 0" else ""
    return f"{100 * rel:+.2f}%"


def _headlines(data: dict[str, Any]) -> list[str]:
    """The certified bounds' changes, one line each (those present in both reports)."""
    lines = []
    for key in HEADLINE_KEYS:
        row = next((d for d in data["deltas"] if d["key"] == key), None)
        if row is None or row["present"] != "both":
            continue
        change = (
            f" ({signed(row['absolute'])}, {percent(row)})" if row["absolute"] is not None else ""
        )
        lines.append(f"{key}: {num(row['base'])} → {num(row['cand'])}{change}")
    return lines


def _style(row: dict[str, Any]) -> str:
    rel = row["relative"]
    if row["present"] != "both" or rel is None:
        return "yellow" if row["present"] != "both" else ""
    if math.isclose(rel, 0.0, abs_tol=1e-12):
        return "dim"
    return ""


def changed(row: dict[str, Any]) -> bool:
    """Whether a row differs between the two reports (present on one side, or another value)."""
    if row["present"] != "both":
        return True
    if row["base"] is None or row["cand"] is None:
        return (row["base"] is None) != (row["cand"] is None)
    return bool(row["absolute"] != 0)


def shown_rows(data: dict[str, Any], show_all: bool) -> tuple[list[dict[str, Any]], int]:
    """The rows to print (the changed ones unless ``show_all``) and how many were left out."""
    rows = data["deltas"] if show_all else [r for r in data["deltas"] if changed(r)]
    return rows, len(data["deltas"]) - len(rows)


def compare_table(data: dict[str, Any], show_all: bool = False) -> RenderableType:
    head = Text()
    head.append(f"compare {data['base']} -> {data['cand']}", style="bold")
    for line in _headlines(data):
        head.append("\n" + line, style="bold green")
    rows, hidden = shown_rows(data, show_all)
    columns = [
        Column("key"),
        Column("base", justify="right"),
        Column("cand", justify="right"),
        Column("change", justify="right"),
        Column("relative", justify="right"),
        Column("status"),
        Column("note", wrap=True),
    ]
    cells = [
        [
            Text(r["key"]),  # Text, not str: a layer name is not rich markup
            num(r["base"]),
            num(r["cand"]),
            signed(r["absolute"]),
            percent(r),
            r["status"] or "",
            Text(r["note"]),
        ]
        for r in rows
    ]
    title = "changes by impact (|relative change|)"
    table = FitTable(columns, cells, title=title, row_styles=[_style(r) for r in rows])
    parts: list[RenderableType] = [head, table if rows else Text("no term or layer changed")]
    if hidden:
        parts.append(Text(f"{hidden} unchanged rows not shown (--all shows them)", style="dim"))
    parts += [Text(f"note: {n}", style="yellow") for n in data["notes"]]
    return Group(*parts)


def compare_markdown(data: dict[str, Any], show_all: bool = False) -> str:
    base, cand = md_code(data["base"]), md_code(data["cand"])
    lines = [f"## tfbound compare: {base} → {cand}", ""]
    heads = _headlines(data)
    lines.append(" · ".join(f"**{md_cell(line)}**" for line in heads) or "no headline certificate")
    rows, hidden = shown_rows(data, show_all)
    body = [
        "| key | base | cand | change | relative | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        body.append(
            f"| {md_code(row['key'], in_table=True)} | {num(row['base'])} | {num(row['cand'])} | "
            f"{signed(row['absolute'])} | {percent(row)} | {md_cell(row['note'])} |"
        )
    lines += ["", f"{len(rows)} changed" + (f", {hidden} unchanged not shown" if hidden else "")]
    if rows:
        lines += ["", *body]
    if data["notes"]:
        lines.append("")
        lines += [f"> note: {md_cell(n)}  " for n in data["notes"]]
    return "\n".join(lines) + "\n"
