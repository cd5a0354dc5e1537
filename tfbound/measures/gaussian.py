"""Gaussian posteriors on linear heads (bound-spec 10.2): pure functions in float64.

The metric fitted on ``S1`` and the normalised margins, the exact Gibbs error
``mean Phi(-mu gamma_i)`` of ``N(mu u, I)`` in that metric, the KL between isotropic Gaussians
and a vectorised upper value of ``kl_inv`` for the grid search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

_VEC_BISECT_STEPS = 28
_VEC_NEWTON_STEPS = 3


def std_normal_cdf(x: np.ndarray | float) -> np.ndarray:
    """``Phi(x)`` in float64 via ``torch.special.ndtr`` (accurate in both tails)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    return np.asarray(torch.special.ndtr(t).numpy(), dtype=np.float64)


def phi_scalar(x: float) -> float:
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
    """The whitening metric from the augmented ``S1`` features ``(n1, d+1)`` only.

    ``d+1 <= n1``: the eigendecomposition of ``M``. ``d+1 > n1``: ``C1`` has rank at most ``n1``,
    and ``M^(+-1/2)`` come from the eigendecomposition of the ``n1 x n1`` Gram matrix
    (``_fit_metric_gram``): the same matrices to round-off, without a ``(d+1)^3``
    decomposition.
    """
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number > 0, got {eps}")
    n1, p = z1_aug.shape
    if p > n1:
        return _fit_metric_gram(z1_aug, eps)
    return _fit_metric_eigh(z1_aug, eps)


def _fit_metric_eigh(z1_aug: np.ndarray, eps: float) -> Metric:
    return metric_from_second_moment((z1_aug.T @ z1_aug) / z1_aug.shape[0], eps)


def metric_from_second_moment(c1: np.ndarray, eps: float) -> Metric:
    """The metric from ``C1 = (1/n1) sum_{S1} z' z'^T`` (what a streamed pass over ``S1`` sums),
    through the eigendecomposition of ``M``."""
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number > 0, got {eps}")
    p = c1.shape[0]
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


def _fit_metric_gram(z1_aug: np.ndarray, eps: float) -> Metric:
    """``M^a = r^a I + Z^T U diag(f_a(s) / n1) U^T Z`` with ``Z Z^T / n1 = U diag(s) U^T`` and
    ``f_a(s) = ((s + r)^a - r^a) / s`` (its limit ``a r^(a-1)`` at ``s = 0``): the columns
    ``Z^T u_k / sqrt(n1 s_k)`` are the eigenvectors of ``C1 = Z^T Z / n1`` with eigenvalues
    ``s_k``, and ``M = C1 + r I`` acts as ``r`` on their orthogonal complement."""
    n1, p = z1_aug.shape
    gram = (z1_aug @ z1_aug.T) / n1
    ridge = float(eps * np.trace(gram) / p)  # tr(C1) = tr(Z Z^T) / n1
    s, u = np.linalg.eigh(gram)
    s = np.maximum(s, 0.0)
    zu = z1_aug.T @ u  # (p, n1)
    powers = []
    for a in (0.5, -0.5):
        scale = ridge**a
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(
                s > 0, scale * np.expm1(a * np.log1p(s / ridge)) / s, a * ridge ** (a - 1.0)
            )
        out = (zu * (f / n1)) @ zu.T
        out[np.diag_indices(p)] += scale
        powers.append(out)
    return Metric(sqrt=powers[0], inv_sqrt=powers[1], eps=float(eps), ridge=ridge)


def unit_direction(w_tilde: np.ndarray) -> np.ndarray:
    """``w / ||w||``, or the zero vector when ``w = 0``."""
    norm = float(np.linalg.norm(w_tilde))
    return w_tilde / norm if norm > 0 else np.zeros_like(w_tilde)


def normalised_margins(x: np.ndarray | torch.Tensor, y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``gamma_i = y_i u . x_i / ||x_i||`` (``u`` is normalised here; zero rows give 0)."""
    return margins_and_norms(x, y, u)[0]


def margins_and_norms(
    x: np.ndarray | torch.Tensor, y: np.ndarray, u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(gamma_i, ||x_i||)`` of whitened rows ``x`` (numpy or torch), in torch: the streamed
    pass calls it on each batch between torch products (a numpy product there makes the BLAS
    and torch thread pools spin against each other)."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    ut = torch.from_numpy(unit_direction(np.asarray(u, dtype=np.float64)))
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64))
    norms = torch.linalg.vector_norm(xt, dim=1)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    gamma = torch.where(norms > 0, yt * (xt @ ut) / safe, torch.zeros_like(norms))
    return gamma.numpy(), norms.numpy()


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


__all__ = [
    "Metric",
    "fit_metric",
    "kl_inv_vec",
    "kl_isotropic",
    "margins_and_norms",
    "metric_from_second_moment",
    "normalised_margins",
    "phi_scalar",
    "std_normal_cdf",
    "unit_direction",
]
