"""The certified fine-tuning bound for a frozen encoder (bound-spec section 2).

With ``rho = R / gamma`` on the grid ``rho_k = rho_0 2^(k-1)`` and cell weights
``delta_1 / (k (k+1))``, simultaneously for all ``k`` with probability ``1 - delta_1 - delta_mc``:

    test_error <= (1/n) sum_i phi_1(y_i f_k(x_i)) + 2 a rho_k U_sigma / n
                  + 3 sqrt(log(2 k (k+1) / delta_1) / (2 n)),

``f_k = (rho_k / r_hat) f_hat`` the rescaled head, ``U_sigma`` the certified upper value of
``E_sigma ||sum_i sigma_i z'_i||`` and ``a = 1`` for a linear head (``r_hat = ||theta'||``) or
``a = 2`` for a one-hidden-layer ReLU head (``r_hat`` the path norm ``P_hat``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tfbound.bounds.budget import DeltaBudget
from tfbound.measures.margin import ramp_loss
from tfbound.measures.network import ROUNDING, Affine
from tfbound.measures.rirc import SIGN_SCHEME, RircEstimate
from tfbound.terms import Status, Term

MARGIN_SOURCE = (
    "Mohri, Rostamizadeh, Talwalkar, Foundations of Machine Learning, 2nd ed., Thm 5.8 "
    "(margin bound), with a union bound over the grid rho_k = rho_0 2^(k-1)"
)


@dataclass(frozen=True)
class GridCell:
    k: int
    rho: float
    delta_k: float
    empirical_risk: float
    rirc: float
    rirc_term: float
    confidence: float

    @property
    def total(self) -> float:
        return self.empirical_risk + self.rirc_term + self.confidence


@dataclass(frozen=True)
class MarginBound:
    head_norm: float  # r_hat = ||theta'|| (linear) or the path norm P_hat (ReLU MLP)
    u_sigma: float
    n: int
    delta_1: float
    rho0: float
    rirc_factor: float
    n_cells: int
    best: GridCell | None  # None when the head norm is 0: the bound is 1

    @property
    def total(self) -> float:
        return 1.0 if self.best is None else self.best.total

    @property
    def gamma(self) -> float | None:
        """The implied margin ``r_hat / rho_k*``."""
        return None if self.best is None else self.head_norm / self.best.rho


def confidence_term(n: int, delta_k: float) -> float:
    """``3 sqrt(log(2 / delta_k) / (2 n))``."""
    return 3.0 * math.sqrt(math.log(2.0 / delta_k) / (2.0 * n))


def margin_bound(
    scores: np.ndarray,
    y: np.ndarray,
    head_norm: float,
    u_sigma: float,
    *,
    delta_1: float,
    rho0: float,
    rirc_factor: float = 1.0,
    max_cells: int = 200,
) -> MarginBound:
    """Minimise the section 2 bound over the grid; ``scores`` are ``f_hat`` on the ``n`` examples.

    Cells are scanned from ``k = 1`` until the complexity term alone reaches 1 (every later cell
    is vacuous) or ``max_cells``.
    """
    margins = np.asarray(y, dtype=np.float64) * np.asarray(scores, dtype=np.float64)
    n = margins.shape[0]
    if n == 0:
        raise ValueError("no examples")
    if not (0 < delta_1 < 1 and rho0 > 0 and u_sigma >= 0 and head_norm >= 0):
        raise ValueError("need 0 < delta_1 < 1, rho0 > 0, u_sigma >= 0, head_norm >= 0")
    if head_norm == 0:
        return MarginBound(head_norm, u_sigma, n, delta_1, rho0, rirc_factor, 0, None)
    unit_margins = margins / head_norm
    best: GridCell | None = None
    k = 0
    for k in range(1, max_cells + 1):
        rho = rho0 * 2.0 ** (k - 1)
        delta_k = delta_1 / (k * (k + 1))
        rirc = rirc_factor * rho * u_sigma / n
        cell = GridCell(
            k=k,
            rho=rho,
            delta_k=delta_k,
            empirical_risk=float(np.mean(ramp_loss(rho * unit_margins))),
            rirc=rirc,
            rirc_term=2.0 * rirc,
            confidence=confidence_term(n, delta_k),
        )
        if best is None or cell.total < best.total:
            best = cell
        if cell.rirc_term >= 1.0:
            break
    return MarginBound(head_norm, u_sigma, n, delta_1, rho0, rirc_factor, k, best)


def linear_head_norm(layer: Affine, bias_const: float) -> float:
    """``r_hat = ||(theta, b / c)||_2`` of a linear head's layer, inflated to cover rounding."""
    theta = layer.weight.reshape(-1)
    assert layer.bias is not None
    b = float(layer.bias.reshape(()))
    return math.sqrt(float(theta @ theta) + (b / bias_const) ** 2) * ROUNDING


def relu_path_norm(layers: Sequence[Affine], bias_const: float) -> float:
    """``P_hat = sum_j |v_j| ||(w_j, c_j / c)|| + |b_0| / c`` of a one-hidden-layer head
    ``layers = [fc1, fc2]``, inflated to cover rounding."""
    fc1, fc2 = layers
    assert fc1.bias is not None and fc2.bias is not None
    w, c_j = fc1.weight, fc1.bias
    v = fc2.weight.reshape(-1)
    b0 = float(fc2.bias.reshape(()))
    row_norms = torch.sqrt((w * w).sum(dim=1) + (c_j / bias_const) ** 2)
    return (float((v.abs() * row_norms).sum()) + abs(b0) / bias_const) * ROUNDING


# ---------------------------------------------------------------------------------------------
# The section-2 terms of the report


RIRC_SOURCE = (
    "bound-spec section 3: Monte Carlo over K sign vectors; McDiarmid upper value "
    "mean + sqrt(sum ||z'||^2) sqrt(2 log(1/delta_mc)/K), capped by Jensen sqrt(sum ||z'||^2); "
    f"{SIGN_SCHEME}"
)


def rirc_terms(est: RircEstimate, mb: MarginBound, head_kind: str) -> list[Term]:
    """The certified RIRC of the chosen ball, its display form, and the sandwich."""
    best = mb.best
    assert best is not None
    a = mb.rirc_factor
    ball = "linear ball ||theta'|| <= rho_k" if head_kind == "linear" else "ReLU path-norm ball"
    common: dict[str, Any] = {
        "u_sigma": mb.u_sigma,
        "mc_mean": est.norm_mean,
        "mc_stderr": est.norm_stderr,
        "mc_upper": est.norm_mc_upper,
        "jensen_upper": est.norm_jensen,
        "khintchine_lower": est.norm_lower,
        "upper_source": est.upper_source,
        "n_draws": est.n_draws,
        "bias_const": est.bias_const,
        "n": est.n,
        "rho_k": best.rho,
    }
    factor = "" if a == 1 else f"{a:g} "
    return [
        Term(
            key="rirc",
            value=best.rirc,
            status=Status.CERTIFIED,
            quantity="complexity",
            formula=f"{factor}rho_k* U_sigma / n (RIRC of the {ball}, in 0-1 units after /gamma)",
            source=RIRC_SOURCE,
            interval=(a * best.rho * est.norm_lower / est.n, best.rirc),
            confidence=1.0 - est.delta_mc,
            details=common,
        ),
        Term(
            key="rirc_term",
            value=best.rirc_term,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="2 * rirc",
            source=MARGIN_SOURCE,
            details={"rirc_factor": a},
        ),
    ]


def margin_terms(mb: MarginBound, delta_1: float, delta_mc: float) -> list[Term]:
    best = mb.best
    assert best is not None
    return [
        Term(
            key="downstream_empirical_risk",
            value=best.empirical_risk,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="(1/n) sum_i phi_1(y_i f_k*(x_i)), f_k = (rho_k / r_hat) f_hat (ramp loss)",
            source=MARGIN_SOURCE,
            details={"gamma": mb.gamma, "head_norm": mb.head_norm, "k_star": best.k},
        ),
        Term(
            key="confidence_finetune",
            value=best.confidence,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="3 sqrt(log(2 k*(k*+1) / delta_1) / (2 n))",
            source=MARGIN_SOURCE,
            details={"delta_1": delta_1, "delta_k": best.delta_k, "k_star": best.k},
        ),
    ]


def capacity_ratio_terms(
    est: RircEstimate, head_norm: float, margins: np.ndarray, q: float
) -> list[Term]:
    rirc_head = head_norm * est.norm_mean / est.n
    quantile = float(np.quantile(margins, q))
    return [
        Term(
            key="rirc_head",
            value=rirc_head,
            status=Status.ESTIMATED,
            quantity="complexity",
            formula="r_hat * (MC mean of ||sum sigma_i z'_i||) / n (grows with the head's scale)",
            source=RIRC_SOURCE,
            stderr=head_norm * est.norm_stderr / est.n,
        ),
        Term(
            key="capacity_ratio",
            value=rirc_head / quantile if quantile > 0 else None,
            status=Status.ESTIMATED,
            quantity="complexity",
            formula=f"rirc_head / q, q the {q:g} quantile of the training margins y_i f_hat(x_i) "
            "(scale-free; null when q <= 0)",
            source="bound-spec section 2 (a gateable capacity number)",
            details={"margin_quantile": q, "q": quantile},
        ),
    ]


def certified_bound(mb: MarginBound, budget: DeltaBudget) -> Term:
    """``certified_test_error_bound``: the margin bound at the best grid cell (section 2)."""
    best = mb.best
    assert best is not None
    return Term(
        key="certified_test_error_bound",
        value=best.total,
        status=Status.CERTIFIED,
        quantity="downstream_test_error",
        formula="min_k [downstream_empirical_risk + rirc_term + confidence_finetune] (at k*)",
        source=MARGIN_SOURCE,
        confidence=budget.confidence("finetune", "monte_carlo"),
        components=("downstream_empirical_risk", "rirc_term", "confidence_finetune"),
        details={
            "k_star": best.k,
            "rho_k_star": best.rho,
            "gamma": mb.gamma,
            "delta_k_star": best.delta_k,
            "delta_1": mb.delta_1,
            "delta_mc": budget.per_candidate("monte_carlo"),
            "encoder_candidates": budget.encoder_candidates,
            "rho0": mb.rho0,
            "cells_scanned": mb.n_cells,
            "head_norm": mb.head_norm,
            "vacuous": best.total >= 1.0,
            "assumes": "encoder, feature map, c, rho0, K and seed fixed independently of the "
            "labeled sample (or chosen among encoder_candidates J of them, each at delta/J); "
            "features in eval mode",
        },
    )


def trivial_bound() -> Term:
    """The trivial certificate 1, for a zero head."""
    return Term(
        key="certified_test_error_bound",
        value=1.0,
        status=Status.CERTIFIED,
        quantity="downstream_test_error",
        formula="1 (the head is zero: every prediction is a tie, counted as an error)",
        source="trivial",
        confidence=1.0,
    )
