"""Gate verdicts as a rich table and as markdown (a pull-request comment or a CI step summary)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from tfbound.render.layout import Column, FitTable
from tfbound.render.text import md_cell, md_code


def fmt(value: float | None) -> str:
    """Six significant digits: enough to see why a value just above its threshold fails."""
    return "n/a" if value is None else f"{value:.6g}"


def _headline(data: dict[str, Any]) -> str:
    n, failed = data["n_gates"], data["n_failed"]
    if failed:
        return f"{failed} of {n} gate{'s' if n != 1 else ''} failed"
    return f"all {n} gate{'s' if n != 1 else ''} passed"


def _has_baseline(data: dict[str, Any]) -> bool:
    return any(g["mode"] != "absolute" for g in data["gates"])


def _note(gate: dict[str, Any]) -> str:
    if not gate["passed"]:
        reason = str(gate["reason"])
        prefix = f"{gate['gate']} = "  # the row already names the term
        return reason[len(prefix) :] if reason.startswith(prefix) else reason
    key = gate["gate"]
    return f"closest: {gate['subject']}" if key.startswith("layers.") else ""


def gates_table(data: dict[str, Any]) -> RenderableType:
    """``data`` is ``GateReport.to_dict()``."""
    ok = data["n_failed"] == 0
    head = Text(f"gates: {_headline(data)}", style="bold green" if ok else "bold red")
    baseline = _has_baseline(data)
    columns = [
        Column("gate"),
        Column("condition"),
        Column("value", justify="right"),
        Column("threshold", justify="right"),
    ]
    if baseline:
        columns.append(Column("baseline", justify="right"))
    columns += [Column("verdict"), Column("note", wrap=True)]
    rows = []
    for g in data["gates"]:
        # Text, not str: a gate name or reason is not rich markup ("blocks[0]" stays as is)
        row: list[Any] = [Text(g["gate"]), Text(g["condition"]), fmt(g["value"])]
        row.append(fmt(g["threshold"]))
        if baseline:
            row.append(fmt(g["baseline"]) if g["mode"] != "absolute" else "")
        row.append(Text("pass", style="green") if g["passed"] else Text("FAIL", style="bold red"))
        row.append(Text(_note(g)))
        rows.append(row)
    return Group(head, FitTable(columns, rows))


def verdict_markdown(data: dict[str, Any]) -> str:
    """One line: whether the gates passed."""
    return f"{'✅' if data['n_failed'] == 0 else '❌'} {_headline(data)}"


def gates_markdown(data: dict[str, Any], title: str = "tfbound check") -> str:
    baseline = _has_baseline(data)
    lines = [f"## {title}: {verdict_markdown(data)}", ""]
    header = ["gate", "condition", "value", "threshold"] + (["baseline"] if baseline else [])
    header += ["verdict", "note"]
    lines.append("| " + " | ".join(header) + " |")
    align = ["---", "---", "---:", "---:"] + (["---:"] if baseline else []) + ["---", "---"]
    lines.append("|" + "|".join(align) + "|")
    for g in data["gates"]:
        cells = [md_code(g["gate"], in_table=True), md_code(g["condition"], in_table=True)]
        cells += [fmt(g["value"]), fmt(g["threshold"])]
        if baseline:
            cells.append(fmt(g["baseline"]) if g["mode"] != "absolute" else "")
        cells.append("✅ pass" if g["passed"] else "❌ **fail**")
        cells.append(md_cell(_note(g)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
