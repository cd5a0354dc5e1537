"""Markdown summary of a report (for a pull-request comment or a CI step summary)."""

from __future__ import annotations

from typing import Any

from tfbound.render.text import fmt, fmt_interval, ordered_terms


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def report_markdown(report: dict[str, Any]) -> str:
    lines = ["## tfbound estimate", ""]
    for key, total in sorted(report["bounds"].items()):
        conf = total.get("confidence")
        suffix = f" (probability >= {fmt(conf)})" if conf is not None else ""
        lines.append(f"**{key}: {fmt(total['value'])}**{suffix}  ")
    terms = report["terms"]
    for key in ("observed_test_error", "test_set_bound", "tightness"):
        if key in terms:
            lines.append(f"{key}: {fmt(terms[key]['value'])}  ")
    lines += [
        "",
        "| key | value | interval | status | quantity | formula |",
        "|---|---:|---|---|---|---|",
    ]
    for term in ordered_terms(report):
        lines.append(
            f"| `{term['key']}` | {fmt(term['value'])} | {fmt_interval(term)} | {term['status']} "
            f"| {term['quantity']} | {_cell(term['formula'])} |"
        )
    deltas = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(report["deltas"].items()))
    lines += ["", f"delta shares: {deltas}"]
    lines += [f"> warning: {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"
