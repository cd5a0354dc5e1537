"""The frozen report and its versioned JSON form (sorted keys, no NaN)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tfbound import __version__
from tfbound.keys import Role
from tfbound.terms import Status, Term, to_plain

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

    def get(self, key: str) -> Term | None:
        """The term or bound with this key, or None."""
        for t in (*self.bounds, *self.terms):
            if t.key == key:
                return t
        return None

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
