"""A comparison of two reports as a rich table and as markdown. Input: ``Comparison.to_dict()``."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tfbound.keys import TermKey
from tfbound.render.text import md_cell

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
        lines.append(f"{key}: {num(row['base'])} -> {num(row['cand'])}{change}")
    return lines


def _style(row: dict[str, Any]) -> str:
    rel = row["relative"]
    if row["present"] != "both" or rel is None:
        return "yellow" if row["present"] != "both" else ""
    if math.isclose(rel, 0.0, abs_tol=1e-12):
        return "dim"
    return ""


def compare_table(data: dict[str, Any]) -> RenderableType:
    head = Text()
    head.append(f"compare {data['base']} -> {data['cand']}", style="bold")
    for line in _headlines(data):
        head.append("\n" + line, style="bold green")
    table = Table(title="changes by impact (|relative change|)", title_justify="left")
    table.add_column("key", no_wrap=True)
    for col in ("base", "cand", "change", "relative"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("note", overflow="fold", min_width=14)
    for row in data["deltas"]:
        table.add_row(
            Text(row["key"]),  # Text, not str: a layer name is not rich markup
            num(row["base"]),
            num(row["cand"]),
            signed(row["absolute"]),
            percent(row),
            row["status"] or "",
            Text(row["note"]),
            style=_style(row),
        )
    parts: list[RenderableType] = [head, table]
    parts += [Text(f"note: {n}", style="yellow") for n in data["notes"]]
    return Group(*parts)


def compare_markdown(data: dict[str, Any]) -> str:
    lines = [f"## tfbound compare: {md_cell(data['base'])} → {md_cell(data['cand'])}", ""]
    lines += [f"**{line}**  " for line in _headlines(data)] + [""]
    lines += [
        "| key | base | cand | change | relative | status | note |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in data["deltas"]:
        lines.append(
            f"| `{row['key']}` | {num(row['base'])} | {num(row['cand'])} | "
            f"{signed(row['absolute'])} | {percent(row)} | {row['status'] or ''} | "
            f"{md_cell(row['note'])} |"
        )
    if data["notes"]:
        lines.append("")
        lines += [f"> note: {md_cell(n)}  " for n in data["notes"]]
    return "\n".join(lines) + "\n"
