"""``tfbound inspect --plot``: a picture of an ``InspectResult`` (matplotlib, an optional extra).

One row per layer, in the checkpoint's order, its name (kind and shape) on the y axis; the
spectral norm, the stable rank and (with a reference) the distance to it, each on its own axis.
Bars are one neutral colour: a value that is not certified is hatched and says its status. With
attention heads, heatmaps of the per-head ``||QK_h||_2`` and ``||VO_h||_2`` (blocks x heads, each
cell written out): in this figure colour means a head product's spectral norm and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tfbound.adapters import HeadRow, LayerRow
from tfbound.inspect import InspectResult
from tfbound.measures.norms import NormValue
from tfbound.render.figures import (
    MUTED_TEXT,
    fmt_value,
    image_format,
    require_matplotlib,
    save_figure,
)

BAR_COLOR = "#5B7DA8"
HEAT_MAP = "viridis"


def source_name(source: str) -> str:
    """The model's name from where it was read: ``mae_vit/tfbound.yaml`` ->
    ``mae_vit``; a checkpoint file keeps its folder (``mae_vit/encoder.safetensors``)."""
    path = Path(source)
    if path.name in ("tfbound.yaml", "tfbound.yml") or path.suffix == "":
        return path.parent.name if path.suffix else path.name
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _layer_label(row: LayerRow) -> str:
    shape = "x".join(str(s) for s in row.shape)
    return f"{row.name}  ({row.kind} {shape})"


Measure = Callable[[LayerRow], NormValue | None]
_MEASURES: list[tuple[str, Measure]] = [
    ("spectral norm", lambda r: r.spectral_norm),
    ("stable rank (||W||_F^2 / ||W||_2^2)", lambda r: r.stable_rank),
    ("distance to the reference (||W - M||_F)", lambda r: r.distance_to_reference),
]


def plot_inspect(result: InspectResult, path: str | Path, title: str | None = None) -> None:
    """Draw ``result`` into ``path`` (.png, .svg or .pdf; written atomically)."""
    image_format(Path(path))
    save_figure(inspect_figure(result, title), path)


def inspect_figure(result: InspectResult, title: str | None = None) -> Any:
    """The matplotlib figure of ``plot_inspect`` (the caller closes it)."""
    plt = require_matplotlib("inspect --plot")
    layers = list(result.layers)
    measures = [(name, get) for name, get in _MEASURES if any(get(r) is not None for r in layers)]
    if not layers:
        measures = _MEASURES[:1]
    blocks = _blocks(result.heads)
    n = max(1, len(layers))
    bars_h = 1.4 + 0.26 * n
    heat_h = 1.1 + 0.45 * len(blocks)
    height = max(bars_h, 2 * heat_h + 0.6) if blocks else bars_h
    n_heads = max((h.heads for h in result.heads), default=0)
    heat_w = 1.6 + 0.55 * n_heads if blocks else 0.0
    gap = 0.25 + 0.065 * max((len(b) for b in blocks), default=0)  # room for the block names
    width = 3.6 + 2.8 * len(measures) + heat_w + gap
    full = height + 0.7
    fig = plt.figure(figsize=(width, full))
    cols = len(measures) + (2 if blocks else 0)
    ratios = [2.8] * len(measures) + ([gap, heat_w] if blocks else [])
    grid = fig.add_gridspec(
        1,
        cols,
        width_ratios=ratios,
        wspace=0.12,
        left=3.4 / width,
        right=0.98,
        top=1 - 0.65 / full,
        bottom=0.6 / full,
    )
    first = None
    for j, (name, get) in enumerate(measures):
        ax = fig.add_subplot(grid[0, j], sharey=first)
        first = first or ax
        _draw_measure(ax, layers, name, get, labels=j == 0)
    if blocks:
        heat = grid[0, cols - 1].subgridspec(2, 1, hspace=0.55)
        _draw_heatmap(fig, fig.add_subplot(heat[0, 0]), blocks, "QK", n_heads)
        _draw_heatmap(fig, fig.add_subplot(heat[1, 0]), blocks, "VO", n_heads)
    heading = title or f"tfbound inspect: {source_name(result.source)}"
    sub = f"{len(layers)} layers" + (f", {len(result.heads)} attention heads" if blocks else "")
    fig.suptitle(
        f"{heading}   ({sub}; spectral: {result.spectral})",
        fontsize=12,
        x=0.01,
        y=1 - 0.12 / full,
        ha="left",
        va="top",
    )
    return fig


def _draw_measure(
    ax: Any, layers: Sequence[LayerRow], name: str, get: Measure, labels: bool
) -> None:
    values = [get(r) for r in layers]
    top = max([v.value for v in values if v is not None] + [1e-12])
    for i, v in enumerate(values):
        if v is None:
            ax.text(0.0, i, " n/a", va="center", fontsize=7, color=MUTED_TEXT)
            continue
        certified = v.status == "certified"
        ax.barh(
            i,
            v.value,
            0.72,
            color=BAR_COLOR if certified else "white",
            edgecolor=BAR_COLOR,
            hatch=None if certified else "///",
            linewidth=1.0,
            zorder=3,
        )
        text = f" {fmt_value(v.value)}" + ("" if certified else f" {v.status}")
        ax.text(v.value, i, text, va="center", fontsize=7, zorder=4)
    ax.set_xlim(0, top * 1.35)
    ax.set_ylim(len(layers) - 0.5, -0.5)
    ax.set_yticks(range(len(layers)))
    if labels:
        ax.set_yticklabels([_layer_label(r) for r in layers], fontsize=8)
    else:
        ax.tick_params(axis="y", labelleft=False, length=0)
    ax.set_title(name, fontsize=9, loc="left")
    ax.tick_params(axis="x", labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="x", color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)


def _blocks(heads: Sequence[HeadRow]) -> dict[str, dict[int, HeadRow]]:
    out: dict[str, dict[int, HeadRow]] = {}
    for h in heads:
        out.setdefault(h.block, {})[h.head] = h
    return out


def _draw_heatmap(
    fig: Any, ax: Any, blocks: dict[str, dict[int, HeadRow]], which: str, n_heads: int
) -> None:
    import numpy as np

    grid = np.full((len(blocks), n_heads), np.nan)
    for i, heads in enumerate(blocks.values()):
        for j, h in heads.items():
            norm = h.qk_spectral_norm if which == "QK" else h.vo_spectral_norm
            grid[i, j] = norm.value
    image = ax.imshow(grid, cmap=HEAT_MAP, aspect="auto")
    lo, hi = np.nanmin(grid), np.nanmax(grid)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                dark = hi > lo and (grid[i, j] - lo) / (hi - lo) < 0.55
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.3g}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    ax.set_xticks(range(n_heads))
    ax.set_xticklabels([str(j) for j in range(n_heads)], fontsize=7)
    ax.set_xlabel("head", fontsize=8)
    ax.set_yticks(range(len(blocks)))
    ax.set_yticklabels(list(blocks), fontsize=7)
    formula = "Wq_h^T Wk_h" if which == "QK" else "Wo_h Wv_h"
    ax.set_title(f"||{which}_h||_2 per head ({which}_h = {formula})", fontsize=9, loc="left")
    bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
    bar.ax.tick_params(labelsize=7)


__all__ = ["inspect_figure", "plot_inspect", "source_name"]
