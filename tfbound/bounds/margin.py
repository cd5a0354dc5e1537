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
from dataclasses import dataclass

import numpy as np
import torch

from tfbound.measures.margin import ramp_loss
from tfbound.models.heads import LinearHead, MLPHead

MARGIN_SOURCE = (
    "Mohri, Rostamizadeh, Talwalkar, Foundations of Machine Learning, 2nd ed., Thm 5.8 "
    "(margin bound), with a union bound over the grid rho_k = rho_0 2^(k-1)"
)
ROUNDING = 1.0 + 1e-10  # a norm used in a certified term is inflated to cover float rounding


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


def linear_head_norm(head: LinearHead, bias_const: float) -> float:
    """``r_hat = ||(theta, b / c)||_2`` in float64, inflated to cover rounding."""
    theta = head.linear.weight.detach().to(torch.float64).reshape(-1)
    b = float(head.linear.bias.detach().to(torch.float64).reshape(()))
    return math.sqrt(float(theta @ theta) + (b / bias_const) ** 2) * ROUNDING


def relu_path_norm(head: MLPHead, bias_const: float) -> float:
    """``P_hat = sum_j |v_j| ||(w_j, c_j / c)|| + |b_0| / c`` in float64, inflated for rounding."""
    w = head.fc1.weight.detach().to(torch.float64)
    c_j = head.fc1.bias.detach().to(torch.float64)
    v = head.fc2.weight.detach().to(torch.float64).reshape(-1)
    b0 = float(head.fc2.bias.detach().to(torch.float64).reshape(()))
    row_norms = torch.sqrt((w * w).sum(dim=1) + (c_j / bias_const) ** 2)
    return (float((v.abs() * row_norms).sum()) + abs(b0) / bias_const) * ROUNDING
