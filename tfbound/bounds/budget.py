"""The failure-probability budget of an estimate (bound-spec sections 8 and 10.5).

``delta`` is split into shares fixed in the configuration, before the data are seen; each
statement uses its own share. A statement about an encoder chosen among ``J`` candidates by looking
at the labeled sample holds for every candidate at ``share / J`` (a union bound over the
candidates), so :meth:`DeltaBudget.per_candidate` divides by ``J``. The best certificate holds
jointly with every certificate computed at the sum of the shares those certificates spent
(:meth:`DeltaBudget.spent`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class DeltaBudget:
    """``delta`` split into named shares (fractions summing to 1) and the number ``J`` of
    encoder candidates among which the encoder was chosen by looking at ``S``."""

    delta: float
    fractions: Mapping[str, float]
    encoder_candidates: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")
        if self.encoder_candidates < 1:
            raise ValueError("encoder_candidates must be at least 1")
        object.__setattr__(self, "fractions", MappingProxyType(dict(self.fractions)))

    def share(self, name: str) -> float:
        """``delta * fraction``: the configured failure probability of one statement."""
        return self.delta * self.fractions[name]

    def per_candidate(self, name: str) -> float:
        """``share / J``: what a statement about the chosen encoder is computed at."""
        return self.share(name) / self.encoder_candidates

    def confidence(self, *names: str) -> float:
        """``1 - sum of the shares``, subtracted in the order given."""
        out = 1.0
        for name in names:
            out -= self.share(name)
        return out

    def spent(self, names: Iterable[str]) -> dict[str, float]:
        """The shares of the certificates computed, by name in sorted order."""
        return {k: self.share(k) for k in sorted(set(names))}

    def shares(self) -> dict[str, float]:
        """Every share, ``delta * fraction``."""
        return {name: self.share(name) for name in self.fractions}

    def to_dict(self) -> dict[str, float]:
        """``delta`` and every share, for the report."""
        return {"delta": self.delta, **self.shares()}


__all__ = ["DeltaBudget"]
