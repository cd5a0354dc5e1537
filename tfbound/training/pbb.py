"""Training a stochastic linear head on its own PAC-Bayes bound (Perez-Ortiz et al. 2021).

The posterior is ``Q = N(m~, I)`` in the whitened metric of ``S1`` (``tfbound.bounds.pbb_head``);
only its mean ``m~`` is trained. The objective is the certificate itself, evaluated on ``S2``:

    B(m~) = kl_inv( e_hat(m~), (KL(m~) + log(xi(n2) J_lambda J_beta / delta_q)) / n2 ),
    e_hat(m~) = mean_S2 Phi(-a_i . m~),   a_i = y_i x_i / ||x_i||,
    KL(m~) = min_(lambda, beta) ||m~ - beta u_1||^2 / 2.

``e_hat`` is the exact Gibbs error, smooth in ``m~`` (no surrogate loss is needed); ``kl_inv`` is
differentiated implicitly (``kl(q || p) = c`` gives ``dp/dq = -kl_q / kl_p``, ``dp/dc = 1 / kl_p``).
Deterministic, float64: the start is the S1 probe's direction at the best scale on a fixed log
grid; phase 1 runs LBFGS (strong Wolfe) with ``beta`` relaxed to the interval of the grid (a C^1
lower value of the grid KL); phase 2 fixes ``beta`` at each grid neighbour of the relaxed optimum
and runs LBFGS on that smooth objective. Every candidate is scored by the exact certificate
(``pbb_head_certificate``, the grid minimum) and the best is kept, so the result is never worse
than the start. The bound holds for any posterior, so none of these choices affects validity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tfbound.bounds.pac_bayes_search import DEFAULT_BETA_GRID, check_grid
from tfbound.bounds.pbb_head import PbbHeadCertificate, pbb_head_certificate
from tfbound.measures.binomial import kl_inv, xi

OBJECTIVE = (
    "the certificate itself on S2: kl_inv(mean_S2 Phi(-y m~.x/||x||), (min_(lambda,beta) "
    "||m~ - beta u_1||^2/2 + log(xi(n2) J_lambda J_beta/delta_q))/n2), exact Gibbs error, kl_inv "
    "differentiated implicitly; float64 LBFGS (strong Wolfe) from the S1 probe's direction at "
    "its best scale, beta relaxed to an interval then fixed at its grid neighbours; the best "
    "candidate by the exact certificate (tfbound.training.pbb)"
)
_START_GRID = np.geomspace(1e-2, 1e4, 121)
_MAX_ITER = 500


class _KlInv(torch.autograd.Function):
    """``kl_inv(q, c)`` with its implicit derivatives (0 where the value is pinned at 1)."""

    @staticmethod
    def forward(ctx: object, q: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        qf = min(1.0, max(0.0, float(q)))
        p = kl_inv(qf, max(0.0, float(c)))
        out = torch.tensor(p, dtype=torch.float64)
        ctx.save_for_backward(q.detach(), out)  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, p = ctx.saved_tensors  # type: ignore[attr-defined]
        qf, pf = float(q), float(p)
        zero = torch.zeros((), dtype=torch.float64)
        if not (0.0 < qf < pf < 1.0):
            return zero, zero
        kl_p = (pf - qf) / (pf * (1.0 - pf))
        kl_q = math.log(qf / pf) - math.log1p(-qf) + math.log1p(-pf)
        return grad * (-kl_q / kl_p), grad * (1.0 / kl_p)


@dataclass(frozen=True)
class PbbFit:
    """The trained whitened mean ``m~`` and its certificate on ``S2``."""

    mean_whitened: np.ndarray
    certificate: PbbHeadCertificate
    start_bound: float  # the certificate at the starting point (the probe's ray)
    objective: str = OBJECTIVE


@torch.inference_mode(False)
def fit_pbb_mean(
    x2: np.ndarray,
    y2: np.ndarray,
    prior_directions: np.ndarray,
    *,
    lam_grid: Sequence[float],
    delta_q: float,
    beta_grid: Sequence[float] = DEFAULT_BETA_GRID,
) -> PbbFit:
    """Minimise the certificate over the whitened mean ``m~``.

    ``x2``: the whitened ``S2`` features ``M^(-1/2) z'_i`` ``(n2, d+1)``; ``y2`` in ``{-1, +1}``;
    ``prior_directions``: the whitened unit prior directions ``(J_lambda, d+1)`` from ``S1``.
    """
    x = np.asarray(x2, dtype=np.float64)
    y = np.asarray(y2, dtype=np.float64).reshape(-1)
    dirs = np.asarray(prior_directions, dtype=np.float64).reshape(-1, x.shape[1])
    betas = np.asarray(check_grid(beta_grid, "beta_grid"))
    lams = tuple(float(v) for v in lam_grid)
    n2 = x.shape[0]
    norms = np.linalg.norm(x, axis=1)
    live = norms > 0  # a zero row is a loss for every head: a constant of the objective
    a = np.zeros_like(x)
    a[live] = (y[live, None] * x[live]) / norms[live, None]
    log_term = math.log(xi(n2)) + math.log(len(lams)) + math.log(len(betas)) - math.log(delta_q)

    def exact(m: np.ndarray) -> PbbHeadCertificate:
        return pbb_head_certificate(
            x @ m,
            norms,
            y,
            mean_norm_sq=float(m @ m),
            mean_dot_prior=[float(m @ u) for u in dirs],
            delta_q=delta_q,
            lam_grid=lams,
            beta_grid=tuple(float(b) for b in betas),
        )

    # The start: the first prior direction at the best scale of a fixed log grid.
    u0 = dirs[0] if np.any(dirs[0]) else (a.sum(axis=0) / max(1.0, np.linalg.norm(a.sum(axis=0))))
    start = min((exact(s * u0).bound, float(s)) for s in _START_GRID)
    m_start = start[1] * u0
    candidates = [m_start]

    a_t = torch.as_tensor(a)
    dead = float(np.sum(~live)) / n2
    dirs_t = torch.as_tensor(dirs)
    b_max = float(betas.max())

    def gibbs(m: torch.Tensor) -> torch.Tensor:
        live_part = torch.special.ndtr(-(a_t @ m))[torch.as_tensor(live)].sum() / n2
        return live_part + dead

    def relaxed_kl(m: torch.Tensor) -> torch.Tensor:
        dots = dirs_t @ m
        b = dots.clamp(0.0, b_max)
        return ((m @ m - 2.0 * b * dots + b * b) / 2.0).min().clamp_min(0.0)

    def fixed_kl(j: int, beta: float) -> Callable[[torch.Tensor], torch.Tensor]:
        u = dirs_t[j]
        return lambda m: ((m - beta * u) @ (m - beta * u)) / 2.0

    def run(m0: np.ndarray, kl_fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        m = torch.tensor(m0, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [m],
            lr=1.0,
            max_iter=_MAX_ITER,
            tolerance_grad=1e-12,
            tolerance_change=1e-14,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            kl = kl_fn(m)
            value = _KlInv.apply(gibbs(m), (kl + log_term) / n2)
            value.backward()
            return value

        with torch.enable_grad():
            opt.step(closure)
        out = m.detach().numpy().copy()
        return out if np.all(np.isfinite(out)) else m0

    m1 = run(m_start, relaxed_kl)
    candidates.append(m1)
    for j, u in enumerate(dirs):
        proj = float(m1 @ u)
        below = betas[betas <= proj]
        above = betas[betas >= proj]
        near = {float(below.max())} if below.size else set()
        if above.size:
            near.add(float(above.min()))
        for beta in sorted(near):
            candidates.append(run(m1, fixed_kl(j, beta)))
    scored = [(exact(m).bound, i) for i, m in enumerate(candidates)]
    _, best = min(scored)
    m_best = candidates[best]
    return PbbFit(m_best, exact(m_best), start[0])


__all__ = ["OBJECTIVE", "PbbFit", "fit_pbb_mean"]
