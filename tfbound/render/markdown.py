"""Markdown summary of a report (for a pull-request comment or a CI step summary)."""

from __future__ import annotations

from typing import Any

from tfbound.keys import TermKey
from tfbound.render.text import (
    excess_risk_terms,
    fmt,
    fmt_interval,
    md_cell,
    ordered_bounds,
    ordered_terms,
    tightness_of,
)


def _term_row(term: dict[str, Any]) -> str:
    return (
        f"| `{term['key']}` | {fmt(term['value'])} | {fmt_interval(term)} | {term['status']} "
        f"| {term['quantity']} | {md_cell(term['formula'])} |"
    )


def report_markdown(report: dict[str, Any]) -> str:
    lines = ["## tfbound estimate", ""]
    ordered = ordered_bounds(report)
    if ordered:
        lead = ordered[0]
        conf = lead.get("confidence")
        suffix = f" (probability >= {fmt(conf)})" if conf is not None else ""
        chosen = lead.get("details", {}).get("chosen")
        via = f", from `{chosen}`" if chosen else ""
        lines.append(f"**{lead['key']}: {fmt(lead['value'])}**{suffix}{via}  ")
    terms = report["terms"]
    held = [
        f"{k}: {fmt(terms[k]['value'])}"
        for k in (TermKey.OBSERVED_TEST_ERROR, TermKey.TEST_SET_BOUND)
        if k in terms
    ]
    if held:
        lines.append("held out: " + ", ".join(held) + "  ")
    if ordered:
        lines += [
            "",
            "| certificate | value | probability | tightness | quantity | formula |",
            "|---|---:|---:|---:|---|---|",
        ]
        for total in ordered:
            lines.append(
                f"| `{total['key']}` | {fmt(total['value'])} | {fmt(total.get('confidence'))} "
                f"| {fmt(tightness_of(report, total['key']))} | {total['quantity']} "
                f"| {md_cell(total['formula'])} |"
            )
    lines += [
        "",
        "| key | value | interval | status | quantity | formula |",
        "|---|---:|---|---|---|---|",
    ]
    lines += [_term_row(term) for term in ordered_terms(report)]
    decomposition = excess_risk_terms(report)
    if decomposition:
        lines += [
            "",
            "Excess-risk decomposition (bound-spec 6.2): a different quantity, never compared with "
            "the test-error certificates.",
            "",
            "| key | value | interval | status | quantity | formula |",
            "|---|---:|---|---|---|---|",
            *(_term_row(term) for term in decomposition),
        ]
    deltas = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(report["deltas"].items()))
    lines += ["", f"delta shares: {deltas}"]
    lines += [f"> warning: {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"
