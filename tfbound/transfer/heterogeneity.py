"""Heterogeneity diagnostics of one encoder (bound-spec section 7): the passes over both samples;
the terms are made in ``tfbound.bounds.heterogeneity``.

Samples: held-out pre-training inputs (``pretrain_val``: the encoder never trained on them) and
downstream inputs outside any RadReg set (``downstream_train`` by default). Inputs and features
are separate rows (different spaces). Nothing here is ever summed into a bound; by data processing
a feature-space TV lower bound is also a lower bound on the input TV.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from tfbound.bounds.heterogeneity import gap_term, mmd_term, tv_term
from tfbound.features import Corruption, encode
from tfbound.measures.heterogeneity import (
    mmd2_unbiased,
    transformation_gap,
    tv_lower_bound,
)
from tfbound.pretext import PretextTask
from tfbound.terms import Term
from tfbound.transfer.features import draw_masks


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
        tv_term(
            "tv_lower_bound_inputs",
            f"inputs, {names}",
            tv_lower_bound(x_u, x_t, delta_tv=delta_tv, seed=seed),
        ),
        tv_term(
            "tv_lower_bound_features",
            f"encoder features, {names}",
            tv_lower_bound(z_u, z_t, delta_tv=delta_tv, seed=seed),
        ),
        mmd_term(
            "mmd2_unbiased_inputs",
            f"inputs, {names}",
            mmd2_unbiased(x_u, x_t, n_permutations=n_permutations, seed=seed),
        ),
        mmd_term(
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
        terms.append(gap_term(key, label, gap, mask_seed))
    return terms


__all__ = ["heterogeneity_terms"]
