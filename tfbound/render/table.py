"""The rich table that ``tfbound estimate`` prints by default."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tfbound.render.text import fmt, fmt_interval, ordered_terms

_STATUS_STYLE = {
    "certified": "green",
    "estimated": "cyan",
    "assumed": "yellow",
    "proxy": "magenta",
    "diagnostic": "dim",
}


def _bar(value: float | None, total: float | None, width: int = 12) -> str:
    if value is None or not total or total <= 0 or value < 0:
        return ""
    filled = round(width * min(1.0, value / total))
    return "█" * filled + "·" * (width - filled)


def report_table(report: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = []
    bounds = report["bounds"]
    headline = Text()
    for key, total in sorted(bounds.items()):
        headline.append(f"{key} = {fmt(total['value'])}", style="bold green")
        if total.get("confidence") is not None:
            headline.append(f"  (holds with probability >= {fmt(total['confidence'])})")
        headline.append("\n")
    terms = report["terms"]
    for key in ("observed_test_error", "test_set_bound", "tightness"):
        if key in terms:
            headline.append(f"{key} = {fmt(terms[key]['value'])}   ")
    parts.append(headline)

    table = Table(title="the bound term by term", title_justify="left", expand=False)
    table.add_column("key", no_wrap=True)
    table.add_column("value", no_wrap=True, justify="right")
    table.add_column("share", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("formula", overflow="fold", min_width=24)
    certified_total = next(iter(bounds.values()))["value"] if bounds else None
    summed = {k for b in bounds.values() for k in b.get("components", [])}
    for term in ordered_terms(report):
        share = _bar(term["value"], certified_total) if term["key"] in summed else ""
        value = fmt(term["value"])
        interval = fmt_interval(term)
        status = term["status"]
        table.add_row(
            term["key"],
            f"{value}\n{interval}" if interval else value,
            share,
            Text(status, style=_STATUS_STYLE.get(status, "")),
            term["formula"],
        )
    for key, total in sorted(bounds.items()):
        table.add_row(
            Text(key, style="bold"),
            Text(fmt(total["value"]), style="bold"),
            "",
            Text(total["status"], style=_STATUS_STYLE.get(total["status"], "")),
            total["formula"],
        )
    parts.append(table)
    deltas = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(report["deltas"].items()))
    parts.append(Text(f"delta shares: {deltas}", style="dim"))
    for warning in report["warnings"]:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Group(*parts)
