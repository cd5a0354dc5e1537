"""Markdown of a report for a pull-request comment or a CI step summary.

The headline on top in one line; the certificates in a narrow table; every group of terms in a
collapsed ``<details>`` block; formulas in code spans (so GitHub does not read ``_`` as
emphasis) and only inside the collapsed formulas block.
"""

from __future__ import annotations

from typing import Any

from tfbound.keys import TermKey
from tfbound.render.text import (
    details,
    fmt,
    fmt_interval,
    headline_lines,
    md_cell,
    md_code,
    ordered_bounds,
    term_groups,
    term_note,
    tightness_of,
)


def _term_rows(terms: list[dict[str, Any]], report: dict[str, Any]) -> list[str]:
    lines = ["| key | value | interval | status | note |", "|---|---:|---|---|---|"]
    for t in terms:
        note = term_note(t, report) or ""
        lines.append(
            f"| `{t['key']}` | {fmt(t['value'])} | {fmt_interval(t)} | {t['status']} "
            f"| {md_cell(note)} |"
        )
    return lines


def formulas_block(terms: list[dict[str, Any]]) -> list[str]:
    """Every formula in a code span with its source, one list item per term."""
    body = [f"- `{t['key']}` = {md_code(t['formula'])}  \n  {md_cell(t['source'])}" for t in terms]
    return details(f"formulas and sources ({len(terms)} terms)", body)


def headline_markdown(
    report: dict[str, Any], verdict: str | None = None, baseline: dict[str, Any] | None = None
) -> str:
    """The one-line verdict of a report: the gates' verdict (if any), the headline in bold with
    its change from ``baseline`` (if any), then the held-out numbers."""
    lines = headline_lines(report)
    parts = [verdict] if verdict else []
    if lines:
        head = f"**{md_cell(lines[0])}**"
        key = TermKey.BEST.value
        was = (baseline or {}).get("bounds", {}).get(key, {}).get("value")
        now = report["bounds"].get(key, {}).get("value")
        if was is not None and now is not None:
            change = f", {100 * (now - was) / was:+.1f}%" if was else ""
            head += f" (baseline {fmt(was)}{change})"
        parts += [head, *(md_cell(x) for x in lines[1:])]
    else:
        parts.append("no certificate computed")
    return " · ".join(parts)


def report_markdown(
    report: dict[str, Any], verdict: str | None = None, baseline: dict[str, Any] | None = None
) -> str:
    lines = ["## tfbound estimate", "", headline_markdown(report, verdict, baseline)]
    ordered = ordered_bounds(report)
    if ordered:
        lines += [
            "",
            "| certificate | value | probability | tightness |",
            "|---|---:|---:|---:|",
        ]
        for total in ordered:
            value = fmt(total["value"]) + (" (vacuous)" if total["value"] >= 1 else "")
            note = term_note(total, report)
            name = f"`{total['key']}`" + (f" ({md_cell(note)})" if note else "")
            lines.append(
                f"| {name} | {value} | {fmt(total.get('confidence'))} "
                f"| {fmt(tightness_of(report, total['key']))} |"
            )
    shown: list[dict[str, Any]] = []
    for group in term_groups(report):
        n = len(group.terms)
        title = f"{group.title}, the sum of {n} terms" if group.total else f"{group.title} ({n})"
        lines += details(title, _term_rows(group.terms, report))
        shown += group.terms
    lines += formulas_block([*ordered, *shown])
    deltas = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(report["deltas"].items()))
    lines += ["", f"delta shares: {md_cell(deltas)}"]
    if report["warnings"]:
        lines.append("")
        lines += [f"> warning: {md_cell(w)}  " for w in report["warnings"]]
    return "\n".join(lines) + "\n"
