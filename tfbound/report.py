"""The frozen report and its versioned JSON form (sorted keys, no NaN)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tfbound import __version__
from tfbound.errors import InputError, first_line, missing
from tfbound.keys import Role
from tfbound.terms import Status, Term, term_from_dict, to_plain

SCHEMA_VERSION = "2.0"


@dataclass(frozen=True)
class Report:
    """What ``tfbound estimate`` found: every term, the totals, and what they rest on."""

    kind: str
    config: Mapping[str, Any]
    model: Mapping[str, Any]
    data: Mapping[str, Any]
    deltas: Mapping[str, float]
    terms: tuple[Term, ...]
    bounds: tuple[Term, ...]
    warnings: tuple[str, ...] = ()
    schema_version: str = SCHEMA_VERSION
    tfbound_version: str = __version__
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        keys = [t.key for t in (*self.terms, *self.bounds)]
        if len(keys) != len(set(keys)):
            raise ValueError(f"duplicate term keys in report: {keys}")
        terms = {t.key: t for t in self.terms}
        for total in self.bounds:
            for key in total.components:
                part = terms.get(key)
                if part is None:
                    raise ValueError(f"bound {total.key!r} sums unknown term {key!r}")
                if total.status is Status.CERTIFIED and part.status is not Status.CERTIFIED:
                    raise ValueError(f"certified {total.key!r} sums non-certified term {key!r}")

    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> Report:
        """A report from its JSON form, every term checked (see :func:`read_report`)."""
        return _report_from_dict(data, path)

    @classmethod
    def read(cls, path: str | Path) -> Report:
        """The report saved at ``path`` (see :func:`read_report`)."""
        return read_report(path)

    def get(self, key: str) -> Term | None:
        """The term or bound with this key, or None."""
        for t in (*self.bounds, *self.terms):
            if t.key == key:
                return t
        return None

    def headline(self) -> Term | None:
        """The headline certificate (``best_certified_test_error_bound``), else the first
        certificate, else the first bound; None without bounds."""
        for role in (Role.HEADLINE, Role.CERTIFICATE):
            for t in self.bounds:
                if t.role is role:
                    return t
        return self.bounds[0] if self.bounds else None

    def status_counts(self) -> dict[str, int]:
        """How many terms and bounds have each status (statuses that occur, by name)."""
        counts: dict[str, int] = {}
        for t in (*self.bounds, *self.terms):
            counts[t.status.value] = counts.get(t.status.value, 0) + 1
        return dict(sorted(counts.items()))

    def __repr__(self) -> str:
        if self.kind == INSPECT_KIND:
            return f"Report(kind={self.kind!r}, layers={len(self.extra.get('layers', []))})"
        parts = []
        lead = self.headline()
        if lead is not None:
            parts.append(f"{lead.key}={_short_number(lead.value)}")
        observed = self.get("observed_test_error")
        if observed is not None:
            parts.append(f"observed_test_error={_short_number(observed.value)}")
        counts = ", ".join(f"{k}: {v}" for k, v in self.status_counts().items())
        parts.append(f"terms={len(self.terms) + len(self.bounds)} ({counts})")
        if self.warnings:
            parts.append(f"warnings={len(self.warnings)}")
        return f"Report({', '.join(parts)})"

    def summary(self, width: int = 100) -> str:
        """The ``tfbound estimate`` table as plain text, ``width`` columns wide."""
        from tfbound.render.table import report_text

        return report_text(self.to_dict(), width)

    def _repr_html_(self) -> str:
        """Jupyter's view: the headline, then the summary table in ``<pre>``."""
        import html

        return (
            f"<p><b>{html.escape(repr(self))}</b></p>"
            f"<pre>{html.escape(self.summary(width=120))}</pre>"
        )

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per term and bound: key, value, status, role, interval
        (``interval_lo``, ``interval_hi``), quantity, formula, source, and ``kind`` (``bound`` or
        ``term``). Needs pandas (``pip install 'tfbound[pandas]'``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Report.to_pandas needs pandas: pip install 'tfbound[pandas]'"
            ) from None
        rows = []
        for kind, section in (("bound", self.bounds), ("term", self.terms)):
            for t in section:
                lo, hi = (None, None) if t.interval is None else t.interval
                rows.append(
                    {
                        "key": t.key,
                        "value": t.value,
                        "status": t.status.value,
                        "role": str(t.role),
                        "interval_lo": lo,
                        "interval_hi": hi,
                        "quantity": t.quantity,
                        "formula": t.formula,
                        "source": t.source,
                        "kind": kind,
                    }
                )
        return pd.DataFrame(rows, columns=_PANDAS_COLUMNS)

    def to_json(self) -> str:
        """The JSON text ``tfbound estimate --json`` writes (sorted keys, no NaN)."""
        return to_json(self.to_dict())

    def write(self, path: str | Path) -> None:
        """Save :meth:`to_json` at ``path`` (complete or absent); ``Report.read`` reads it."""
        from tfbound.io.atomic import write_text_atomic

        write_text_atomic(Path(path), self.to_json())

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema_version": self.schema_version,
            "tfbound_version": self.tfbound_version,
            "kind": self.kind,
            "config": to_plain(self.config),
            "model": to_plain(self.model),
            "data": to_plain(self.data),
            "deltas": to_plain(self.deltas),
            "terms": {t.key: t.to_dict() for t in self.terms},
            "bounds": {t.key: t.to_dict() for t in self.bounds},
            "warnings": list(self.warnings),
        }
        out.update(to_plain(self.extra))
        return out


_PANDAS_COLUMNS = ("key", "value", "status", "role", "interval_lo", "interval_hi", "quantity",
                   "formula", "source", "kind")  # fmt: skip


def _short_number(value: float | None) -> str:
    return "None" if value is None else f"{value:.4g}"


def envelope(kind: str) -> dict[str, str]:
    """The envelope every JSON output of tfbound starts with: ``schema_version`` (of the one
    report schema), ``tfbound_version`` and ``kind`` (estimate, check, compare, tfbound.inspect,
    transfer, pretrain)."""
    return {"schema_version": SCHEMA_VERSION, "tfbound_version": __version__, "kind": kind}


def to_json(data: Mapping[str, Any]) -> str:
    """Stable JSON text: sorted keys, two-space indent, trailing newline, NaN refused."""
    return json.dumps(data, sort_keys=True, indent=2, allow_nan=False) + "\n"


_NUMBER_OR_NULL = {"type": ["number", "null"]}


def term_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["key", "value", "status", "role", "quantity", "formula", "source"],
        "additionalProperties": False,
        "properties": {
            "key": {"type": "string"},
            "value": _NUMBER_OR_NULL,
            "status": {"enum": [s.value for s in Status]},
            "role": {"enum": [r.value for r in Role]},
            "quantity": {"type": "string"},
            "formula": {"type": "string"},
            "source": {"type": "string"},
            "interval": {
                "type": "array",
                "items": {"type": "number"},
                "minItems": 2,
                "maxItems": 2,
            },
            "stderr": {"type": "number"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "components": {"type": "array", "items": {"type": "string"}},
            "details": {"type": "object"},
        },
    }


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a report, generated from the dataclasses above."""
    term_map = {"type": "object", "additionalProperties": {"$ref": "#/$defs/term"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://tfbound.invalid/report.schema.json",
        "title": "tfbound report",
        "type": "object",
        "required": [
            "schema_version",
            "tfbound_version",
            "kind",
            "config",
            "model",
            "data",
            "deltas",
            "terms",
            "bounds",
            "warnings",
        ],
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "tfbound_version": {"type": "string"},
            "kind": {"enum": ["estimate"]},
            "config": {"type": "object"},
            "model": {"type": "object"},
            "data": {"type": "object"},
            "deltas": {"type": "object", "additionalProperties": {"type": "number"}},
            "terms": term_map,
            "bounds": term_map,
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
        "$defs": {"term": term_schema()},
    }


# ---------------------------------------------------------------------------------------------
# Reading saved reports: the one door through which check, compare and plot read JSON

#: ``tfbound inspect --format json``: layer rows and no terms, read so that layer gates and layer
#: comparisons work on it (the same envelope and schema version).
INSPECT_KIND = "tfbound.inspect"
#: The largest report read (a report is tens of kilobytes; a large inspect JSON a few MB).
MAX_REPORT_BYTES = 64 << 20
_ENVELOPE = ("schema_version", "tfbound_version", "kind", "config", "model", "data", "deltas",
             "terms", "bounds", "warnings")  # fmt: skip


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"a number out of range ({text[:20]})")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


#: a report is at most this deep (the deepest real one is about 6 levels)
MAX_REPORT_DEPTH = 32


def parse_report_json(text: str) -> Any:
    """Strict JSON: ``NaN``, ``Infinity`` and numbers that overflow to infinity are refused, and
    so is nesting deeper than ``MAX_REPORT_DEPTH`` (before anything walks it recursively)."""
    from tfbound.json_input import nesting_depth

    if nesting_depth(text, MAX_REPORT_DEPTH) > MAX_REPORT_DEPTH:
        raise ValueError(f"nested more than {MAX_REPORT_DEPTH} levels deep")
    return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)


def read_report(path: str | Path) -> Report:
    """The report saved at ``path``: a report of this schema's major version (older or newer
    minor versions included; unknown top-level keys kept in ``extra``), or a ``tfbound inspect``
    JSON. Anything else, a malformed term anywhere, NaN or infinite numbers, deep nesting or a
    file over ``MAX_REPORT_BYTES`` is an ``InputError`` (exit 3) saying what was found."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"report file {missing(p)}", path=p)
    if p.stat().st_size > MAX_REPORT_BYTES:
        raise InputError(f"report file over {MAX_REPORT_BYTES >> 20} MiB", path=p)
    try:
        data = parse_report_json(p.read_text(encoding="utf-8"))
    except RecursionError:
        raise InputError("not a JSON report: nested too deeply", path=p) from None
    except (UnicodeDecodeError, ValueError) as exc:
        message = first_line(exc)
        raise InputError(f"not a JSON file: {message}", path=p) from None
    return _report_from_dict(data, p)


def _report_from_dict(data: Any, path: str | Path | None) -> Report:
    if isinstance(data, dict) and data.get("kind") == INSPECT_KIND:
        return _inspect_from_dict(data, path)
    if not isinstance(data, dict) or "schema_version" not in data:
        raise InputError(
            "not a tfbound report (a JSON object with 'schema_version', 'terms' and 'bounds'; "
            "write one with 'tfbound estimate CONFIG --json report.json')",
            path=path,
        )
    version = data["schema_version"]
    if not isinstance(version, str) or not _major(version).isdigit():
        raise InputError(f"unreadable schema_version {str(version)[:20]!r}", path=path)
    if _major(version) != _major(SCHEMA_VERSION):
        raise InputError(
            f"report schema version {version[:20]} cannot be read by this tfbound "
            f"(it reads {_major(SCHEMA_VERSION)}.x, writes {SCHEMA_VERSION}); "
            "re-run 'tfbound estimate' with this version to get a readable report",
            path=path,
        )
    sections: dict[str, tuple[Term, ...]] = {}
    for section in ("bounds", "terms"):
        table = data.get(section)
        if not isinstance(table, dict):
            raise InputError(f"not a tfbound report: no '{section}' object", path=path)
        try:
            sections[section] = tuple(
                term_from_dict(t, f"{section}.{str(k)[:80]}") for k, t in table.items()
            )
        except ValueError as exc:
            raise InputError(str(exc), path=path) from None
        for k, t in zip(table, sections[section], strict=True):
            if k != t.key:
                raise InputError(f"'{section}.{str(k)[:80]}' holds key {t.key[:80]!r}", path=path)
    _check_layers(data.get("layers"), path)
    mappings = {}
    for name in ("config", "model", "data", "deltas"):
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise InputError(f"'{name}' is not an object", path=path)
        mappings[name] = value
    warnings = data.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise InputError("'warnings' is not a list of strings", path=path)
    try:
        return Report(
            kind=str(data.get("kind", "estimate")),
            config=mappings["config"],
            model=mappings["model"],
            data=mappings["data"],
            deltas=mappings["deltas"],
            terms=sections["terms"],
            bounds=sections["bounds"],
            warnings=tuple(warnings),
            schema_version=version,
            tfbound_version=str(data.get("tfbound_version", "unknown")),
            extra=MappingProxyType({k: v for k, v in data.items() if k not in _ENVELOPE}),
        )
    except ValueError as exc:  # duplicate keys, a certified total of non-certified terms
        raise InputError(str(exc)[:300], path=path) from None


def _check_layers(layers: Any, path: str | Path | None) -> None:
    if layers is not None and (
        not isinstance(layers, list)
        or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in layers)
    ):
        raise InputError("'layers' must be a list of objects with a 'name'", path=path)


def _inspect_from_dict(data: dict[str, Any], path: str | Path | None) -> Report:
    version = str(data.get("schema_version"))[:20]
    if _major(version) != _major(SCHEMA_VERSION):
        raise InputError(
            f"inspect schema version {version} cannot be read by this tfbound "
            f"(it reads {_major(SCHEMA_VERSION)}.x); re-run 'tfbound inspect' with this version",
            path=path,
        )
    layers = data.get("layers")
    if layers is None:
        raise InputError("'layers' must be a list of objects with a 'name'", path=path)
    _check_layers(layers, path)
    extra = {k: v for k, v in data.items() if k not in ("schema_version", "kind")}
    return Report(
        kind=INSPECT_KIND,
        config={},
        model={},
        data={},
        deltas={},
        terms=(),
        bounds=(),
        schema_version=version,
        extra=MappingProxyType(extra),
    )
