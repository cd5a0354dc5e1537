"""``tfbound plot``: pictures of estimate reports (matplotlib, an optional extra).

Colour means the term's role (``tfbound.keys.Role``) and nothing else; a vacuous certificate
(>= 1) is drawn muted whatever its role and labelled "vacuous".

Left panel, the downstream test error (one group of bars per report, named after its model): the
headline ``best_certified_test_error_bound`` first, widest and darkest; then each certificate on
its own (the margin bound stacked by its components; never added to another), the test-set bound,
and the observed test error as a line across the group. Right: every other number, in small
panels of commensurable quantities (the Gibbs error, pretext losses, complexities, proxies,
norms, ratios), each with its own axis (log where its values span decades): shown to explain,
never summed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tfbound.errors import InputError
from tfbound.keys import Role, TermKey
from tfbound.render.figures import (
    FORMATS,
    MUTED,
    MUTED_TEXT,
    ROLE_COLORS,
    VACUOUS,
    VACUOUS_AT,
    fmt_value,
    image_format,
    is_vacuous,
    report_labels,
    require_matplotlib,
    save_figure,
    stem_labels,
)

ERROR_QUANTITY = "downstream_test_error"
HEADLINE = TermKey.BEST.value

#: Display names of the bars (the key catalogue's certificates); other keys are shown as keys.
SHORT_NAMES: dict[str, str] = {
    TermKey.BEST: "headline",
    TermKey.CERTIFIED: "margin (RIRC)",
    TermKey.PAC_BAYES_DETERMINISTIC: "PAC-Bayes",
    TermKey.DISAGREEMENT: "disagreement",
    TermKey.PAC_BAYES_POOL: "PAC-Bayes + pool",
    TermKey.HOLDOUT: "hold-out",
    TermKey.FINETUNED: "fine-tuned route",
    TermKey.TEST_SET_BOUND: "test-set bound",
    TermKey.OBSERVED_TEST_ERROR: "observed",
    TermKey.PAC_BAYES_GIBBS: "PAC-Bayes Gibbs",
    TermKey.STOCHASTIC_HEAD_GIBBS: "stochastic head Gibbs",
}
_CERT_ORDER = [
    k.value
    for k in (
        TermKey.CERTIFIED,
        TermKey.PAC_BAYES_DETERMINISTIC,
        TermKey.DISAGREEMENT,
        TermKey.FINETUNED,
    )
]


def default_labels(
    paths: Sequence[Path], reports: Sequence[Mapping[str, Any]] | None = None
) -> list[str]:
    """A name per report, from the report (its model, and the settings that tell two reports of
    one model apart: ``figures.report_labels``); the file stem only where the report names none.
    Without ``reports`` the files are read (as JSON; an unreadable one keeps its stem)."""
    fallback = stem_labels(paths)
    if reports is None:
        import json

        loaded: list[Mapping[str, Any]] = []
        for p in paths:
            try:
                data = json.loads(Path(p).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            loaded.append(data if isinstance(data, dict) else {})
        reports = loaded
    return report_labels(reports, fallback)


def _all_terms(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {**report.get("terms", {}), **report.get("bounds", {})}


def _number(term: Mapping[str, Any] | None) -> float | None:
    value = None if term is None else term.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _role(term: Mapping[str, Any]) -> str:
    return str(term.get("role", Role.DIAGNOSTIC))


def _main_bars(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The bars of each group (stable over all reports): the headline, the certificates of the
    downstream test error, then the test-set bound."""
    certs: list[str] = []
    heldout: list[str] = []
    for _, rep in reports:
        for key, term in _all_terms(rep).items():
            if term.get("quantity") != ERROR_QUANTITY:
                continue
            role = _role(term)
            if role == Role.CERTIFICATE and key not in certs:
                certs.append(key)
            elif role == Role.HELDOUT and key != TermKey.OBSERVED_TEST_ERROR and key not in heldout:
                heldout.append(key)
    order = {k: i for i, k in enumerate(_CERT_ORDER)}
    certs.sort(key=lambda k: (order.get(k, len(order)), k))
    has_headline = any(HEADLINE in _all_terms(rep) for _, rep in reports)
    return ([HEADLINE] if has_headline else []) + certs + sorted(heldout)


def _panel_of(term: Mapping[str, Any]) -> str | None:
    """The side panel a term goes to (commensurable numbers share one); None: the main panel."""
    quantity = str(term.get("quantity", ""))
    if quantity == ERROR_QUANTITY:
        return None
    if term.get("status") == "proxy":
        return "proxies (not bounds)"
    if quantity.startswith("pretext_"):
        return "pretext loss"
    if quantity in ("norm", "feature_norm"):
        return "norms"
    if quantity == "ratio":
        return "ratios"
    if quantity == "gibbs_test_error":
        return "Gibbs test error"
    return quantity.replace("_", " ") or "other"


_PANEL_ORDER = [
    "Gibbs test error",
    "pretext loss",
    "complexity",
    "proxies (not bounds)",
    "norms",
    "ratios",
]


def _side_panels(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, list[str]]:
    panels: dict[str, list[str]] = {}
    for _, rep in reports:
        for key, term in sorted(_all_terms(rep).items()):
            if (name := _panel_of(term)) is not None and key not in panels.setdefault(name, []):
                panels[name].append(key)
    order = {n: i for i, n in enumerate(_PANEL_ORDER)}
    return dict(sorted(panels.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


HEAD_W = 0.5
BAR_W = 0.34
GAP = 0.08
GROUP_GAP = 0.7


def _offsets(bars: list[str]) -> list[float]:
    """The centre of each bar from the group's first."""
    out: list[float] = []
    previous = 0.0
    for j, key in enumerate(bars):
        width = HEAD_W if key == HEADLINE else BAR_W
        out.append(0.0 if j == 0 else out[-1] + previous / 2 + GAP + width / 2)
        previous = width
    return out


SIDE_COLS = 4


def plot_reports(
    reports: Sequence[tuple[str, Mapping[str, Any]]], path: str | Path, title: str | None = None
) -> None:
    """Draw ``[(label, report_dict), ...]`` into ``path`` (.png, .svg or .pdf; written
    atomically)."""
    for label, rep in reports:
        if not rep.get("terms") and not rep.get("bounds"):
            raise InputError(f"{label}: the report has no terms to draw (an inspect report?)")
    image_format(Path(path))
    save_figure(reports_figure(reports, title), path)


def reports_figure(
    reports: Sequence[tuple[str, Mapping[str, Any]]], title: str | None = None
) -> Any:
    """The matplotlib figure of ``plot_reports`` (the caller closes it)."""
    plt = require_matplotlib()
    bars = _main_bars(reports)
    side = [(name, key) for name, keys in _side_panels(reports).items() for key in keys]
    n = len(reports)
    offsets = _offsets(bars)
    group_w = (offsets[-1] if offsets else 0.0) + HEAD_W
    main_w = 1.4 + (group_w + GROUP_GAP) * n * 1.5
    side_rows = math.ceil(len(side) / SIDE_COLS)
    row_h = 0.55 + 0.2 * n
    height = max(6.5, side_rows * row_h + 1.6)
    side_w = 2.3 * SIDE_COLS if side else 0.0
    fig = plt.figure(figsize=(main_w + side_w, height))
    outer = fig.add_gridspec(
        1,
        2 if side else 1,
        width_ratios=[main_w, side_w] if side else [1],
        wspace=0.12,
        left=0.06,
        right=0.99,
        top=1 - 0.75 / height,
        bottom=1.3 / height,
    )
    ax = fig.add_subplot(outer[0, 0])
    _draw_main(ax, reports, bars)
    if side:
        inner = outer[0, 1].subgridspec(side_rows, SIDE_COLS, hspace=1.25, wspace=0.4)
        roles: set[str] = set()
        for i, (name, key) in enumerate(side):
            sub = fig.add_subplot(inner[i // SIDE_COLS, i % SIDE_COLS])
            roles |= _draw_side(sub, name, key, reports, first=i % SIDE_COLS == 0)
        _side_legend(fig, outer[0, 1], roles)
    versions = sorted({str(r.get("tfbound_version", "?")) for _, r in reports})
    fig.suptitle(
        title or "tfbound: certificates of the downstream test error",
        fontsize=13,
        x=0.01,
        y=1 - 0.15 / height,
        ha="left",
        va="top",
    )
    fig.text(
        0.99,
        0.005,
        f"tfbound {', '.join(versions)}",
        ha="right",
        va="bottom",
        fontsize=7,
        color="#888888",
    )
    return fig


def _bar_color(term: Mapping[str, Any]) -> str:
    return MUTED if is_vacuous(term) else ROLE_COLORS.get(_role(term), ROLE_COLORS[Role.DIAGNOSTIC])


def _draw_main(ax: Any, reports: Sequence[tuple[str, Mapping[str, Any]]], bars: list[str]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    values = [
        v
        for _, rep in reports
        for t in _all_terms(rep).values()
        if t.get("quantity") == ERROR_QUANTITY and (v := _number(t)) is not None
    ]
    top = max([VACUOUS_AT * 1.05, *values])
    offsets = _offsets(bars)
    group_w = offsets[-1] + BAR_W / 2 + HEAD_W / 2 if offsets else HEAD_W
    spacing = group_w + GROUP_GAP
    ticks: list[float] = []
    tick_labels: list[str] = []
    centers: list[float] = []
    notes: list[str] = []
    x = 0.0
    for i, (label, rep) in enumerate(reports):
        terms = _all_terms(rep)
        x0 = i * spacing
        centers.append(x0 + group_w / 2 - HEAD_W / 2)
        for key, offset in zip(bars, offsets, strict=True):
            width = HEAD_W if key == HEADLINE else BAR_W
            x = x0 + offset
            ticks.append(x)
            tick_labels.append(SHORT_NAMES.get(key, key))
            term = terms.get(key)
            value = _number(term)
            if term is None or value is None:
                ax.text(
                    x, 0.01 * top, "n/a", ha="center", va="bottom", fontsize=7, color=MUTED_TEXT
                )
                continue
            if key == HEADLINE:
                _draw_headline(ax, x, width, term, value, top)
            elif term.get("components"):
                notes += _draw_stacked(ax, x, width, term, terms, top, label)
            else:
                _draw_bar(ax, x, width, term, value, top)
        observed = _number(terms.get(TermKey.OBSERVED_TEST_ERROR))
        if observed is not None:
            color = ROLE_COLORS[Role.HELDOUT]
            ax.hlines(
                observed,
                x0 - HEAD_W / 2,
                x + BAR_W / 2,
                colors=color,
                linestyles="--",
                linewidth=1.6,
                zorder=4,
            )
            ax.text(
                x + BAR_W / 2 + 0.04,
                observed,
                f"observed\n{fmt_value(observed)}",
                ha="left",
                va="center",
                fontsize=7,
                color=color,
            )
    ax.axhline(VACUOUS_AT, color="#444444", linestyle=":", linewidth=1)
    ax.text(
        1.0,
        VACUOUS_AT,
        " 1",
        transform=ax.get_yaxis_transform(),
        ha="left",
        va="center",
        fontsize=8,
        color="#444444",
    )
    ax.set_ylim(0, top * 1.16)
    ax.set_xlim(-HEAD_W / 2 - 0.25, (len(reports) - 1) * spacing + group_w - HEAD_W / 2 + 0.65)
    ax.set_xticks(ticks)
    ax.set_xticklabels(tick_labels, rotation=90, fontsize=8)
    for c, (label, _) in zip(centers, reports, strict=True):
        ax.annotate(
            label,
            (c, 0),
            xycoords=("data", "axes fraction"),
            xytext=(0, -92),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=11,
            fontweight="bold",
        )
    if notes:
        ax.annotate(
            "\n".join(notes),
            (0, 0),
            xycoords="axes fraction",
            xytext=(0, -165),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=7,
            color="#555555",
        )
    ax.set_ylabel("downstream test error (0-1 loss)")
    ax.set_title("each certificate on its own, never added to another", fontsize=9, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    handles = [
        Patch(
            facecolor=ROLE_COLORS[Role.HEADLINE],
            edgecolor="black",
            linewidth=1.5,
            label="headline: the smallest certificate",
        ),
        Patch(facecolor=ROLE_COLORS[Role.CERTIFICATE], label="certificate"),
        Patch(facecolor=MUTED, label="vacuous certificate (>= 1)"),
        Patch(facecolor=ROLE_COLORS[Role.HELDOUT], label="held-out test-set bound"),
        Line2D(
            [], [], color=ROLE_COLORS[Role.HELDOUT], linestyle="--", label="observed test error"
        ),
        Line2D([], [], color="#444444", linestyle=":", label="1: vacuous at or above"),
    ]
    ax.legend(
        handles=handles,
        fontsize=7,
        loc="upper left",
        frameon=False,
        ncol=3,
        bbox_to_anchor=(0.0, 0.0),
        bbox_transform=_below(ax, 112),
    )


def _below(ax: Any, points: float) -> Any:
    """The axes' transform moved down by ``points``."""
    from matplotlib.transforms import ScaledTranslation

    return ax.transAxes + ScaledTranslation(0, -points / 72, ax.figure.dpi_scale_trans)


def _draw_headline(
    ax: Any, x: float, width: float, term: Mapping[str, Any], value: float, top: float
) -> None:
    vacuous = is_vacuous(term)
    ax.bar(
        x,
        value,
        width,
        color=MUTED if vacuous else ROLE_COLORS[Role.HEADLINE],
        edgecolor="black",
        linewidth=1.8,
        zorder=3,
        gid="headline",
    )
    chosen = (term.get("details") or {}).get("chosen")
    text = fmt_value(value)
    if vacuous:
        text += f"\n{VACUOUS}"
    if chosen:
        text += f"\n= {SHORT_NAMES.get(chosen, chosen)}"
    ax.text(
        x,
        value + 0.015 * top,
        text,
        ha="center",
        va="bottom",
        fontsize=9,
        fontweight="bold",
        color="black",
        zorder=5,
    )


def _draw_bar(
    ax: Any, x: float, width: float, term: Mapping[str, Any], value: float, top: float
) -> None:
    vacuous = is_vacuous(term)
    ax.bar(
        x,
        value,
        width,
        color=_bar_color(term),
        zorder=3,
        hatch="///" if _role(term) == Role.HELDOUT else None,
        edgecolor="white",
    )
    _value_label(ax, x, value, top, vacuous)


def _value_label(ax: Any, x: float, value: float, top: float, vacuous: bool) -> None:
    """A bar's value above it, muted and marked when the certificate is vacuous."""
    ax.text(
        x,
        value + 0.015 * top,
        fmt_value(value) + (f"\n{VACUOUS}" if vacuous else ""),
        ha="center",
        va="bottom",
        fontsize=7,
        color=MUTED_TEXT if vacuous else "black",
        zorder=5,
    )


def _draw_stacked(
    ax: Any,
    x: float,
    width: float,
    term: Mapping[str, Any],
    terms: Mapping[str, Mapping[str, Any]],
    top: float,
    label: str,
) -> list[str]:
    """The bar of a certificate with components, stacked; the components too thin to label are
    returned as notes."""
    vacuous = is_vacuous(term)
    color = _bar_color(term)
    bottom = 0.0
    thin: list[str] = []
    for key in term.get("components", []):
        value = _number(terms.get(key))
        if value is None or value <= 0:
            continue
        ax.bar(
            x, value, width, bottom=bottom, color=color, edgecolor="white", linewidth=1.2, zorder=3
        )
        if value >= 0.18 * top:
            ax.text(
                x,
                bottom + value / 2,
                f"{key}\n{fmt_value(value)}",
                ha="center",
                va="center",
                rotation=90,
                fontsize=6,
                color="#333333",
                zorder=5,
            )
        else:
            thin.append(f"{key} {fmt_value(value)}")
        bottom += value
    total = _number(term)
    if total is not None:
        _value_label(ax, x, total, top, vacuous)
    if not thin:
        return []
    name = SHORT_NAMES.get(str(term.get("key")), str(term.get("key")))
    return [f"{label}: components of {name} too thin to label: {', '.join(thin)}"]


def _draw_side(
    ax: Any,
    group: str,
    key: str,
    reports: Sequence[tuple[str, Mapping[str, Any]]],
    first: bool,
) -> set[str]:
    """One term on its own axis (never beside a number of another scale): one bar per report.
    Returns the roles drawn (for the legend)."""
    roles: set[str] = set()
    values: list[float] = []
    status = ""
    for r, (_, rep) in enumerate(reports):
        term = _all_terms(rep).get(key)
        value = _number(term)
        if term is None or value is None:
            ax.text(
                0.0,
                r,
                " n/a",
                transform=ax.get_yaxis_transform(),
                va="center",
                fontsize=7,
                color=MUTED_TEXT,
            )
            continue
        roles.add(MUTED if is_vacuous(term) else _role(term))
        status = status or str(term.get("status", ""))
        values.append(value)
        vacuous = is_vacuous(term)
        ax.barh(
            r,
            value,
            0.7,
            color=_bar_color(term),
            zorder=3,
            hatch="///" if term.get("status") == "proxy" else None,
            edgecolor="white",
        )
        text = f" {fmt_value(value)}" + (f" {VACUOUS}" if vacuous else "")
        ax.text(
            max(value, 0.0),
            r,
            text,
            va="center",
            fontsize=7,
            color=MUTED_TEXT if vacuous else "black",
            zorder=5,
        )
    lo = min([0.0, *values])
    hi = max([0.0, *values]) or 1.0
    ax.set_xlim(lo * 1.15, hi * 1.6)
    ax.set_ylim(len(reports) - 0.5, -0.5)
    ax.set_yticks(range(len(reports)))
    if first and len(reports) > 1:
        ax.set_yticklabels([label for label, _ in reports], fontsize=7)
    else:
        ax.set_yticklabels([])
        ax.tick_params(axis="y", length=0)
    ax.xaxis.set_major_locator(_locator())
    ax.xaxis.set_major_formatter(_short_formatter())
    ax.tick_params(axis="x", labelsize=6, length=2)
    ax.set_title(
        f"{key}\n{group}" + (f", {status}" if status == "proxy" else ""), fontsize=7, loc="left"
    )
    ax.spines[["top", "right"]].set_visible(False)
    return roles


def _short_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:.3g}")


def _locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=3)


_ROLE_NAMES = {
    MUTED: "vacuous certificate",
    Role.CERTIFICATE: "certificate",
    Role.HELDOUT: "held out",
    Role.PRETEXT: "pretext",
    Role.CAPACITY: "capacity",
    Role.DIAGNOSTIC: "diagnostic",
    Role.DECOMPOSITION: "decomposition",
    Role.TRANSFER: "transfer",
    Role.HETEROGENEITY: "heterogeneity",
}


def _side_legend(fig: Any, spec: Any, roles: set[str]) -> None:
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=MUTED if role == MUTED else ROLE_COLORS[role], label=label)
        for role, label in _ROLE_NAMES.items()
        if role in roles
    ]
    handles.append(Patch(facecolor="white", edgecolor="#555555", hatch="///", label="proxy"))
    box = spec.get_position(fig)
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(box.x0, box.y0 - 0.035),
        ncol=len(handles),
        fontsize=7,
        frameon=False,
        title="outside the certificates, each number on its own axis; colour: its role",
        title_fontsize=8,
        alignment="left",
    )


__all__ = ["FORMATS", "default_labels", "plot_reports", "reports_figure"]
