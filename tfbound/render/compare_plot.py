"""``tfbound compare --plot``: before/after bars of the terms that moved (matplotlib, optional).

One small panel per changed number (a term, a bound or a layer measure of ``compare_reports``),
each with its own axis, so no two incommensurable numbers share a scale. The headline comes first
and its panel is framed; then the certificates, their components, the held-out numbers and the
rest by role, each group by the size of its relative change. Colour means the report (before or
after) and nothing else; a vacuous certificate's bar is drawn muted, hatched and labelled
"vacuous".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tfbound.keys import Role, TermKey
from tfbound.render.figures import (
    MUTED_TEXT,
    VACUOUS,
    fmt_value,
    image_format,
    is_vacuous,
    require_matplotlib,
    save_figure,
)

BEFORE = "#9AA9BD"
AFTER = "#1B4F9C"
COLS = 4
MAX_PANELS = 24
#: Panels by role, the headline first.
ROLE_ORDER = [
    Role.HEADLINE,
    Role.CERTIFICATE,
    Role.COMPONENT,
    Role.HELDOUT,
    Role.PRETEXT,
    Role.CAPACITY,
    Role.DECOMPOSITION,
    Role.TRANSFER,
    Role.HETEROGENEITY,
    Role.DIAGNOSTIC,
]


def _term(report: Mapping[str, Any], section: str, key: str) -> dict[str, Any]:
    terms = report.get(section) if section in ("bounds", "terms") else None
    found = terms.get(key) if isinstance(terms, Mapping) else None
    return dict(found) if isinstance(found, Mapping) else {}


def changed(
    comparison: Mapping[str, Any], base: Mapping[str, Any], cand: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The rows of ``comparison`` (``Comparison.to_dict()``) whose number changed, both sides
    known, each with the role and the two terms; the headline first, then by role and by
    |relative change|."""
    rows: list[dict[str, Any]] = []
    for d in comparison.get("deltas", []):
        b, c = d.get("base"), d.get("cand")
        if d.get("present") != "both" or b is None or c is None or b == c:
            continue
        if not (math.isfinite(b) and math.isfinite(c)):
            continue
        section = str(d.get("section"))
        tb, tc = _term(base, section, d["key"]), _term(cand, section, d["key"])
        role = str(tc.get("role") or tb.get("role") or ("layers" if section == "layers" else ""))
        rows.append({**d, "role": role, "base_term": tb, "cand_term": tc})
    order = {str(r): i for i, r in enumerate(ROLE_ORDER)}

    def rank(row: dict[str, Any]) -> tuple[int, float, str]:
        rel = row.get("relative")
        size = abs(rel) if isinstance(rel, int | float) else math.inf
        return (order.get(row["role"], len(order)), -size, str(row["key"]))

    return sorted(rows, key=rank)


def plot_compare(
    comparison: Mapping[str, Any],
    base: Mapping[str, Any],
    cand: Mapping[str, Any],
    path: str | Path,
    labels: Sequence[str] = ("before", "after"),
    title: str | None = None,
) -> None:
    """Draw the changed numbers of ``comparison`` (``compare_reports(base, cand).to_dict()``)
    into ``path`` (.png, .svg or .pdf; written atomically). ``labels`` name the two reports."""
    image_format(Path(path))
    save_figure(compare_figure(comparison, base, cand, labels, title), path)


def compare_figure(
    comparison: Mapping[str, Any],
    base: Mapping[str, Any],
    cand: Mapping[str, Any],
    labels: Sequence[str] = ("before", "after"),
    title: str | None = None,
) -> Any:
    """The matplotlib figure of ``plot_compare`` (the caller closes it)."""
    plt = require_matplotlib("compare --plot")
    rows = changed(comparison, base, cand)
    shown, hidden = rows[:MAX_PANELS], rows[MAX_PANELS:]
    cols = min(COLS, max(1, len(shown)))
    n_rows = max(1, math.ceil(len(shown) / cols))
    width = 1.2 + 2.9 * cols
    height = 1.1 + 1.45 * n_rows
    fig, axes = plt.subplots(n_rows, cols, figsize=(width, height), squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax, row in zip(axes.flat, shown, strict=False):
        _draw_row(ax, row)
    if not shown:
        axes[0][0].set_visible(True)
        axes[0][0].axis("off")
        axes[0][0].text(
            0.5,
            0.5,
            "no term changed",
            ha="center",
            va="center",
            fontsize=11,
            color=MUTED_TEXT,
            transform=axes[0][0].transAxes,
        )
    heading = title or "tfbound compare: the numbers that moved"
    fig.suptitle(
        f"{heading}   ({len(rows)} changed; each on its own axis)",
        fontsize=12,
        x=0.01,
        y=1 - 0.1 / height,
        ha="left",
        va="top",
    )
    footer = []
    one_side = [d for d in comparison.get("deltas", []) if d.get("present") != "both"]
    if one_side:
        footer.append(f"{len(one_side)} numbers are in one report only (not drawn; see the table)")
    if hidden:
        footer.append(f"and {len(hidden)} more changed numbers (smaller changes; see the table)")
    import textwrap

    for note in comparison.get("notes", []):
        footer += textwrap.wrap(str(note), width=int(width * 17), subsequent_indent="  ")
    from matplotlib.patches import Patch

    fig.legend(
        handles=[
            Patch(color=BEFORE, label=f"before: {labels[0]}"),
            Patch(color=AFTER, label=f"after: {labels[1]}"),
        ],
        loc="upper right",
        bbox_to_anchor=(0.99, 1 - 0.05 / height),
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.35 * len(footer) / height, 1, 1 - 0.45 / height), h_pad=1.4)
    for i, line in enumerate(footer):
        fig.text(
            0.01,
            0.02 + (len(footer) - 1 - i) * 0.3 / height,
            line,
            fontsize=7,
            color="#555555",
            ha="left",
            va="bottom",
        )
    return fig


def _change(rel: float | None) -> str:
    if rel is None:
        return "from 0"
    if abs(rel) >= 10:
        return f"x{1 + rel:.3g}"
    if abs(rel) < 1e-3:
        return f"{rel * 100:+.1e} %"
    return f"{rel:+.2%}"


def _draw_row(ax: Any, row: Mapping[str, Any]) -> None:
    values = [float(row["base"]), float(row["cand"])]
    terms = [row["base_term"], row["cand_term"]]
    colors = [BEFORE, AFTER]
    for i, (value, term, color) in enumerate(zip(values, terms, colors, strict=True)):
        vacuous = is_vacuous(term)
        ax.barh(
            i,
            value,
            0.65,
            color=color,
            alpha=0.35 if vacuous else 1.0,
            hatch="///" if vacuous else None,
            edgecolor=color,
            zorder=3,
        )
        text = f" {fmt_value(value)}" + (f" {VACUOUS}" if vacuous else "")
        ax.text(
            max(value, 0.0),
            i,
            text,
            va="center",
            fontsize=7,
            color=MUTED_TEXT if vacuous else "black",
            zorder=4,
        )
    lo, hi = min([0.0, *values]), max([0.0, *values]) or 1.0
    ax.set_xlim(lo * 1.2, hi * 1.55)
    ax.set_ylim(1.5, -0.5)
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["before", "after"], fontsize=7)
    ax.tick_params(axis="x", labelsize=6, length=2)
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    rel = row.get("relative")
    change = _change(rel)
    role = row["role"] or "?"
    headline = row["key"] == TermKey.BEST
    ax.set_title(
        f"{row['key']}\n{role}, {change}",
        fontsize=8,
        loc="left",
        fontweight="bold" if headline else "normal",
    )
    ax.spines[["top", "right"]].set_visible(False)
    if headline:
        for side in ("left", "bottom", "top", "right"):
            ax.spines[side].set_visible(True)
            ax.spines[side].set_linewidth(2.0)
        ax.set_gid("headline")


__all__ = ["changed", "compare_figure", "plot_compare"]
