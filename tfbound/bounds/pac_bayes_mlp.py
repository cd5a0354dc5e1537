"""PAC-Bayes for heads of any architecture: the sampled Gibbs bound only (bound-spec 10.4).

The stochastic head ``N(theta_hat, s^2 I)`` is sampled; its error on ``S2`` is bounded by the
kl-Chernoff bound over the samples, then PAC-Bayes-kl against a prior ``N(theta_0, s^2 I)``.
It bounds the stochastic head only (quantity ``gibbs_test_error``), never the deterministic one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tfbound.bounds.split import as_float64_matrix, as_labels
from tfbound.measures.binomial import kl_inv, xi


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


#: ``scores_of(params, z)``: the head's ``(m,)`` scores on ``(m, d)`` features with ``params``.
ScoresFn = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


def pac_bayes_sampled_gibbs(
    params: Mapping[str, torch.Tensor],
    prior_params: Sequence[Mapping[str, torch.Tensor]],
    scores_of: ScoresFn,
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

    ``params``: the user's fitted head (``theta_hat``) as named float64 tensors, ``scores_of`` its
    forward function (``tfbound.adapters.functional.pac_bayes_mlp_gibbs`` builds both from a
    module); ``prior_params``: the prior means ``theta_0``, same names and shapes: a data-free
    initialisation (a seed and the configuration only) or an ``S1`` fit started from it, never
    anything that saw ``S2``; ``z2``, ``y2``: the ``S2`` features and labels; ``sigma_grid``:
    the values of ``s``, fixed in advance. For every ``s`` the posterior
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
    if not prior_params:
        raise ValueError("need at least one prior head")
    zm = torch.as_tensor(as_float64_matrix(z2, "z2"))
    ym = torch.as_tensor(as_labels(y2, zm.shape[0], "y2"))
    n2 = int(zm.shape[0])

    names = list(params)
    flat_hat = torch.cat([params[k].reshape(-1) for k in names])
    dist2 = []
    for j, p0 in enumerate(prior_params):
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
        scores = scores_of(sample, zm).reshape(-1)
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

    n_priors = len(prior_params)
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


__all__ = ["MlpGibbsCell", "MlpGibbsResult", "ScoresFn", "pac_bayes_sampled_gibbs"]
