"""Exact checks of the binomial inversions, kl_inv and Maurer's xi (spec 10.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tests.tolerances import FLOAT64_EXACT, FLOAT64_FLAT_ROOT, FLOAT64_SOLVER, FLOAT64_UNDERFLOW
from tfbound.measures.binomial import (
    binomial_cdf,
    clopper_pearson_lower,
    clopper_pearson_upper,
    kl_bernoulli,
    kl_inv,
    xi,
)

# ---------------------------------------------------------------------------------- kl_inv edges


@pytest.mark.parametrize("c", [1e-6, 0.01, 0.1, 0.5, 1.0, 3.0, 20.0])
def test_kl_inv_at_q_zero_is_one_minus_exp_minus_c(c: float) -> None:
    # kl(0 || p) = -log(1 - p), so the inversion is exact in closed form.
    expected = 1.0 - math.exp(-c)
    got = kl_inv(0.0, c)
    assert got >= expected - FLOAT64_EXACT
    assert got == pytest.approx(expected, rel=FLOAT64_EXACT, abs=FLOAT64_EXACT)


@pytest.mark.parametrize("q", [0.0, 1e-6, 0.1, 0.3, 0.5, 0.9, 1 - 1e-9, 1.0])
def test_kl_inv_at_c_zero_is_q(q: float) -> None:
    got = kl_inv(q, 0.0)
    assert got >= q
    assert got == pytest.approx(q, abs=FLOAT64_FLAT_ROOT)  # kl is flat at p = q


@pytest.mark.parametrize("q", [1 - 1e-3, 1 - 1e-6, 1 - 1e-12])
def test_kl_inv_near_q_one(q: float) -> None:
    for c in (1e-6, 1e-3, 0.1):
        got = kl_inv(q, c)
        assert q <= got <= 1.0
        # kl(q || 1) is infinite for q < 1: the inversion stays below 1 with kl at the level c.
        if got < 1.0:
            assert kl_bernoulli(q, got) >= c * (1 - FLOAT64_SOLVER) or got - q < FLOAT64_EXACT
    assert kl_inv(1.0, 0.5) == 1.0


@pytest.mark.parametrize("q", [0.0, 0.2, 0.5, 0.99])
def test_kl_inv_large_c_gives_one(q: float) -> None:
    assert kl_inv(q, 50.0) == 1.0  # exactly: the inversion saturates
    assert kl_inv(q, 1e6) == 1.0


def test_kl_inv_is_the_upper_end_of_the_level_set() -> None:
    for q in (0.01, 0.1, 0.37, 0.8):
        for c in (1e-4, 0.01, 0.2, 1.0):
            p = kl_inv(q, c)
            assert p >= q
            if p < 1.0:
                assert kl_bernoulli(q, p) >= c * (1 - FLOAT64_SOLVER)  # at or just past the level
                assert kl_bernoulli(q, p - 1e-9) <= c * (1 + 1e-6)


def test_kl_inv_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        kl_inv(-0.1, 1.0)
    with pytest.raises(ValueError):
        kl_inv(0.5, -1.0)
    with pytest.raises(ValueError):
        kl_inv(0.5, math.nan)


# ------------------------------------------------------- worst-case level of the kl inversion


@pytest.mark.parametrize("n", [1, 7, 50, 200, 1000])
@pytest.mark.parametrize("delta", [0.05, 0.01])
def test_kl_inversion_level_by_exact_enumeration(n: int, delta: float) -> None:
    """``sup_p P_{k ~ Bin(n, p)}(kl_inv(k/n, log(1/delta)/n) < p) <= delta`` exactly.

    With ``ub_k = kl_inv(k/n, c)`` increasing in ``k``, the event is ``{k <= j}`` for
    ``p in (ub_j, ub_{j+1}]``, where its probability decreases in ``p``; the supremum over that
    interval is the limit at ``ub_j`` from above, ``P(Bin(n, ub_j) <= j)``. So the worst case over
    every ``p`` is ``max_j binom.cdf(j, n, ub_j)`` over the ``j`` with ``ub_j < 1`` (no ``p <= 1``
    lies above ``ub_j = 1``); a grid of ``p`` is checked as well.
    """
    c = math.log(1.0 / delta) / n
    ub = np.array([kl_inv(k / n, c) for k in range(n + 1)])
    assert np.all(np.diff(ub) >= 0)
    ks = np.arange(n + 1)
    below_one = ub < 1.0
    worst = float(np.max(stats.binom.cdf(ks[below_one], n, ub[below_one])))
    assert worst <= delta * (1 + 1e-9)
    assert worst >= 0.05 * delta  # the check has teeth: the level is not trivially tiny
    for p in np.linspace(0.0005, 0.9995, 401):
        level = float(np.sum(stats.binom.pmf(ks[ub < p], n, p)))
        assert level <= delta * (1 + 1e-9)


@pytest.mark.parametrize("n", [1, 5, 30, 300])
def test_maurer_exponential_moment_equals_xi(n: int) -> None:
    """``E_{k ~ Bin(n, p)} exp(n kl(k/n || p)) = xi(n)`` for every ``p`` in (0, 1) (Maurer 2004)."""
    for p in (0.01, 0.2, 0.5, 0.77):
        moment = sum(
            math.exp(
                math.lgamma(n + 1)
                - math.lgamma(k + 1)
                - math.lgamma(n - k + 1)
                + k * math.log(p)
                + (n - k) * math.log1p(-p)
                + n * kl_bernoulli(k / n, p)
            )
            for k in range(n + 1)
        )
        assert moment == pytest.approx(xi(n), rel=FLOAT64_SOLVER)


# ------------------------------------------------------------------------------------------ xi


def test_xi_at_most_two_sqrt_n() -> None:
    for n in range(1, 2001):
        assert xi(n) <= 2.0 * math.sqrt(n)


def test_xi_against_a_direct_float_sum() -> None:
    for n in range(1, 41):
        direct = sum(math.comb(n, k) * (k / n) ** k * (1 - k / n) ** (n - k) for k in range(n + 1))
        assert xi(n) == pytest.approx(direct, rel=FLOAT64_EXACT)
    assert xi(1) == pytest.approx(2.0)
    assert xi(2) == pytest.approx(2.5)


def test_xi_is_of_order_sqrt_n() -> None:
    # xi(n) ~ sqrt(pi n / 2): the union's log-term grows like (1/2) log n, not faster.
    for n in (100, 1000, 2000):
        assert abs(xi(n) - math.sqrt(math.pi * n / 2)) < 1.0


# ------------------------------------------------------------------------- Clopper-Pearson


CASES = [(0, 1), (1, 1), (0, 10), (3, 10), (9, 10), (10, 10), (0, 920), (87, 920), (50, 1000)]


@pytest.mark.parametrize(("k", "m"), CASES)
@pytest.mark.parametrize("delta", [0.001, 0.025, 0.05, 0.3])
def test_clopper_pearson_against_scipy_beta(k: int, m: int, delta: float) -> None:
    upper = clopper_pearson_upper(k, m, delta)
    lower = clopper_pearson_lower(k, m, delta)
    ref_upper = 1.0 if k == m else float(stats.beta.ppf(1 - delta, k + 1, m - k))
    ref_lower = 0.0 if k == 0 else float(stats.beta.ppf(delta, k, m - k + 1))
    assert upper == pytest.approx(ref_upper, rel=FLOAT64_SOLVER, abs=FLOAT64_EXACT)
    assert lower == pytest.approx(ref_lower, rel=FLOAT64_SOLVER, abs=FLOAT64_EXACT)
    assert lower <= k / m <= upper


@pytest.mark.parametrize(("k", "m"), [(3, 10), (87, 920), (0, 50)])
def test_clopper_pearson_upper_is_the_binomial_tail_inversion(k: int, m: int) -> None:
    delta = 0.05
    upper = clopper_pearson_upper(k, m, delta)
    assert binomial_cdf(k, m, upper) <= delta * (1 + 1e-9)
    if k < m:
        assert binomial_cdf(k, m, upper * (1 - 1e-6)) > delta


def test_binomial_cdf_against_scipy() -> None:
    for m in (1, 10, 333):
        for p in (0.0, 0.01, 0.5, 0.93, 1.0):
            for k in sorted({0, 1, m // 3, m - 1, m}):
                if 0 <= k <= m:
                    ref = float(stats.binom.cdf(k, m, p))
                    assert binomial_cdf(k, m, p) == pytest.approx(
                        ref, rel=FLOAT64_SOLVER, abs=FLOAT64_UNDERFLOW
                    )


# ------------------------------------------- the hoisted coefficients give the same inversions


def _old_binomial_cdf(k: int, m: int, p: float) -> float:
    """``P(Bin(m, p) <= k)`` as computed before the coefficients were hoisted (the reference):
    ``log C(m, j)`` recomputed with ``math.lgamma`` at every call."""
    if k == m:
        return 1.0
    ks = np.arange(k + 1)
    log_comb = (
        math.lgamma(m + 1)
        - np.array([math.lgamma(j + 1) for j in ks])
        - np.array([math.lgamma(m - j + 1) for j in ks])
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(ks > 0, ks * math.log(p) if p > 0 else -np.inf, 0.0)
        b = np.where(m - ks > 0, (m - ks) * math.log1p(-p) if p < 1 else -np.inf, 0.0)
    lp = np.asarray(log_comb + a + b, dtype=np.float64)
    top = float(np.max(lp))
    if top == -np.inf:
        return 0.0
    return float(min(1.0, math.exp(top) * float(np.sum(np.exp(lp - top)))))


def _old_bisect(pred, lo: float, hi: float) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if pred(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def _old_upper(k: int, m: int, delta: float) -> float:
    if k == m:
        return 1.0
    return _old_bisect(lambda p: _old_binomial_cdf(k, m, p) >= delta, 0.0, 1.0)[1]


def _old_lower(k: int, m: int, delta: float) -> float:
    if k == 0:
        return 0.0
    return _old_bisect(lambda p: 1.0 - _old_binomial_cdf(k - 1, m, p) < delta, 0.0, 1.0)[0]


HOIST_CASES = [(0, 1), (1, 1), (3, 10), (10, 10), (87, 920), (0, 5000), (499, 5000), (4999, 5000)]


@pytest.mark.parametrize(("k", "m"), HOIST_CASES)
@pytest.mark.parametrize("delta", [1e-6, 0.025, 0.5])
def test_hoisted_inversions_equal_the_old_ones(k: int, m: int, delta: float) -> None:
    for new, old in (
        (clopper_pearson_upper(k, m, delta), _old_upper(k, m, delta)),
        (clopper_pearson_lower(k, m, delta), _old_lower(k, m, delta)),
    ):
        assert new == pytest.approx(old, rel=1e-15, abs=0.0)
    for p in (0.0, 1e-4, 0.3, 0.97, 1.0):
        if k < m:
            assert binomial_cdf(k, m, p) == pytest.approx(_old_binomial_cdf(k, m, p), rel=1e-15)


@pytest.mark.parametrize(("k", "m"), [(120, 10_000), (9_000, 100_000), (1, 100_000)])
def test_large_clopper_pearson_against_scipy_beta(k: int, m: int) -> None:
    delta = 0.01
    ref_upper = float(stats.beta.ppf(1 - delta, k + 1, m - k))
    ref_lower = float(stats.beta.ppf(delta, k, m - k + 1))
    assert clopper_pearson_upper(k, m, delta) == pytest.approx(ref_upper, rel=FLOAT64_SOLVER)
    assert clopper_pearson_lower(k, m, delta) == pytest.approx(ref_lower, rel=FLOAT64_SOLVER)
