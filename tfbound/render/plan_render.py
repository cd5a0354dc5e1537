"""``tfbound plan`` as a table and as markdown (input: ``Plan.to_dict()``)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from tfbound.keys import TermKey
from tfbound.render.layout import Column, FitTable
from tfbound.render.text import fmt, md_cell

#: Column names of the certificates (their keys are in the JSON).
SHORT: dict[str, str] = {
    TermKey.BEST: "best",
    TermKey.HOLDOUT: "hold-out",
    TermKey.DISAGREEMENT: "disagreement",
    TermKey.PAC_BAYES_POOL: "PB + pool",
    TermKey.PAC_BAYES_DETERMINISTIC: "PAC-Bayes",
    TermKey.CERTIFIED: "margin",
}
NOTE = (
    "estimated: each certificate recomputed at other sizes with the report's rates held fixed "
    "(a projection, not a bound)"
)


def _keys(data: dict[str, Any]) -> list[str]:
    present = [TermKey.BEST.value, *data["certificates"]]
    return [k for k in SHORT if k in present]


def _reach_lines(data: dict[str, Any]) -> list[str]:
    if data["target"] is None:
        return []
    lines = []
    target = fmt(data["target"])
    for key in _keys(data):
        if key == TermKey.BEST:
            continue
        entry = data["reach"].get(key, {})
        n = entry.get("n")
        line = (
            f"{SHORT[key]}: {target} at n = {n}"
            if n is not None
            else (f"{SHORT[key]}: {target} not reached with n up to 1024x")
        )
        if "n_with_pool" in entry:
            line += " (pool as is)"
            both, m = entry["n_with_pool"], entry["m_pool_with_n"]
            line += (
                f"; at n = {both} with m_pool = {m} (scaled together)"
                if both is not None
                else "; not reached with both scaled up to 1024x"
            )
        lines.append(line)
    return lines


def plan_table(data: dict[str, Any]) -> RenderableType:
    keys = _keys(data)
    columns = [Column("n", justify="right"), Column("m_pool", justify="right")]
    columns += [Column(SHORT[k], justify="right") for k in keys]
    rows = [
        [
            str(r["n"]),
            "-" if r["m_pool"] is None else str(r["m_pool"]),
            *(fmt(r.get(k)) for k in keys),
        ]
        for r in data["rows"]
    ]
    head = Text(
        f"tfbound plan: the certificates at other sizes (report: n = {data['n']}", style="bold"
    )
    head.append(f", m_pool = {data['m_pool']})" if data["m_pool"] is not None else ")")
    parts: list[RenderableType] = [head, Text(NOTE, style="dim"), FitTable(columns, rows)]
    parts += [Text(line) for line in _reach_lines(data)]
    return Group(*parts)


def plan_markdown(data: dict[str, Any]) -> str:
    keys = _keys(data)
    rows = [r for r in data["rows"] if r["m_pool"] == data["m_pool"]]
    now, last = rows[0], rows[-1]
    for r in rows:
        if r["n"] == data["n"]:
            now = r
    best = TermKey.BEST.value
    lines = [
        "## tfbound plan",
        "",
        f"**best certificate {fmt(now.get(best))} at n = {now['n']}; projected "
        f"{fmt(last.get(best))} at n = {last['n']}**",
        "",
        md_cell(NOTE),
        "",
    ]
    lines += [f"- {md_cell(line)}" for line in _reach_lines(data)]
    lines += ["", "| n | m_pool | " + " | ".join(SHORT[k] for k in keys) + " |"]
    lines.append("|---:|---:|" + "---:|" * len(keys))
    for r in data["rows"]:
        m = "-" if r["m_pool"] is None else str(r["m_pool"])
        lines.append(f"| {r['n']} | {m} | " + " | ".join(fmt(r.get(k)) for k in keys) + " |")
    return "\n".join(lines) + "\n"
