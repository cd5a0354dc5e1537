"""A reported number and what it is: key, value, status, quantity, formula, source.

Statuses (bound-spec section 8): ``certified`` holds with the stated probability under the stated
assumptions; ``estimated`` is a statistical estimate with an interval; ``assumed`` is supplied by
the user; ``proxy`` is a capacity number with an unverified constant (ranking and gating only);
``diagnostic`` is shown to explain, never summed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tfbound.keys import Role, role_of


class Status(StrEnum):
    CERTIFIED = "certified"
    ESTIMATED = "estimated"
    ASSUMED = "assumed"
    PROXY = "proxy"
    DIAGNOSTIC = "diagnostic"


@dataclass(frozen=True)
class Term:
    """One reported number. ``components`` lists the keys a total sums (empty for a leaf term);
    ``role`` (what the term is for: headline, certificate, component, ...) comes from the key
    catalogue ``tfbound.keys`` unless given, and a key the catalogue lacks is refused."""

    key: str
    value: float | None
    status: Status
    quantity: str
    formula: str
    source: str
    interval: tuple[float, float] | None = None
    stderr: float | None = None
    confidence: float | None = None
    components: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    role: Role | None = None

    def __post_init__(self) -> None:
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"term {self.key!r} has a non-finite value {self.value}")
        if self.role is None:
            try:
                role = role_of(self.key)
            except ValueError:
                raise ValueError(f"term key {self.key!r} is not in tfbound.keys") from None
            object.__setattr__(self, "role", role)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "value": self.value,
            "status": self.status.value,
            "role": str(self.role),
            "quantity": self.quantity,
            "formula": self.formula,
            "source": self.source,
        }
        if self.interval is not None:
            out["interval"] = [float(self.interval[0]), float(self.interval[1])]
        if self.stderr is not None:
            out["stderr"] = self.stderr
        if self.confidence is not None:
            out["confidence"] = self.confidence
        if self.components:
            out["components"] = list(self.components)
        if self.details:
            out["details"] = to_plain(self.details)
        return out


def to_plain(value: Any) -> Any:
    """Plain JSON data: mappings with sorted string keys, lists, non-finite floats as None."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
