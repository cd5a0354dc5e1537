"""Pictures of reports (matplotlib, an optional extra: ``pip install 'tfbound[plot]'``).

Left panel: ``certified_test_error_bound`` of each report as a stacked bar of its certified
components, and beside it, each on its own and never on top of it, the other numbers about the
downstream test error: other certificates (filled outlines; the smallest, ``best_*``, as a dashed
line) and held-out checks and diagnostics (hatched). Right panel: every other number (capacity,
pretext risks, ratios), one hatched bar per report, coloured by status, on a log axis: shown to
explain, never summed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfbound.errors import InputError
from tfbound.io.atomic import write_bytes_atomic
from tfbound.keys import Role, TermKey

FORMATS = ("png", "svg", "pdf")
PRIMARY = TermKey.CERTIFIED.value
ERROR_QUANTITY = "downstream_test_error"

_COMPONENT_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#8172B3", "#937860", "#DA8BC3"]
_SIDE_COLORS = ["#C44E52", "#333333", "#8C8C8C", "#937860"]
_CERT_COLORS = ["#64B5CD", "#CCB974", "#8172B3", "#DA8BC3"]
_STATUS_COLORS = {
    "certified": "#55A868",
    "estimated": "#4C72B0",
    "assumed": "#CCB974",
    "proxy": "#8172B3",
    "diagnostic": "#8C8C8C",
}


def require_matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError(
            "tfbound plot needs matplotlib: install tfbound[plot] (pip install 'tfbound[plot]')"
        ) from exc
    return plt


def default_labels(paths: Sequence[Path]) -> list[str]:
    """File stems, or parent/stem where stems repeat."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]


def _primary(report: dict[str, Any]) -> dict[str, Any] | None:
    bounds: dict[str, Any] = report.get("bounds", {})
    if PRIMARY in bounds:
        found: dict[str, Any] = bounds[PRIMARY]
        return found
    certified = [b for b in bounds.values() if b.get("status") == "certified"]
    return certified[0] if certified else None


def _all_terms(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {**report.get("terms", {}), **report.get("bounds", {})}


def _layout(reports: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, list[str]]:
    """What goes where (stable order over all reports).

    ``components``: the primary bound's terms, stacked. Beside the stack, each on its own:
    ``certs``, the other certified bounds of the downstream test error (outlined), and
    ``checks``, the other numbers about it (held-out checks, diagnostics; hatched). ``best``:
    ``best_*`` bounds, the smallest certificate, drawn as a line (it repeats one of ``certs``).
    ``other``: every remaining number, for the second panel.
    """
    out: dict[str, list[str]] = {k: [] for k in ("components", "certs", "checks", "best", "other")}

    def add(group: str, key: str) -> None:
        if key not in out[group]:
            out[group].append(key)

    primaries = set()
    for _, rep in reports:  # components over all reports first: stacked, never beside
        bound = _primary(rep)
        if bound is not None:
            primaries.add(bound["key"])
            for key in bound.get("components", []):
                add("components", key)
    for _, rep in reports:
        bounds = rep.get("bounds", {})
        for key, term in sorted(_all_terms(rep).items()):
            if key in primaries or key in out["components"]:
                continue
            if term.get("quantity") != ERROR_QUANTITY:
                add("other", key)
            elif key in bounds and bounds[key].get("role") == Role.HEADLINE:
                add("best", key)
            elif key in bounds and term.get("status") == "certified":
                add("certs", key)
            else:
                add("checks", key)
    preferred = [
        TermKey.TEST_SET_BOUND.value,
        TermKey.OBSERVED_TEST_ERROR.value,
    ]  # the held-out checks first
    checks = out["checks"]
    out["checks"] = [k for k in preferred if k in checks] + [
        k for k in checks if k not in preferred
    ]
    return out


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def plot_reports(
    reports: Sequence[tuple[str, dict[str, Any]]], path: str | Path, title: str | None = None
) -> None:
    """Draw ``[(label, report_dict), ...]`` into ``path`` (written to a temporary file, renamed)."""
    for label, rep in reports:
        if not rep.get("terms") and not rep.get("bounds"):
            raise InputError(f"{label}: the report has no terms to draw (an inspect report?)")
    plt = require_matplotlib()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InputError(f"cannot draw a {target.suffix or 'suffix-less'} file", path=target)
    lay = _layout(reports)
    n = len(reports)
    n_other = len(lay["other"])
    width_left = 1.8 + 1.5 * n * (group_width(lay) + 0.45)
    width_right = 6.5 if n_other else 0.0
    height = max(4.8, 2.4 + 0.2 * n_other * max(1, n) ** 0.75)
    fig = plt.figure(figsize=(width_left + width_right, height), dpi=110)
    grid = fig.add_gridspec(
        1,
        2 if n_other else 1,
        width_ratios=[width_left, width_right] if n_other else [1],
        wspace=3.3 / ((width_left + width_right) / 2),  # about 3.3 inches between panels
        top=1 - 0.75 / height,
    )
    ax = fig.add_subplot(grid[0, 0])
    _draw_bound_panel(ax, reports, lay, Patch, Line2D)
    if n_other:
        ax2 = fig.add_subplot(grid[0, 1])
        _draw_other_panel(ax2, reports, lay["other"], Patch)
    versions = sorted({str(r.get("tfbound_version", "?")) for _, r in reports})
    fig.suptitle(
        title or "tfbound: the certified bound term by term", fontsize=13, x=0.02, ha="left"
    )
    fig.text(
        0.99,
        0.01,
        f"tfbound {', '.join(versions)}",
        ha="right",
        va="bottom",
        fontsize=7,
        color="#888888",
    )
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(target, buf.getvalue())


BAR_W = 0.5  # the stacked bar
SIDE_W = 0.16  # each bar beside it
GAP = 0.05


def group_width(lay: dict[str, list[str]]) -> float:
    return BAR_W + GAP + SIDE_W * (len(lay["certs"]) + len(lay["checks"]))


def _draw_bound_panel(
    ax: Any,
    reports: Sequence[tuple[str, dict[str, Any]]],
    lay: dict[str, list[str]],
    patch: Any,
    line2d: Any,
) -> None:
    comps, certs, checks, best = lay["components"], lay["certs"], lay["checks"], lay["best"]
    side = [*certs, *checks]
    colors = {k: _SIDE_COLORS[j % len(_SIDE_COLORS)] for j, k in enumerate(checks)}
    colors.update({k: _CERT_COLORS[j % len(_CERT_COLORS)] for j, k in enumerate(certs)})
    spacing = group_width(lay) + 0.45
    top = max(
        [1.05]
        + [
            float(t["value"])
            for _, rep in reports
            for t in _all_terms(rep).values()
            if t.get("quantity") == ERROR_QUANTITY and isinstance(t.get("value"), int | float)
        ]
    )
    visible = 0.04 * top  # a segment thinner than this gets its value under the bar's name
    thin_notes: list[list[str]] = []
    centers: list[float] = []
    for i, (_, rep) in enumerate(reports):
        x0 = i * spacing
        centers.append(x0 + (group_width(lay) - BAR_W) / 2)
        terms = _all_terms(rep)
        bound = _primary(rep)
        thin_notes.append([])
        if bound is None:
            ax.text(x0, 0.02, "no certified\nbound", ha="center", va="bottom", fontsize=8,
                    color="#888888")  # fmt: skip
        else:
            bottom = 0.0
            for j, key in enumerate(comps):
                value = terms.get(key, {}).get("value")
                if key not in bound.get("components", []) or value is None or value <= 0:
                    continue
                ax.bar(x0, value, BAR_W, bottom=bottom, color=_COMPONENT_COLORS[j % 6],
                       edgecolor="white", linewidth=0.8)  # fmt: skip
                if value >= visible:
                    ax.text(x0, bottom + value / 2, _fmt(value), ha="center", va="center",
                            fontsize=8, color="white")  # fmt: skip
                else:
                    thin_notes[i].append(f"{key} = {_fmt(value)}")
                bottom += value
            total = bound.get("value")
            if total is not None:
                ax.text(x0, total, _fmt(total), ha="center", va="bottom", fontsize=9,
                        fontweight="bold")  # fmt: skip
        for j, key in enumerate(side):
            value = terms.get(key, {}).get("value")
            if value is None:
                continue
            x = x0 + BAR_W / 2 + GAP + SIDE_W * (j + 0.5)
            if key in certs:
                ax.bar(x, value, SIDE_W * 0.85, facecolor=colors[key], alpha=0.35,
                       edgecolor=colors[key], linewidth=1.2)  # fmt: skip
                ax.bar(x, value, SIDE_W * 0.85, facecolor="none", edgecolor=colors[key],
                       linewidth=1.2)  # fmt: skip
            else:
                ax.bar(x, value, SIDE_W * 0.85, facecolor="none", edgecolor=colors[key],
                       hatch="///", linewidth=1.0)  # fmt: skip
            ax.text(x, value + 0.01 * top, _fmt(value), ha="center", va="bottom", fontsize=7,
                    color=colors[key], rotation=90)  # fmt: skip
        for key in best:
            value = terms.get(key, {}).get("value")
            if value is not None:
                end = x0 + group_width(lay) - BAR_W / 2
                ax.hlines(value, x0 + BAR_W / 2, end, colors="#222222", linestyles="--",
                          linewidth=1.0)  # fmt: skip
                ax.text(end, value, " best", ha="left", va="center", fontsize=7)
    ax.axhline(1.0, color="#C44E52", linestyle=":", linewidth=1)
    ax.set_ylim(0, top * 1.15)
    ax.set_xlim(-BAR_W / 2 - 0.3, (len(reports) - 1) * spacing + group_width(lay) - BAR_W / 2 + 0.3)
    ax.set_xticks(centers)
    many = len(reports) > 3
    ax.set_xticklabels([label for label, _ in reports], rotation=20 if many else 0,
                       ha="right" if many else "center", fontsize=9)  # fmt: skip
    below = -0.13 if many else -0.07
    for i, notes in enumerate(thin_notes):
        if notes:
            ax.text(centers[i], below, "\n".join(notes), transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=7, color="#555555")  # fmt: skip
    ax.set_ylabel("downstream test error")
    ax.set_title(
        "the margin bound's terms, stacked; beside it, each on its own:\n"
        "other certificates (filled outline), held-out checks (hatched)",
        fontsize=9,
        loc="left",
    )
    ax.spines[["top", "right"]].set_visible(False)
    handles = [patch(color=_COMPONENT_COLORS[j % 6], label=k) for j, k in enumerate(comps)]
    handles += [patch(facecolor=colors[k], alpha=0.5, edgecolor=colors[k], label=k) for k in certs]
    handles += [patch(facecolor="none", edgecolor=colors[k], hatch="///", label=k) for k in checks]
    handles += [line2d([], [], color="#222222", linestyle="--", label=k) for k in best]
    handles.append(line2d([], [], color="#C44E52", linestyle=":", label="1: vacuous at or above"))
    rows = max((len(n) for n in thin_notes), default=0)
    ax.legend(
        handles=handles,
        title="(values under a name: terms too thin to see)" if rows else None,
        title_fontsize=7,
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, (-0.2 if many else -0.12) - 0.03 * rows),
        ncol=2,
        frameon=False,
    )


def _draw_other_panel(
    ax: Any, reports: Sequence[tuple[str, dict[str, Any]]], keys: list[str], patch: Any
) -> None:
    """Horizontal bars of |value| on a log axis (numbers here span decades); a negative value is
    drawn dashed and labelled with its sign, zero and null are written, not drawn."""
    n = len(reports)
    height = 0.8 / n
    magnitudes: list[float] = []
    statuses: set[str] = set()
    negative = False
    hatches = ["///", "\\\\\\", "xxx", "...", "ooo", "---"]
    for r, (_, rep) in enumerate(reports):
        terms = _all_terms(rep)
        for k, key in enumerate(keys):
            term = terms.get(key)
            y = k + (r - (n - 1) / 2) * height
            value = None if term is None else term.get("value")
            if value is None or value == 0:
                text = " n/a" if value is None else " 0"
                ax.text(0, y, text, va="center", fontsize=7, color="#888888",
                        transform=ax.get_yaxis_transform())  # fmt: skip
                continue
            value = float(value)
            status = str(term.get("status", "diagnostic")) if term else "diagnostic"
            statuses.add(status)
            magnitudes.append(abs(value))
            negative = negative or value < 0
            ax.barh(y, abs(value), height * 0.9, facecolor="none",
                    edgecolor=_STATUS_COLORS.get(status, "#888888"),
                    hatch=hatches[r % len(hatches)] if n > 1 else "///", linewidth=1.0,
                    linestyle="--" if value < 0 else "-")  # fmt: skip
            ax.text(abs(value), y, f" {_fmt(value)}", va="center", fontsize=7,
                    color="#C44E52" if value < 0 else "black")  # fmt: skip
    if magnitudes:
        ax.set_xscale("log")
        ax.set_xlim(min(magnitudes) / 3, max(magnitudes) * 12)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(keys, fontsize=8)
    ax.set_ylim(len(keys) - 0.5, -0.5)
    scale = "log scale of |value|, negative dashed" if negative else "log scale"
    ax.set_title(f"outside the bound: never summed\n({scale}; colour: status)", fontsize=9,
                 loc="left")  # fmt: skip
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    handles = [
        patch(facecolor="none", edgecolor=_STATUS_COLORS[s], hatch="///", label=s)
        for s in _STATUS_COLORS
        if s in statuses
    ]
    if n > 1:
        handles += [
            patch(
                facecolor="none", edgecolor="#444444", hatch=hatches[r % len(hatches)], label=label
            )  # fmt: skip
            for r, (label, _) in enumerate(reports)
        ]
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1),
              ncol=3, frameon=False)  # fmt: skip
