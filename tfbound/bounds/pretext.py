"""Pre-training generalization, estimated (bound-spec section 6.1, first two bullets).

The pretext loss ``l_pre(u, t) = (1/D) ||clip(u) - t||^2``, ``clip`` onto a box ``[lo, hi]^D`` fixed
in advance that contains the targets, lies in ``[0, (hi - lo)^2]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tfbound.bounds.network import GRS_SOURCE
from tfbound.measures.network import (
    ROUNDING,
    Affine,
    augmented_matrices,
    frobenius_product,
    grs_factor,
)
from tfbound.terms import Status, Term

PRETEXT_SOURCE = (
    "bound-spec 6.1: Maurer (2016) vector contraction (factor sqrt(2)) of the clipped square "
    "loss (2 (hi-lo)/sqrt(D)-Lipschitz), vector-output Golowich-Rakhlin-Shamir Thm 1 with one "
    "grid over Q, McDiarmid on a loss in [0, (hi-lo)^2]"
)
#: The pretext grid ``Q_k = PRETEXT_Q0 * 2^(k-1)``, fixed in advance (bound-spec 6.1).
PRETEXT_Q0 = 1.0

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
    details = {
        "task": task,
        "box": [lo, hi],
        "output_dim": output_dim,
        "n_pretrain": n_train,
        "n_pretrain_val": n_val,
    }
    return [
        Term(
            key="pretext_empirical_risk",
            value=train_mean,
            status=Status.ESTIMATED,
            quantity="pretext_empirical_risk",
            formula="(1/N) sum_train (1/D) ||clip(g(h(x~))) - t||^2",
            source="bound-spec 6.1; one mask per example from the configured seed",
            details=details,
        ),
        Term(
            key="pretext_heldout_risk",
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
            key="pretext_generalization_gap",
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


def pretext_certificate_terms(
    enc: Sequence[Affine],
    dec: Sequence[Affine],
    *,
    sum_sq_masked_inputs_with_constant: float,
    n: int,
    train_mean: float,
    n_pre: int,
    d_out: int,
    box: tuple[float, float],
    bias_const: float,
    delta_pre: float,
    warnings: list[str],
) -> list[Term]:
    """Bound-spec 6.1: the certified pretext bound of an MLP Context Encoder (encoder + decoder
    as one bias-free network, the constant carried through both).

    ``sum_sq_masked_inputs_with_constant`` is ``sum_i ||x~'_i||^2`` over the ``n`` masked
    pre-training inputs; ``train_mean`` the mean clipped pretext loss over ``n_pre`` of them with
    ``d_out`` targets each. Reasons for leaving the bound out go to ``warnings``.
    """
    if not all(layer.activation.homogeneous for layer in [*enc, *dec]):
        warnings.append(
            "no certified pretext bound (bound-spec 6.1): an activation of encoder + decoder is "
            "not ReLU, leaky ReLU or identity"
        )
        return []
    c = bias_const
    lo, hi = box
    s_x = sum_sq_masked_inputs_with_constant
    mats = augmented_matrices([*enc, *dec], c)
    depth = len(mats)
    q_hat = frobenius_product(mats[:-1]) * float(mats[-1].norm(dim=1).max()) * ROUNDING
    k = 1 if q_hat <= PRETEXT_Q0 else math.ceil(math.log2(q_hat / PRETEXT_Q0) - 1e-12) + 1
    q_k = PRETEXT_Q0 * 2.0 ** (k - 1)
    while q_k < q_hat:  # guard against rounding in log2
        k, q_k = k + 1, q_k * 2.0
    rhat_vec = grs_factor(depth) * d_out * q_k * math.sqrt(s_x) / n
    lip = 2.0 * (hi - lo) / math.sqrt(d_out)
    complexity = 2.0 * math.sqrt(2.0) * lip * rhat_vec
    conf = 3.0 * (hi - lo) ** 2 * math.sqrt(math.log(2.0 * k * (k + 1) / delta_pre) / (2.0 * n))
    total = train_mean + complexity + conf
    details = {
        "k": k,
        "q_hat": q_hat,
        "q_k": q_k,
        "q0": PRETEXT_Q0,
        "depth": depth,
        "output_dim": d_out,
        "n_pretrain": n,
        "box": [lo, hi],
        "bias_const": c,
        "sum_sq_masked_inputs_with_constant": s_x,
        "delta_pre": delta_pre,
    }
    if n != n_pre:
        warnings.append(f"pretext inputs: {n} for the certificate, {n_pre} for the loss")
    terms = [
        Term(
            key="pretext_rademacher_vec",
            value=rhat_vec,
            status=Status.CERTIFIED,
            quantity="complexity",
            formula="(sqrt(2 log(2) L) + 1) D Q_k sqrt(sum ||x~'_i||^2) / N, Q = prod_{j<L} "
            "||A_j||_F max_c ||A_L[c, :]|| over encoder + decoder (bias-free, c carried), "
            "x~ the masked inputs, Q_k = Q0 2^(k-1) the first grid cell above Q_hat",
            source=GRS_SOURCE,
            details=details,
        ),
        Term(
            key="pretext_complexity_term",
            value=complexity,
            status=Status.CERTIFIED,
            quantity="pretext_population_risk",
            formula="2 sqrt(2) (2 (hi - lo) / sqrt(D)) pretext_rademacher_vec",
            source=PRETEXT_SOURCE,
        ),
        Term(
            key="pretext_confidence",
            value=conf,
            status=Status.CERTIFIED,
            quantity="pretext_population_risk",
            formula="3 (hi - lo)^2 sqrt(log(2 k (k+1) / delta_pre) / (2 N))",
            source=PRETEXT_SOURCE,
            details={"k": k, "delta_pre": delta_pre, "n_pretrain": n},
        ),
        Term(
            key="pretext_risk_bound",
            value=total,
            status=Status.CERTIFIED,
            quantity="pretext_population_risk",
            formula="pretext_empirical_risk + pretext_complexity_term + pretext_confidence: "
            "the population pretext loss L_U (clipped square loss, CE masks) of this encoder + "
            "decoder; a different quantity from the downstream test error, never summed into it",
            source=PRETEXT_SOURCE,
            confidence=1.0 - delta_pre,
            details={
                **details,
                "pretext_empirical_risk": train_mean,
                "vacuous": total >= (hi - lo) ** 2,
                "assumes": "one bias-free network (constant carried through encoder and "
                "decoder), ReLU/leaky ReLU/identity activations, no dropout or BatchNorm, the "
                "CE mask fixed in advance, the N pre-training inputs i.i.d. from U",
            },
        ),
    ]
    if total >= (hi - lo) ** 2:
        warnings.append("the certified pretext bound is vacuous (>= (hi - lo)^2)")
    return terms
