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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from tfbound.bounds.pac_bayes_search import (
    DEFAULT_BETA_GRID,
    DEFAULT_TAU_GRID,
    PacBayesCell,
    check_grid,
    pac_bayes_from_margins,
)
from tfbound.bounds.split import (
    as_float64_matrix,
    as_head,
    as_labels,
    augment_features,
    fit_prior_probe,
    split_indices,
)
from tfbound.measures.binomial import xi
from tfbound.measures.gaussian import (
    Metric,
    fit_metric,
    metric_from_second_moment,
    normalised_margins,
    std_normal_cdf,
    unit_direction,
)


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

    def gibbs_error_from_margins(self, gamma: np.ndarray, nonzero: np.ndarray) -> float:
        """The same from the normalised margins ``y u . x / ||x||`` of labeled examples and
        whether each whitened row is nonzero (a zero row always counts as a loss)."""
        if self.head_is_zero:
            return 1.0
        loss = std_normal_cdf(-self.gibbs.mu * np.asarray(gamma, dtype=np.float64))
        return float(np.mean(np.where(nonzero, loss, 1.0)))


def lam_grid_of(lam: float | Sequence[float]) -> tuple[float, ...]:
    """The prior probes' ``lambda`` grid: one number, or distinct numbers (``J_lambda``)."""
    grid = (float(lam),) if isinstance(lam, int | float) else tuple(float(v) for v in lam)
    if not grid or len(set(grid)) != len(grid):
        raise ValueError(f"lam must be a number or a grid of distinct numbers, got {lam}")
    return grid


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
        f"J_beta={res['n_beta_grid']}), tau={cell.tau:g} (grid {res['tau_grid']}, "
        f"J_tau={res['n_tau_grid']}), mu={cell.mu:.6g}, "
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
    lam_grid = lam_grid_of(lam)
    betas = check_grid(beta_grid, "beta_grid")
    taus = check_grid(tau_grid, "tau_grid")

    idx1, idx2 = split_indices(n, split_seed, n1_fraction)
    # The prior's inputs: the S1 arrays and configuration constants, nothing else.
    prior = fit_pac_bayes_prior(
        zm[idx1],
        ym[idx1],
        n=n,
        idx1=idx1,
        idx2=idx2,
        bias_const=bias_const,
        split_seed=split_seed,
        n1_fraction=n1_fraction,
        eps=eps,
        lam_grid=lam_grid,
    )
    x2 = prior.metric.whiten_features(augment_features(zm[idx2], bias_const))
    return pac_bayes_certify(
        prior,
        th,
        normalised_margins(x2, ym[idx2], prior.direction(th)),
        delta_pb=delta_pb,
        beta_grid=betas,
        tau_grid=taus,
    )


@dataclass(frozen=True, eq=False)
class PacBayesPrior:
    """Everything of spec 10.2 that depends on ``S1`` and configuration constants only: the
    split, the metric and the prior heads (one per ``lambda``)."""

    n: int
    idx1: np.ndarray = field(repr=False)
    idx2: np.ndarray = field(repr=False)
    split_seed: int
    n1_fraction: float
    bias_const: float
    eps: float
    lam_grid: tuple[float, ...]
    metric: Metric = field(repr=False)
    theta_prior: np.ndarray = field(repr=False)  # (J_lambda, d+1)
    probe_rows: int  # the S1 rows the probes were fitted on (all of S1, or a seeded subset)

    def direction(self, theta_aug: np.ndarray) -> np.ndarray:
        """``u = M^(1/2) theta' / ||M^(1/2) theta'||`` (zero for a zero head)."""
        return unit_direction(self.metric.whiten_head(theta_aug))


def fit_prior_heads(
    z1_probe: np.ndarray,
    y1_probe: np.ndarray,
    lam_grid: tuple[float, ...],
    *,
    bias_const: float,
    eps: float,
    second_moment: np.ndarray | None = None,
) -> tuple[np.ndarray, Metric]:
    """The prior probes ``(J_lambda, d+1)`` fitted on ``(z1_probe, y1_probe)`` and the metric,
    from ``second_moment`` when given, else from ``z1_probe`` (:func:`fit_pac_bayes_prior`)."""
    theta_prior = np.stack(
        [fit_prior_probe(z1_probe, y1_probe, lam=v, bias_const=bias_const) for v in lam_grid]
    )
    if second_moment is None:
        return theta_prior, fit_metric(augment_features(z1_probe, bias_const), eps)
    return theta_prior, metric_from_second_moment(second_moment, eps)


def fit_pac_bayes_prior(
    z1_probe: np.ndarray,
    y1_probe: np.ndarray,
    *,
    n: int,
    idx1: np.ndarray,
    idx2: np.ndarray,
    bias_const: float,
    split_seed: int,
    n1_fraction: float,
    eps: float,
    lam_grid: tuple[float, ...],
    second_moment: np.ndarray | None = None,
) -> PacBayesPrior:
    """The prior of spec 10.2 from ``S1``: the probes fitted on ``(z1_probe, y1_probe)`` (all of
    ``S1``, or a seeded subset of it fixed in advance), the metric from ``second_moment``
    (``C1 = (1/n1) sum_{S1} z' z'^T``) when given, else from ``z1_probe`` (then all of ``S1``)."""
    theta_prior, metric = fit_prior_heads(
        z1_probe, y1_probe, lam_grid, bias_const=bias_const, eps=eps, second_moment=second_moment
    )
    return PacBayesPrior(
        n=int(n),
        idx1=idx1,
        idx2=idx2,
        split_seed=int(split_seed),
        n1_fraction=float(n1_fraction),
        bias_const=float(bias_const),
        eps=float(eps),
        lam_grid=lam_grid,
        metric=metric,
        theta_prior=theta_prior,
        probe_rows=int(z1_probe.shape[0]),
    )


def pac_bayes_certify(
    prior: PacBayesPrior,
    theta_hat: np.ndarray,
    gamma: np.ndarray,
    *,
    delta_pb: float,
    beta_grid: Sequence[float] = DEFAULT_BETA_GRID,
    tau_grid: Sequence[float] = DEFAULT_TAU_GRID,
) -> PacBayesResult:
    """Both certificates of spec 10.2 from the prior and the normalised margins ``gamma_i =
    y_i u . x_i / ||x_i||`` of the user's head on ``S2`` (in ``prior.idx2`` order)."""
    betas = check_grid(beta_grid, "beta_grid")
    taus = check_grid(tau_grid, "tau_grid")
    lam_grid = prior.lam_grid
    u = prior.direction(theta_hat)
    u1 = [prior.direction(t) for t in prior.theta_prior]
    cosines = tuple(float(np.clip(u @ v, -1.0, 1.0)) for v in u1)
    head_is_zero = not bool(np.any(u))
    gibbs, deterministic = pac_bayes_from_margins(
        gamma, cosines, lam_grid=lam_grid, beta_grid=betas, tau_grid=taus, delta_pb=delta_pb
    )
    if head_is_zero:  # the zero head predicts no sign: it errs everywhere
        gibbs = _replace_bound(gibbs, 1.0)
        deterministic = _replace_bound(deterministic, 1.0)
    idx1, idx2 = prior.idx1, prior.idx2
    n2 = int(idx2.shape[0])
    xi_n2 = xi(n2)
    info: dict[str, object] = {
        "n1": int(idx1.shape[0]),
        "split_seed": prior.split_seed,
        "eps": prior.eps,
        "lam_grid": lam_grid,
        "n_beta_grid": len(betas),
        "beta_grid": _grid_text(betas),
        "tau_grid": _grid_text(taus),
        "n_tau_grid": len(taus),
        "xi_n2": xi_n2,
        "delta_pb": float(delta_pb),
    }
    note = " (the user's head is zero: bound 1)" if head_is_zero else ""
    if prior.probe_rows < idx1.shape[0]:
        note += (
            f"; the prior probe was fitted on a seeded subset of {prior.probe_rows} of the "
            f"{idx1.shape[0]} S1 rows (the metric on all of them)"
        )
    return PacBayesResult(
        gibbs_bound=gibbs.bound,
        deterministic_bound=deterministic.bound,
        gibbs=gibbs,
        deterministic=deterministic,
        n=prior.n,
        n1=int(idx1.shape[0]),
        n2=n2,
        split_seed=prior.split_seed,
        n1_fraction=prior.n1_fraction,
        bias_const=prior.bias_const,
        eps=prior.eps,
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
        theta_prior=prior.theta_prior,
        idx1=idx1,
        idx2=idx2,
        metric=prior.metric,
        u=u,
    )


def _replace_bound(cell: PacBayesCell, bound: float) -> PacBayesCell:
    return replace(cell, bound=bound, kl_inv_value=bound)
