"""The representation-induced Rademacher complexity (RIRC) of a linear head class.

For the ball ``{z' -> theta' . z' : ||theta'||_2 <= R}`` over augmented features
``z'_i = (z_i, c)`` (``c`` the bias constant; no constant coordinate when ``c`` is None):

    Rhat_S = (R / n) E_sigma || sum_i sigma_i z'_i ||_2,    sigma_i iid uniform on {-1, +1}.

Monte Carlo over ``K`` sign vectors is one ``K x n`` by ``n x (d+1)`` product (in row blocks to
bound memory). With ``S = sum_i ||z'_i||^2``:

- MC upper value (McDiarmid; one sign moves the mean of ``K`` draws by at most ``2 ||z'_i|| / K``):
  ``mean + sqrt(S) sqrt(2 log(1/delta_mc) / K)``, holding with probability ``1 - delta_mc``;
- Jensen upper value ``sqrt(S)`` (always); ``U_sigma`` is the smaller of the two;
- Khintchine-Kahane lower value ``sqrt(S / 2)`` (Latala-Oleszkiewicz 1994).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

_BLOCK_ELEMENTS = 1 << 23  # sign entries per block: 64 MiB of float64


@dataclass(frozen=True)
class RircEstimate:
    """RIRC of the ball of ``radius`` over ``n`` features, with the raw expected-norm values.

    ``value``, ``stderr`` and ``upper`` are in units of the complexity ``(R/n) E||...||``;
    the ``norm_*`` fields are the corresponding values of ``E_sigma ||sum_i sigma_i z'_i||``.
    """

    value: float
    stderr: float
    upper: float
    lower: float
    radius: float
    n: int
    n_draws: int
    delta_mc: float
    bias_const: float | None
    norm_mean: float
    norm_stderr: float
    norm_mc_upper: float
    norm_jensen: float
    norm_upper: float
    norm_lower: float
    upper_source: str  # "monte_carlo" or "jensen": which value U_sigma is


def augment(features: torch.Tensor | np.ndarray, bias_const: float | None) -> torch.Tensor:
    """``z'_i = (z_i, c)`` in float64 (``z`` unchanged when ``bias_const`` is None)."""
    z = torch.as_tensor(features).to(torch.float64)
    if z.ndim != 2:
        raise ValueError(f"features must be an (n, d) matrix, got shape {tuple(z.shape)}")
    if bias_const is None:
        return z
    if not bias_const > 0:
        raise ValueError(f"bias_const must be > 0, got {bias_const}")
    return torch.cat([z, torch.full((z.shape[0], 1), float(bias_const), dtype=torch.float64)], 1)


def _sign_blocks(n_draws: int, n: int, seed: int) -> Iterator[torch.Tensor]:
    """Row blocks of an ``n_draws x n`` matrix of iid uniform signs (float64), seeded.

    Every block is a view of one buffer allocated once per call and filled in place
    (``random_(0, 2)`` draws the same stream as ``torch.randint(0, 2, ...)``), so a block is
    valid only until the next one is drawn: copy it to keep it.
    """
    gen = torch.Generator().manual_seed(int(seed))
    rows = min(n_draws, max(1, _BLOCK_ELEMENTS // max(n, 1)))
    buffer = torch.empty((rows, n), dtype=torch.float64)
    for start in range(0, n_draws, rows):
        block = buffer[: min(n_draws, start + rows) - start]
        block.random_(0, 2, generator=gen)
        yield block.mul_(2).sub_(1)


def rademacher_signs(n_draws: int, n: int, seed: int) -> torch.Tensor:
    """The sign matrix that ``rirc_linear(..., n_draws=n_draws, seed=seed)`` draws."""
    return torch.cat([block.clone() for block in _sign_blocks(n_draws, n, seed)])


def _draw_norms(z: torch.Tensor, n_draws: int, seed: int) -> torch.Tensor:
    """``||sigma_k^T Z'||`` for the ``n_draws`` seeded sign vectors, block by block."""
    norms = torch.empty(n_draws, dtype=torch.float64)
    product: torch.Tensor | None = None
    start = 0
    for signs in _sign_blocks(n_draws, z.shape[0], seed):
        rows = signs.shape[0]
        if product is None:
            product = torch.empty((rows, z.shape[1]), dtype=torch.float64)
        out = product[:rows]
        torch.matmul(signs, z, out=out)
        torch.linalg.vector_norm(out, dim=1, out=norms[start : start + rows])
        start += rows
    return norms


def rirc_linear(
    features: torch.Tensor | np.ndarray,
    radius: float,
    *,
    n_draws: int = 10_000,
    seed: int = 0,
    delta_mc: float = 0.01,
    bias_const: float | None = None,
    signs: torch.Tensor | np.ndarray | None = None,
) -> RircEstimate:
    """Monte Carlo RIRC of the linear ball of ``radius``, with its certified upper value.

    ``signs`` (``K x n`` of +-1) replaces the seeded draw, so two computations on the same signs
    can be compared exactly; ``n_draws`` and ``seed`` are then ignored.
    """
    z = augment(features, bias_const)
    n = z.shape[0]
    if n == 0:
        raise ValueError("features are empty")
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if not 0 < delta_mc < 1:
        raise ValueError(f"delta_mc must lie in (0, 1), got {delta_mc}")
    if signs is not None:
        sig = torch.as_tensor(signs).to(torch.float64)
        if sig.ndim != 2 or sig.shape[1] != n or not bool(torch.all(sig.abs() == 1)):
            raise ValueError(f"signs must be a (K, {n}) matrix of +-1")
        norms = torch.linalg.vector_norm(sig @ z, dim=1)
    else:
        if n_draws < 1:
            raise ValueError(f"n_draws must be >= 1, got {n_draws}")
        norms = _draw_norms(z, n_draws, seed)
    k = norms.shape[0]
    mean = float(norms.mean())
    std = float(norms.std(unbiased=True)) if k > 1 else 0.0
    sum_sq = float(torch.sum(z * z))
    jensen = math.sqrt(sum_sq)
    mc_upper = mean + jensen * math.sqrt(2.0 * math.log(1.0 / delta_mc) / k)
    upper = min(mc_upper, jensen)
    scale = radius / n
    return RircEstimate(
        value=scale * mean,
        stderr=scale * std / math.sqrt(k),
        upper=scale * upper,
        lower=scale * jensen / math.sqrt(2.0),
        radius=float(radius),
        n=n,
        n_draws=k,
        delta_mc=float(delta_mc),
        bias_const=None if bias_const is None else float(bias_const),
        norm_mean=mean,
        norm_stderr=std / math.sqrt(k),
        norm_mc_upper=mc_upper,
        norm_jensen=jensen,
        norm_upper=upper,
        norm_lower=jensen / math.sqrt(2.0),
        upper_source="monte_carlo" if mc_upper < jensen else "jensen",
    )
