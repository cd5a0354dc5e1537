"""Pictures of reports (matplotlib, an optional extra: ``pip install 'tfbound[plot]'``).

Left panel: the certified bound of each report as a stacked bar of its certified components,
and beside it, hatched and unfilled, the other numbers about the downstream test error that are
*not* in the bound (the held-out ``test_set_bound``, ``observed_test_error``, other
certificates). Right panel: every other number (capacity, pretext risks, ratios), one hatched bar
per report, coloured by status, on a log axis: shown to explain, never summed.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfbound.errors import InputError

FORMATS = ("png", "svg", "pdf")
PRIMARY = "certified_test_error_bound"
ERROR_QUANTITY = "downstream_test_error"

_COMPONENT_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#8172B3", "#937860", "#DA8BC3"]
_SIDE_COLORS = ["#C44E52", "#333333", "#8C8C8C", "#64B5CD", "#CCB974"]
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


def _layout(reports: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """What goes where: the stacked components, the side bars, the other terms (stable order)."""
    components: list[str] = []
    side: list[str] = []
    other: list[str] = []
    for _, rep in reports:
        bound = _primary(rep)
        parts = list(bound.get("components", [])) if bound else []
        components += [k for k in parts if k not in components]
        for key, term in sorted(_all_terms(rep).items()):
            if bound is not None and (key == bound["key"] or key in parts):
                continue
            if term.get("quantity") == ERROR_QUANTITY:
                if key not in side:
                    side.append(key)
            elif key not in other:
                other.append(key)
    # the held-out checks first, in reading order
    preferred = ["test_set_bound", "observed_test_error"]
    side = [k for k in preferred if k in side] + [k for k in side if k not in preferred]
    return {"components": components, "side": side, "other": other}


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
    width_left = 2.2 + 1.6 * n
    width_right = 6.5 if n_other else 0.0
    height = max(4.8, 1.2 + 0.32 * n_other * max(1, n) ** 0.5 + 1.2)
    fig = plt.figure(figsize=(width_left + width_right, height), dpi=110)
    grid = fig.add_gridspec(
        1,
        2 if n_other else 1,
        width_ratios=[width_left, width_right] if n_other else [1],
        wspace=0.55,
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
    _write_bytes_atomic(target, buf.getvalue())


def _draw_bound_panel(
    ax: Any,
    reports: Sequence[tuple[str, dict[str, Any]]],
    lay: dict[str, Any],
    patch: Any,
    line2d: Any,
) -> None:
    comps: list[str] = lay["components"]
    side: list[str] = lay["side"]
    bar_w = 0.5
    side_w = 0.42 / max(1, len(side)) if side else 0.0
    top = max(
        [1.05]
        + [
            float(t["value"])
            for _, rep in reports
            for k, t in _all_terms(rep).items()
            if t.get("quantity") == ERROR_QUANTITY and isinstance(t.get("value"), int | float)
        ]
    )
    visible = 0.04 * top  # a segment thinner than this gets its value under the bar's name
    thin_notes: list[list[str]] = []
    for i, (_, rep) in enumerate(reports):
        terms = _all_terms(rep)
        bound = _primary(rep)
        thin_notes.append([])
        if bound is None:
            ax.text(
                i,
                0.02,
                "no certified\nbound",
                ha="center",
                va="bottom",
                fontsize=8,
                color="#888888",
            )
        else:
            bottom = 0.0
            for j, key in enumerate(comps):
                value = terms.get(key, {}).get("value")
                if key not in bound.get("components", []) or value is None or value <= 0:
                    continue
                ax.bar(
                    i,
                    value,
                    bar_w,
                    bottom=bottom,
                    color=_COMPONENT_COLORS[j % 6],
                    edgecolor="white",
                    linewidth=0.8,
                )
                if value >= visible:
                    ax.text(
                        i,
                        bottom + value / 2,
                        _fmt(value),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white",
                    )
                else:
                    thin_notes[i].append(f"{key} = {_fmt(value)}")
                bottom += value
            total = bound.get("value")
            if total is not None:
                ax.text(
                    i, total, _fmt(total), ha="center", va="bottom", fontsize=9, fontweight="bold"
                )
        for j, key in enumerate(side):
            value = terms.get(key, {}).get("value")
            if value is None:
                continue
            x = i + bar_w / 2 + side_w * (j + 0.5) + 0.02
            ax.bar(
                x,
                value,
                side_w * 0.9,
                facecolor="none",
                edgecolor=_SIDE_COLORS[j % len(_SIDE_COLORS)],
                hatch="///",
                linewidth=1.0,
            )
            ax.text(
                x,
                value,
                _fmt(value),
                ha="center",
                va="bottom",
                fontsize=7,
                color=_SIDE_COLORS[j % len(_SIDE_COLORS)],
                rotation=90,
            )
    ax.axhline(1.0, color="#C44E52", linestyle=":", linewidth=1)
    ax.set_ylim(0, top * 1.15)
    ax.set_xlim(-0.6, len(reports) - 0.4 + (0.45 if side else 0))
    ax.set_xticks(range(len(reports)))
    many = len(reports) > 3
    ax.set_xticklabels(
        [label for label, _ in reports],
        rotation=20 if many else 0,
        ha="right" if many else "center",
        fontsize=9,
    )
    below = -0.13 if many else -0.07
    for i, notes in enumerate(thin_notes):
        if notes:
            ax.text(
                i,
                below,
                "\n".join(notes),
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=7,
                color="#555555",
            )
    any_thin = any(thin_notes)
    ax.set_ylabel("downstream test error")
    ax.set_title(
        "certified bound: its terms stacked\nhatched: held-out checks, not in the bound",
        fontsize=9,
        loc="left",
    )
    ax.spines[["top", "right"]].set_visible(False)
    handles = [patch(color=_COMPONENT_COLORS[j % 6], label=k) for j, k in enumerate(comps)]
    handles += [
        patch(
            facecolor="none",
            edgecolor=_SIDE_COLORS[j % len(_SIDE_COLORS)],
            hatch="///",
            label=f"{k} (not in the bound)",
        )
        for j, k in enumerate(side)
    ]
    handles.append(
        line2d([], [], color="#C44E52", linestyle=":", label="1: a bound at or above it is vacuous")
    )
    ax.legend(
        handles=handles,
        title="(values under a name: terms too thin to see)" if any_thin else None,
        title_fontsize=7,
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, (-0.2 if many else -0.12) - (0.03 * max(map(len, thin_notes)))),
        ncol=2,
        frameon=False,
    )


def _draw_other_panel(
    ax: Any, reports: Sequence[tuple[str, dict[str, Any]]], keys: list[str], patch: Any
) -> None:
    n = len(reports)
    height = 0.8 / n
    values: list[float] = []
    statuses: set[str] = set()
    hatches = ["///", "\\\\\\", "xxx", "...", "ooo", "---"]
    for r, (_, rep) in enumerate(reports):
        terms = _all_terms(rep)
        for k, key in enumerate(keys):
            term = terms.get(key)
            y = k + (r - (n - 1) / 2) * height
            if term is None or term.get("value") is None:
                ax.text(
                    0,
                    y,
                    " n/a",
                    va="center",
                    fontsize=7,
                    color="#888888",
                    transform=ax.get_yaxis_transform(),
                )
                continue
            value = float(term["value"])
            status = str(term.get("status", "diagnostic"))
            statuses.add(status)
            values.append(value)
            ax.barh(
                y,
                value,
                height * 0.9,
                facecolor="none",
                edgecolor=_STATUS_COLORS.get(status, "#888888"),
                hatch=hatches[r % len(hatches)] if n > 1 else "///",
                linewidth=1.0,
            )
            ax.text(
                value,
                y,
                f" {_fmt(value)}",
                va="center",
                fontsize=7,
                ha="left" if value >= 0 else "right",
            )
    positive = [v for v in values if v > 0]
    if values and all(v > 0 for v in values):
        ax.set_xscale("log")
        lo, hi = min(positive), max(positive)
        ax.set_xlim(lo / 3, hi * 12)
    elif values:
        tiny = min((abs(v) for v in values if v != 0), default=1e-3)
        ax.set_xscale("symlog", linthresh=max(tiny, 1e-6))
        ax.axvline(0, color="#444444", linewidth=0.8)
        span = max(abs(v) for v in values) or 1.0
        ax.set_xlim(-span * 12 if min(values) < 0 else 0, span * 12)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(keys, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(
        "outside the bound: never summed\n(log scale; colour: status)", fontsize=9, loc="left"
    )
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
            )
            for r, (label, _) in enumerate(reports)
        ]
    ax.legend(
        handles=handles,
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1),
        ncol=3,
        frameon=False,
    )


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """Complete or absent, as ``tfbound.io.atomic.write_text_atomic`` for text."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError("cannot write: the folder does not exist", path=path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
