"""Comparing two saved reports term by term and layer by layer.

Reports are read through ``tfbound.report.read_report`` (the one typed reader: a report of the same
schema major version, every term checked, or a ``tfbound inspect`` JSON with layer rows and no
terms); ``read_report`` here gives its plain-data view to gates, compare and the renderers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfbound.keys import TermKey
from tfbound.report import Report, envelope
from tfbound.report import read_report as read_typed_report

SECTIONS = ("bounds", "terms")


def read_report(path: str | Path) -> dict[str, Any]:
    """The report at ``path`` through the one typed reader (``tfbound.report.read_report``: every
    term checked), as the plain data that gates, compare and the renderers read."""
    return read_typed_report(path).to_dict()


def check_report(data: Any, path: str | Path | None = None) -> dict[str, Any]:
    """A report already parsed from JSON, through the same typed reader."""
    return Report.from_dict(data, path).to_dict()


# ---------------------------------------------------------------------------------------------
# Comparison


@dataclass(frozen=True)
class Delta:
    """One number in two reports. ``relative`` is ``(cand - base) / |base|`` (None if undefined)."""

    key: str
    section: str  # "bounds", "terms" or "layers"
    base: float | None
    cand: float | None
    status: str | None
    present: str  # "both", "base" (only in the baseline), "cand" (only in the candidate)

    @property
    def absolute(self) -> float | None:
        if self.base is None or self.cand is None:
            return None
        return self.cand - self.base

    @property
    def relative(self) -> float | None:
        if self.base is None or self.cand is None:
            return None
        if self.base == 0:
            return 0.0 if self.cand == 0 else math.copysign(math.inf, self.cand)
        return (self.cand - self.base) / abs(self.base)

    def to_dict(self) -> dict[str, Any]:
        rel = self.relative
        return {
            "key": self.key,
            "section": self.section,
            "base": self.base,
            "cand": self.cand,
            "absolute": self.absolute,
            # JSON has no infinity: a change from 0 is reported as null with its sign in 'note'
            "relative": rel if rel is None or math.isfinite(rel) else None,
            "status": self.status,
            "present": self.present,
            "note": self.note,
        }

    @property
    def note(self) -> str:
        if self.present == "base":
            return "only in the baseline"
        if self.present == "cand":
            return "only in the candidate"
        if self.base is None or self.cand is None:
            return "null in " + (
                "both"
                if self.base is None and self.cand is None
                else "the baseline"
                if self.base is None
                else "the candidate"
            )
        rel = self.relative
        if rel is not None and math.isinf(rel):
            return "from 0"
        return ""


@dataclass(frozen=True)
class Comparison:
    base_label: str
    cand_label: str
    deltas: tuple[Delta, ...]  # sorted by impact
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            **envelope("compare"),
            "base": self.base_label,
            "cand": self.cand_label,
            "deltas": [d.to_dict() for d in self.deltas],
            "notes": list(self.notes),
        }


def _impact(d: Delta) -> tuple[int, float, float, str]:
    """Sort key: rows with two numbers by |relative change| (then |absolute|), descending; then
    rows with a null side; then rows present on one side only."""
    if d.present != "both":
        return (2, 0.0, 0.0, d.key)
    rel, ab = d.relative, d.absolute
    if rel is None or ab is None:
        return (1, 0.0, 0.0, d.key)
    return (0, -abs(rel), -abs(ab), d.key)


def _term_rows(base: Mapping[str, Any], cand: Mapping[str, Any]) -> list[Delta]:
    rows: list[Delta] = []
    for section in SECTIONS:
        b, c = base.get(section, {}), cand.get(section, {})
        for key in sorted(set(b) | set(c)):
            present = "both" if key in b and key in c else ("base" if key in b else "cand")
            tb, tc = b.get(key, {}), c.get(key, {})
            rows.append(
                Delta(
                    key,
                    section,
                    tb.get("value"),
                    tc.get("value"),
                    tc.get("status", tb.get("status")),
                    present,
                )
            )
    return rows


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _numeric_columns(row: Mapping[str, Any]) -> dict[str, float | None]:
    """A layer row's numbers: plain numbers, and inspect-style ``{value, status, method}``."""
    out: dict[str, float | None] = {}
    for k, v in row.items():
        if isinstance(v, Mapping) and "value" in v:
            v = v["value"]
        if k != "name" and (v is None or _is_number(v)):
            out[k] = v
    return out


def _layer_rows(base: Mapping[str, Any], cand: Mapping[str, Any]) -> list[Delta]:
    if not isinstance(base.get("layers"), list) or not isinstance(cand.get("layers"), list):
        return []
    b = {r["name"]: _numeric_columns(r) for r in base["layers"]}
    c = {r["name"]: _numeric_columns(r) for r in cand["layers"]}
    rows: list[Delta] = []
    for name in sorted(set(b) | set(c)):
        bm, cm = b.get(name, {}), c.get(name, {})
        for measure in sorted(set(bm) | set(cm)):
            present = (
                "both" if measure in bm and measure in cm else ("base" if measure in bm else "cand")
            )
            rows.append(
                Delta(
                    f"layers.{name}.{measure}",
                    "layers",
                    bm.get(measure),
                    cm.get(measure),
                    None,
                    present,
                )
            )
    return rows


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def _notes(base: Mapping[str, Any], cand: Mapping[str, Any]) -> list[str]:
    notes: list[str] = []
    if base.get("schema_version") != cand.get("schema_version"):
        notes.append(
            f"schema versions differ: {base.get('schema_version')} -> {cand.get('schema_version')}"
        )
    fb, fc = _flatten(base.get("config", {})), _flatten(cand.get("config", {}))
    changed = sorted(
        k for k in set(fb) | set(fc) if fb.get(k) != fc.get(k) and not k.startswith("gates.")
    )
    interesting = [k for k in changed if not k.endswith(".weights") and ".path" not in k]
    if interesting:
        notes.append("the configurations differ in: " + ", ".join(interesting))

    def k_star(report: Mapping[str, Any]) -> Any:
        bound = report.get("bounds", {}).get(TermKey.CERTIFIED, {})
        return bound.get("details", {}).get("k_star")

    kb, kc = k_star(base), k_star(cand)
    if kb is not None and kc is not None and kb != kc:
        notes.append(
            f"the minimising grid cell moved (k* {kb} -> {kc}): rirc and rirc_term jump with it; "
            "compare the certified bound or capacity_ratio instead"
        )
    if bool(base.get("layers")) != bool(cand.get("layers")):
        side = "baseline" if base.get("layers") else "candidate"
        notes.append(f"only the {side} has per-layer rows; layers are not compared")
    return notes


def compare_reports(
    base: Mapping[str, Any],
    cand: Mapping[str, Any],
    base_label: str = "base",
    cand_label: str = "cand",
) -> Comparison:
    """Every term, bound and layer measure of two reports with its change, by impact."""
    rows = _term_rows(base, cand) + _layer_rows(base, cand)
    return Comparison(
        base_label, cand_label, tuple(sorted(rows, key=_impact)), tuple(_notes(base, cand))
    )


__all__ = ["Comparison", "Delta", "check_report", "compare_reports", "read_report"]
