"""The failure-probability budget of an estimate (bound-spec sections 8 and 10.5).

``delta`` is the failure probability of the headline, ``best_certified_test_error_bound``: it is
split among the certificates on the user's head that the configuration will compute, by a rule
that depends only on the configuration (:func:`headline_fractions`: a pool or not, a linear head
or not), or by the shares the configuration gives. The test-set bound and the pretext statements
are separate statements, each at its own level (``separate``), never taken out of ``delta``.

A statement about an encoder chosen among ``J`` candidates by looking at the labeled sample holds
for every candidate at ``share / J`` (a union bound over the candidates), so
:meth:`DeltaBudget.per_candidate` divides by ``J``. The best certificate holds jointly with every
certificate computed at the sum of the shares those certificates spent (:meth:`DeltaBudget.spent`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from tfbound.keys import HEADLINE_SHARES, SEPARATE_STATEMENTS


def headline_fractions(*, pool: bool, linear_head: bool, holdout: bool = False) -> dict[str, float]:
    """The fractions of ``delta`` for the certificates a configuration computes: a rule of the
    configuration only (fixed before the data are seen), measured on synthetic tasks
    (``benchmarks/tightness.py``; docs/bound.md, "Delta allocation"). Section 2 is kept in every
    case but gets a small share: it is the loosest route wherever another is computed. A head
    fitted on ``S1`` only (``holdout``) is certified on ``S2`` like a test set, the tightest
    route: it gets half of ``delta`` and the rest is scaled by one half."""
    if holdout:
        rest = headline_fractions(pool=pool, linear_head=linear_head)
        return {"holdout": 0.5, **{k: v / 2 for k, v in rest.items()}}
    if linear_head and pool:
        return {
            "finetune": 0.04,
            "monte_carlo": 0.01,
            "pac_bayes": 0.15,
            "pac_bayes_pool": 0.1,
            "disagreement_prior": 0.35,
            "disagreement_pool": 0.35,
        }
    if linear_head:
        return {"finetune": 0.16, "monte_carlo": 0.04, "pac_bayes": 0.8}
    if pool:
        return {
            "finetune": 0.4,
            "monte_carlo": 0.1,
            "disagreement_prior": 0.25,
            "disagreement_pool": 0.25,
        }
    return {"finetune": 0.8, "monte_carlo": 0.2}


@dataclass(frozen=True)
class DeltaBudget:
    """``delta`` split into named shares (fractions summing to at most 1), the number ``J`` of
    encoder candidates among which the encoder was chosen by looking at ``S``, and the failure
    probabilities of the separate statements (absolute values, not fractions of ``delta``)."""

    delta: float
    fractions: Mapping[str, float]
    encoder_candidates: int = 1
    separate: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")
        if self.encoder_candidates < 1:
            raise ValueError("encoder_candidates must be at least 1")
        if sum(self.fractions.values()) > 1.0 + 1e-9:
            raise ValueError("the fractions of delta sum to more than 1")
        for name, value in self.separate.items():
            if not 0.0 < value < 1.0:
                raise ValueError(f"the failure probability of {name} must lie in (0, 1)")
        object.__setattr__(self, "fractions", MappingProxyType(dict(self.fractions)))
        object.__setattr__(self, "separate", MappingProxyType(dict(self.separate)))

    def share(self, name: str) -> float:
        """The configured failure probability of one statement: ``delta * fraction`` for a
        certificate on the head, the statement's own level for a separate statement."""
        if name in self.separate:
            return self.separate[name]
        return self.delta * self.fractions[name]

    def has(self, name: str) -> bool:
        """Whether the budget gives this statement a (positive) failure probability."""
        return name in self.separate or self.fractions.get(name, 0.0) > 0.0

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
        """Every share of ``delta`` (``delta * fraction``) and every separate statement's level."""
        return {**{name: self.share(name) for name in self.fractions}, **self.separate}

    def to_dict(self, made: Iterable[str] | None = None) -> dict[str, float]:
        """``delta`` and every share, for the report; of the separate statements only those
        ``made`` (all when None): a level of a statement the report does not make means nothing."""
        shares = self.shares()
        if made is not None:
            kept = set(made)
            shares = {k: v for k, v in shares.items() if k not in self.separate or k in kept}
        return {"delta": self.delta, **shares}


__all__ = ["HEADLINE_SHARES", "SEPARATE_STATEMENTS", "DeltaBudget", "headline_fractions"]
