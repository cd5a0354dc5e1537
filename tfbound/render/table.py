"""The rich table that ``tfbound estimate`` prints by default."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tfbound.render.text import fmt, fmt_interval, ordered_bounds, ordered_terms, tightness_of

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
    terms = report["terms"]
    ordered = ordered_bounds(report)
    if ordered:
        lead = ordered[0]
        headline = Text(f"{lead['key']} = {fmt(lead['value'])}", style="bold green")
        if lead.get("confidence") is not None:
            headline.append(f"  (holds with probability >= {fmt(lead['confidence'])})", style="")
        chosen = lead.get("details", {}).get("chosen")
        if chosen:
            headline.append(f"  from {chosen}", style="")
        parts.append(headline)
    held = [
        f"{k} = {fmt(terms[k]['value'])}"
        for k in ("observed_test_error", "test_set_bound")
        if k in terms
    ]
    if held:
        parts.append(Text("held out: " + "   ".join(held)))
    certs = Table(title="certificates", title_justify="left")
    for col in ("certificate", "value", "probability", "tightness", "quantity", "source"):
        certs.add_column(col, overflow="fold", no_wrap=col != "source")
    for total in ordered:
        certs.add_row(
            Text(total["key"], style="bold" if total is ordered[0] else ""),
            fmt(total["value"]),
            fmt(total.get("confidence")),
            fmt(tightness_of(report, total["key"])),
            Text(total["quantity"]),
            Text(total["source"]),
        )
    if ordered:
        parts.append(certs)

    table = Table(
        title="the section-2 bound term by term, and every other number", title_justify="left"
    )
    table.add_column("key", no_wrap=True)
    table.add_column("value", no_wrap=True, justify="right")
    table.add_column("share", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("formula", overflow="fold", min_width=24)
    section2 = bounds.get("certified_test_error_bound")
    certified_total = section2["value"] if section2 else None
    summed = set(section2.get("components", [])) if section2 else set()
    for term in ordered_terms(report):
        share = _bar(term["value"], certified_total) if term["key"] in summed else ""
        value = fmt(term["value"])
        interval = fmt_interval(term)
        status = term["status"]
        table.add_row(
            Text(term["key"]),
            Text(f"{value}\n{interval}" if interval else value),
            share,
            Text(status, style=_STATUS_STYLE.get(status, "")),
            Text(term["formula"]),
        )
    if section2:
        table.add_row(
            Text(section2["key"], style="bold"),
            Text(fmt(section2["value"]), style="bold"),
            "",
            Text(section2["status"], style=_STATUS_STYLE.get(section2["status"], "")),
            Text(section2["formula"]),
        )
    parts.append(table)
    deltas = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(report["deltas"].items()))
    parts.append(Text(f"delta shares: {deltas}", style="dim"))
    for warning in report["warnings"]:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Group(*parts)
