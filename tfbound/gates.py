"""Gates: conditions on a report's numbers that CI can fail on.

A gate maps a target to a condition string. Targets:

- a term or bound key of the report (``certified_test_error_bound``, ``capacity_ratio``, ...);
- ``layers.<glob>.<measure>``: every row of the report's ``layers`` list whose ``name`` matches
  the glob (``fnmatch``; ``*`` also matches dots) must satisfy the condition on ``<measure>``
  (a number, or an inspect-style ``{"value": ..., "status": ...}`` object).

Conditions (``OP`` one of ``<=``, ``<``, ``>=``, ``>``, ``==``):

- ``OP x`` with ``x`` an unsigned number (``0.3``, ``1e-3``): the value against ``x``;
- ``OP +p%`` / ``OP -p%``: the relative change against a baseline report,
  ``value OP b + p/100 |b|`` with ``b`` the baseline's value of the same target;
- ``OP +d`` / ``OP -d``: the absolute change against the baseline, ``value OP b + d``.

An explicit sign means "relative to the baseline". Strings are parsed once, here, into ``Gate``
objects; evaluation works on those and on plain report dictionaries. A malformed condition or a
target that is not in the report is an ``InputError`` (exit 3), never a pass; a null value (an
undefined number such as ``capacity_ratio`` when the margin quantile is not positive) fails the
gate with a reason.
"""

from __future__ import annotations

import fnmatch
import math
import operator
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from tfbound.errors import InputError, UsageError, first_line, missing
from tfbound.report import envelope
from tfbound.yaml_input import MAX_YAML_BYTES, load_yaml

LAYERS_PREFIX = "layers."


class Op(StrEnum):
    LE = "<="
    LT = "<"
    GE = ">="
    GT = ">"
    EQ = "=="


_COMPARE: dict[Op, Callable[[float, float], bool]] = {
    Op.LE: operator.le,
    Op.LT: operator.lt,
    Op.GE: operator.ge,
    Op.GT: operator.gt,
    Op.EQ: operator.eq,
}


class Mode(StrEnum):
    """How the condition's number is read."""

    ABSOLUTE = "absolute"  # value OP x
    RELATIVE = "relative"  # value OP b + x |b| (x a fraction: "+10%" is 0.1)
    DELTA = "delta"  # value OP b + x


@dataclass(frozen=True)
class TermTarget:
    key: str

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class LayerTarget:
    pattern: str
    measure: str

    def __str__(self) -> str:
        return f"{LAYERS_PREFIX}{self.pattern}.{self.measure}"


Target = TermTarget | LayerTarget


@dataclass(frozen=True)
class Gate:
    """One parsed gate: ``name`` and ``expression`` as written, the rest typed."""

    name: str
    expression: str
    target: Target
    op: Op
    number: float
    mode: Mode

    @property
    def needs_baseline(self) -> bool:
        return self.mode is not Mode.ABSOLUTE

    def limit(self, baseline: float | None) -> float | None:
        """The absolute threshold the value is compared with (None: baseline missing)."""
        if self.mode is Mode.ABSOLUTE:
            return self.number
        if baseline is None:
            return None
        if self.mode is Mode.RELATIVE:
            return baseline + self.number * abs(baseline)
        return baseline + self.number


_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_CONDITION = re.compile(rf"^\s*(<=|>=|==|<|>)\s*([+-])?\s*({_NUMBER})\s*(%)?\s*$")
_GRAMMAR = (
    "expected '<OP> <number>' with OP one of <=, <, >=, >, == "
    "(e.g. '<= 0.3'), or a change against a baseline: '<= +10%', '<= -5%', '<= +0.02'"
)


def parse_gate(name: Any, expression: Any) -> Gate:
    """One gate from its key and condition string; ``InputError`` naming the gate if malformed."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"gate names must be non-empty strings, got {name!r}")
    if not isinstance(expression, str):
        hint = f' (quote it: "<= {expression}")' if isinstance(expression, int | float) else ""
        raise InputError(f"gate {name!r}: the condition must be a string, got {expression!r}{hint}")
    target = _parse_target(name)
    m = _CONDITION.match(expression)
    if m is None:
        raise InputError(f"gate {name!r}: cannot read condition {expression!r}: {_GRAMMAR}")
    op_text, sign, number_text, percent = m.groups()
    number = float(number_text)
    if not math.isfinite(number):
        raise InputError(f"gate {name!r}: the number in {expression!r} is not finite")
    if percent and sign is None:
        raise InputError(
            f"gate {name!r}: {expression!r}: a percentage is a change against a baseline; "
            "write it signed ('+10%' or '-5%')"
        )
    if sign is None:
        mode = Mode.ABSOLUTE
    else:
        mode = Mode.RELATIVE if percent else Mode.DELTA
        number = -number if sign == "-" else number
        if percent:
            number /= 100.0
    return Gate(name, expression, target, Op(op_text), number, mode)


def _parse_target(name: str) -> Target:
    if not name.startswith(LAYERS_PREFIX):
        return TermTarget(name)
    rest = name[len(LAYERS_PREFIX) :]
    pattern, dot, measure = rest.rpartition(".")
    if not dot or not pattern or not measure:
        raise InputError(
            f"gate {name!r}: a layer gate is 'layers.<name pattern>.<measure>', "
            "e.g. 'layers.encoder.*.spectral_norm'"
        )
    return LayerTarget(pattern, measure)


def parse_gates(raw: Any, where: str = "gates") -> tuple[Gate, ...]:
    """A ``{target: condition}`` mapping into gates, in the mapping's order."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise InputError(
            f"{where} must be a mapping of target to condition, got {type(raw).__name__}"
        )
    return tuple(parse_gate(name, expr) for name, expr in raw.items())


def load_gates_file(path: str | Path) -> tuple[Gate, ...]:
    """Gates from a YAML file's ``gates:`` mapping, or a ``pyproject.toml``'s
    ``[tool.tfbound.gates]`` table (any ``.toml`` file is read that way)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"gates file {missing(p)}", path=p)
    if p.stat().st_size > MAX_YAML_BYTES:
        raise InputError(f"gates file over {MAX_YAML_BYTES} bytes", path=p)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read gates file: {exc}", path=p) from exc
    if p.suffix == ".toml":
        try:
            doc: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(first_line(f"not valid TOML: {exc}"), path=p) from exc
        raw = doc.get("tool", {}).get("tfbound", {}).get("gates")
        where = "[tool.tfbound.gates]"
    else:
        try:
            doc = load_yaml(text)
        except yaml.YAMLError as exc:
            raise InputError(first_line(f"not valid YAML: {exc}"), path=p) from exc
        raw = doc.get("gates") if isinstance(doc, dict) else None
        where = "'gates'"
    if raw is None:
        raise InputError(f"no {where} section", path=p)
    try:
        gates = parse_gates(raw, where)
    except InputError as exc:
        raise InputError(str(exc), path=p) from exc
    if not gates:
        raise InputError(f"{where} is empty", path=p)
    return gates


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class GateResult:
    """The verdict on one gate. ``subject`` is the term key, or the layer that decided it."""

    gate: Gate
    passed: bool
    value: float | None
    threshold: float | None
    baseline: float | None
    subject: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate.name,
            "condition": self.gate.expression,
            "mode": self.gate.mode.value,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "baseline": self.baseline,
            "subject": self.subject,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GateReport:
    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def n_failed(self) -> int:
        return sum(not r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            **envelope("check"),
            "passed": self.passed,
            "n_gates": len(self.results),
            "n_failed": self.n_failed,
            "gates": [r.to_dict() for r in self.results],
        }


def evaluate_gates(
    gates: tuple[Gate, ...],
    report: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
) -> GateReport:
    """Every gate against ``report`` (and ``baseline`` for relative gates).

    Raises ``InputError`` when a gate names a term, layer or measure the report does not have,
    and ``UsageError`` when a relative gate has no baseline report to compare with.
    """
    needing = [g.name for g in gates if g.needs_baseline]
    if needing and baseline is None:
        raise UsageError(
            f"gate(s) {', '.join(map(repr, needing))} compare with a baseline report: "
            "pass --baseline BASE.json"
        )
    return GateReport(tuple(_evaluate(g, report, baseline) for g in gates))


def _evaluate(
    gate: Gate, report: Mapping[str, Any], baseline: Mapping[str, Any] | None
) -> GateResult:
    if isinstance(gate.target, TermTarget):
        value = _term_value(report, gate.target.key, gate.name)
        base = None
        base_reason = ""
        if gate.needs_baseline:
            assert baseline is not None
            base, base_reason = _baseline_term_value(baseline, gate.target.key)
        return _verdict(gate, gate.target.key, value, base, base_reason)
    rows = _layer_values(report, gate.target, gate.name)
    base_rows: dict[str, float | None] = {}
    if gate.needs_baseline:
        assert baseline is not None
        base_rows = _baseline_layer_values(baseline, gate.target)
    results = []
    for layer, value in rows:
        base, base_reason = None, ""
        if gate.needs_baseline:
            if layer not in base_rows:
                base_reason = (
                    f"the baseline report has no layer {layer!r} with {gate.target.measure!r}"
                )
            else:
                base = base_rows[layer]
                if base is None:
                    base_reason = f"the baseline value of {layer!r} is null"
        results.append(_verdict(gate, layer, value, base, base_reason))
    failed = [r for r in results if not r.passed]
    if failed:
        worst = _worst(gate, failed)
        n = len(failed)
        extra = f" ({n} of {len(results)} matching layers fail)" if len(results) > 1 else ""
        return _replace_reason(worst, worst.reason + extra)
    worst = _worst(gate, results)
    return _replace_reason(worst, f"{worst.reason} (closest of {len(results)} matching layers)")


def _verdict(
    gate: Gate, subject: str, value: float | None, base: float | None, base_reason: str
) -> GateResult:
    def result(passed: bool, threshold: float | None, reason: str) -> GateResult:
        return GateResult(gate, passed, value, threshold, base, subject, reason)

    if value is None:
        return result(False, gate.limit(base), f"{subject} is null (undefined in this report)")
    if gate.needs_baseline and base is None:
        return result(False, None, base_reason or f"the baseline value of {subject} is null")
    limit = gate.limit(base)
    assert limit is not None
    passed = _COMPARE[gate.op](value, limit)
    if passed:
        reason = f"{subject} = {value:.6g} {gate.op.value} {limit:.6g}"
    else:
        reason = f"{subject} = {value:.6g} is not {gate.op.value} {limit:.6g}"
    if gate.needs_baseline:
        reason += f" (baseline {base:.6g}, condition {gate.expression.strip()})"
    return result(passed, limit, reason)


def _worst(gate: Gate, results: list[GateResult]) -> GateResult:
    """The result with the least slack (null values and missing baselines first)."""

    def slack(r: GateResult) -> float:
        if r.value is None or r.threshold is None:
            return -math.inf
        if gate.op in (Op.LE, Op.LT):
            return r.threshold - r.value
        if gate.op in (Op.GE, Op.GT):
            return r.value - r.threshold
        return -abs(r.value - r.threshold)

    return min(results, key=slack)


def _replace_reason(result: GateResult, reason: str) -> GateResult:
    return GateResult(
        result.gate,
        result.passed,
        result.value,
        result.threshold,
        result.baseline,
        result.subject,
        reason,
    )


def _number_or_none(raw: Any, what: str) -> float | None:
    if isinstance(raw, Mapping) and "value" in raw:  # a layer measure: {value, status, method}
        raw = raw["value"]
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InputError(f"{what} is not a number: {raw!r}")
    return float(raw)


def _find_term(report: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    for section in ("bounds", "terms"):
        table = report.get(section)
        if isinstance(table, Mapping) and isinstance(table.get(key), Mapping):
            found: Mapping[str, Any] = table[key]
            return found
    return None


def term_keys(report: Mapping[str, Any]) -> list[str]:
    keys: list[str] = []
    for section in ("bounds", "terms"):
        table = report.get(section)
        if isinstance(table, Mapping):
            keys += sorted(table)
    return keys


def _term_value(report: Mapping[str, Any], key: str, gate_name: str) -> float | None:
    term = _find_term(report, key)
    if term is None:
        known = ", ".join(term_keys(report)) or "none"
        raise InputError(
            f"gate {gate_name!r}: the report has no term {key!r} (its terms and bounds: {known})"
        )
    return _number_or_none(term.get("value"), f"term {key!r}")


def _baseline_term_value(baseline: Mapping[str, Any], key: str) -> tuple[float | None, str]:
    term = _find_term(baseline, key)
    if term is None:
        return None, f"the baseline report has no term {key!r}"
    value = _number_or_none(term.get("value"), f"baseline term {key!r}")
    return value, "" if value is not None else f"the baseline value of {key} is null"


def _layers(report: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    layers = report.get("layers")
    if layers is None:
        return None
    if not isinstance(layers, list) or not all(
        isinstance(row, Mapping) and isinstance(row.get("name"), str) for row in layers
    ):
        raise InputError("the report's 'layers' must be a list of rows with a 'name'")
    return layers


def _layer_values(
    report: Mapping[str, Any], target: LayerTarget, gate_name: str
) -> list[tuple[str, float | None]]:
    layers = _layers(report)
    if layers is None:
        raise InputError(
            f"gate {gate_name!r}: the report has no 'layers' section "
            "(layer gates need a report with per-layer rows)"
        )
    matched = [row for row in layers if fnmatch.fnmatchcase(row["name"], target.pattern)]
    if not matched:
        names = ", ".join(row["name"] for row in layers[:8]) or "none"
        raise InputError(
            f"gate {gate_name!r}: no layer matches {target.pattern!r} (layers: {names})"
        )
    with_measure = [row for row in matched if target.measure in row]
    if not with_measure:
        raise InputError(
            f"gate {gate_name!r}: no layer matching {target.pattern!r} has a "
            f"{target.measure!r} column"
        )
    return [
        (row["name"], _number_or_none(row[target.measure], f"{row['name']}.{target.measure}"))
        for row in with_measure
    ]


def _baseline_layer_values(
    baseline: Mapping[str, Any], target: LayerTarget
) -> dict[str, float | None]:
    layers = _layers(baseline) or []
    return {
        row["name"]: _number_or_none(row[target.measure], f"baseline {row['name']}")
        for row in layers
        if fnmatch.fnmatchcase(row["name"], target.pattern) and target.measure in row
    }


def gates_of_report(report: Mapping[str, Any]) -> tuple[Gate, ...]:
    """The gates recorded in the report's config (empty when it records none)."""
    config = report.get("config")
    raw = config.get("gates") if isinstance(config, Mapping) else None
    return parse_gates(raw, "the report's config 'gates'")


__all__ = [
    "Gate",
    "GateReport",
    "GateResult",
    "LayerTarget",
    "Mode",
    "Op",
    "TermTarget",
    "evaluate_gates",
    "gates_of_report",
    "load_gates_file",
    "parse_gate",
    "parse_gates",
    "term_keys",
]
