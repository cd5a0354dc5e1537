"""The representation-induced Rademacher complexity (RIRC) of a linear head class.

For the ball ``{z' -> theta' . z' : ||theta'||_2 <= R}`` over augmented features
``z'_i = (z_i, c)`` (``c`` the bias constant; no constant coordinate when ``c`` is None):

    Rhat_S = (R / n) E_sigma || sum_i sigma_i z'_i ||_2,    sigma_i iid uniform on {-1, +1}.

Monte Carlo over ``K`` sign vectors keeps the ``K x (d+1)`` sums ``sum_i sigma_k(i) z'_i``
(:class:`RircSums`), filled batch by batch; the signs are a function of ``(seed, i, k)``
(:func:`counter_bits`), so any order of the rows, any batching and any split across processes
give the same sums up to round-off. With ``S = sum_i ||z'_i||^2``:

- MC upper value (McDiarmid; one sign moves the mean of ``K`` draws by at most ``2 ||z'_i|| / K``):
  ``mean + sqrt(S) sqrt(2 log(1/delta_mc) / K)``, holding with probability ``1 - delta_mc``;
- Jensen upper value ``sqrt(S)`` (always); ``U_sigma`` is the smaller of the two;
- Khintchine-Kahane lower value ``sqrt(S / 2)`` (Latala-Oleszkiewicz 1994).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


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


def rademacher_signs(n_draws: int, n: int, seed: int) -> torch.Tensor:
    """The ``n_draws x n`` sign matrix that ``rirc_linear(..., n_draws=n_draws, seed=seed)``
    draws for ``n`` examples (:func:`counter_signs` of rows ``0..n-1``)."""
    return counter_signs(np.arange(int(n)), n_draws, seed)


#: The sign scheme of :func:`counter_signs` (recorded in the RIRC term's formula).
SIGN_SCHEME = (
    "signs by example index: sigma_k(i) from bit k mod 64 of splitmix64 output i W + k // 64 "
    "keyed by the seed"
)

_SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_SIGN_CHUNK = 1 << 22  # sign entries per product: 32 MiB of float64


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea, Flood 2014), elementwise on uint64 (wrapping)."""
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return np.asarray(x ^ (x >> np.uint64(31)), dtype=np.uint64)


def counter_bits(rows: np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    """``(len(rows), n_draws)`` uint8 bits, a function of ``(seed, row, draw)`` only.

    Bit ``k`` of row ``i`` is bit ``k mod 64`` of the ``(i W + k // 64)``-th output of the
    splitmix64 generator keyed by ``seed`` (``W = ceil(n_draws / 64)``): the signs of an example
    do not depend on which batch, order or process reads it, so a stream over any order of the
    rows, or shards of them, draws the same signs as one pass over all of them."""
    words = -(-int(n_draws) // 64)
    with np.errstate(over="ignore"):
        key = _mix64(np.asarray([np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)]) + _SPLITMIX_GAMMA)[0]
        counter = np.asarray(rows, dtype=np.uint64)[:, None] * np.uint64(words) + np.arange(
            words, dtype=np.uint64
        )
        state = key + (counter + np.uint64(1)) * _SPLITMIX_GAMMA
        h = _mix64(state)
    bits = np.unpackbits(h.astype("<u8").view(np.uint8), axis=1, bitorder="little")
    return bits[:, :n_draws]


def counter_signs(rows: np.ndarray, n_draws: int, seed: int) -> torch.Tensor:
    """The ``n_draws x len(rows)`` float64 matrix of +-1 that the estimate's RIRC draws for
    these example indices (:func:`counter_bits`)."""
    bits = torch.from_numpy(counter_bits(rows, n_draws, seed).T.astype(np.float64))
    return bits.mul_(2).sub_(1)


class RircSums:
    """The fixed-size statistics of the Monte Carlo RIRC, filled batch by batch in any order:
    ``sums[k] = sum_i sigma_k(i) z'_i`` (``n_draws x (d+1)``, float64; kept transposed in
    ``sums_t``, the layout of the fastest product), ``sum_sq = sum_i ||z'_i||^2`` and the count.
    Two accumulators over disjoint rows add (:meth:`merge`, or a sum of their tensors across
    processes)."""

    def __init__(
        self, n_draws: int, dim: int, seed: int, device: torch.device | str = "cpu"
    ) -> None:
        if n_draws < 1:
            raise ValueError(f"n_draws must be >= 1, got {n_draws}")
        self.n_draws, self.seed = int(n_draws), int(seed)
        # on the encoder's device when it has one (the products run there; the bits are drawn
        # on the CPU and moved), float64 wherever
        self.sums_t = torch.zeros((int(dim), self.n_draws), dtype=torch.float64, device=device)
        self.sum_sq = 0.0
        self.n = 0

    @property
    def sums(self) -> torch.Tensor:
        """``(n_draws, d+1)``: row ``k`` is ``sum_i sigma_k(i) z'_i``."""
        return self.sums_t.T

    def add(self, rows: np.ndarray, z_aug: torch.Tensor) -> None:
        """Add the augmented features ``z_aug`` (float64 ``(b, d+1)``) of example ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        if z_aug.shape[0] != rows.shape[0]:
            raise ValueError("rows and features differ in length")
        step = max(1, _SIGN_CHUNK // self.n_draws)
        for start in range(0, rows.shape[0], step):
            sl = slice(start, start + step)
            # sum_i sigma_k(i) z_i = 2 sum_i b_k(i) z_i - sum_i z_i, with b the 0/1 bits
            bits = torch.from_numpy(counter_bits(rows[sl], self.n_draws, self.seed))
            bits = bits.to(device=self.sums_t.device)
            block = z_aug[sl].to(device=self.sums_t.device)
            self.sums_t.addmm_(block.T, bits.to(torch.float64), alpha=2.0)
            self.sums_t.sub_(block.sum(dim=0)[:, None])
        self.sum_sq += float(torch.sum(z_aug * z_aug))
        self.n += int(rows.shape[0])

    def to_cpu(self) -> None:
        """Move the sums to the CPU (before a sum across processes, or the estimate)."""
        self.sums_t = self.sums_t.cpu()

    def merge(self, other: RircSums) -> None:
        self.sums_t += other.sums_t.to(self.sums_t.device)
        self.sum_sq += other.sum_sq
        self.n += other.n

    def estimate(self, radius: float, *, delta_mc: float, bias_const: float | None) -> RircEstimate:
        """The RIRC of the ball of ``radius`` from these sums (see :func:`rirc_linear`)."""
        return _estimate(
            torch.linalg.vector_norm(self.sums_t, dim=0).cpu(),
            self.sum_sq,
            self.n,
            radius,
            delta_mc,
            bias_const,
        )


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
        return _estimate(norms, float(torch.sum(z * z)), n, radius, delta_mc, bias_const)
    acc = RircSums(n_draws, z.shape[1], seed)
    acc.add(np.arange(n), z)
    return acc.estimate(radius, delta_mc=delta_mc, bias_const=bias_const)


def _estimate(
    norms: torch.Tensor,
    sum_sq: float,
    n: int,
    radius: float,
    delta_mc: float,
    bias_const: float | None,
) -> RircEstimate:
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if not 0 < delta_mc < 1:
        raise ValueError(f"delta_mc must lie in (0, 1), got {delta_mc}")
    if n < 1:
        raise ValueError("features are empty")
    k = norms.shape[0]
    mean = float(norms.mean())
    std = float(norms.std(unbiased=True)) if k > 1 else 0.0
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
