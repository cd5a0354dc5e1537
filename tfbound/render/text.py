"""Shared formatting of numbers for the table and markdown renderers."""

from __future__ import annotations

from typing import Any

from tfbound.keys import Role, TermKey, tightness_key


def md_cell(text: Any) -> str:
    """``text`` as one markdown table cell: pipes escaped, newlines folded (the one escaper)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


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


def excess_risk_terms(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The excess-risk decomposition's terms (a different quantity: shown apart), by key."""
    terms: dict[str, dict[str, Any]] = report["terms"]
    return [terms[k] for k in sorted(terms) if terms[k].get("role") == Role.DECOMPOSITION]


def ordered_terms(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Terms in reading order: the certified bound's components first, then the rest by key
    (the excess-risk decomposition's terms are left to ``excess_risk_terms``)."""
    terms: dict[str, dict[str, Any]] = {
        k: t for k, t in report["terms"].items() if t.get("role") != Role.DECOMPOSITION
    }
    first: list[str] = []
    for total in report["bounds"].values():
        first += [k for k in total.get("components", []) if k in terms and k not in first]
    rest = sorted(k for k in terms if k not in first)
    return [terms[k] for k in (*first, *rest)]


#: Reading order of the certificates: the best first, then each route, then the Gibbs bound.
CERTIFICATE_ORDER = (
    TermKey.BEST,
    TermKey.DISAGREEMENT,
    TermKey.PAC_BAYES_DETERMINISTIC,
    TermKey.CERTIFIED,
    TermKey.FINETUNED,
    TermKey.PAC_BAYES_GIBBS,
)


def ordered_bounds(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's bounds, best certificate first, unknown keys last by name."""
    bounds: dict[str, dict[str, Any]] = report["bounds"]
    known = [k for k in CERTIFICATE_ORDER if k in bounds]
    rest = sorted(k for k in bounds if k not in CERTIFICATE_ORDER)
    return [bounds[k] for k in (*known, *rest)]


def tightness_of(report: dict[str, Any], key: str) -> Any:
    """The held-out tightness term that belongs to a certificate, or None."""
    term = report["terms"].get(tightness_key(key))
    return None if term is None else term["value"]
