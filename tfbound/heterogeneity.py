"""Heterogeneity diagnostics of one encoder (bound-spec section 7), as ``diagnostic`` terms.

Samples: held-out pre-training inputs (``pretrain_val``: the encoder never trained on them) and
downstream inputs outside any RadReg set (``downstream_train`` by default). Inputs and features
are separate rows (different spaces). Nothing here is ever summed into a bound; by data processing
a feature-space TV lower bound is also a lower bound on the input TV.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from tfbound.features import Corruption, encode
from tfbound.measures.heterogeneity import (
    MmdEstimate,
    TvLowerBound,
    mmd2_unbiased,
    transformation_gap,
    tv_lower_bound,
)
from tfbound.pretext import PretextTask
from tfbound.terms import Status, Term
from tfbound.transfer.features import draw_masks

TV_SOURCE = (
    "bound-spec section 7: TV >= 2a - 1 for any classifier's balanced accuracy a; "
    "a >= a_hat - sqrt((1/m_U + 1/m_T) log(1/delta_tv)/8) (McDiarmid) on held-out parts"
)
MMD_SOURCE = (
    "Gretton et al. (2012), JMLR 13, eq. 3 (unbiased U-statistic); Gaussian kernel, bandwidth "
    "the median pairwise distance of the pooled sample; permutation p-value "
    "(1 + #{T_b >= T_obs})/(B + 1)"
)
GAP_SOURCE = "bound-spec section 7: mean ||h(x) - h(x~)||, x~ the pretext-corrupted input"


def _tv_term(key: str, space: str, tv: TvLowerBound) -> Term:
    return Term(
        key=key,
        value=tv.tv_lower_bound,
        status=Status.DIAGNOSTIC,
        quantity="tv_distance_lower_bound",
        formula=f"max(0, 2 a_LCB - 1), a = balanced accuracy of a logistic domain classifier on "
        f"{space} (trained / tuned / tested on separate parts)",
        source=TV_SOURCE,
        confidence=1.0 - tv.delta_tv,
        details={
            "balanced_accuracy": tv.balanced_accuracy,
            "balanced_accuracy_lcb": tv.balanced_accuracy_lcb,
            "accuracy_pretrain": tv.accuracy_u,
            "accuracy_downstream": tv.accuracy_t,
            "m_U": tv.m_u,
            "m_T": tv.m_t,
            "delta_tv": tv.delta_tv,
            "l2_chosen": tv.l2,
            "n_train": list(tv.n_train),
            "n_tune": list(tv.n_tune),
        },
    )


def _mmd_term(key: str, space: str, est: MmdEstimate) -> Term:
    return Term(
        key=key,
        value=est.mmd2,
        status=Status.DIAGNOSTIC,
        quantity="mmd2",
        formula=f"unbiased MMD^2 on {space} (may be negative; no square root taken)",
        source=MMD_SOURCE,
        details={
            "bandwidth": est.bandwidth,
            "p_value": est.p_value,
            "n_permutations": est.n_permutations,
            "m_U": est.m,
            "m_T": est.n,
            "note": "for a kernel bounded by 1, MMD <= 2 TV (another lower bound on TV)",
        },
    )


def heterogeneity_terms(
    encoder: nn.Module,
    task: PretextTask,
    pretrain_x: np.ndarray,
    downstream_x: np.ndarray,
    *,
    delta_tv: float = 0.05,
    n_permutations: int = 200,
    seed: int = 0,
    mask_seed: int = 0,
    batch_size: int = 512,
    labels: tuple[str, str] = ("pretrain_val", "downstream_train"),
) -> list[Term]:
    """TV lower bounds, MMD^2 and transformation gaps of ``encoder`` between the two samples.

    ``pretrain_x`` must be inputs the encoder did not train on; ``mask_seed`` seeds the MAE masks
    of the transformation gap (one mask per example, as in pre-training).
    """
    x_u = np.asarray(pretrain_x, dtype=np.float64).reshape(len(pretrain_x), -1)
    x_t = np.asarray(downstream_x, dtype=np.float64).reshape(len(downstream_x), -1)
    z_u = encode(encoder, np.asarray(pretrain_x), batch_size)
    z_t = encode(encoder, np.asarray(downstream_x), batch_size)
    names = f"{labels[0]} (U) vs {labels[1]} (T)"
    terms = [
        _tv_term(
            "tv_lower_bound_inputs",
            f"inputs, {names}",
            tv_lower_bound(x_u, x_t, delta_tv=delta_tv, seed=seed),
        ),
        _tv_term(
            "tv_lower_bound_features",
            f"encoder features, {names}",
            tv_lower_bound(z_u, z_t, delta_tv=delta_tv, seed=seed),
        ),
        _mmd_term(
            "mmd2_unbiased_inputs",
            f"inputs, {names}",
            mmd2_unbiased(x_u, x_t, n_permutations=n_permutations, seed=seed),
        ),
        _mmd_term(
            "mmd2_unbiased_features",
            f"encoder features, {names}",
            mmd2_unbiased(z_u, z_t, n_permutations=n_permutations, seed=seed),
        ),
    ]
    for key, label, x, z in (
        ("transformation_gap_pretrain", labels[0], pretrain_x, z_u),
        ("transformation_gap_downstream", labels[1], downstream_x, z_t),
    ):
        xa = np.asarray(x)
        masks = draw_masks(task, encoder, xa, mask_seed)
        gap = transformation_gap(
            z, encode(encoder, xa, batch_size, corruption=Corruption(task, masks.keep))
        )
        details: dict[str, Any] = {
            "stderr": gap.stderr,
            "n": gap.n,
            "mean_feature_norm": gap.mean_feature_norm,
            "relative": gap.relative,
            "mask_seed": mask_seed,
        }
        terms.append(
            Term(
                key=key,
                value=gap.mean,
                status=Status.DIAGNOSTIC,
                quantity="transformation_gap",
                formula=f"(1/n) sum ||h(x) - h(x~)|| on {label} (x~: pretext-corrupted; CE: block "
                "zeroed, MAE: encoder on the visible patches only)",
                source=GAP_SOURCE,
                stderr=gap.stderr,
                details=details,
            )
        )
    return terms


__all__ = ["heterogeneity_terms"]
