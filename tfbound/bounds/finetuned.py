"""The fine-tuned encoder (bound-spec section 5): when ``encoder.reference`` names the pre-trained
weights the encoder was fine-tuned from on ``S``, the frozen-encoder certificates no longer hold
(:func:`demote_frozen` shows them as ``diagnostic``) and, for MLP encoders with ReLU, leaky ReLU or
identity activations, :func:`finetuned_mlp_route` gives ``finetuned_test_error_bound``: the margin
bound over ``head o encoder`` as one bias-free network (GRS inside, grid over ``prod ||A_j||_F``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from tfbound.bounds.margin import MARGIN_SOURCE, margin_bound
from tfbound.bounds.network import BFT_SOURCE, GRS_SOURCE, lipschitz_list
from tfbound.keys import Role
from tfbound.measures.network import (
    ROUNDING,
    Affine,
    augmented_matrices,
    frobenius_product,
    grs_factor,
    spectral_complexity,
)
from tfbound.terms import Status, Term

FINETUNED_SOURCE = (
    "bound-spec section 5: " + MARGIN_SOURCE + "; the class is head o encoder as one bias-free "
    "network (Golowich, Rakhlin, Shamir 2018, Thm 1), grid over prod_j ||A_j||_F / gamma"
)
NO_TRANSFORMER_ROUTE = (
    "the encoder was fine-tuned (encoder.reference is set) and is a transformer: no certified "
    "route exists for a fine-tuned transformer encoder (bound-spec section 5); per-layer "
    "distances to the pre-trained weights and the transformer capacity terms are proxies or "
    "diagnostics only"
)
FROZEN_ONLY = (
    "NOT A CERTIFICATE HERE: the encoder was fine-tuned on the labeled sample "
    "(encoder.reference), so the frozen-encoder route (bound-spec sections 2 and 10) does not "
    "apply; shown for comparison only. "
)

#: Held-out terms that stay valid when the encoder was fine-tuned on S (they use the test split).
_STILL_VALID = frozenset({"test_set_bound"})


@dataclass
class FinetunedRoute:
    """The terms, certificate and warnings of the fine-tuned route (spec section 5)."""

    terms: list[Term] = field(default_factory=list)
    bounds: list[Term] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def finetuned_mlp_route(
    enc: Sequence[Affine],
    head: Sequence[Affine],
    reference: Sequence[Affine] | None,
    *,
    scores: np.ndarray,
    labels: np.ndarray,
    sum_sq_inputs_with_constant: float,
    bias_const: float,
    delta_finetune: float,
    encoder_candidates: int,
    rho0: float,
    distances: Mapping[str, float],
    reference_name: str,
) -> FinetunedRoute:
    """Bound-spec section 5: GRS over head o encoder inside the margin bound of section 2.

    ``reference`` is the chain of the pre-trained encoder (None when it is not an MLP);
    ``delta_finetune`` is the configured share, divided here by ``encoder_candidates``;
    ``distances`` the per-layer ``||W - M||_F`` to the reference.
    """
    res = FinetunedRoute()
    c = bias_const
    chain = [*enc, *head]
    mats = augmented_matrices(chain, c)
    ref_chain = reference
    if ref_chain is None or len(ref_chain) != len(enc):
        res.warnings.append("the reference weights do not form the same MLP as the encoder")
        return res
    ref_mats = augmented_matrices([*ref_chain, *head], c)[: len(enc)]
    refs: list[torch.Tensor | None] = [*ref_mats, *([None] * len(head))]
    r_a, spectral, l21 = spectral_complexity(mats, lipschitz_list(chain), refs)
    res.terms.append(
        Term(
            key="spectral_complexity_reference",
            value=r_a,
            status=Status.PROXY,
            quantity="complexity",
            formula="R_A with M_i = the pre-trained encoder weights (augmented), M = 0 for the "
            "head: (prod_i rho_i ||A_i||_2) "
            "(sum_i (||(A_i - M_i)^T||_{2,1} / ||A_i||_2)^(2/3))^(3/2)",
            source=BFT_SOURCE,
            details={"spectral_norms": spectral, "l21_distances": l21},
        )
    )
    res.terms.append(distance_term(distances, reference_name))
    if not all(layer.activation.homogeneous for layer in chain):
        res.warnings.append(
            "no certified fine-tuned route: an activation of head o encoder is not ReLU, leaky "
            "ReLU or identity (bound-spec section 5)"
        )
        return res
    s_x = sum_sq_inputs_with_constant
    q_hat = frobenius_product(mats)
    u = grs_factor(len(mats)) * math.sqrt(s_x) * ROUNDING
    j = encoder_candidates
    delta_1 = delta_finetune / j
    mb = margin_bound(scores, labels, q_hat, u, delta_1=delta_1, rho0=rho0)
    if mb.best is None:
        res.warnings.append("the network is zero: the fine-tuned certificate is the trivial 1")
        return res
    best = mb.best
    common = {"k_star": best.k, "rho_k_star": best.rho, "gamma": mb.gamma, "q_hat": q_hat}
    res.terms += [
        Term(
            key="finetuned_empirical_risk",
            value=best.empirical_risk,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="(1/n) sum_i phi_1(y_i f_k*(x_i)), f_k = (rho_k / Q_hat) f_hat, "
            "Q_hat = prod_j ||A_j||_F of head o encoder",
            source=FINETUNED_SOURCE,
            details=common,
        ),
        Term(
            key="finetuned_complexity",
            value=best.rirc,
            status=Status.CERTIFIED,
            quantity="complexity",
            formula="rho_k* (sqrt(2 log(2) L) + 1) sqrt(sum ||x'_i||^2) / n (GRS over the ball "
            "prod_j ||A_j||_F <= rho_k*, in 0-1 units after /gamma)",
            source=GRS_SOURCE,
            details={**common, "depth": len(mats), "sum_sq_inputs_with_constant": s_x},
        ),
        Term(
            key="finetuned_complexity_term",
            value=best.rirc_term,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="2 * finetuned_complexity",
            source=FINETUNED_SOURCE,
        ),
        Term(
            key="finetuned_confidence",
            value=best.confidence,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="3 sqrt(log(2 k*(k*+1) / delta_1) / (2 n))",
            source=FINETUNED_SOURCE,
            details={"delta_1": delta_1, "delta_k": best.delta_k},
        ),
    ]
    res.bounds.append(
        Term(
            key="finetuned_test_error_bound",
            value=best.total,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="min_k [finetuned_empirical_risk + finetuned_complexity_term + "
            "finetuned_confidence] (at k*): the margin bound over head o encoder, encoder "
            "fine-tuned on S",
            source=FINETUNED_SOURCE,
            confidence=1.0 - delta_finetune,
            components=(
                "finetuned_empirical_risk",
                "finetuned_complexity_term",
                "finetuned_confidence",
            ),
            details={
                **common,
                "delta_1": delta_1,
                "encoder_candidates": j,
                "rho0": rho0,
                "cells_scanned": mb.n_cells,
                "vacuous": best.total >= 1.0,
                "assumes": "the pre-trained weights, c, rho0 fixed independently of S; "
                "activations ReLU/leaky ReLU/identity; no dropout or BatchNorm",
            },
        )
    )
    if best.total >= 1.0:
        res.warnings.append("the fine-tuned certificate is vacuous (>= 1) for this network")
    return res


def distance_term(per_layer: Mapping[str, float], reference_name: str) -> Term:
    """``encoder_distance_to_reference`` (diagnostic) from the per-layer ``||W - M||_F``."""
    total = math.sqrt(sum(v * v for v in per_layer.values()))
    return Term(
        key="encoder_distance_to_reference",
        value=total,
        status=Status.DIAGNOSTIC,
        quantity="distance_to_reference",
        formula="sqrt(sum_layers ||W - M||_F^2), M the pre-trained weights of the same "
        "layer (per layer in details; `tfbound inspect --reference` gives gateable rows)",
        source="bound-spec sections 4 and 5 (distance to reference)",
        details={"per_layer": dict(per_layer), "reference": reference_name},
    )


def demote_frozen(terms: Sequence[Term]) -> list[Term]:
    """Every frozen-encoder certificate as a ``diagnostic`` term, for an encoder fine-tuned on
    the labeled sample (the held-out test-set bound stays certified: it uses the test split)."""
    return [_demote(t) for t in terms]


def _demote(t: Term) -> Term:
    if t.status is not Status.CERTIFIED or t.key in _STILL_VALID:
        return t
    return replace(
        t,
        status=Status.DIAGNOSTIC,
        formula=FROZEN_ONLY + t.formula,
        components=(),
        role=Role.DIAGNOSTIC,
    )


__all__ = [
    "FROZEN_ONLY",
    "NO_TRANSFORMER_ROUTE",
    "FinetunedRoute",
    "demote_frozen",
    "distance_term",
    "finetuned_mlp_route",
]
