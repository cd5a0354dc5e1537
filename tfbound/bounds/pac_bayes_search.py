"""The PAC-Bayes search once the normalised margins are known (bound-spec 10.2).

Over the grids of prior scales ``beta`` and margin shifts ``tau`` fixed in advance, and posterior
scales ``mu`` (a continuous choice, free), the smallest ``kl_inv`` bound of the Gibbs and the
derandomised deterministic statements; see ``tfbound.bounds.pac_bayes`` for the whole route.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tfbound.measures.binomial import kl_inv, xi
from tfbound.measures.gaussian import kl_inv_vec, kl_isotropic, phi_scalar, std_normal_cdf

DEFAULT_BETA_GRID: tuple[float, ...] = (0.0,) + tuple(2.0 ** (k / 4) for k in range(-8, 41))
"""``0`` and ``2^(k/4)`` for ``k = -8..40`` (0.25 to 1024): 50 values, fixed in advance."""

DEFAULT_TAU_GRID: tuple[float, ...] = tuple(0.25 * k for k in range(13))
"""``0, 0.25, ..., 3``: 13 values, fixed in advance."""

_MU_GRID_POINTS = 161
_MU_GRID_LOW = 1e-2
_GOLDEN_STEPS = 30
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class PacBayesCell:
    """One certified PAC-Bayes value and the grid cell that attains it.

    ``bound`` is ``kl_inv_value`` for the Gibbs bound and ``min(1, kl_inv_value / Phi(tau))`` for
    the deterministic one; ``kl_inv_value = kl_inv(empirical_loss, rhs)`` bounds
    ``e_tau(Q_mu)`` with ``rhs = (kl + log_term) / n2`` and
    ``log_term = log(xi(n2) J_lambda J_beta J_tau / delta_pb)``.
    """

    bound: float
    kl_inv_value: float
    empirical_loss: float  # e_hat_tau(Q_mu) on S2
    kl: float
    rhs: float
    lam: float
    beta: float
    tau: float
    mu: float
    cos_prior: float  # cos(u, u_1) of the chosen prior head
    phi_tau: float
    n2: int
    log_term: float
    quantity: str  # "gibbs_test_error" or "downstream_test_error"
    status: str = "certified"


def check_grid(grid: Sequence[float], name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in grid)
    if not values or 0.0 not in values:
        raise ValueError(f"{name} must be a non-empty grid that includes 0, got {values}")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"{name} must hold finite values >= 0, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has repeated values")
    return values


def _gibbs_losses(gamma_t: torch.Tensor, tau: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """``mean_i Phi(tau_j - mu_j gamma_i)`` for paired arrays ``tau``, ``mu`` of one shape.

    Row blocks of one buffer allocated once per call and overwritten in place (fresh 32 MB
    temporaries per block made the heap grow by hundreds of MB at n2 = 50k)."""
    flat_tau = torch.as_tensor(np.ascontiguousarray(tau.reshape(-1, 1)))
    flat_mu = torch.as_tensor(np.ascontiguousarray(mu.reshape(-1, 1)))
    n2 = max(1, gamma_t.shape[1])
    rows = min(flat_tau.shape[0], max(1, (1 << 20) // n2))
    buffer = torch.empty((rows, gamma_t.shape[1]), dtype=torch.float64)
    out = torch.empty(flat_tau.shape[0], dtype=torch.float64)
    for start in range(0, flat_tau.shape[0], rows):
        stop = min(flat_tau.shape[0], start + rows)
        arg = buffer[: stop - start]
        torch.mul(flat_mu[start:stop], gamma_t, out=arg)
        arg.neg_().add_(flat_tau[start:stop])  # tau - mu gamma, exactly
        torch.special.ndtr(arg, out=arg)
        torch.mean(arg, dim=1, out=out[start:stop])
    return np.asarray(out.numpy(), dtype=np.float64).reshape(tau.shape)


def pac_bayes_from_margins(
    gamma: np.ndarray,
    cos_prior: Sequence[float],
    *,
    lam_grid: Sequence[float],
    beta_grid: Sequence[float] = DEFAULT_BETA_GRID,
    tau_grid: Sequence[float] = DEFAULT_TAU_GRID,
    delta_pb: float,
) -> tuple[PacBayesCell, PacBayesCell]:
    """``(gibbs, deterministic)`` cells from the ``S2`` margins and the prior cosines.

    ``gamma``: the normalised margins ``y_i u . x_i / ||x_i||`` on ``S2`` (``n2 = len(gamma)``);
    ``cos_prior[j] = cos(u, u_1^(j))`` for the prior head of ``lam_grid[j]`` (use 0 for a zero
    prior head: the KL then over-counts, which only loosens the bound). Everything here is
    one-dimensional; the caller is responsible for the independence of the priors from ``S2``.
    """
    g = np.asarray(gamma, dtype=np.float64).reshape(-1)
    n2 = int(g.shape[0])
    if n2 < 1 or not np.all(np.isfinite(g)) or np.any(np.abs(g) > 1 + 1e-9):
        raise ValueError("gamma must be a non-empty vector of finite margins in [-1, 1]")
    if not 0 < delta_pb < 1:
        raise ValueError(f"delta_pb must lie in (0, 1), got {delta_pb}")
    lams = tuple(float(v) for v in lam_grid)
    cosines = np.clip(np.asarray(cos_prior, dtype=np.float64).reshape(-1), -1.0, 1.0)
    if len(lams) != cosines.shape[0] or not lams:
        raise ValueError("cos_prior needs one value per entry of lam_grid")
    betas = np.asarray(check_grid(beta_grid, "beta_grid"))
    taus = np.asarray(check_grid(tau_grid, "tau_grid"))
    log_term = (
        math.log(xi(n2))
        + math.log(len(lams))
        + math.log(betas.shape[0])
        + math.log(taus.shape[0])
        - math.log(delta_pb)
    )
    phi_taus = np.array([phi_scalar(float(t)) for t in taus])
    gamma_t = torch.as_tensor(g.reshape(1, -1))

    # e_hat depends on (tau, mu) only and the KL on (lambda, beta, mu) only, so for each
    # (lambda, mu) the best beta is the grid value with the smallest KL: the search runs over
    # cells (lambda, tau) and a continuous mu, with beta(lambda, mu) = argmin_beta KL.
    def best_beta(mu: np.ndarray, cos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kl = np.maximum(
            0.0,
            (mu[..., None] ** 2 + betas**2 - 2.0 * mu[..., None] * betas * cos[..., None]) / 2.0,
        )
        k = np.argmin(kl, axis=-1)
        return k, np.take_along_axis(kl, k[..., None], axis=-1)[..., 0]

    mu_high = 4.0 * max(float(betas.max()), math.sqrt(n2), 1.0)
    mu_grid = np.geomspace(_MU_GRID_LOW, mu_high, _MU_GRID_POINTS)
    tau_b, mu_b = np.broadcast_arrays(taus[:, None], mu_grid[None, :])
    e_grid = _gibbs_losses(gamma_t, tau_b, mu_b)  # (T, G)
    _, kl_grid = best_beta(
        np.broadcast_to(mu_grid, (len(lams), _MU_GRID_POINTS)),
        np.broadcast_to(cosines[:, None], (len(lams), _MU_GRID_POINTS)),
    )  # (L, G)
    val_grid = kl_inv_vec(e_grid[None, :, :], (kl_grid[:, None, :] + log_term) / n2)  # (L, T, G)
    best_idx = np.argmin(val_grid, axis=2)
    best_val = np.take_along_axis(val_grid, best_idx[..., None], axis=2)[..., 0]
    best_mu = mu_grid[best_idx]

    # Golden-section refinement of log(mu) between the grid neighbours in every (lambda, tau)
    # cell; the objective is continuous (a minimum over beta of continuous functions) and any
    # mu is valid, so the refined value is kept only where it improves on the grid.
    cj, ct = (a.ravel() for a in np.indices(best_val.shape))
    c_cos, c_tau = cosines[cj], taus[ct]

    def objective(log_mu: np.ndarray) -> np.ndarray:
        mu = np.exp(log_mu)
        e = _gibbs_losses(gamma_t, c_tau, mu)
        _, kl = best_beta(mu, c_cos)
        return kl_inv_vec(e, (kl + log_term) / n2)

    log_grid = np.log(mu_grid)
    idx = best_idx[cj, ct]
    a = log_grid[np.maximum(idx - 1, 0)]
    b = log_grid[np.minimum(idx + 1, _MU_GRID_POINTS - 1)]
    xc = b - _INV_PHI * (b - a)
    xd = a + _INV_PHI * (b - a)
    fc, fd = objective(xc), objective(xd)
    for _ in range(_GOLDEN_STEPS):
        left = fc < fd  # the minimum lies in [a, xd]
        b = np.where(left, xd, b)
        a = np.where(left, a, xc)
        new_x = np.where(left, b - _INV_PHI * (b - a), a + _INV_PHI * (b - a))
        f_new = objective(new_x)
        xc, xd, fc, fd = (
            np.where(left, new_x, xd),
            np.where(left, xc, new_x),
            np.where(left, f_new, fd),
            np.where(left, fc, f_new),
        )
    for x_cand, f_cand in ((xc, fc), (xd, fd)):
        better = f_cand < best_val[cj, ct]
        best_val[cj[better], ct[better]] = f_cand[better]
        best_mu[cj[better], ct[better]] = np.exp(x_cand[better])

    def make_cell(j: int, t: int, quantity: str) -> PacBayesCell:
        mu = float(best_mu[j, t])
        k, _ = best_beta(np.array(mu), np.array(cosines[j]))
        beta, tau, cos = float(betas[int(k)]), float(taus[t]), float(cosines[j])
        e_hat = float(np.mean(std_normal_cdf(tau - mu * g)))
        kl = kl_isotropic(mu, beta, cos)
        rhs = (kl + log_term) / n2
        value = kl_inv(min(1.0, max(0.0, e_hat)), rhs)
        phi_tau = float(phi_taus[t])
        bound = value if quantity == "gibbs_test_error" else min(1.0, value / phi_tau)
        return PacBayesCell(
            bound=bound,
            kl_inv_value=value,
            empirical_loss=e_hat,
            kl=kl,
            rhs=rhs,
            lam=lams[j],
            beta=beta,
            tau=tau,
            mu=mu,
            cos_prior=cos,
            phi_tau=phi_tau,
            n2=n2,
            log_term=log_term,
            quantity=quantity,
        )

    zero_tau = int(np.flatnonzero(taus == 0.0)[0])
    gibbs = make_cell(int(np.argmin(best_val[:, zero_tau])), zero_tau, "gibbs_test_error")
    det_vals = np.minimum(1.0, best_val / phi_taus[None, :])
    jd, td = np.unravel_index(int(np.argmin(det_vals)), det_vals.shape)
    deterministic = make_cell(int(jd), int(td), "downstream_test_error")
    return gibbs, deterministic


__all__ = [
    "DEFAULT_BETA_GRID",
    "DEFAULT_TAU_GRID",
    "PacBayesCell",
    "check_grid",
    "pac_bayes_from_margins",
]
