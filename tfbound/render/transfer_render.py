"""Printers of a transfer report (its JSON form in, text or a picture out; nothing computed).

``transfer_table`` (rich) and ``transfer_markdown``; the picture is ``transfer_plot.plot_transfer``
(matplotlib, optional), re-exported here.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from tfbound.render.layout import Column, FitTable
from tfbound.render.text import fmt, fmt_interval, md_cell, md_code
from tfbound.render.transfer_plot import plot_transfer, require_matplotlib

#: beta values shown from the envelope grid in the table and the markdown.
ENVELOPE_SHOWN = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
HETEROGENEITY_KEYS = (
    "tv_lower_bound_inputs",
    "tv_lower_bound_features",
    "mmd2_unbiased_inputs",
    "mmd2_unbiased_features",
    "transformation_gap_pretrain",
    "transformation_gap_downstream",
)


def _excess(e: dict[str, Any]) -> tuple[str, str]:
    iv = e.get("interval")
    return fmt(e.get("value")), "" if iv is None else f"[{fmt(iv[0])}, {fmt(iv[1])}]"


def plus_minus(e: dict[str, Any]) -> str:
    """``value +- half-width`` of a symmetric interval, the half-width to 2 significant digits."""
    value, iv = e.get("value"), e.get("interval")
    if value is None:
        return "n/a"
    if iv is None or iv[1] == iv[0]:
        return fmt(value)
    half = (iv[1] - iv[0]) / 2.0
    digits = max(0, 1 - math.floor(math.log10(abs(half))))
    return f"{value:.{digits}f} ± {half:.{digits}f}"


def _member_where(m: dict[str, Any]) -> str:
    if m.get("kind") == "perturbation":
        return f"scale {fmt(m.get('scale'))}"
    if m.get("epoch") is not None:
        return f"epoch {m['epoch']}"
    return ""


def _status(m: dict[str, Any]) -> str:
    if m.get("reference"):
        return "reference"
    if m.get("used_in_fit"):
        return "used"
    return f"left out ({m.get('left_out')})"


_SHORT_STATUS = {"not positive": "<= 0", "inside the noise floor": "noise"}


def _short_status(m: dict[str, Any]) -> str:
    if m.get("reference"):
        return "ref"
    if m.get("used_in_fit"):
        return "used"
    return _SHORT_STATUS.get(str(m.get("left_out")), str(m.get("left_out")))


def _g(v: Any) -> str:
    return "n/a" if v is None else f"{v:g}"


def ordered_transfer_terms(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Transfer terms first (in the report's order of computation), then heterogeneity."""
    terms: dict[str, dict[str, Any]] = report.get("terms", {})
    first = [
        "transfer_beta",
        "transfer_c",
        "transfer_c_envelope",
        "transfer_e_u_base",
        "transfer_e_t_base",
        "transfer_term_base",
        "tv_upper_assumed",
        *HETEROGENEITY_KEYS,
    ]
    keys = [k for k in first if k in terms] + sorted(k for k in terms if k not in first)
    return [(k, terms[k]) for k in keys]


def _iv(v: Any) -> str:
    return "" if v is None else f"[{fmt(v[0])}, {fmt(v[1])}]"


def fit_lines(report: dict[str, Any]) -> list[str]:
    """The fit in a few plain lines (shared by the table and the markdown)."""
    f = report["fit"]
    level = _g(f.get("level"))
    boot = f.get("bootstrap", {})
    lines = [
        f"beta = {fmt(f.get('beta'))} {_iv(f.get('beta_interval'))}   "
        f"C = {fmt(f.get('c'))} {_iv(f.get('c_interval'))}   "
        f"(central fit, {level} bootstrap intervals by {boot.get('unit')}, "
        f"{boot.get('n_units')} {boot.get('unit')}s, {boot.get('n_boot_valid')}/"
        f"{boot.get('n_boot')} resamples)",
        f"method: {f.get('method')}",
        f"members used: {f.get('n_used')} of {f.get('n_points')} non-reference; left out: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(f.get("left_out", {}).items()))
        + f" (noise floor: E > z * stderr, z = {_g(f.get('noise_floor_z'))})",
        f"E_U spans {fmt(f.get('e_u_span_decades'))} decades: "
        + ("identifiable" if f.get("identifiable") else "NOT identifiable (< 1 decade)"),
        "beta interval contains 1/2: " + fmt(f.get("beta_interval_contains_half")),
        "sensitivity of beta to the noise-floor rule: "
        + ", ".join(
            f"z={_g(r['noise_floor_z'])}: {fmt(r['beta'])} (n={r['n_used']})"
            for r in f.get("sensitivity", [])
        ),
        f"envelope C({_g(f.get('beta_fixed'))}) = {fmt(f.get('c_envelope'))} at "
        f"'{f.get('envelope_member')}' (over the explored family only; with the left-out "
        f"positive members {fmt(f.get('c_envelope_all_positive'))})",
    ]
    grid = {round(b, 6): c for b, c in f.get("envelope_grid", [])}
    shown = [f"C({b:g}) = {fmt(grid[b])}" for b in ENVELOPE_SHOWN if b in grid]
    if shown:
        lines.append("envelope: " + ", ".join(shown))
    return lines


def transfer_table(report: dict[str, Any]) -> RenderableType:
    """The per-member table, the fit, the envelope, heterogeneity and the warnings."""
    fam = report.get("family", {})
    ref = report.get("reference", {})
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(fam.get("members_by_kind", {}).items()))
    head = Text()
    head.append("tfbound transfer", style="bold")
    head.append(
        f"  {fam.get('n_members')} members ({kinds}), {len(fam.get('runs', []))} runs; "
        f"reference: {ref.get('name')} ({ref.get('chosen_on')})"
    )
    level = _g(report.get("fit", {}).get("level"))
    columns = [
        Column("member"),
        Column("pretext", justify="right"),
        Column("E_U", justify="right"),
        Column("probe", justify="right"),
        Column("E_T", justify="right"),
        Column("fit"),
    ]
    rows: list[list[str | Text]] = [
        [
            Text(m["name"]),
            f"{m['pretext_risk_estimate_part']:.4f}",
            plus_minus(m["e_u"]),
            f"{m['probe_heldout_risk']:.4f}",
            plus_minus(m["e_t"]),
            _short_status(m),
        ]
        for m in report["members"]
    ]
    table = FitTable(
        columns, rows, title=f"members: excess risks vs the reference, +- the {level} interval"
    )
    fit = Text("\n".join(fit_lines(report)))
    parts: list[RenderableType] = [head, Text(""), table, Text(""), Text("fit", style="bold"), fit]
    term_rows = []
    for key, term in ordered_transfer_terms(report):
        details = term.get("details", {})
        iv = fmt_interval(term)
        notes = []
        if details.get("p_value") is not None:
            notes.append(f"permutation p = {fmt(details['p_value'])}")
        if "balanced_accuracy" in details:
            notes.append(
                f"balanced accuracy {fmt(details['balanced_accuracy'])} "
                f"(LCB {fmt(details['balanced_accuracy_lcb'])}, m = "
                f"{details['m_pretrain']}/{details['m_downstream']})"
            )
        if term.get("confidence") is not None:
            notes.append(f"level {_g(term['confidence'])}")
        if key.startswith("transformation_gap") and "relative" in details:
            notes.append(f"{fmt(details['relative'])} of the mean feature norm")
        term_rows.append(
            [
                key,
                fmt(term["value"]) + (f"\n{iv}" if iv else ""),
                term["status"],
                "; ".join(notes),
            ]
        )
    tt = FitTable(
        [
            Column("key"),
            Column("value", justify="right"),
            Column("status"),
            Column("note", wrap=True),
        ],
        term_rows,
        title="transfer and heterogeneity terms",
    )
    parts += [Text(""), tt]
    for w in report.get("warnings", []):
        parts.append(Text(f"warning: {w}", style="yellow"))
    return Group(*parts)


def transfer_markdown(report: dict[str, Any]) -> str:
    fam = report.get("family", {})
    ref = report.get("reference", {})
    f = report.get("fit", {})
    lines = [
        "## tfbound transfer",
        "",
        f"**beta = {fmt(f.get('beta'))} {_iv(f.get('beta_interval'))}, "
        f"C = {fmt(f.get('c'))}; envelope C({_g(f.get('beta_fixed'))}) = "
        f"{fmt(f.get('c_envelope'))}** (over the explored family only)",
        "",
        f"Family: {fam.get('n_members')} members, runs: {', '.join(fam.get('runs', []))}. "
        f"Reference: {md_code(ref.get('name'))} ({md_cell(ref.get('chosen_on'))}).",
        "",
        "| member | run | where | pretext risk | E_U | E_U interval | probe risk | E_T | "
        "E_T interval | in fit |",
        "|---|---|---|---:|---:|---|---:|---:|---|---|",
    ]
    for m in report["members"]:
        eu, eu_iv = _excess(m["e_u"])
        et, et_iv = _excess(m["e_t"])
        lines.append(
            f"| {md_code(m['name'], in_table=True)} | {md_cell(m['run'])} | {_member_where(m)} | "
            f"{fmt(m['pretext_risk_estimate_part'])} | {eu} | {eu_iv} | "
            f"{fmt(m['probe_heldout_risk'])} | {et} | {et_iv} | {_status(m)} |"
        )
    lines += ["", "### Fit", ""]
    lines += [f"- {md_cell(line)}" for line in fit_lines(report)]
    lines += ["", "### Terms", "", "| key | value | interval | status | formula |"]
    lines.append("|---|---:|---|---|---|")
    for key, term in ordered_transfer_terms(report):
        p = term.get("details", {}).get("p_value")
        value = fmt(term["value"]) + (f" (p = {fmt(p)})" if p is not None else "")
        lines.append(
            f"| `{key}` | {value} | {fmt_interval(term)} | {term['status']} | "
            f"{md_code(term['formula'], in_table=True)} |"
        )
    lines.append("")
    lines += [f"> warning: {md_cell(w)}" for w in report.get("warnings", [])]
    return "\n".join(lines) + "\n"


__all__ = [
    "fit_lines",
    "plot_transfer",
    "require_matplotlib",
    "transfer_markdown",
    "transfer_table",
]
