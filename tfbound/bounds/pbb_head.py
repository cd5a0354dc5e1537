"""The certificate of a stochastic linear head trained on the PAC-Bayes bound itself.

Perez-Ortiz, Rivasplata, Shawe-Taylor, Szepesvari (2021, JMLR), "Tighter risk certificates for
neural networks": train the posterior on the bound, certify it with a prior learned on another
part of the data. Here, in the whitened metric of bound-spec 10.2 (``M = C1 + eps tr(C1)/(d+1) I``
from ``S1``, ``x = M^(-1/2) z'``, ``z' = (z, c)``):

- the stochastic head ``Q = N(m~, I)`` in whitened coordinates, i.e. raw augmented heads
  ``theta' ~ N(m', M^(-1))`` with ``m~ = M^(1/2) m'``; it draws a new head for every prediction;
- the priors ``P = N(beta u_1, I)``, ``u_1`` the whitened unit direction of the tool's S1 probe
  (one per ``lambda``), ``beta`` on the grid of spec 10.2 (including 0): the same family as
  ``pac_bayes_gibbs_bound``, a function of ``S1`` and configuration constants only;
- the exact Gibbs error on ``S2``: ``y theta' . z' ~ N(y m~ . x, ||x||^2)``, so
  ``e_hat = mean_S2 Phi(-y_i m~ . x_i / ||x_i||)`` (a zero ``x_i`` counts as a loss);
- ``KL(Q || P_beta) = ||m~ - beta u_1||^2 / 2 = (||m~||^2 + beta^2 - 2 beta m~ . u_1) / 2``;
- with probability at least ``1 - delta_q``, for every posterior at once (Maurer 2004,
  ``xi(n2) <= 2 sqrt(n2)``; union over the ``J_lambda J_beta`` priors):
  ``e(Q) <= kl_inv(e_hat, (KL + log(xi(n2) J_lambda J_beta / delta_q)) / n2)``, minimised over
  the priors.

The core, :func:`pbb_head_certificate`, is a pure function of per-example scalars on ``S2``
(``mean_scores = m' . z'_i = m~ . x_i``, ``x_norms = ||M^(-1/2) z'_i||``, ``y2``) and of two
facts about the whitened mean (``||m~||^2`` and ``m~ . u_1`` per prior): a streamed pass over
``S2`` needs nothing else. :class:`PriorGeometry` is everything fitted on ``S1`` (the metric
and the prior directions) and turns a batch of raw features into those scalars;
:func:`pbb_head_bound` is the in-memory wrapper (features in, certificate out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from tfbound.bounds.pac_bayes import fit_prior_heads, lam_grid_of
from tfbound.bounds.pac_bayes_search import DEFAULT_BETA_GRID, check_grid
from tfbound.bounds.split import (
    as_float64_matrix,
    as_head,
    as_labels,
    augment_features,
    split_indices,
)
from tfbound.keys import TermKey
from tfbound.measures.binomial import kl_inv, xi
from tfbound.measures.gaussian import Metric, std_normal_cdf, unit_direction
from tfbound.terms import Status, Term

_xi = lru_cache(maxsize=256)(xi)

SOURCE = (
    "Perez-Ortiz, Rivasplata, Shawe-Taylor, Szepesvari (2021, JMLR), a posterior trained on the "
    "PAC-Bayes bound, certified by Maurer's (2004) PAC-Bayes-kl bound with xi(n2) <= 2 sqrt(n2) "
    "and a prior learned on S1 (bound-spec 10.1-10.2's family); docs/bound.md"
)


def gibbs_error_from_scalars(
    mean_scores: np.ndarray, x_norms: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Per example ``Phi(-y_i s_i / ||x_i||)``: the probability that ``theta ~ Q`` errs
    (``y theta . x <= 0``), exact for a Gaussian ``Q`` with identity covariance in the metric;
    1 where ``x_i = 0`` (no head predicts a sign there)."""
    s = np.asarray(mean_scores, dtype=np.float64).reshape(-1)
    r = np.asarray(x_norms, dtype=np.float64).reshape(-1)
    yy = np.asarray(y, dtype=np.float64).reshape(-1)
    safe = np.where(r > 0, r, 1.0)
    return np.where(r > 0, std_normal_cdf(-yy * s / safe), 1.0)


def kl_to_prior(mean_norm_sq: float, mean_dot_prior: float, beta: float) -> float:
    """``KL(N(m~, I) || N(beta u_1, I)) = (||m~||^2 + beta^2 - 2 beta m~ . u_1) / 2`` for a unit
    (or zero) ``u_1``."""
    return max(0.0, (mean_norm_sq + beta * beta - 2.0 * beta * mean_dot_prior) / 2.0)


@dataclass(frozen=True)
class PbbHeadCertificate:
    """The certified Gibbs error of the stochastic head and the cell that attains it."""

    bound: float
    empirical_gibbs: float  # e_hat on S2
    kl: float
    beta: float
    lam: float
    mean_norm: float  # ||m~||
    mean_dot_prior: float  # m~ . u_1 of the chosen prior
    n2: int
    xi_n2: float
    log_term: float  # log(xi(n2) J_lambda J_beta / delta_q)
    delta_q: float
    lam_grid: tuple[float, ...]
    beta_grid: tuple[float, ...]


def pbb_head_certificate(
    mean_scores: np.ndarray,
    x_norms: np.ndarray,
    y2: np.ndarray,
    *,
    mean_norm_sq: float,
    mean_dot_prior: Sequence[float],
    delta_q: float,
    lam_grid: Sequence[float],
    beta_grid: Sequence[float] = DEFAULT_BETA_GRID,
) -> PbbHeadCertificate:
    """The Gibbs certificate from the ``S2`` scalars (see the module docstring).

    ``mean_scores[i] = m' . z'_i`` (the mean head's raw score), ``x_norms[i] = ||M^(-1/2) z'_i||``,
    ``y2`` in ``{-1, +1}``; ``mean_norm_sq = ||m~||^2`` and ``mean_dot_prior[j] = m~ . u_1^(j)``
    for the prior head of ``lam_grid[j]`` (``u_1`` a unit vector, or 0 for a zero probe). The
    caller guarantees that ``M`` and the priors are functions of ``S1`` only; the mean may
    depend on anything (the bound holds for every posterior at once).
    """
    s = np.asarray(mean_scores, dtype=np.float64).reshape(-1)
    r = np.asarray(x_norms, dtype=np.float64).reshape(-1)
    n2 = int(s.shape[0])
    yy = as_labels(y2, n2, "y2")
    if n2 < 1 or r.shape[0] != n2:
        raise ValueError("mean_scores and x_norms need one value per S2 example")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(r)) and np.all(r >= 0)):
        raise ValueError("mean_scores must be finite and x_norms finite and >= 0")
    if not 0 < delta_q < 1:
        raise ValueError(f"delta_q must lie in (0, 1), got {delta_q}")
    lams = tuple(float(v) for v in lam_grid)
    dots = np.asarray(mean_dot_prior, dtype=np.float64).reshape(-1)
    if not lams or dots.shape[0] != len(lams):
        raise ValueError("mean_dot_prior needs one value per entry of lam_grid")
    msq = float(mean_norm_sq)
    if not (math.isfinite(msq) and msq >= 0 and np.all(np.isfinite(dots))):
        raise ValueError("mean_norm_sq must be finite and >= 0, mean_dot_prior finite")
    # Cauchy-Schwarz for unit prior directions (up to rounding): a larger m~ . u_1 would make
    # the KL too small
    limit = math.sqrt(msq) * (1 + 1e-9) + 1e-12
    if np.any(np.abs(dots) > limit):
        raise ValueError("|m~ . u_1| exceeds ||m~||: the prior directions must be unit vectors")
    betas = check_grid(beta_grid, "beta_grid")
    e_hat = float(np.mean(gibbs_error_from_scalars(s, r, yy)))
    xi_n2 = _xi(n2)
    log_term = (
        math.log(xi_n2) + math.log(len(lams)) + math.log(len(betas)) - math.log(float(delta_q))
    )
    # e_hat does not depend on the prior and kl_inv increases in its second argument: the best
    # prior is the one with the smallest KL
    best = min(
        ((kl_to_prior(msq, float(dots[j]), b), j, b) for j in range(len(lams)) for b in betas),
        key=lambda t: (t[0], t[1], t[2]),
    )
    kl, j, beta = best
    bound = kl_inv(min(1.0, max(0.0, e_hat)), (kl + log_term) / n2)
    return PbbHeadCertificate(
        bound=bound,
        empirical_gibbs=e_hat,
        kl=kl,
        beta=float(beta),
        lam=lams[j],
        mean_norm=math.sqrt(msq),
        mean_dot_prior=float(dots[j]),
        n2=n2,
        xi_n2=xi_n2,
        log_term=log_term,
        delta_q=float(delta_q),
        lam_grid=lams,
        beta_grid=betas,
    )


# --------------------------------------------------------------------------------------------
# What S1 fixes: the metric and the prior directions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PriorGeometry:
    """The metric ``M`` and the whitened unit prior directions ``u_1`` (one per ``lambda``),
    fitted on ``S1`` only, and the bias constant ``c`` of ``z' = (z, c)``."""

    metric: Metric = field(repr=False)
    prior_directions: np.ndarray = field(repr=False)  # (J_lambda, d+1), unit or zero rows
    theta_prior: np.ndarray = field(repr=False)  # (J_lambda, d+1) the probes, raw augmented
    lam_grid: tuple[float, ...]
    bias_const: float
    eps: float

    @property
    def dim(self) -> int:
        return int(self.metric.sqrt.shape[0])

    def whitened_mean(self, mean_aug: np.ndarray) -> np.ndarray:
        """``m~ = M^(1/2) m'`` of a raw augmented mean ``m' = (w, b / c)``."""
        return self.metric.whiten_head(as_head(mean_aug, self.dim, "mean_aug"))

    def kl_inputs(self, mean_aug: np.ndarray) -> tuple[float, tuple[float, ...]]:
        """``(||m~||^2, (m~ . u_1 per prior))``."""
        mt = self.whitened_mean(mean_aug)
        return float(mt @ mt), tuple(float(mt @ u) for u in self.prior_directions)

    def scalars(self, z: np.ndarray, mean_aug: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(m' . z'_i, ||M^(-1/2) z'_i||)`` for a batch of raw features ``z`` ``(b, d)``."""
        za = augment_features(as_float64_matrix(z, "z"), self.bias_const)
        m = as_head(mean_aug, self.dim, "mean_aug")
        x = self.metric.whiten_features(za)
        return za @ m, np.linalg.norm(x, axis=1)

    def raw_scale(self) -> np.ndarray:
        """``S = diag(1, ..., 1, c) M^(-1/2)``: raw heads ``(w, b) = (w_m, b_m) + S xi`` with
        ``xi ~ N(0, I_(d+1))`` are draws of ``Q`` (``theta' = (w, b / c) ~ N(m', M^(-1))``)."""
        scale = np.array(self.metric.inv_sqrt, dtype=np.float64, copy=True)
        scale[-1, :] *= self.bias_const
        return scale


def prior_geometry(
    z1: np.ndarray | torch.Tensor,
    y1: np.ndarray | torch.Tensor,
    *,
    bias_const: float,
    eps: float,
    lam: float | Sequence[float],
) -> PriorGeometry:
    """The metric and the prior probes from the ``S1`` arrays and configuration constants only
    (the same functions as ``pac_bayes_linear``: ``fit_metric``, ``fit_prior_probe``)."""
    z = as_float64_matrix(z1, "z1")
    y = as_labels(y1, z.shape[0], "y1")
    lam_grid = lam_grid_of(lam)
    theta_prior, metric = fit_prior_heads(z, y, lam_grid, bias_const=bias_const, eps=eps)
    return geometry_of(metric, theta_prior, lam_grid, bias_const)


def geometry_of(
    metric: Metric, theta_prior: np.ndarray, lam_grid: Sequence[float], bias_const: float
) -> PriorGeometry:
    """A geometry from an S1 metric and S1 prior probes already fitted (``PacBayesResult``)."""
    dirs = np.stack([unit_direction(metric.whiten_head(t)) for t in theta_prior])
    return PriorGeometry(
        metric, dirs, np.asarray(theta_prior), tuple(lam_grid), float(bias_const), metric.eps
    )


@dataclass(frozen=True, eq=False)
class PbbHeadResult:
    """The certificate and the split it was computed on (in-memory route)."""

    certificate: PbbHeadCertificate
    geometry: PriorGeometry
    n: int
    n1: int
    split_seed: int
    n1_fraction: float
    idx1: np.ndarray = field(repr=False)
    idx2: np.ndarray = field(repr=False)


def pbb_head_bound(
    z: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    mean_aug: np.ndarray | torch.Tensor,
    *,
    bias_const: float,
    split_seed: int,
    delta_q: float,
    n1_fraction: float = 0.5,
    eps: float = 0.1,
    lam: float | Sequence[float] = 1e-3,
    beta_grid: Sequence[float] = DEFAULT_BETA_GRID,
    geometry: PriorGeometry | None = None,
) -> PbbHeadResult:
    """The certificate of ``Q = N(m', M^(-1))`` (raw augmented mean ``mean_aug = (w, b / c)``) on
    the labeled sample ``(z, y)``: split by ``split_indices(n, split_seed, n1_fraction)``, metric
    and priors from ``S1`` (or ``geometry``, already fitted on this ``S1``), bound on ``S2``."""
    zm = as_float64_matrix(z, "z")
    n, d = zm.shape
    ym = as_labels(y, n, "y")
    m = as_head(mean_aug, d + 1, "mean_aug")
    idx1, idx2 = split_indices(n, split_seed, n1_fraction)
    if geometry is None:
        geometry = prior_geometry(zm[idx1], ym[idx1], bias_const=bias_const, eps=eps, lam=lam)
    # the S2 scalars: the one place a streamed pass would fill batch by batch
    scores, norms = geometry.scalars(zm[idx2], m)
    msq, dots = geometry.kl_inputs(m)
    cert = pbb_head_certificate(
        scores,
        norms,
        ym[idx2],
        mean_norm_sq=msq,
        mean_dot_prior=dots,
        delta_q=delta_q,
        lam_grid=geometry.lam_grid,
        beta_grid=beta_grid,
    )
    return PbbHeadResult(
        cert, geometry, n, int(idx1.shape[0]), int(split_seed), float(n1_fraction), idx1, idx2
    )


def describe(cert: PbbHeadCertificate, *, head: str, n1: int, split_seed: int, eps: float) -> str:
    """The certificate's ``formula``: the predictor, the split, the cell and every number."""
    grid = (
        "0 and 2^(k/4), k=-8..40"
        if cert.beta_grid == DEFAULT_BETA_GRID
        else f"{len(cert.beta_grid)} values in [{min(cert.beta_grid):g}, {max(cert.beta_grid):g}]"
    )
    return (
        "stochastic_head_gibbs_bound = min_(lambda,beta) kl_inv(e_hat, (KL + log(xi(n2) "
        f"J_lambda J_beta / delta_q)) / n2) = {cert.bound:.6g}: the Gibbs error of {head}, a "
        "stochastic head Q = N(m~, I) in the metric M = C1 + eps tr(C1)/(d+1) I of S1 (raw heads "
        "(w, b) = mean + posterior.scale xi), not the user's head; prior N(beta u_1, I), u_1 the "
        f"tool's logistic probe on S1; n1={n1}, n2={cert.n2}, split_seed={split_seed}, "
        f"eps={eps:g}, lambda={cert.lam:g} (grid {list(cert.lam_grid)}), beta={cert.beta:.6g} "
        f"(grid {grid}, J_beta={len(cert.beta_grid)}), ||m~||={cert.mean_norm:.6g}, "
        f"m~.u_1={cert.mean_dot_prior:.6g}, KL=||m~ - beta u_1||^2/2={cert.kl:.6g}, "
        f"e_hat=mean_S2 Phi(-y m~.x/||x||)={cert.empirical_gibbs:.6g}, xi(n2)={cert.xi_n2:.6g}, "
        f"log(xi(n2) J_lambda J_beta/delta_q)={cert.log_term:.6g}, delta_q={cert.delta_q:g}"
    )


def stochastic_head_term(
    cert: PbbHeadCertificate,
    *,
    head: str,
    n1: int,
    split_seed: int,
    eps: float,
    confidence: float,
    sha256: str | None = None,
) -> Term:
    """``stochastic_head_gibbs_bound``: certified, quantity ``gibbs_test_error`` (of that head)."""
    details: dict[str, object] = {
        "n1": n1,
        "n2": cert.n2,
        "split_seed": split_seed,
        "eps": eps,
        "lam": cert.lam,
        "beta": cert.beta,
        "n_beta_grid": len(cert.beta_grid),
        "kl": cert.kl,
        "empirical_gibbs": cert.empirical_gibbs,
        "mean_norm": cert.mean_norm,
        "mean_dot_prior": cert.mean_dot_prior,
        "xi_n2": cert.xi_n2,
        "delta_q": cert.delta_q,
    }
    if sha256 is not None:
        details["sha256"] = sha256
    return Term(
        key=TermKey.STOCHASTIC_HEAD_GIBBS.value,
        value=cert.bound,
        status=Status.CERTIFIED,
        quantity="gibbs_test_error",
        formula=describe(cert, head=head, n1=n1, split_seed=split_seed, eps=eps),
        source=SOURCE,
        confidence=confidence,
        details=details,
    )


def observed_stochastic_term(value: float, m_test: int, name: str) -> Term:
    """``observed_stochastic_head_gibbs_test_error``: the stochastic head's exact Gibbs error on
    the test split (a diagnostic beside its certificate)."""
    return Term(
        key=TermKey.OBSERVED_STOCHASTIC_HEAD_GIBBS.value,
        value=value,
        status=Status.DIAGNOSTIC,
        quantity="gibbs_test_error",
        formula="mean_test Phi(-y m~.x/||x||): the exact test error of the stochastic head "
        f"{name} (compare with stochastic_head_gibbs_bound, never with observed_test_error)",
        source="docs/bound.md, on the test split",
        details={"m_test": m_test},
    )


__all__ = [
    "SOURCE",
    "PbbHeadCertificate",
    "PbbHeadResult",
    "PriorGeometry",
    "describe",
    "geometry_of",
    "gibbs_error_from_scalars",
    "kl_to_prior",
    "observed_stochastic_term",
    "pbb_head_bound",
    "pbb_head_certificate",
    "prior_geometry",
    "stochastic_head_term",
]
