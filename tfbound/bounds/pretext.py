"""Pre-training generalization, estimated (bound-spec section 6.1, first two bullets).

The pretext loss ``l_pre(u, t) = (1/D) ||clip(u) - t||^2``, ``clip`` onto a box ``[lo, hi]^D`` fixed
in advance that contains the targets, lies in ``[0, (hi - lo)^2]``.
"""

from __future__ import annotations

import math

from tfbound.terms import Status, Term

HOEFFDING_SOURCE = "Hoeffding (1963) on the held-out mean of a loss bounded in [0, (hi - lo)^2]"


def pretext_terms(
    train_mean: float,
    n_train: int,
    val_mean: float,
    n_val: int,
    box: tuple[float, float],
    delta_val: float,
    *,
    task: str,
    output_dim: int,
) -> list[Term]:
    lo, hi = box
    width = (hi - lo) ** 2 * math.sqrt(math.log(2.0 / delta_val) / (2.0 * n_val))
    gap = val_mean - train_mean
    details = {"task": task, "box": [lo, hi], "D": output_dim, "N": n_train, "N_val": n_val}
    return [
        Term(
            key="pretrain_empirical_risk",
            value=train_mean,
            status=Status.ESTIMATED,
            quantity="pretext_empirical_risk",
            formula="(1/N) sum_train (1/D) ||clip(g(h(x~))) - t||^2",
            source="bound-spec 6.1; one mask per example from the configured seed",
            details=details,
        ),
        Term(
            key="pretrain_heldout_risk",
            value=val_mean,
            status=Status.ESTIMATED,
            quantity="pretext_population_risk",
            formula="(1/N_val) sum_val (1/D) ||clip(g(h(x~))) - t||^2 "
            "+- (hi-lo)^2 sqrt(log(2/delta_val)/(2 N_val))",
            source=HOEFFDING_SOURCE,
            interval=(max(0.0, val_mean - width), min((hi - lo) ** 2, val_mean + width)),
            confidence=1.0 - delta_val,
            details=details,
        ),
        Term(
            key="pretrain_generalization_gap",
            value=gap,
            status=Status.ESTIMATED,
            quantity="pretext_generalization_gap",
            formula="held-out mean - training mean, +- (hi-lo)^2 sqrt(log(2/delta_val)/(2 N_val))",
            source=HOEFFDING_SOURCE,
            interval=(gap - width, gap + width),
            confidence=1.0 - delta_val,
            details=details,
        ),
    ]
