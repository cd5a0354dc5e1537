"""The frozen transfer report and its versioned JSON form (``kind: transfer``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tfbound import __version__
from tfbound.report import SCHEMA_VERSION
from tfbound.terms import Term, to_plain

TRANSFER_KIND = "transfer"


@dataclass(frozen=True)
class TransferReport:
    """What ``tfbound transfer`` found: the family, each member's excess risks, the fit."""

    config: Mapping[str, Any]
    transfer: Mapping[str, Any]
    family: Mapping[str, Any]
    data: Mapping[str, Any]
    reference: Mapping[str, Any]
    members: tuple[Mapping[str, Any], ...]
    fit: Mapping[str, Any]
    terms: tuple[Term, ...]
    warnings: tuple[str, ...] = ()
    schema_version: str = SCHEMA_VERSION
    tfbound_version: str = __version__
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        keys = [t.key for t in self.terms]
        if len(keys) != len(set(keys)):
            raise ValueError(f"duplicate term keys in transfer report: {keys}")

    def get(self, key: str) -> Term | None:
        return next((t for t in self.terms if t.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema_version": self.schema_version,
            "tfbound_version": self.tfbound_version,
            "kind": TRANSFER_KIND,
            "config": to_plain(self.config),
            "transfer": to_plain(self.transfer),
            "family": to_plain(self.family),
            "data": to_plain(self.data),
            "reference": to_plain(self.reference),
            "members": [to_plain(m) for m in self.members],
            "fit": to_plain(self.fit),
            "terms": {t.key: t.to_dict() for t in self.terms},
            "warnings": list(self.warnings),
        }
        out.update(to_plain(self.extra))
        return out


__all__ = ["TRANSFER_KIND", "TransferReport"]
