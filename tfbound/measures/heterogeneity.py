"""Distribution-gap diagnostics (bound-spec section 7): arrays in, frozen estimates out.

Everything here is a *diagnostic*: ``TV(U, T)`` cannot be bounded above from samples without
assumptions, so every number below is a lower bound on it or an estimate of a related gap.

- :func:`tv_lower_bound`: a logistic domain classifier trained on one part of each sample, its L2
  strength tuned on a second, its balanced accuracy ``a_hat`` measured on a third (sizes ``m_U``,
  ``m_T``); with probability ``1 - delta_tv`` given the classifier,
  ``a >= a_LCB = a_hat - sqrt((1/m_U + 1/m_T) log(1/delta_tv) / 8)`` (McDiarmid: one test point
  moves ``a_hat`` by at most ``1/(2 m)``), and ``TV >= 2 a - 1`` for any classifier, so
  ``tv_lower_bound = max(0, 2 a_LCB - 1)``.
- :func:`mmd2_unbiased`: the unbiased U-statistic of the squared MMD (Gretton et al. 2012, eq. 3),
  Gaussian kernel ``exp(-||a - b||^2 / (2 sigma^2))`` with ``sigma`` the median pairwise distance
  of the pooled sample (or a fixed random subsample of it), permutation p-value
  ``(1 + #{b : T_b >= T_obs}) / (B + 1)``. Kernel rows are built in blocks: the ``N x N`` kernel
  matrix is never held.
- :func:`transformation_gap`: the mean ``||h(x) - h(x~)||`` over paired clean and corrupted
  features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: Elements of one kernel block (rows x pooled size): 64 MiB of float64.
_KERNEL_BLOCK_ELEMENTS = 1 << 23
DEFAULT_L2_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


# ----------------------------------------------------------------------------- TV lower bound


@dataclass(frozen=True)
class TvLowerBound:
    """A domain classifier's held-out balanced accuracy and the TV lower bound it implies."""

    tv_lower_bound: float
    balanced_accuracy: float
    balanced_accuracy_lcb: float
    accuracy_u: float
    accuracy_t: float
    m_u: int
    m_t: int
    delta_tv: float
    l2: float
    n_train: tuple[int, int]
    n_tune: tuple[int, int]


def balanced_accuracy_lcb(
    correct_u: np.ndarray, correct_t: np.ndarray, delta_tv: float
) -> tuple[float, float]:
    """``(a_hat, a_LCB)`` from per-example correctness on the two held-out samples.

    ``a_hat = (mean(correct_u) + mean(correct_t)) / 2`` and
    ``a_LCB = a_hat - sqrt((1/m_U + 1/m_T) log(1/delta_tv) / 8)``.

    >>> balanced_accuracy_lcb(np.ones(50), np.ones(50), 0.05)[0]
    1.0
    """
    if not 0 < delta_tv < 1:
        raise ValueError(f"delta_tv must lie in (0, 1), got {delta_tv}")
    m_u, m_t = int(correct_u.size), int(correct_t.size)
    if m_u == 0 or m_t == 0:
        raise ValueError("both held-out samples must be non-empty")
    a_hat = 0.5 * (float(np.mean(correct_u)) + float(np.mean(correct_t)))
    width = math.sqrt((1.0 / m_u + 1.0 / m_t) * math.log(1.0 / delta_tv) / 8.0)
    return a_hat, a_hat - width


def _three_way(
    n: int, fractions: tuple[float, float, float], gen: np.random.Generator
) -> list[np.ndarray]:
    order = gen.permutation(n)
    a = round(fractions[0] * n)
    b = a + round(fractions[1] * n)
    return [order[:a], order[a:b], order[b:]]


def _fit_logistic(
    x_u: torch.Tensor, x_t: torch.Tensor, l2: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced L2 logistic regression (U labelled +1), LBFGS in float64 from zero."""
    d = x_u.shape[1]
    w = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (
            0.5 * torch.nn.functional.softplus(-(x_u @ w + b)).mean()
            + 0.5 * torch.nn.functional.softplus(x_t @ w + b).mean()
            + 0.5 * l2 * (w @ w)
        )
        loss.backward()  # type: ignore[no-untyped-call]  # unannotated in torch
        return loss

    with torch.enable_grad():
        opt.step(closure)  # type: ignore[no-untyped-call]  # LBFGS.step is unannotated
    return w.detach(), b.detach()


def _balanced_accuracy(
    w: torch.Tensor, b: torch.Tensor, x_u: torch.Tensor, x_t: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    correct_u = ((x_u @ w + b) > 0).numpy()
    correct_t = ((x_t @ w + b) <= 0).numpy()
    return correct_u, correct_t


def tv_lower_bound(
    x_u: np.ndarray,
    x_t: np.ndarray,
    *,
    delta_tv: float = 0.05,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.4, 0.2, 0.4),
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    max_iter: int = 50,
) -> TvLowerBound:
    """A lower bound on ``TV(U, T)`` from a logistic domain classifier, valid w.p. ``1 - delta_tv``.

    Each sample is split (seeded) into train / tune / test parts by ``fractions``. Inputs are
    standardised with the training part's mean and scale (part of the classifier, so fitted on the
    training part only); the L2 strength is chosen on the tuning part by balanced accuracy (ties:
    the larger one); the chosen classifier is evaluated once on the test parts.
    """
    if len(fractions) != 3 or min(fractions) <= 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    xu = np.asarray(x_u, dtype=np.float64).reshape(len(x_u), -1)
    xt = np.asarray(x_t, dtype=np.float64).reshape(len(x_t), -1)
    if xu.shape[1] != xt.shape[1]:
        raise ValueError(f"the samples have different dimensions: {xu.shape[1]} vs {xt.shape[1]}")
    gen = np.random.default_rng(seed)
    parts_u = _three_way(xu.shape[0], fractions, gen)
    parts_t = _three_way(xt.shape[0], fractions, gen)
    if min(p.size for p in (*parts_u, *parts_t)) == 0:
        raise ValueError("a sample is too small to split into train, tune and test parts")
    train = np.concatenate([xu[parts_u[0]], xt[parts_t[0]]])
    mu = train.mean(axis=0)
    scale = train.std(axis=0)
    scale[scale == 0] = 1.0

    def part(x: np.ndarray, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((x[idx] - mu) / scale)

    tr_u, tu_u, te_u = (part(xu, p) for p in parts_u)
    tr_t, tu_t, te_t = (part(xt, p) for p in parts_t)
    best: tuple[float, float, torch.Tensor, torch.Tensor] | None = None
    for l2 in sorted(l2_grid):
        w, b = _fit_logistic(tr_u, tr_t, float(l2), max_iter)
        cu, ct = _balanced_accuracy(w, b, tu_u, tu_t)
        acc = 0.5 * (float(cu.mean()) + float(ct.mean()))
        if best is None or acc >= best[0]:
            best = (acc, float(l2), w, b)
    assert best is not None
    _, l2, w, b = best
    cu, ct = _balanced_accuracy(w, b, te_u, te_t)
    a_hat, a_lcb = balanced_accuracy_lcb(cu, ct, delta_tv)
    return TvLowerBound(
        tv_lower_bound=max(0.0, 2.0 * a_lcb - 1.0),
        balanced_accuracy=a_hat,
        balanced_accuracy_lcb=a_lcb,
        accuracy_u=float(cu.mean()),
        accuracy_t=float(ct.mean()),
        m_u=int(cu.size),
        m_t=int(ct.size),
        delta_tv=delta_tv,
        l2=l2,
        n_train=(int(parts_u[0].size), int(parts_t[0].size)),
        n_tune=(int(parts_u[1].size), int(parts_t[1].size)),
    )


# ----------------------------------------------------------------------------- MMD


@dataclass(frozen=True)
class MmdEstimate:
    """The unbiased squared MMD (may be negative), its kernel bandwidth and permutation p-value."""

    mmd2: float
    bandwidth: float
    p_value: float
    n_permutations: int
    n_exceed: int
    m: int
    n: int


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min_(0.0)


def median_bandwidth(pooled: np.ndarray, *, max_points: int = 1000, seed: int = 0) -> float:
    """The median pairwise Euclidean distance of ``pooled`` (a seeded subsample of at most
    ``max_points`` points)."""
    z = np.asarray(pooled, dtype=np.float64).reshape(len(pooled), -1)
    if z.shape[0] > max_points:
        z = z[np.random.default_rng(seed).choice(z.shape[0], max_points, replace=False)]
    t = torch.from_numpy(z)
    d = _sq_dists(t, t)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    med = float(torch.sqrt(d[iu[0], iu[1]]).median())
    if not med > 0:
        raise ValueError("the median pairwise distance is 0: the pooled sample is degenerate")
    return med


def mmd2_unbiased(
    x: np.ndarray,
    y: np.ndarray,
    *,
    bandwidth: float | None = None,
    n_permutations: int = 200,
    seed: int = 0,
    max_bandwidth_points: int = 1000,
) -> MmdEstimate:
    """Unbiased ``MMD^2`` between the samples ``x`` (m) and ``y`` (n), with a permutation test.

    ``MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
    - 2 sum_{i, j} k(x_i, y_j) / (m n)``, Gaussian ``k`` with bandwidth ``sigma`` (the pooled
    median distance unless given; the pooled sample is permutation-invariant, so the test stays
    exact). Every statistic is written through ``a`` (the 0/1 indicator of the first sample in the
    pooled order): ``a'Ka``, ``a'r`` (``r`` the kernel row sums) and ``1'K1``, and all ``B + 1``
    labellings are evaluated in one pass over kernel blocks: cost ``O(N^2 (B + p))``, memory
    ``O(block x N + N x B)``.

    >>> rng = np.random.default_rng(0)
    >>> est = mmd2_unbiased(rng.normal(size=(50, 2)), rng.normal(3.0, 1.0, size=(50, 2)))
    >>> est.mmd2 > 0.5 and est.p_value < 0.01
    True
    """
    xs = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    ys = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    m, n = xs.shape[0], ys.shape[0]
    if m < 2 or n < 2:
        raise ValueError("each sample needs at least 2 points")
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"the samples have different dimensions: {xs.shape[1]} vs {ys.shape[1]}")
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1")
    pooled = np.concatenate([xs, ys])
    sigma = (
        float(bandwidth)
        if bandwidth is not None
        else median_bandwidth(pooled, max_points=max_bandwidth_points, seed=seed)
    )
    if not sigma > 0:
        raise ValueError(f"bandwidth must be positive, got {sigma}")
    total_n = m + n
    gen = torch.Generator().manual_seed(seed)
    labels = torch.zeros(total_n, n_permutations + 1, dtype=torch.float64)
    labels[:m, 0] = 1.0
    for b in range(1, n_permutations + 1):
        labels[torch.randperm(total_n, generator=gen)[:m], b] = 1.0
    z = torch.from_numpy(pooled)
    quad = torch.zeros(n_permutations + 1, dtype=torch.float64)  # a'Ka
    row_sums = torch.empty(total_n, dtype=torch.float64)
    block = max(1, _KERNEL_BLOCK_ELEMENTS // total_n)
    scale = -1.0 / (2.0 * sigma * sigma)
    for start in range(0, total_n, block):
        stop = min(total_n, start + block)
        k_block = torch.exp(_sq_dists(z[start:stop], z).mul_(scale))
        row_sums[start:stop] = k_block.sum(1)
        quad += (labels[start:stop] * (k_block @ labels)).sum(0)
    ones_k_ones = float(row_sums.sum())
    a_r = labels.T @ row_sums
    # The Gaussian kernel has k(z, z) = 1, so each diagonal sum is the sample size.
    s_xx = quad - m
    s_yy = ones_k_ones - 2.0 * a_r + quad - n
    s_xy = a_r - quad
    stats = s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2.0 * s_xy / (m * n)
    t_obs = float(stats[0])
    exceed = int((stats[1:] >= t_obs).sum())
    return MmdEstimate(
        mmd2=t_obs,
        bandwidth=sigma,
        p_value=(1.0 + exceed) / (n_permutations + 1.0),
        n_permutations=n_permutations,
        n_exceed=exceed,
        m=m,
        n=n,
    )


# ----------------------------------------------------------------------------- transformation gap


@dataclass(frozen=True)
class TransformationGap:
    """Mean feature displacement ``||h(x) - h(x~)||`` and its standard error."""

    mean: float
    stderr: float
    n: int
    mean_feature_norm: float

    @property
    def relative(self) -> float:
        """``mean / mean ||h(x)||`` (0 when the features are all zero)."""
        return self.mean / self.mean_feature_norm if self.mean_feature_norm > 0 else 0.0


def transformation_gap(clean: np.ndarray, corrupted: np.ndarray) -> TransformationGap:
    """``(1/n) sum_i ||h(x_i) - h(x~_i)||`` over paired rows of clean and corrupted features."""
    a = np.asarray(clean, dtype=np.float64).reshape(len(clean), -1)
    b = np.asarray(corrupted, dtype=np.float64).reshape(len(corrupted), -1)
    if a.shape != b.shape:
        raise ValueError(f"clean and corrupted features differ in shape: {a.shape} vs {b.shape}")
    if a.shape[0] == 0:
        raise ValueError("no features")
    dist = np.linalg.norm(a - b, axis=1)
    n = int(dist.size)
    stderr = float(dist.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return TransformationGap(
        mean=float(dist.mean()),
        stderr=stderr,
        n=n,
        mean_feature_norm=float(np.linalg.norm(a, axis=1).mean()),
    )


__all__ = [
    "DEFAULT_L2_GRID",
    "MmdEstimate",
    "TransformationGap",
    "TvLowerBound",
    "balanced_accuracy_lcb",
    "median_bandwidth",
    "mmd2_unbiased",
    "transformation_gap",
    "tv_lower_bound",
]
