"""What ``tfbound estimate`` prints by default: the headline first, then titled groups.

Order (each group read from the terms' ``role``, never from a key's prefix): the headline
certificate with the observed test error and the test-set bound; the certificates on the user's
head; each certificate's components; held-out numbers; the pre-training task; capacity numbers;
proxies; diagnostics; transfer and heterogeneity; the excess-risk decomposition (another
quantity); the delta shares and the warnings. Formulas and sources only with ``verbose``.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from tfbound.render.layout import Column, FitTable, render_text
from tfbound.render.text import (
    STATUS_STYLE,
    fmt,
    fmt_interval,
    headline_lines,
    ordered_bounds,
    term_groups,
    term_note,
    tightness_of,
)


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def _bar(value: float | None, total: float | None, width: int = 10) -> str:
    if value is None or not total or total <= 0 or value < 0:
        return ""
    filled = round(width * min(1.0, value / total))
    return "█" * filled + "·" * (width - filled)


def _value_cell(term: dict[str, Any]) -> str:
    interval = fmt_interval(term)
    return f"{fmt(term['value'])}\n{interval}" if interval else fmt(term["value"])


def terms_table(
    title: str,
    terms: list[dict[str, Any]],
    report: dict[str, Any],
    verbose: bool,
    total: dict[str, Any] | None = None,
) -> RenderableType:
    """Rows of terms (key, value with its interval, status); with ``total`` a share bar of it;
    with ``verbose`` the formula and the source."""
    columns = [
        Column("key"),
        Column("value", justify="right"),
        Column("status"),
    ]
    if total is not None:
        columns.append(Column("share", optional=1, stack=False))
    rows = []
    for term in terms:
        row: list[str | Text] = [term["key"], _value_cell(term), status_text(term["status"])]
        if total is not None:
            row.append(_bar(term["value"], total["value"]))
        rows.append(row)
    notes = [term_note(term, report) for term in terms]
    table = FitTable(columns, rows, title=title, notes=notes)
    return Group(table, formulas(terms)) if verbose else table


def formulas(terms: list[dict[str, Any]]) -> RenderableType:
    """Each term's formula and source under its table (``--verbose``), wrapped at spaces."""
    lines: list[RenderableType] = []
    for term in terms:
        formula = term["formula"]
        line = Text(term["key"], style="bold")
        line.append(
            formula.removeprefix(term["key"])
            if formula.startswith(term["key"] + " =")
            else " = " + formula
        )
        lines.append(Padding(line, (0, 0, 0, 2)))
        lines.append(Padding(Text("source: " + term["source"], style="dim"), (0, 0, 0, 6)))
    return Group(*lines)


def certificates_table(report: dict[str, Any], verbose: bool) -> RenderableType | None:
    """The complete bounds on the user's head, best first (never added together); tfbound's
    stochastic head, another predictor, gets its own table (:func:`other_predictor_table`)."""
    ordered = [b for b in ordered_bounds(report) if b["key"] not in OTHER_PREDICTORS]
    if not ordered:
        return None
    columns = [
        Column("certificate"),
        Column("value", justify="right"),
        Column("probability", justify="right"),
        Column("tightness", justify="right"),
    ]
    rows = []
    for total in ordered:
        name = Text(total["key"], style="bold" if total is ordered[0] else "")
        row: list[str | Text] = [
            name,
            vacuous_value(total),
            fmt(total.get("confidence")),
            fmt(tightness_of(report, total["key"])),
        ]
        rows.append(row)
    title = "certificates on your head (each a complete bound; never added together)"
    notes = [term_note(total, report) for total in ordered]
    table = FitTable(columns, rows, title=title, notes=notes)
    return Group(table, formulas(ordered)) if verbose else table


#: Certificates of a predictor that is not the user's head (shown in their own table).
OTHER_PREDICTORS = ("stochastic_head_gibbs_bound",)


def other_predictor_table(report: dict[str, Any], verbose: bool) -> RenderableType | None:
    """The certificates of tfbound's own stochastic head (``fit-head --stochastic``)."""
    ordered = [b for b in ordered_bounds(report) if b["key"] in OTHER_PREDICTORS]
    if not ordered:
        return None
    observed = report["terms"].get("observed_stochastic_head_gibbs_test_error")
    columns = [
        Column("certificate"),
        Column("value", justify="right"),
        Column("probability", justify="right"),
        Column("observed", justify="right"),
    ]
    rows: list[list[str | Text]] = [
        [
            Text(total["key"]),
            vacuous_value(total),
            fmt(total.get("confidence")),
            fmt(None if observed is None else observed["value"]),
        ]
        for total in ordered
    ]
    title = "tfbound's stochastic head (another predictor: never a bound on your head)"
    notes = [term_note(total, report) for total in ordered]
    table = FitTable(columns, rows, title=title, notes=notes)
    return Group(table, formulas(ordered)) if verbose else table


def vacuous_value(total: dict[str, Any]) -> Text:
    """A certificate's value, marked when it says nothing (>= 1)."""
    text = Text(fmt(total["value"]))
    if total["value"] is not None and total["value"] >= 1:
        text.append(" vacuous", style="dim")
    return text


def report_table(report: dict[str, Any], verbose: bool = False) -> RenderableType:
    parts: list[RenderableType] = [
        Text(line, style="bold" if i == 0 else "") for i, line in enumerate(headline_lines(report))
    ]
    certs = certificates_table(report, verbose)
    if certs is not None:
        parts += [Text(""), certs]
    other = other_predictor_table(report, verbose)
    if other is not None:
        parts += [Text(""), other]
    for group in term_groups(report):
        title = group.title if group.total is None else f"{group.title}, the sum of"
        table = terms_table(title, group.terms, report, verbose, group.total)
        parts += [Text(""), table]
    deltas = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(report["deltas"].items()))
    parts += [Text(""), Text(f"delta shares: {deltas}", style="dim")]
    for warning in report["warnings"]:
        parts.append(Text(f"warning: {warning}", style="yellow"))
    if not verbose:
        parts.append(Text("formulas and sources: --verbose", style="dim"))
    return Group(*parts)


def report_text(report: dict[str, Any], width: int = 100, verbose: bool = False) -> str:
    """The ``tfbound estimate`` table as plain text (``Report.summary()``)."""
    return render_text(report_table(report, verbose), width)


__all__ = ["certificates_table", "report_table", "report_text", "terms_table"]
