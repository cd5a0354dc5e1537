"""PAC-Bayes certificates for a linear head with a prior learned on part of ``S`` (spec 10.2).

Setting (spec 10.1): ``S`` is split by a seeded permutation into ``S1`` (``n1``) and ``S2``
(``n2``). Everything the prior depends on is a function of ``S1`` and configuration constants:

- the metric ``C1 = (1/n1) sum_{S1} z' z'^T``, ``M = C1 + eps tr(C1)/(d+1) I`` (``z' = (z, c)``),
  whitened features ``x = M^(-1/2) z'`` and heads ``w~ = M^(1/2) w`` (``w~ . x = w . z'``, so the
  sign classifier is unchanged);
- the prior heads ``theta_1`` (one per ``lambda``), fitted by the tool's own logistic probe on the
  ``S1`` arrays only (``fit_prior_probe``), with ``u_1 = w~_1 / ||w~_1||``;
- the grids of ``beta`` (including 0, the data-free prior) and ``tau`` (including 0).

With ``u = w~_hat / ||w~_hat||`` (the user's head) and ``gamma_i = y_i u . x_i / ||x_i||`` on
``S2``: posterior ``Q_mu = N(mu u, I)``, prior ``P_beta = N(beta u_1, I)``,
``KL = (mu^2 + beta^2 - 2 mu beta cos(u, u_1)) / 2``, margin-shifted loss
``l_tau(theta) = 1{y theta . x <= tau ||x||}`` with exact Gibbs error
``e_hat_tau(Q_mu) = mean_{S2} Phi(tau - mu gamma_i)``. With probability ``1 - delta_pb``, for
every ``lambda``, ``beta``, ``tau`` and every ``mu > 0`` at once (Maurer 2004 PAC-Bayes-kl,
``xi(n2) <= 2 sqrt(n2)``):

    e_tau(Q_mu) <= kl_inv(e_hat_tau(Q_mu), (KL + log(xi(n2) J_lambda J_beta J_tau / delta_pb)) / n2)

- ``gibbs``: the minimum at ``tau = 0``, a bound on the stochastic head's test error
  (quantity ``gibbs_test_error``).
- ``deterministic``: ``min over lambda, beta, tau, mu of min(1, kl_inv(...) / Phi(tau))``, a bound
  on the user's head's test error (quantity ``downstream_test_error``): where the head errs
  (``gamma <= 0``), ``Phi(tau - mu gamma) >= Phi(tau)``, so its 0-1 loss is at most
  ``l_tau``'s Gibbs loss divided by ``Phi(tau)`` pointwise.

``mu`` is optimised continuously (a log grid, then golden-section refinement per cell): any
``mu`` is valid since the bound holds for all of them at once. The search uses a vectorised kl
inversion; the reported numbers are recomputed with ``tfbound.measures.binomial.kl_inv``.
``Phi`` is ``torch.special.ndtr`` (scipy is not a runtime dependency), always evaluated at
``tau - mu gamma`` directly, never as ``1 - Phi``.

MLP heads (spec 10.4): Gaussian noise on an MLP's weights does not centre the vote on the
user's head, so the derandomisation above fails for them; ``pac_bayes_mlp_gibbs`` gives only the
Gibbs bound of the stochastic MLP head (sampled, with its own ``delta_s``). The deterministic MLP
head is certified by section 2 (and by ``disagreement``, which holds for any pair of heads),
never by this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from tfbound.bounds.split import (
    as_float64_matrix,
    as_head,
    as_labels,
    augment_features,
    fit_prior_probe,
    split_indices,
)
from tfbound.measures.binomial import kl_inv, xi

DEFAULT_BETA_GRID: tuple[float, ...] = (0.0,) + tuple(2.0 ** (k / 4) for k in range(-8, 41))
"""``0`` and ``2^(k/4)`` for ``k = -8..40`` (0.25 to 1024): 50 values, fixed in advance."""

DEFAULT_TAU_GRID: tuple[float, ...] = tuple(0.25 * k for k in range(13))
"""``0, 0.25, ..., 3``: 13 values, fixed in advance."""

_MU_GRID_POINTS = 161
_MU_GRID_LOW = 1e-2
_GOLDEN_STEPS = 30
_VEC_BISECT_STEPS = 28
_VEC_NEWTON_STEPS = 3
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def std_normal_cdf(x: np.ndarray | float) -> np.ndarray:
    """``Phi(x)`` in float64 via ``torch.special.ndtr`` (accurate in both tails)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    return np.asarray(torch.special.ndtr(t).numpy(), dtype=np.float64)


def _phi_scalar(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


# --------------------------------------------------------------------------------------------
# The metric and the margins
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Metric:
    """``M = C1 + eps tr(C1)/(d+1) I`` and its square roots (symmetric, float64)."""

    sqrt: np.ndarray = field(repr=False)
    inv_sqrt: np.ndarray = field(repr=False)
    eps: float
    ridge: float  # eps tr(C1) / (d+1)

    def whiten_features(self, z_aug: np.ndarray) -> np.ndarray:
        """``x_i = M^(-1/2) z'_i`` (rows)."""
        return np.asarray(z_aug @ self.inv_sqrt, dtype=np.float64)

    def whiten_head(self, theta: np.ndarray) -> np.ndarray:
        """``w~ = M^(1/2) w``."""
        return np.asarray(self.sqrt @ theta, dtype=np.float64)


def fit_metric(z1_aug: np.ndarray, eps: float) -> Metric:
    """The whitening metric from the augmented ``S1`` features ``(n1, d+1)`` only."""
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number > 0, got {eps}")
    n1, p = z1_aug.shape
    c1 = (z1_aug.T @ z1_aug) / n1
    ridge = float(eps * np.trace(c1) / p)
    evals, evecs = np.linalg.eigh(c1 + ridge * np.eye(p))
    evals = np.maximum(evals, ridge)  # exact arithmetic gives evals >= ridge > 0
    root = np.sqrt(evals)
    return Metric(
        sqrt=(evecs * root) @ evecs.T,
        inv_sqrt=(evecs / root) @ evecs.T,
        eps=float(eps),
        ridge=ridge,
    )


def unit_direction(w_tilde: np.ndarray) -> np.ndarray:
    """``w / ||w||``, or the zero vector when ``w = 0``."""
    norm = float(np.linalg.norm(w_tilde))
    return w_tilde / norm if norm > 0 else np.zeros_like(w_tilde)


def normalised_margins(x: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``gamma_i = y_i u . x_i / ||x_i||`` (``u`` is normalised here; zero rows give 0)."""
    u = unit_direction(np.asarray(u, dtype=np.float64))
    norms = np.linalg.norm(x, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    return np.asarray(np.where(norms > 0, y * (x @ u) / safe, 0.0), dtype=np.float64)


def gibbs_error_exact(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    mu: float,
    u: np.ndarray | torch.Tensor,
    tau: float = 0.0,
) -> float:
    """Exact ``E_{theta ~ N(mu u, I)} mean_i 1{y_i theta . x_i <= tau ||x_i||}``.

    ``u`` is normalised to a unit vector first, so that ``y theta . x / ||x|| ~ N(mu gamma, 1)``
    and the value is ``mean_i Phi(tau - mu gamma_i)``. A zero row ``x_i`` always counts as a loss.
    """
    xm = as_float64_matrix(x, "x")
    ym = as_labels(y, xm.shape[0], "y")
    um = as_head(u, xm.shape[1], "u")
    gamma = normalised_margins(xm, ym, um)
    loss = std_normal_cdf(tau - mu * gamma)
    loss = np.where(np.linalg.norm(xm, axis=1) > 0, loss, 1.0)
    return float(np.mean(loss))


def kl_isotropic(mu: float, beta: float, cos: float) -> float:
    """``KL(N(mu u, I) || N(beta u_1, I)) = (mu^2 + beta^2 - 2 mu beta cos(u, u_1)) / 2``."""
    return max(0.0, (mu * mu + beta * beta - 2.0 * mu * beta * cos) / 2.0)


# --------------------------------------------------------------------------------------------
# The one-dimensional search once the margins are known
# --------------------------------------------------------------------------------------------


def _xlogx(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)


def kl_inv_vec(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Vectorised ``kl_inv``, an upper value of it; used for the search only.

    Bisection on ``[q, min(1, q + sqrt(c/2))]`` (Pinsker: ``kl(q||p) >= 2 (p - q)^2``), then
    Newton steps from the upper end (``kl(q||.)`` is convex and increasing on ``[q, 1)``, so
    they stay above the root), with
    ``kl(q||p) = q log q + (1-q) log(1-q) - q log p - (1-q) log(1-p)``.
    """
    q, c = np.broadcast_arrays(np.asarray(q, dtype=np.float64), np.asarray(c, dtype=np.float64))
    neg_entropy = _xlogx(q) + _xlogx(1.0 - q)
    lo = q.copy()
    hi = np.minimum(1.0, q + np.sqrt(np.maximum(c, 0.0) / 2.0))
    with np.errstate(divide="ignore", invalid="ignore"):  # q = 0 at p = 0, q = 1 at p = 1
        for _ in range(_VEC_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            kl = neg_entropy - q * np.log(mid) - (1.0 - q) * np.log1p(-mid)
            ok = kl <= c
            lo = np.where(ok, mid, lo)
            hi = np.where(ok, hi, mid)
        for _ in range(_VEC_NEWTON_STEPS):
            excess = neg_entropy - q * np.log(hi) - (1.0 - q) * np.log1p(-hi) - c
            slope = (hi - q) / (hi * (1.0 - hi))
            move = (hi < 1.0) & (hi > q) & (excess > 0) & (slope > 0)
            hi = np.where(move, np.maximum(lo, hi - excess / np.where(move, slope, 1.0)), hi)
    return np.where(q >= 1.0, 1.0, hi)


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


def _check_grid(grid: Sequence[float], name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in grid)
    if not values or 0.0 not in values:
        raise ValueError(f"{name} must be a non-empty grid that includes 0, got {values}")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"{name} must hold finite values >= 0, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has repeated values")
    return values


def _gibbs_losses(gamma_t: torch.Tensor, tau: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """``mean_i Phi(tau_j - mu_j gamma_i)`` for paired arrays ``tau``, ``mu`` of one shape."""
    flat_tau = torch.as_tensor(tau.reshape(-1, 1))
    flat_mu = torch.as_tensor(mu.reshape(-1, 1))
    rows = max(1, (1 << 22) // max(1, gamma_t.shape[1]))
    out = []
    for start in range(0, flat_tau.shape[0], rows):
        arg = flat_tau[start : start + rows] - flat_mu[start : start + rows] * gamma_t
        out.append(torch.special.ndtr(arg).mean(dim=1))
    return np.asarray(torch.cat(out).numpy(), dtype=np.float64).reshape(tau.shape)


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
    betas = np.asarray(_check_grid(beta_grid, "beta_grid"))
    taus = np.asarray(_check_grid(tau_grid, "tau_grid"))
    log_term = (
        math.log(xi(n2))
        + math.log(len(lams))
        + math.log(betas.shape[0])
        + math.log(taus.shape[0])
        - math.log(delta_pb)
    )
    phi_taus = np.array([_phi_scalar(float(t)) for t in taus])
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


# --------------------------------------------------------------------------------------------
# The full certificate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PacBayesResult:
    """The two PAC-Bayes certificates of spec 10.2 and everything needed to audit them.

    ``gibbs_bound`` (``= gibbs.bound``, quantity ``gibbs_test_error``) bounds the stochastic head
    ``theta ~ Q_mu`` that draws a new head for every prediction; ``deterministic_bound``
    (``= deterministic.bound``, quantity ``downstream_test_error``) bounds the user's head. Both
    hold together with probability ``1 - delta_pb``.
    """

    gibbs_bound: float
    deterministic_bound: float
    gibbs: PacBayesCell
    deterministic: PacBayesCell
    n: int
    n1: int
    n2: int
    split_seed: int
    n1_fraction: float
    bias_const: float
    eps: float
    delta_pb: float
    lam_grid: tuple[float, ...]
    beta_grid: tuple[float, ...]
    tau_grid: tuple[float, ...]
    xi_n2: float
    log_term: float
    cos_prior: tuple[float, ...]  # cos(u, u_1) per prior head, in lam_grid order
    gibbs_formula: str
    deterministic_formula: str
    head_is_zero: bool  # the user's head is 0 in the metric: both bounds are 1
    theta_prior: np.ndarray = field(repr=False)  # (J_lambda, d+1) prior heads, fitted on S1
    idx1: np.ndarray = field(repr=False)
    idx2: np.ndarray = field(repr=False)
    metric: Metric = field(repr=False)
    u: np.ndarray = field(repr=False)  # the posterior direction in whitened coordinates

    @property
    def formula(self) -> str:
        return f"{self.deterministic_formula}\n{self.gibbs_formula}"

    def gibbs_error(self, z: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
        """Exact Gibbs error of the certified stochastic head ``Q_mu`` (Gibbs cell, ``tau = 0``)
        on labeled features ``z`` (raw, ``(m, d)``), e.g. the test split."""
        zm = as_float64_matrix(z, "z")
        x = self.metric.whiten_features(augment_features(zm, self.bias_const))
        ym = as_labels(y, zm.shape[0], "y")
        if self.head_is_zero:
            return 1.0
        return gibbs_error_exact(x, ym, self.gibbs.mu, self.u, tau=0.0)


def _grid_text(grid: tuple[float, ...]) -> str:
    """The grid itself when short, else its size, range and spacing in words."""
    if grid == DEFAULT_BETA_GRID:
        return "0 and 2^(k/4), k=-8..40"
    if len(grid) <= 16:
        return "(" + ", ".join(f"{v:g}" for v in grid) + ")"
    return f"{len(grid)} values in [{min(grid):g}, {max(grid):g}] including 0"


def _describe(cell: PacBayesCell, head: str, res: dict[str, object]) -> str:
    common = (
        f"Q = N(mu u, I) on the ray of {head}, P = N(beta u_1, I), u_1 the tool's logistic probe "
        f"on S1; metric M = C1 + eps tr(C1)/(d+1) I from S1; n1={res['n1']}, n2={cell.n2}, "
        f"split_seed={res['split_seed']}, eps={res['eps']:g}, lambda={cell.lam:g} "
        f"(grid {res['lam_grid']}), beta={cell.beta:.6g} (grid {res['beta_grid']}, "
        f"J_beta={res['J_beta']}), tau={cell.tau:g} (grid {res['tau_grid']}, "
        f"J_tau={res['J_tau']}), mu={cell.mu:.6g}, "
        f"cos(u,u_1)={cell.cos_prior:.6g}, KL=(mu^2+beta^2-2 mu beta cos)/2={cell.kl:.6g}, "
        f"e_hat_tau=mean_S2 Phi(tau - mu gamma_i)={cell.empirical_loss:.6g}, "
        f"xi(n2)={res['xi_n2']:.6g}, log(xi(n2) J_lambda J_beta J_tau/delta_pb)="
        f"{cell.log_term:.6g}, delta_pb={res['delta_pb']:g}, "
        f"kl_inv(e_hat, (KL+log)/n2)={cell.kl_inv_value:.6g}"
    )
    source = "Maurer 2004 PAC-Bayes-kl bound, mu optimised continuously (valid for all mu at once)"
    if cell.quantity == "gibbs_test_error":
        return (
            "pac_bayes_gibbs_bound = min_(lambda,beta,mu) kl_inv(...) at tau=0 "
            f"({source}); {common}"
        )
    return (
        "pac_bayes_deterministic_bound = min(1, min_(lambda,beta,tau,mu) kl_inv(...) / Phi(tau)) "
        f"({source}; derandomised: where the head errs Phi(tau - mu gamma) >= Phi(tau)); "
        f"Phi(tau)={cell.phi_tau:.6g}; {common}"
    )


def pac_bayes_linear(
    z: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    theta_hat: np.ndarray | torch.Tensor,
    *,
    bias_const: float,
    split_seed: int,
    delta_pb: float,
    n1_fraction: float = 0.8,
    eps: float = 0.1,
    lam: float | Sequence[float] = 1e-3,
    beta_grid: Sequence[float] = DEFAULT_BETA_GRID,
    tau_grid: Sequence[float] = DEFAULT_TAU_GRID,
) -> PacBayesResult:
    """PAC-Bayes certificates (spec 10.2) for the linear head ``theta_hat`` on ``(z, y)``.

    ``z``: the ``(n, d)`` features of the labeled sample ``S``; ``y`` in ``{-1, +1}``;
    ``theta_hat = (theta, b/c)``: the user's head in augmented coordinates (``d+1`` entries),
    fitted on any part of ``S``. ``S`` is split by ``split_indices(n, split_seed, n1_fraction)``;
    the metric and the prior heads (one per ``lam``; ``J_lambda = len(lam)``) come from ``S1``
    only; the bound is evaluated on ``S2``. ``split_seed``, ``eps``, ``lam`` and the grids are
    configuration constants fixed before the data are seen. If the encoder was chosen among
    ``J`` candidates by looking at ``S``, pass ``delta_pb / J``.
    """
    zm = as_float64_matrix(z, "z")
    n, d = zm.shape
    ym = as_labels(y, n, "y")
    th = as_head(theta_hat, d + 1, "theta_hat")
    lam_grid = (float(lam),) if isinstance(lam, int | float) else tuple(float(v) for v in lam)
    if not lam_grid or len(set(lam_grid)) != len(lam_grid):
        raise ValueError(f"lam must be a number or a grid of distinct numbers, got {lam}")
    betas = _check_grid(beta_grid, "beta_grid")
    taus = _check_grid(tau_grid, "tau_grid")

    idx1, idx2 = split_indices(n, split_seed, n1_fraction)
    # The prior's inputs: the S1 arrays and configuration constants, nothing else.
    z1, y1 = zm[idx1], ym[idx1]
    theta_prior = np.stack(
        [fit_prior_probe(z1, y1, lam=v, bias_const=bias_const) for v in lam_grid]
    )
    metric = fit_metric(augment_features(z1, bias_const), eps)

    x2 = metric.whiten_features(augment_features(zm[idx2], bias_const))
    y2 = ym[idx2]
    u = unit_direction(metric.whiten_head(th))
    u1 = [unit_direction(metric.whiten_head(t)) for t in theta_prior]
    cosines = tuple(float(np.clip(u @ v, -1.0, 1.0)) for v in u1)
    head_is_zero = not bool(np.any(u))
    gamma = normalised_margins(x2, y2, u)
    gibbs, deterministic = pac_bayes_from_margins(
        gamma, cosines, lam_grid=lam_grid, beta_grid=betas, tau_grid=taus, delta_pb=delta_pb
    )
    if head_is_zero:  # the zero head predicts no sign: it errs everywhere
        gibbs = _replace_bound(gibbs, 1.0)
        deterministic = _replace_bound(deterministic, 1.0)
    n2 = int(idx2.shape[0])
    xi_n2 = xi(n2)
    info: dict[str, object] = {
        "n1": int(idx1.shape[0]),
        "split_seed": int(split_seed),
        "eps": float(eps),
        "lam_grid": lam_grid,
        "J_beta": len(betas),
        "beta_grid": _grid_text(betas),
        "tau_grid": _grid_text(taus),
        "J_tau": len(taus),
        "xi_n2": xi_n2,
        "delta_pb": float(delta_pb),
    }
    note = " (the user's head is zero: bound 1)" if head_is_zero else ""
    return PacBayesResult(
        gibbs_bound=gibbs.bound,
        deterministic_bound=deterministic.bound,
        gibbs=gibbs,
        deterministic=deterministic,
        n=n,
        n1=int(idx1.shape[0]),
        n2=n2,
        split_seed=int(split_seed),
        n1_fraction=float(n1_fraction),
        bias_const=float(bias_const),
        eps=float(eps),
        delta_pb=float(delta_pb),
        lam_grid=lam_grid,
        beta_grid=betas,
        tau_grid=taus,
        xi_n2=xi_n2,
        log_term=gibbs.log_term,
        cos_prior=cosines,
        gibbs_formula=_describe(gibbs, "the user's head", info) + note,
        deterministic_formula=_describe(deterministic, "the user's head", info) + note,
        head_is_zero=head_is_zero,
        theta_prior=theta_prior,
        idx1=idx1,
        idx2=idx2,
        metric=metric,
        u=u,
    )


def _replace_bound(cell: PacBayesCell, bound: float) -> PacBayesCell:
    return replace(cell, bound=bound, kl_inv_value=bound)


# --------------------------------------------------------------------------------------------
# MLP heads: the sampled Gibbs bound only (spec 10.4)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlpGibbsCell:
    """One cell ``(prior mean, s)``: prior ``N(theta_0, s^2 I)``, posterior ``N(theta_hat, s^2 I)``.

    ``bound = kl_inv(sampled_upper, rhs)`` with ``rhs = (kl + log(xi(n2) J_P / delta_pb)) / n2``
    and ``sampled_upper = kl_inv(sampled_error, log(J / delta_s) / n_samples)``.
    """

    prior_index: int
    sigma: float
    kl: float  # ||theta_hat - theta_0||^2 / (2 s^2)
    sampled_error: float  # mean over the sampled heads of their error on S2
    sampled_upper: float
    rhs: float
    bound: float


@dataclass(frozen=True)
class MlpGibbsResult:
    """The Gibbs bound of the stochastic MLP head (quantity ``gibbs_test_error``), holding with
    probability ``1 - delta_pb - delta_s``; never a bound on the deterministic MLP head."""

    gibbs_bound: float
    best: MlpGibbsCell
    cells: tuple[MlpGibbsCell, ...]
    n2: int
    n_samples: int
    sigma_grid: tuple[float, ...]
    n_priors: int
    delta_pb: float
    delta_s: float
    seed: int
    xi_n2: float
    log_term: float  # log(xi(n2) J_P / delta_pb), J_P = n_priors * len(sigma_grid)
    sampling_term: float  # log(J / delta_s) / n_samples, J = len(sigma_grid) cells sampled
    formula: str
    quantity: str = "gibbs_test_error"
    status: str = "certified"


def _flat_params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float64) for k, v in module.named_parameters()}


def pac_bayes_mlp_gibbs(
    head: nn.Module,
    prior_heads: Sequence[nn.Module],
    z2: np.ndarray | torch.Tensor,
    y2: np.ndarray | torch.Tensor,
    *,
    sigma_grid: Sequence[float],
    n_samples: int,
    delta_pb: float,
    delta_s: float,
    seed: int,
    batch: int = 64,
) -> MlpGibbsResult:
    """Sampled PAC-Bayes Gibbs bound for a head of any architecture (spec 10.4), ``tau = 0``.

    ``head``: the user's fitted head (``theta_hat``), a module mapping ``(m, d)`` features to
    ``(m,)`` scores; ``prior_heads``: modules of the same architecture holding the prior means
    ``theta_0`` -- a data-free initialisation (a seed and the configuration only) or an ``S1``
    fit started from it, never anything that saw ``S2``; ``z2``, ``y2``: the ``S2`` features and
    labels; ``sigma_grid``: the values of ``s``, fixed in advance. For every ``s`` the posterior
    ``N(theta_hat, s^2 I)`` is sampled ``n_samples`` times (seeded); a sampled head errs on
    ``(z, y)`` when ``y f(z) <= 0``. With ``J = len(sigma_grid)`` cells sampled and
    ``J_P = len(prior_heads) * len(sigma_grid)`` priors, with probability
    ``1 - delta_pb - delta_s``, for every cell,
    ``e(Q) <= kl_inv(kl_inv(E_hat, log(J/delta_s)/n_samples), (KL + log(xi(n2) J_P/delta_pb))/n2)``
    (the sampled errors are iid in ``[0, 1]``, so the kl-Chernoff bound applies to their mean).
    Another initialisation than the one the head was trained from lands in a permuted basin and
    makes the KL vacuous.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    for name, delta in (("delta_pb", delta_pb), ("delta_s", delta_s)):
        if not 0 < delta < 1:
            raise ValueError(f"{name} must lie in (0, 1), got {delta}")
    sigmas = tuple(float(v) for v in sigma_grid)
    if not sigmas or any(not (v > 0 and math.isfinite(v)) for v in sigmas):
        raise ValueError(f"sigma_grid must hold finite values > 0, got {sigmas}")
    if not prior_heads:
        raise ValueError("need at least one prior head")
    zm = torch.as_tensor(as_float64_matrix(z2, "z2"))
    ym = torch.as_tensor(as_labels(y2, zm.shape[0], "y2"))
    n2 = int(zm.shape[0])

    was_training = head.training
    head.eval()
    try:
        params = _flat_params(head)
        names = list(params)
        flat_hat = torch.cat([params[k].reshape(-1) for k in names])
        dist2 = []
        for j, prior in enumerate(prior_heads):
            p0 = _flat_params(prior)
            if list(p0) != names or any(p0[k].shape != params[k].shape for k in names):
                raise ValueError(f"prior head {j} does not have the user's head's architecture")
            flat_0 = torch.cat([p0[k].reshape(-1) for k in names])
            dist2.append(float(torch.sum((flat_hat - flat_0) ** 2)))

        def errors_of(flat: torch.Tensor) -> torch.Tensor:
            sample: dict[str, torch.Tensor] = {}
            start = 0
            for k in names:
                size = params[k].numel()
                sample[k] = flat[start : start + size].reshape(params[k].shape)
                start += size
            scores = torch.func.functional_call(head, sample, (zm,)).reshape(-1)
            return (ym * scores <= 0).to(torch.float64).mean()

        batched = torch.func.vmap(errors_of)
        gen = torch.Generator().manual_seed(int(seed))
        sampled: list[float] = []
        with torch.no_grad():
            for s in sigmas:
                total = 0.0
                for start in range(0, n_samples, batch):
                    k = min(batch, n_samples - start)
                    noise = torch.randn(k, flat_hat.numel(), generator=gen, dtype=torch.float64)
                    total += float(batched(flat_hat + s * noise).sum())
                sampled.append(total / n_samples)
    finally:
        head.train(was_training)

    n_priors = len(prior_heads)
    xi_n2 = xi(n2)
    log_term = math.log(xi_n2) + math.log(n_priors * len(sigmas)) - math.log(delta_pb)
    sampling_term = (math.log(len(sigmas)) - math.log(delta_s)) / n_samples
    cells = []
    for j in range(n_priors):
        for i, s in enumerate(sigmas):
            e_hat = min(1.0, max(0.0, sampled[i]))
            upper = kl_inv(e_hat, sampling_term)
            kl = dist2[j] / (2.0 * s * s)
            rhs = (kl + log_term) / n2
            cells.append(MlpGibbsCell(j, s, kl, e_hat, upper, rhs, kl_inv(upper, rhs)))
    best = min(cells, key=lambda c: c.bound)
    formula = (
        "pac_bayes_mlp_gibbs_bound = min_(theta_0, s) kl_inv(q, (KL + log(xi(n2) J_P/delta_pb))"
        "/n2), q = kl_inv(E_hat, log(J/delta_s)/n_samples) (Maurer 2004 PAC-Bayes-kl; sampled "
        "Gibbs error of N(theta_hat, s^2 I) on S2, tau=0); KL = ||theta_hat - theta_0||^2/(2 s^2); "
        f"bounds the stochastic head only (gibbs_test_error); n2={n2}, n_samples={n_samples}, "
        f"seed={seed}, s grid {sigmas} (J={len(sigmas)}), priors {n_priors} "
        f"(J_P={n_priors * len(sigmas)}); chosen prior {best.prior_index}, s={best.sigma:g}, "
        f"KL={best.kl:.6g}, E_hat={best.sampled_error:.6g}, q={best.sampled_upper:.6g}, "
        f"xi(n2)={xi_n2:.6g}, delta_pb={delta_pb:g}, delta_s={delta_s:g}"
    )
    return MlpGibbsResult(
        gibbs_bound=best.bound,
        best=best,
        cells=tuple(cells),
        n2=n2,
        n_samples=int(n_samples),
        sigma_grid=sigmas,
        n_priors=n_priors,
        delta_pb=float(delta_pb),
        delta_s=float(delta_s),
        seed=int(seed),
        xi_n2=xi_n2,
        log_term=log_term,
        sampling_term=sampling_term,
        formula=formula,
    )
