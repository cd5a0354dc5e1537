"""Network complexity terms of plain MLPs (bound-spec section 4): typed chains in, terms out.

- ``grs_complexity`` (certified, ``complexity``): Golowich-Rakhlin-Shamir 2018 Thm 1 over the
  whole scalar network ``head o encoder`` written bias-free with the constant ``c`` carried;
- ``spectral_complexity`` and ``spectral_capacity_ratio`` (proxy): Bartlett-Foster-Telgarsky;
- ``feature_norm`` (certified): the data-free bound from the a-priori input box;
- MLP heads: ``grs_complexity_head`` and, for non-ReLU heads, ``rirc_mlp_head`` (spec section 2).

Nothing here is ever a component of ``certified_test_error_bound``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tfbound.measures.network import (
    ROUNDING,
    Affine,
    augmented_matrices,
    feature_norm_bound,
    frobenius_product,
    grs_rademacher,
    spectral_complexity,
)
from tfbound.terms import Status, Term

GRS_SOURCE = (
    "Golowich, Rakhlin, Shamir (COLT 2018), Thm 1: Rhat <= (sqrt(2 log(2) L) + 1) "
    "prod_j ||W_j||_F sqrt(sum ||x_i||^2) / n for depth-L bias-free networks with elementwise "
    "1-Lipschitz positively homogeneous activations; bound-spec section 4"
)
BFT_SOURCE = (
    "Bartlett, Foster, Telgarsky (NeurIPS 2017, arXiv 1706.08498), spectral complexity R_A: a "
    "covering-number result whose appendix constants are not carried here (bound-spec section 4: "
    "proxy)"
)
FEATURE_NORM_SOURCE = (
    "bound-spec section 4: b_l = rho_l (||W_l||_2 b_{l-1} + ||c_l||_2), b_0 = B_x; "
    "||LN(x)|| <= min(sqrt(d) ||g||_inf, sqrt(d-1) ||g||_2) + ||beta||_2; a mean of vectors "
    "keeps their common norm bound"
)


def mlp_head_terms(
    chain: Sequence[Affine],
    *,
    sum_sq_features_with_constant: float,
    n: int,
    bias_const: float,
    u_sigma: float,
    delta_mc: float,
) -> list[Term]:
    """GRS over an MLP head alone (features in), and the norm-ball RIRC for non-ReLU heads.

    ``u_sigma`` is the certified upper value of ``E||sum sigma_i z'_i||`` (spec section 3) at
    failure probability ``delta_mc`` (already divided by the number of encoder candidates).
    """
    c = bias_const
    s_z = sum_sq_features_with_constant
    out: list[Term] = []
    act = chain[0].activation
    if act.homogeneous:
        mats = augmented_matrices(chain, c)
        ref = "for a ReLU head the certified RIRC of the chosen ball is `rirc` (path norm, "
        ref += "bound-spec section 2): tighter, and the one inside certified_test_error_bound"
        out.append(
            Term(
                key="grs_complexity_head",
                value=grs_rademacher(mats, s_z, n),
                status=Status.CERTIFIED,
                quantity="complexity",
                formula="(sqrt(2 log(2) L) + 1) prod_j ||A_j||_F sqrt(sum ||z'_i||^2) / n over "
                "the head alone (bias-free, c carried): an upper bound on the empirical "
                "Rademacher complexity of every such head with the trained product of norms; "
                + ref,
                source=GRS_SOURCE,
                confidence=1.0,
                details={
                    "depth": len(mats),
                    "frobenius_norms": [float(torch.linalg.matrix_norm(a)) for a in mats],
                    "sum_sq_features_with_constant": s_z,
                    "n": n,
                    "bias_const": c,
                },
            )
        )
    else:
        w, cj = chain[0].weight, chain[0].bias
        assert cj is not None and chain[1].bias is not None
        v = chain[1].weight.reshape(-1)
        a = float(v.abs().sum()) * ROUNDING
        b = float(torch.sqrt((w * w).sum(dim=1) + (cj / c) ** 2).max()) * ROUNDING
        b0 = abs(float(chain[1].bias.reshape(()))) * ROUNDING
        value = (2.0 * act.lipschitz * a * b * u_sigma + b0 * math.sqrt(n)) / n
        out.append(
            Term(
                key="rirc_mlp_head",
                value=value,
                status=Status.CERTIFIED,
                quantity="complexity",
                formula="(2 L_s a b U_sigma + B_0 sqrt(n)) / n with a = ||v||_1, b = max_j "
                "||(w_j, c_j/c)||, B_0 = |b_0| of the trained head (the RIRC of the ball of "
                "those norms; a test-error bound needs the three-way grid of spec section 2, "
                "not implemented)",
                source="bound-spec section 2 (MLP head, L_s-Lipschitz activation with s(0) = 0; "
                "Ledoux-Talagrand contraction); U_sigma as in section 3",
                confidence=1.0 - delta_mc,
                details={
                    "activation_lipschitz": act.lipschitz,
                    "activation": act.name,
                    "v_l1_norm": a,
                    "max_row_norm": b,
                    "output_bias_abs": b0,
                    "u_sigma": u_sigma,
                    "n": n,
                },
            )
        )
    return out


def mlp_network_terms(
    enc: Sequence[Affine],
    head: Sequence[Affine],
    *,
    sum_sq_inputs_with_constant: float,
    n: int,
    bias_const: float,
    margin_q: float,
    margin_quantile: float,
) -> list[Term]:
    """GRS (certified when every activation is homogeneous) and BFT (proxy) over ``head o
    encoder`` as one bias-free network; ``margin_q`` is the ``margin_quantile`` quantile of the
    training margins ``y_i f_hat(x_i)``."""
    c = bias_const
    chain = [*enc, *head]
    s_x = sum_sq_inputs_with_constant
    mats = augmented_matrices(chain, c)
    out: list[Term] = []
    homogeneous = all(layer.activation.homogeneous for layer in chain)
    names = [f"encoder.{layer.name}" for layer in enc] + [f"head.{layer.name}" for layer in head]
    if homogeneous:
        out.append(
            Term(
                key="grs_complexity",
                value=grs_rademacher(mats, s_x, n),
                status=Status.CERTIFIED,
                quantity="complexity",
                formula="(sqrt(2 log(2) L) + 1) prod_j ||A_j||_F sqrt(sum ||x'_i||^2) / n for "
                "head o encoder as one bias-free network (c carried): an upper bound on the "
                "empirical Rademacher complexity of every such network with the trained product "
                "of Frobenius norms (no probability); a test-error bound needs the grid of "
                "bound-spec section 5",
                source=GRS_SOURCE,
                confidence=1.0,
                details={
                    "depth": len(mats),
                    "layers": names,
                    "frobenius_norms": [float(torch.linalg.matrix_norm(a)) for a in mats],
                    "frobenius_product": frobenius_product(mats),
                    "sum_sq_inputs_with_constant": s_x,
                    "n": n,
                    "bias_const": c,
                },
            )
        )
    r_a, spectral, l21 = spectral_complexity(mats, lipschitz_list(chain))
    q = margin_q
    bft_details = {
        "layers": names,
        "spectral_norms": spectral,
        "l21_norms": l21,
        "lipschitz": lipschitz_list(chain),
    }
    out.append(
        Term(
            key="spectral_complexity",
            value=r_a,
            status=Status.PROXY,
            quantity="complexity",
            formula="R_A = (prod_i rho_i ||A_i||_2) "
            "(sum_i (||A_i^T||_{2,1} / ||A_i||_2)^(2/3))^(3/2) over head o encoder (bias-free, "
            "c carried; M_i = 0)",
            source=BFT_SOURCE,
            details=bft_details,
        )
    )
    out.append(
        Term(
            key="spectral_capacity_ratio",
            value=r_a * math.sqrt(s_x) / (n * q) if q > 0 else None,
            status=Status.PROXY,
            quantity="complexity",
            formula=f"R_A sqrt(sum ||x'_i||^2) / (n q), q the {margin_quantile:g} "
            "quantile of the training margins y_i f_hat(x_i) (the leading term of BFT's margin "
            "bound without its constants and log factors; null when q <= 0)",
            source=BFT_SOURCE,
            details={"q": q, "margin_quantile": margin_quantile},
        )
    )
    return out


def mlp_feature_norm_term(
    enc: Sequence[Affine],
    *,
    box: tuple[float, float],
    input_dim: int,
    inputs_in_box: bool,
    observed_max_train: float,
) -> Term:
    """The data-free bound on every feature norm of an MLP encoder for inputs in ``box``
    (certified when the training inputs lie in the box, else diagnostic)."""
    lo, hi = box
    b_x = math.sqrt(input_dim) * max(abs(lo), abs(hi))
    bounds = feature_norm_bound(enc, b_x)
    inside = inputs_in_box
    observed = observed_max_train
    formula = (
        "b_L with b_l = rho_l (||W_l||_2 b_{l-1} + ||c_l||_2), b_0 = B_x = sqrt(input dim) "
        f"max(|lo|, |hi|) for inputs in the pretext box [{lo:g}, {hi:g}] (a-priori, data-free; "
        "a deterministic bound given the box)"
    )
    status = Status.CERTIFIED
    if not inside:
        status = Status.DIAGNOSTIC
        formula = "NOT CERTIFIED (training inputs leave the box): " + formula
    return Term(
        key="feature_norm",
        value=bounds[-1],
        status=status,
        quantity="feature_norm",
        formula=formula,
        source=FEATURE_NORM_SOURCE,
        confidence=1.0 if inside else None,
        details={
            "input_norm_bound": b_x,
            "box": [lo, hi],
            "per_layer": bounds,
            "observed_max_train": observed,
            "train_inputs_in_box": inside,
        },
    )


def lipschitz_list(chain: Sequence[Affine]) -> list[float]:
    """The Lipschitz constant of the activation after each layer."""
    return [layer.activation.lipschitz for layer in chain]


__all__ = [
    "BFT_SOURCE",
    "FEATURE_NORM_SOURCE",
    "GRS_SOURCE",
    "lipschitz_list",
    "mlp_feature_norm_term",
    "mlp_head_terms",
    "mlp_network_terms",
]
