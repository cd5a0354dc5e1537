"""Heterogeneity diagnostics (bound-spec section 7) as ``diagnostic`` terms: TV lower bounds,
MMD^2 and transformation gaps. Never summed into a bound."""

from __future__ import annotations

from typing import Any

from tfbound.measures.heterogeneity import MmdEstimate, TransformationGap, TvLowerBound
from tfbound.terms import Status, Term

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


def tv_term(key: str, space: str, tv: TvLowerBound) -> Term:
    """A TV lower bound (diagnostic) from a domain classifier's balanced accuracy."""
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
            "m_pretrain": tv.m_u,
            "m_downstream": tv.m_t,
            "delta_tv": tv.delta_tv,
            "l2_chosen": tv.l2,
            "n_train": list(tv.n_train),
            "n_tune": list(tv.n_tune),
        },
    )


def mmd_term(key: str, space: str, est: MmdEstimate) -> Term:
    """The unbiased MMD^2 (diagnostic)."""
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
            "m_pretrain": est.m,
            "m_downstream": est.n,
            "note": "for a kernel bounded by 1, MMD <= 2 TV (another lower bound on TV)",
        },
    )


def gap_term(key: str, label: str, gap: TransformationGap, mask_seed: int) -> Term:
    """The mean feature displacement under the pretext corruption (diagnostic)."""
    details: dict[str, Any] = {
        "stderr": gap.stderr,
        "n": gap.n,
        "mean_feature_norm": gap.mean_feature_norm,
        "relative": gap.relative,
        "mask_seed": mask_seed,
    }
    return Term(
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


__all__ = ["GAP_SOURCE", "MMD_SOURCE", "TV_SOURCE", "gap_term", "mmd_term", "tv_term"]
