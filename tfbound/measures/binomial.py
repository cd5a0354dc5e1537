"""Exact binomial tail inversions and the Bernoulli kl divergence, in float64 without scipy.

- ``binomial_cdf(k, m, p) = P(Bin(m, p) <= k)``, summed in log space; an inversion computes the
  binomial coefficients ``log C(m, j)`` once (``math.lgamma``), not at every bisection step.
- ``clopper_pearson_upper(k, m, delta) = max{p : P(Bin(m, p) <= k) >= delta}`` (one-sided).
- ``clopper_pearson_lower(k, m, delta) = min{p : P(Bin(m, p) >= k) >= delta}`` (one-sided).
- ``kl_inv(q, c) = max{p in [q, 1] : kl(q || p) <= c}``.
- ``xi(n) = sum_k C(n, k) (k/n)^k (1 - k/n)^(n - k)`` (Maurer 2004), at most ``2 sqrt(n)``.

Every inversion is a bisection that returns the conservative end of its final bracket.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_BISECT_STEPS = 200


def _log_comb(ks: np.ndarray, m: int) -> np.ndarray:
    """``log C(m, k)`` for every ``k`` of ``ks`` (``math.lgamma``): computed once per inversion,
    not at every bisection step."""
    return np.asarray(
        math.lgamma(m + 1)
        - np.array([math.lgamma(k + 1) for k in ks])
        - np.array([math.lgamma(m - k + 1) for k in ks]),
        dtype=np.float64,
    )


def _log_pmf(ks: np.ndarray, m: int, p: float, log_comb: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(ks > 0, ks * math.log(p) if p > 0 else -np.inf, 0.0)
        b = np.where(m - ks > 0, (m - ks) * math.log1p(-p) if p < 1 else -np.inf, 0.0)
    return np.asarray(log_comb + a + b, dtype=np.float64)


def _check_counts(k: int, m: int) -> None:
    if m < 1 or k < 0 or k > m:
        raise ValueError(f"need 0 <= k <= m and m >= 1, got k={k}, m={m}")


def _cdf_function(k: int, m: int) -> Callable[[float], float]:
    """``p -> P(Bin(m, p) <= k)`` for ``k < m``, the binomial coefficients computed once."""
    ks = np.arange(k + 1)
    log_comb = _log_comb(ks, m)

    def cdf(p: float) -> float:
        lp = _log_pmf(ks, m, p, log_comb)
        top = float(np.max(lp))
        if top == -np.inf:
            return 0.0
        return float(min(1.0, math.exp(top) * float(np.sum(np.exp(lp - top)))))

    return cdf


def binomial_cdf(k: int, m: int, p: float) -> float:
    """``P(Bin(m, p) <= k)``."""
    _check_counts(k, m)
    if k == m:
        return 1.0
    return _cdf_function(k, m)(p)


def _bisect(pred: Callable[[float], bool], lo: float, hi: float) -> tuple[float, float]:
    """Shrink ``[lo, hi]`` keeping ``pred(lo)`` true and ``pred(hi)`` false."""
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if pred(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def clopper_pearson_upper(k: int, m: int, delta: float) -> float:
    """Exact one-sided upper confidence limit for a binomial proportion at level ``1 - delta``."""
    _check_counts(k, m)
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    if k == m:
        return 1.0
    cdf = _cdf_function(k, m)
    _, hi = _bisect(lambda p: cdf(p) >= delta, 0.0, 1.0)
    return hi


def clopper_pearson_lower(k: int, m: int, delta: float) -> float:
    """Exact one-sided lower confidence limit for a binomial proportion at level ``1 - delta``."""
    _check_counts(k, m)
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    if k == 0:
        return 0.0
    # P(Bin >= k) = 1 - P(Bin <= k - 1) is increasing in p; the smallest p where it reaches delta.
    cdf = _cdf_function(k - 1, m)
    lo, _ = _bisect(lambda p: 1.0 - cdf(p) < delta, 0.0, 1.0)
    return lo


def kl_bernoulli(q: float, p: float) -> float:
    """``kl(q || p) = q log(q/p) + (1-q) log((1-q)/(1-p))`` with ``0 log 0 = 0``."""
    if not (0.0 <= q <= 1.0 and 0.0 <= p <= 1.0):
        raise ValueError(f"q and p must lie in [0, 1], got q={q}, p={p}")
    out = 0.0
    if q > 0:
        out += math.inf if p == 0 else q * math.log(q / p)
    if q < 1:
        out += math.inf if p == 1 else (1 - q) * math.log((1 - q) / (1 - p))
    return out


def kl_inv(q: float, c: float) -> float:
    """``max{p in [q, 1] : kl(q || p) <= c}``, the upper end of the final bisection bracket."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    if c < 0 or math.isnan(c):
        raise ValueError(f"c must be >= 0, got {c}")
    if q >= 1.0 or kl_bernoulli(q, 1.0) <= c:
        return 1.0
    _, hi = _bisect(lambda p: kl_bernoulli(q, p) <= c, q, 1.0)
    return hi


def xi(n: int) -> float:
    """Maurer's ``xi(n) = sum_{k=0}^{n} C(n, k) (k/n)^k (1 - k/n)^(n - k)``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total = 0.0
    for k in range(n + 1):
        log_term = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        if k > 0:
            log_term += k * math.log(k / n)
        if k < n:
            log_term += (n - k) * math.log1p(-k / n)
        total += math.exp(log_term)
    return total
