"""``tfbound transfer --plot``: E_T against E_U on log-log axes (matplotlib, an optional extra).

The members with both excess risks positive, as points with their standard errors: those used
in the fit in colour, those left out (inside the noise floor) muted; the central fit and the
envelope ``C(beta_fixed) E_U^beta_fixed`` as black lines (solid, dashed), the envelope's member
ringed. Colour means used in the fit or not, and nothing else. Members with an excess risk <= 0
(the reference among them) have no place on a log axis: they are counted in the corner.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfbound.render.figures import MUTED_TEXT, image_format, model_name, save_figure
from tfbound.render.figures import require_matplotlib as _require

USED = "#1B4F9C"
LEFT_OUT = "#A8A8A8"


def require_matplotlib() -> Any:
    return _require("--plot")


def _positive(m: Mapping[str, Any]) -> bool:
    return bool(m["e_u"]["value"] > 0 and m["e_t"]["value"] > 0)


def plot_transfer(report: Mapping[str, Any], path: Path, title: str | None = None) -> None:
    """Draw the members, the central fit and the envelope of a transfer report (its JSON form)
    into ``path`` (.png, .svg or .pdf; written atomically)."""
    image_format(Path(path))
    save_figure(transfer_figure(report, title), path)


def transfer_figure(report: Mapping[str, Any], title: str | None = None) -> Any:
    """The matplotlib figure of ``plot_transfer`` (the caller closes it)."""
    plt = require_matplotlib()
    import numpy as np

    members = list(report.get("members", []))
    used = [m for m in members if m.get("used_in_fit") and _positive(m)]
    left = [
        m for m in members if not m.get("used_in_fit") and not m.get("reference") and _positive(m)
    ]
    hidden = len(members) - len(used) - len(left)
    fit = report.get("fit", {})
    fig, ax = plt.subplots(figsize=(7.2, 5.2))
    for group, color, marker, label in (
        (left, LEFT_OUT, "x", "left out (inside the noise floor)"),
        (used, USED, "o", "used in the fit"),
    ):
        if not group:
            continue
        x = np.array([m["e_u"]["value"] for m in group])
        y = np.array([m["e_t"]["value"] for m in group])
        xe = np.array([m["e_u"].get("stderr") or 0.0 for m in group])
        ye = np.array([m["e_t"].get("stderr") or 0.0 for m in group])
        ax.errorbar(
            x,
            y,
            xerr=np.minimum(xe, 0.999 * x),
            yerr=np.minimum(ye, 0.999 * y),
            fmt=marker,
            color=color,
            ecolor=color,
            elinewidth=0.8,
            capsize=0,
            markersize=6,
            alpha=0.9,
            label=f"{label}: {len(group)}",
            zorder=3,
        )
    points = used + left
    if points:
        xs = np.array([m["e_u"]["value"] for m in points])
        ys = np.array([m["e_t"]["value"] for m in points])
        grid = np.logspace(np.log10(xs.min()) - 0.3, np.log10(xs.max()) + 0.3, 60)
        level = fit.get("level")
        if fit.get("beta") is not None and fit.get("c") is not None:
            interval = fit.get("beta_interval")
            where = "" if not interval else f" [{interval[0]:.2f}, {interval[1]:.2f}]"
            ax.plot(
                grid,
                fit["c"] * grid ** fit["beta"],
                "-",
                color="black",
                linewidth=1.4,
                label=f"central fit: beta = {fit['beta']:.2f}{where}"
                + (f" ({level:.0%})" if level and where else "")
                + f", C = {fit['c']:.3g}",
                zorder=2,
            )
        if fit.get("c_envelope") is not None and fit.get("beta_fixed") is not None:
            b = fit["beta_fixed"]
            ax.plot(
                grid,
                fit["c_envelope"] * grid**b,
                "--",
                color="black",
                linewidth=1.2,
                label=f"envelope C({b:g}) = {fit['c_envelope']:.3g}",
                zorder=2,
            )
            ring = [m for m in points if m.get("name") == fit.get("envelope_member")]
            if ring:
                ax.plot(
                    [ring[0]["e_u"]["value"]],
                    [ring[0]["e_t"]["value"]],
                    "o",
                    markersize=13,
                    markerfacecolor="none",
                    markeredgecolor="black",
                    linewidth=1.0,
                    label=f"envelope member: {ring[0]['name']}",
                    zorder=4,
                )
        ax.set_xlim(xs.min() / 2.5, xs.max() * 2.5)
        ax.set_ylim(ys.min() / 3, ys.max() * 4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("E_U: pretext excess risk vs the reference")
    ax.set_ylabel("E_T: downstream excess risk vs the reference (ramp loss)")
    fam = report.get("family", {})
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(fam.get("members_by_kind", {}).items()))
    name = model_name(report) or "transfer"
    ax.set_title(
        title
        or f"tfbound transfer: {name} ({fam.get('n_members', len(members))} members: {kinds})",
        fontsize=11,
        loc="left",
    )
    notes = [f"reference: {report.get('reference', {}).get('name')}"]
    if hidden:
        notes.append(
            f"{hidden} member{'' if hidden == 1 else 's'} with E_U or E_T <= 0 not drawn (log axes)"
        )
    span = fit.get("e_u_span_decades")
    if span is not None:
        notes.append(
            f"E_U spans {span:.2f} decades: "
            + ("identifiable" if fit.get("identifiable") else "NOT identifiable")
        )
    notes.append("over the explored family only")
    lines = ["; ".join(notes[i : i + 2]) for i in range(0, len(notes), 2)]
    ax.annotate(
        "\n".join(lines),
        (0, 0),
        xycoords="axes fraction",
        xytext=(0, -36),
        textcoords="offset points",
        ha="left",
        va="top",
        fontsize=7,
        color=MUTED_TEXT,
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


__all__ = ["plot_transfer", "require_matplotlib", "transfer_figure"]
