"""Shared formatting of numbers for the table and markdown renderers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfbound.keys import Role, TermKey, tightness_key

#: The colour of each status in a terminal (one meaning per colour).
STATUS_STYLE = {
    "certified": "green",
    "estimated": "cyan",
    "assumed": "yellow",
    "proxy": "magenta",
    "diagnostic": "dim",
}


_MD_SPECIAL = "\\`*_<>[]|~#!"


def md_cell(text: Any) -> str:
    """``text`` as literal markdown (a table cell, a list item, a quote): every character
    markdown could read as markup backslash-escaped, newlines folded (the one escaper)."""
    body = " ".join(str(text).split())
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in body)


def html_text(text: Any) -> str:
    """``text`` inside an HTML element of a markdown file (``<summary>``): HTML-escaped."""
    import html

    return html.escape(" ".join(str(text).split()))


def md_code(text: Any, in_table: bool = False) -> str:
    """``text`` as one markdown code span: no emphasis, no markup; a fence longer than any run of
    backticks inside. In a table cell the pipes are escaped (GFM reads ``\\|`` there as ``|``)."""
    body = " ".join(str(text).split())
    if in_table:
        body = body.replace("|", "\\|")
    run = longest = 0
    for ch in body:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def details(summary: str, body: list[str]) -> list[str]:
    """A collapsed block (GitHub renders markdown inside it after a blank line)."""
    return ["", f"<details><summary>{html_text(summary)}</summary>", "", *body, "", "</details>"]


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
    TermKey.HOLDOUT,
    TermKey.DISAGREEMENT,
    TermKey.PAC_BAYES_POOL,
    TermKey.PAC_BAYES_DETERMINISTIC,
    TermKey.CERTIFIED,
    TermKey.FINETUNED,
    TermKey.PAC_BAYES_GIBBS,
    TermKey.STOCHASTIC_HEAD_GIBBS,
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


def headline_lines(report: dict[str, Any]) -> list[str]:
    """What a reader needs first: the headline certificate (its value, route and probability),
    then the observed test error and the test-set bound."""
    lines = []
    bounds, terms = report["bounds"], report["terms"]
    lead = bounds.get(TermKey.BEST) or next(iter(ordered_bounds(report)), None)
    if lead is not None:
        line = f"{lead['key']} = {fmt(lead['value'])}"
        chosen = lead.get("details", {}).get("chosen")
        if chosen:
            line += f" from {chosen}"
        if lead.get("confidence") is not None:
            line += f", holds with probability >= {fmt(lead['confidence'])}"
        if lead["value"] >= 1:
            line += " (vacuous)"
        lines.append(line)
    held = []
    observed = terms.get(TermKey.OBSERVED_TEST_ERROR)
    if observed is not None:
        m = report.get("data", {}).get("downstream_test", {}).get("m_test")
        on = f" on {m} test examples" if m is not None else ""
        held.append(f"observed test error {fmt(observed['value'])}{on}")
    test_bound = terms.get(TermKey.TEST_SET_BOUND)
    if test_bound is not None:
        conf = test_bound.get("confidence")
        prob = f" (probability >= {fmt(conf)})" if conf is not None else ""
        held.append(f"test-set bound {fmt(test_bound['value'])}{prob}")
    if held:
        lines.append("; ".join(held))
    return lines


def term_note(term: dict[str, Any], report: dict[str, Any]) -> str | None:
    """A short explanation for a term whose meaning its key and value do not make obvious."""
    key, details = term["key"], term.get("details", {})
    if key == TermKey.STOCHASTIC_HEAD_GIBBS:
        return "bounds the Gibbs error of tfbound's stochastic head (another predictor), not yours"
    if key == TermKey.OBSERVED_STOCHASTIC_HEAD_GIBBS:
        return "tfbound's stochastic head on the test split (its Gibbs error)"
    if term.get("role") in (Role.HEADLINE, Role.CERTIFICATE):
        if term["quantity"] != "downstream_test_error":
            return f"bounds the {term['quantity'].replace('_', ' ')}, not your head's error"
        return None
    if key == TermKey.DOWNSTREAM_EMPIRICAL_RISK:
        rho = report["bounds"].get(TermKey.CERTIFIED, {}).get("details", {}).get("rho_k_star")
        at = f" = {fmt(rho)}" if rho is not None else ""
        return (
            f"ramp loss of the head rescaled to the chosen margin rho_k*{at} "
            "(not the training error)"
        )
    if key == TermKey.CAPACITY_RATIO:
        q = details.get("margin_quantile")
        of = f"{100 * q:g}% quantile" if isinstance(q, float) else "quantile"
        return f"rirc_head over the {of} of the training margins (scale-free)"
    if key == TermKey.PRETEXT_GENERALIZATION_GAP:
        return "held-out minus training pretext loss"
    return None


#: The groups of terms under the certificates, in reading order: (title, role, statuses or None).
GROUPS: tuple[tuple[str, Role, tuple[str, ...] | None], ...] = (
    ("held out (the test split)", Role.HELDOUT, None),
    ("pre-training task", Role.PRETEXT, None),
    ("capacity", Role.CAPACITY, ("certified", "estimated", "assumed", "diagnostic")),
    ("proxies (not bounds: for comparing models)", Role.CAPACITY, ("proxy",)),
    ("diagnostics (tightness: a certificate over the test-set bound)", Role.DIAGNOSTIC, None),
    ("transfer", Role.TRANSFER, None),
    ("heterogeneity of the pre-training and downstream data", Role.HETEROGENEITY, None),
)

DECOMPOSITION_TITLE = (
    "excess-risk decomposition (bound-spec 6.2): a different quantity, never compared with the "
    "test-error certificates"
)


@dataclass(frozen=True)
class TermGroup:
    """A titled group of terms; ``total`` is the certificate the terms sum to, if they do."""

    title: str
    terms: list[dict[str, Any]]
    total: dict[str, Any] | None = None


def term_groups(report: dict[str, Any]) -> list[TermGroup]:
    """Every term once, in reading order (the one grouping of the table and the markdown): each
    certificate's components, then the groups of ``GROUPS`` by role (and status), any other
    term, and the excess-risk decomposition last (another quantity)."""
    terms: dict[str, dict[str, Any]] = report["terms"]
    out: list[TermGroup] = []
    shown: set[str] = set()
    for total in ordered_bounds(report):
        components = [terms[k] for k in total.get("components", []) if k in terms]
        if components:
            out.append(TermGroup(f"{total['key']} = {fmt(total['value'])}", components, total))
            shown.update(t["key"] for t in components)
    for title, role, statuses in GROUPS:
        group = [
            terms[k]
            for k in sorted(terms)
            if k not in shown
            and terms[k].get("role") == role
            and (statuses is None or terms[k]["status"] in statuses)
        ]
        if group:
            out.append(TermGroup(title, group))
            shown.update(t["key"] for t in group)
    decomposition = excess_risk_terms(report)
    shown.update(t["key"] for t in decomposition)
    rest = [terms[k] for k in sorted(terms) if k not in shown]
    if rest:
        out.append(TermGroup("other terms", rest))
    if decomposition:
        out.append(TermGroup(DECOMPOSITION_TITLE, decomposition))
    return out
