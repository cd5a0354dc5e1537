"""A reported number and what it is: key, value, status, quantity, formula, source.

Statuses (bound-spec section 8): ``certified`` holds with the stated probability under the stated
assumptions; ``estimated`` is a statistical estimate with an interval; ``assumed`` is supplied by
the user; ``proxy`` is a capacity number with an unverified constant (ranking and gating only);
``diagnostic`` is shown to explain, never summed.
"""

from __future__ import annotations

import dataclasses
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
    """Plain JSON data (the one converter): dataclasses and mappings as dicts with sorted string
    keys, tuples as lists, non-finite floats as None, numpy scalars as Python numbers, anything
    else unknown as its ``str``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    item = getattr(value, "item", None)  # a numpy scalar
    if callable(item):
        return to_plain(item())
    return str(value)


_TERM_FIELDS = frozenset(
    {"key", "value", "status", "role", "quantity", "formula", "source", "interval", "stderr",
     "confidence", "components", "details"}
)  # fmt: skip


def term_from_dict(data: Any, where: str) -> Term:
    """A ``Term`` from its JSON form (``Term.to_dict``), every field checked; ``ValueError`` with
    a short reason naming ``where`` (e.g. ``terms.rirc``) otherwise."""
    if not isinstance(data, Mapping):
        raise ValueError(f"'{where}' is not an object")
    unknown = set(data) - _TERM_FIELDS
    if unknown:
        raise ValueError(f"'{where}' has unknown field(s) {', '.join(sorted(unknown)[:3])}")

    def text(name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str):
            raise ValueError(f"'{where}' has no string '{name}'")
        return value

    def number(name: str, required: bool = False) -> float | None:
        value = data.get(name, "missing" if required else None)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"'{where}' has no numeric '{name}'")
        if not math.isfinite(value):
            raise ValueError(f"'{where}.{name}' is not finite")
        return float(value)

    value = number("value", required=True)
    status_text, role_text = text("status"), text("role")
    try:
        status, role = Status(status_text), Role(role_text)
    except ValueError:
        raise ValueError(f"'{where}' has an unknown status or role") from None
    interval = data.get("interval")
    if interval is not None:
        if not isinstance(interval, list) or len(interval) != 2:
            raise ValueError(f"'{where}.interval' is not a pair of numbers")
        lo, hi = (number_of(v, f"{where}.interval") for v in interval)
        interval = (lo, hi)
    components = data.get("components", [])
    if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
        raise ValueError(f"'{where}.components' is not a list of keys")
    details = data.get("details", {})
    if not isinstance(details, Mapping):
        raise ValueError(f"'{where}.details' is not an object")
    return Term(
        key=text("key"),
        value=value,
        status=status,
        quantity=text("quantity"),
        formula=text("formula"),
        source=text("source"),
        interval=interval,
        stderr=number("stderr"),
        confidence=number("confidence"),
        components=tuple(components),
        details=MappingProxyType(dict(details)),
        role=role,
    )


def number_of(value: Any, where: str) -> float:
    """``value`` as a finite float, or ``ValueError`` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"'{where}' holds a value that is not a finite number")
    return float(value)
