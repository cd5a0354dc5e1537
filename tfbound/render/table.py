"""The rich table that ``tfbound estimate`` prints by default."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tfbound.keys import TermKey
from tfbound.render.text import (
    excess_risk_terms,
    fmt,
    fmt_interval,
    ordered_bounds,
    ordered_terms,
    tightness_of,
)

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


def _terms_table(title: str, terms: list[dict[str, Any]], total: dict[str, Any] | None) -> Table:
    """Rows of terms; with ``total``, its components get a share bar and it closes the table."""
    table = Table(title=title, title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("value", no_wrap=True, justify="right")
    table.add_column("share", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("formula", overflow="fold", min_width=24)
    summed = set(total.get("components", [])) if total else set()
    for term in terms:
        share = _bar(term["value"], total["value"]) if total and term["key"] in summed else ""
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
    if total:
        table.add_row(
            Text(total["key"], style="bold"),
            Text(fmt(total["value"]), style="bold"),
            "",
            Text(total["status"], style=_STATUS_STYLE.get(total["status"], "")),
            Text(total["formula"]),
        )
    return table


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
        for k in (TermKey.OBSERVED_TEST_ERROR, TermKey.TEST_SET_BOUND)
        if k in terms
    ]
    if held:
        parts.append(Text("held out: " + "   ".join(held)))
    certs = Table(title="certificates (each a complete bound; never added together)")
    for col in ("certificate", "value", "probability", "tightness"):
        certs.add_column(col, no_wrap=True, justify="left" if col == "certificate" else "right")
    sources = Text(style="dim")
    for total in ordered:
        name = total["key"]
        if total["quantity"] != "downstream_test_error":
            name += f" ({total['quantity']})"
        certs.add_row(
            Text(name, style="bold" if total is ordered[0] else ""),
            fmt(total["value"]),
            fmt(total.get("confidence")),
            fmt(tightness_of(report, total["key"])),
        )
        sources.append(f"{total['key']}: {total['source']}\n")
    if ordered:
        parts.append(certs)
        parts.append(sources)

    section2 = bounds.get(TermKey.CERTIFIED)
    parts.append(
        _terms_table(
            "the section-2 bound term by term, and every other number",
            ordered_terms(report),
            section2,
        )
    )
    decomposition = excess_risk_terms(report)
    if decomposition:
        parts.append(
            _terms_table(
                "excess-risk decomposition (bound-spec 6.2): a different quantity, "
                "never compared with the test-error certificates",
                decomposition,
                None,
            )
        )
    deltas = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(report["deltas"].items()))
    parts.append(Text(f"delta shares: {deltas}", style="dim"))
    for warning in report["warnings"]:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    return Group(*parts)


def as_text(renderable: RenderableType, width: int) -> str:
    """A rich renderable as plain text at ``width`` columns (no colour codes)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def report_text(report: dict[str, Any], width: int = 100) -> str:
    """The ``tfbound estimate`` table as plain text (``Report.summary()``)."""
    return as_text(report_table(report), width)
