"""Shared formatting of numbers for the table and markdown renderers."""

from __future__ import annotations

from typing import Any


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e4 or abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def fmt_interval(term: dict[str, Any]) -> str:
    iv = term.get("interval")
    return "" if iv is None else f"[{fmt(iv[0])}, {fmt(iv[1])}]"


def ordered_terms(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Terms in reading order: the certified bound's components first, then the rest by key."""
    terms: dict[str, dict[str, Any]] = report["terms"]
    first: list[str] = []
    for total in report["bounds"].values():
        first += [k for k in total.get("components", []) if k in terms and k not in first]
    rest = sorted(k for k in terms if k not in first)
    return [terms[k] for k in (*first, *rest)]
