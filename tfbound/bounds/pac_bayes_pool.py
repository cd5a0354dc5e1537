"""PAC-Bayes with the unlabeled pool in place of the x2 derandomisation (docs/bound.md).

For the Gaussian posterior ``Q_mu = N(mu u, I)`` of spec 10.2 on the ray of the user's head,
pointwise ``1{w_hat errs} <= 1{theta errs} + 1{(theta . x)(w_hat . x) <= 0}``, so

    err(w_hat) <= e(Q_mu) + d(Q_mu),   d(Q_mu) = E_x' Phi(-mu |u . x'| / ||x'||)  (exact).

``e(Q_mu)`` (the Gibbs 0-1 error) is bounded for every ``mu`` at once by spec 10.2's event at
``delta_pb`` (its ``tau`` grid contains 0); ``d(Q_mu)`` is the mean of a ``[0, 1]``-valued
function of one pool point, bounded by Maurer's kl inequality for bounded variables
(``kl_inv(d_hat, log(xi(m) J_mu / delta_c) / m)``) for every ``mu_k`` of a grid fixed in advance.
The certificate is the smallest ``E_k + D_k`` over the grid, at ``1 - delta_pb - delta_c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tfbound.bounds.pac_bayes import PacBayesResult
from tfbound.bounds.split import as_float64_matrix, as_labels, augment_features
from tfbound.keys import TermKey
from tfbound.measures.binomial import kl_inv, xi
from tfbound.measures.gaussian import normalised_margins
from tfbound.terms import Status, Term

DEFAULT_MU_POOL_GRID: tuple[float, ...] = tuple(2.0 ** (k / 4) for k in range(-8, 57))
"""``2^(k/4)`` for ``k = -8..56`` (0.25 to 16384): 65 posterior scales, fixed in advance."""

SOURCE = (
    "Kaariainen (2005) decomposition err(w_hat) <= e(Q) + d(Q) with Q = N(mu u, I) on the ray "
    "of the user's head; e(Q) by the PAC-Bayes-kl event of bound-spec 10.2 (Maurer 2004), d(Q) "
    "exact per pool point and bounded by Maurer's kl inequality for [0, 1] variables; "
    "docs/bound.md"
)


@dataclass(frozen=True)
class PacBayesPoolResult:
    """The certificate and the grid cell that attains it."""

    bound: float
    gibbs_upper: float  # E_k: the PAC-Bayes bound on e(Q_mu) at the chosen mu
    disagreement_upper: float  # D_k: the kl bound on d(Q_mu) at the chosen mu
    gibbs_empirical: float  # e_hat_0(Q_mu) on S2
    disagreement_empirical: float  # d_hat(mu) on the pool
    mu: float
    kl: float
    lam: float
    beta: float
    n2: int
    m_pool: int
    log_term_pool: float  # log(xi(m) J_mu / delta_c)
    delta_pb: float
    delta_c: float
    n_mu_grid: int


def _phi(x: np.ndarray) -> np.ndarray:
    return np.asarray(torch.special.ndtr(torch.as_tensor(x)).numpy(), dtype=np.float64)


def pac_bayes_pool(
    pac: PacBayesResult,
    z: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    z_pool: np.ndarray | torch.Tensor,
    *,
    delta_c: float,
    mu_grid: Sequence[float] = DEFAULT_MU_POOL_GRID,
) -> PacBayesPoolResult:
    """The pool certificate of the linear head whose PAC-Bayes result is ``pac``.

    ``z``, ``y``: the labeled sample ``S`` that ``pac`` was computed on (its ``S2`` rows give
    ``e_hat``); ``z_pool``: the unlabeled pool's raw features ``(m, d)``, independent of ``S``.
    """
    if not 0 < delta_c < 1:
        raise ValueError(f"delta_c must lie in (0, 1), got {delta_c}")
    grid = np.asarray([float(v) for v in mu_grid], dtype=np.float64)
    if grid.size == 0 or np.any(~np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError("mu_grid must hold positive finite values")
    zm = as_float64_matrix(z, "z")
    ym = as_labels(y, zm.shape[0], "y")
    zp = as_float64_matrix(z_pool, "z_pool")
    if zp.shape[1] != zm.shape[1]:
        raise ValueError(f"z_pool has {zp.shape[1]} features, S has {zm.shape[1]}")
    m = int(zp.shape[0])
    if m < 1:
        raise ValueError("the pool is empty")
    c = pac.bias_const
    x2 = pac.metric.whiten_features(augment_features(zm[pac.idx2], c))
    gamma = normalised_margins(x2, ym[pac.idx2], pac.u)  # (n2,)
    proj, tie = pool_projections(pac, augment_features(zp, c))
    return pac_bayes_pool_from_margins(pac, gamma, proj, tie, delta_c=delta_c, mu_grid=grid)


def pool_projections(
    pac: PacBayesResult, pool_aug: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """``|u . x'| / ||x'||`` of augmented pool features (whitened by ``pac``'s metric) and
    whether each one is a tie (a zero row or a zero projection). In torch: the streamed pass
    calls it on each batch between torch products."""
    za = torch.as_tensor(pool_aug, dtype=torch.float64)
    xw = za @ torch.from_numpy(np.ascontiguousarray(pac.metric.inv_sqrt))
    norms = torch.linalg.vector_norm(xw, dim=1)
    proj = torch.abs(xw @ torch.from_numpy(np.ascontiguousarray(pac.u)))
    proj = proj / torch.where(norms > 0, norms, torch.ones_like(norms))
    return proj.numpy(), ((norms == 0) | (proj == 0)).numpy()


def pac_bayes_pool_from_margins(
    pac: PacBayesResult,
    gamma: np.ndarray,
    proj: np.ndarray,
    tie: np.ndarray,
    *,
    delta_c: float,
    mu_grid: Sequence[float] | np.ndarray = DEFAULT_MU_POOL_GRID,
) -> PacBayesPoolResult:
    """The pool certificate from the normalised margins on ``S2`` and the pool's projections
    (:func:`pool_projections`): what a streamed pass keeps per example."""
    if not 0 < delta_c < 1:
        raise ValueError(f"delta_c must lie in (0, 1), got {delta_c}")
    grid = np.asarray([float(v) for v in mu_grid], dtype=np.float64)
    if grid.size == 0 or np.any(~np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError("mu_grid must hold positive finite values")
    m = int(proj.shape[0])
    if m < 1:
        raise ValueError("the pool is empty")

    # e_hat_0(Q_mu) and d_hat(mu) on the whole grid, in blocks of grid values
    e_hat = np.empty(grid.shape[0])
    d_hat = np.empty(grid.shape[0])
    for k, mu in enumerate(grid):
        e_hat[k] = float(np.mean(_phi(-mu * gamma)))
        d_hat[k] = float(np.mean(np.where(tie, 1.0, _phi(-mu * proj))))
    n2 = int(gamma.shape[0])
    betas = np.asarray(pac.beta_grid, dtype=np.float64)
    cosines = np.asarray(pac.cos_prior, dtype=np.float64)
    # the smallest KL over the prior grid (lambda, beta) for each mu
    kl_all = np.maximum(
        0.0,
        (
            grid[:, None, None] ** 2
            + betas[None, None, :] ** 2
            - 2.0 * grid[:, None, None] * betas[None, None, :] * cosines[None, :, None]
        )
        / 2.0,
    )  # (G, L, B)
    flat = kl_all.reshape(grid.shape[0], -1)
    best = np.argmin(flat, axis=1)
    kl = flat[np.arange(grid.shape[0]), best]
    lam_idx, beta_idx = np.unravel_index(best, kl_all.shape[1:])
    log_pool = math.log(xi(m)) + math.log(grid.shape[0]) - math.log(delta_c)
    gibbs_upper = np.array(
        [
            kl_inv(min(1.0, max(0.0, e)), (kk + pac.log_term) / n2)
            for e, kk in zip(e_hat, kl, strict=True)
        ]
    )
    dis_upper = np.array([kl_inv(min(1.0, max(0.0, d)), log_pool / m) for d in d_hat])
    total = gibbs_upper + dis_upper
    k = int(np.argmin(total))
    bound = 1.0 if pac.head_is_zero else min(1.0, float(total[k]))
    return PacBayesPoolResult(
        bound=bound,
        gibbs_upper=float(gibbs_upper[k]),
        disagreement_upper=float(dis_upper[k]),
        gibbs_empirical=float(e_hat[k]),
        disagreement_empirical=float(d_hat[k]),
        mu=float(grid[k]),
        kl=float(kl[k]),
        lam=float(pac.lam_grid[int(lam_idx[k])]),
        beta=float(betas[int(beta_idx[k])]),
        n2=n2,
        m_pool=m,
        log_term_pool=log_pool,
        delta_pb=pac.delta_pb,
        delta_c=float(delta_c),
        n_mu_grid=int(grid.shape[0]),
    )


def pac_bayes_pool_term(result: PacBayesPoolResult, confidence: float) -> Term:
    r = result
    formula = (
        "pac_bayes_pool_bound = min(1, min_k [E_k + D_k]) over a grid of J_mu="
        f"{r.n_mu_grid} posterior scales mu_k fixed in advance (default 2^(k/4), k=-8..56): "
        "E_k = kl_inv(e_hat_0(Q_mu), (KL + log(xi(n2) J_lambda J_beta "
        "J_tau/delta_pb))/n2) bounds the Gibbs error of Q_mu = N(mu u, I) (bound-spec 10.2, "
        "tau=0); D_k = kl_inv(d_hat(mu), log(xi(m) J_mu/delta_c)/m), d_hat(mu) = mean_pool "
        "Phi(-mu |u.x'|/||x'||) the exact disagreement of Q_mu with the user's head; "
        f"at mu={r.mu:.6g}: e_hat={r.gibbs_empirical:.6g} -> E={r.gibbs_upper:.6g} "
        f"(KL={r.kl:.6g}, lambda={r.lam:g}, beta={r.beta:.6g}, n2={r.n2}), "
        f"d_hat={r.disagreement_empirical:.6g} -> D={r.disagreement_upper:.6g} (m={r.m_pool}, "
        f"log(xi(m) J_mu/delta_c)={r.log_term_pool:.6g}); holds with probability "
        "1 - delta_pb - delta_c"
    )
    return Term(
        key=TermKey.PAC_BAYES_POOL,
        value=r.bound,
        status=Status.CERTIFIED,
        quantity="downstream_test_error",
        formula=formula,
        source=SOURCE,
        confidence=confidence,
        details={
            "mu": r.mu,
            "gibbs_upper": r.gibbs_upper,
            "disagreement_upper": r.disagreement_upper,
            "gibbs_empirical": r.gibbs_empirical,
            "disagreement_empirical": r.disagreement_empirical,
            "kl": r.kl,
            "n2": r.n2,
            "m_pool": r.m_pool,
            "delta_pb": r.delta_pb,
            "delta_c": r.delta_c,
        },
    )


__all__ = [
    "DEFAULT_MU_POOL_GRID",
    "PacBayesPoolResult",
    "pac_bayes_pool",
    "pac_bayes_pool_from_margins",
    "pac_bayes_pool_term",
    "pool_projections",
]
