"""RIRC against exact enumeration, the orthogonal closed form, and the sandwich."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tests.tolerances import FLOAT64_EXACT
from tfbound.measures.rirc import (
    RircSums,
    augment,
    counter_bits,
    counter_signs,
    rademacher_signs,
    rirc_linear,
)


def exact_expected_norm(z: np.ndarray) -> float:
    """E_sigma ||sum_i sigma_i z_i|| by enumerating all 2^n sign vectors."""
    n = z.shape[0]
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=n)))
    return float(np.linalg.norm(signs @ z, axis=1).mean())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bias_const", [None, 0.5, 2.0])
def test_mc_and_upper_value_against_enumeration(seed: int, bias_const: float | None) -> None:
    rng = np.random.default_rng(seed)
    n, d = 10, 3
    z = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, size=(n, 1))
    zp = z if bias_const is None else np.hstack([z, np.full((n, 1), bias_const)])
    exact = exact_expected_norm(zp)
    est = rirc_linear(z, 2.0, n_draws=4000, seed=seed, delta_mc=0.001, bias_const=bias_const)
    # The certified upper value sits above the exact value, the Khintchine lower value below it.
    assert est.norm_upper >= exact
    assert est.norm_lower <= exact <= est.norm_jensen
    assert est.upper == pytest.approx(2.0 / n * est.norm_upper)
    # The Monte Carlo mean is within 5 standard errors of the truth.
    assert abs(est.norm_mean - exact) <= 5 * est.norm_stderr + 1e-12


def test_explicit_signs_enumerate_exactly() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(8, 4))
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=8)))
    est = rirc_linear(z, 1.0, signs=signs)
    assert est.norm_mean == pytest.approx(exact_expected_norm(z), rel=FLOAT64_EXACT)
    assert est.value == pytest.approx(exact_expected_norm(z) / 8, rel=FLOAT64_EXACT)


def test_orthogonal_features_closed_form() -> None:
    """For orthogonal z_i, ||sum sigma_i z_i||^2 = sum ||z_i||^2 for every sign vector."""
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    scales = rng.uniform(0.5, 2.0, size=12)
    z = q * scales[:, None]
    est = rirc_linear(z, 3.0, n_draws=50, seed=0)
    closed = math.sqrt(float(np.sum(scales**2)))
    assert est.norm_mean == pytest.approx(closed, rel=FLOAT64_EXACT)
    assert est.norm_stderr == pytest.approx(0.0, abs=FLOAT64_EXACT)
    assert est.value == pytest.approx(3.0 * closed / 12, rel=FLOAT64_EXACT)
    assert est.upper >= est.value


def test_seeded_draw_matches_explicit_signs() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=(30, 5))
    a = rirc_linear(z, 1.0, n_draws=700, seed=11, bias_const=1.0)
    b = rirc_linear(z, 1.0, signs=rademacher_signs(700, 30, 11), bias_const=1.0)
    # the seeded route sums 2 b z - z with 0/1 bits b: equal to the last bits
    assert a.norm_mean == pytest.approx(b.norm_mean, rel=FLOAT64_EXACT)
    assert a.norm_stderr == pytest.approx(b.norm_stderr, rel=FLOAT64_EXACT)
    assert a.norm_upper == pytest.approx(b.norm_upper, rel=FLOAT64_EXACT)


def test_mc_upper_formula_and_jensen_cap() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(size=(200, 6))
    est = rirc_linear(z, 1.0, n_draws=10_000, seed=0, delta_mc=0.01, bias_const=1.0)
    sum_sq = float(np.sum(z**2) + 200 * 1.0)
    assert est.norm_jensen == pytest.approx(math.sqrt(sum_sq), rel=FLOAT64_EXACT)
    mc_upper = est.norm_mean + math.sqrt(sum_sq) * math.sqrt(2 * math.log(100) / 10_000)
    assert est.norm_mc_upper == pytest.approx(mc_upper, rel=FLOAT64_EXACT)
    assert est.norm_upper == pytest.approx(min(mc_upper, math.sqrt(sum_sq)), rel=FLOAT64_EXACT)


def test_linear_in_radius_and_augment() -> None:
    z = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    a = rirc_linear(z, 1.0, n_draws=100, seed=0)
    b = rirc_linear(z, 5.0, n_draws=100, seed=0)
    assert b.value == pytest.approx(5 * a.value) and b.upper == pytest.approx(5 * a.upper)
    assert augment(z, 2.0)[:, -1].eq(2.0).all()


@pytest.mark.parametrize(
    "kwargs",
    [{"radius": -1.0}, {"delta_mc": 0.0}, {"n_draws": 0}, {"bias_const": 0.0}],
)
def test_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    args = {"radius": 1.0, **kwargs}
    radius = args.pop("radius")
    with pytest.raises(ValueError):
        rirc_linear(np.ones((4, 2)), radius, **args)  # type: ignore[arg-type]


def test_rejects_bad_signs_and_empty() -> None:
    with pytest.raises(ValueError):
        rirc_linear(np.ones((4, 2)), 1.0, signs=np.zeros((3, 4)))
    with pytest.raises(ValueError):
        rirc_linear(np.ones((0, 2)), 1.0)


# --- Counter-based signs: a function of (seed, row, draw), checked against plain Python -------

_M64 = (1 << 64) - 1


def _splitmix64_reference(seed: int, counter: int) -> int:
    """Output number ``counter`` (0-based) of the splitmix64 generator (Steele, Lea, Flood 2014)
    keyed by ``mix(seed + gamma)``, in Python integers: an independent implementation."""

    def mix(x: int) -> int:
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
        return x ^ (x >> 31)

    key = mix((seed + 0x9E3779B97F4A7C15) & _M64)
    return mix((key + (counter + 1) * 0x9E3779B97F4A7C15) & _M64)


@pytest.mark.parametrize(("seed", "n_draws"), [(0, 1), (7, 64), (12345, 130), (2**40 + 3, 200)])
def test_counter_bits_equal_a_plain_python_splitmix64(seed: int, n_draws: int) -> None:
    rows = np.array([0, 1, 5, 999, 123_456_789])
    bits = counter_bits(rows, n_draws, seed)
    words = -(-n_draws // 64)
    for r, i in enumerate(rows):
        for k in range(n_draws):
            word = _splitmix64_reference(seed, int(i) * words + k // 64)
            assert bits[r, k] == (word >> (k % 64)) & 1


def test_signs_do_not_depend_on_order_batching_or_shards() -> None:
    rng = np.random.default_rng(5)
    z = augment(torch.from_numpy(rng.normal(size=(500, 6))), 1.0)
    whole = RircSums(300, 7, 9)
    whole.add(np.arange(500), z)
    perm = rng.permutation(500)
    parts = [RircSums(300, 7, 9) for _ in range(3)]
    for j, rows in enumerate(np.array_split(perm, 11)):  # unsorted rows, uneven batches
        parts[j % 3].add(rows, z[torch.from_numpy(rows)])
    parts[0].merge(parts[1])
    parts[0].merge(parts[2])
    assert torch.allclose(parts[0].sums, whole.sums, rtol=0, atol=1e-12)
    assert parts[0].n == 500 and parts[0].sum_sq == pytest.approx(whole.sum_sq, rel=1e-14)
    # the sums are the explicit sign matrix times the features
    assert torch.allclose(rademacher_signs(300, 500, 9) @ z, whole.sums, rtol=0, atol=1e-12)


def test_counter_signs_look_like_fair_independent_coins() -> None:
    signs = counter_signs(np.arange(4000), 256, 3).numpy()
    # mean of 1,024,000 fair signs: |mean| < 5 / sqrt(N) with overwhelming probability
    assert abs(signs.mean()) < 5 / math.sqrt(signs.size)
    # rows (draws) and columns (examples) are uncorrelated: |r| < 5 / sqrt(len)
    draws = np.corrcoef(signs)[np.triu_indices(256, 1)]
    assert np.abs(draws).max() < 5.5 / math.sqrt(4000)
    examples = np.corrcoef(signs[:, :300].T)[np.triu_indices(300, 1)]
    assert np.abs(examples).max() < 5.5 / math.sqrt(256)
    # a different seed gives different signs
    assert not np.array_equal(signs, counter_signs(np.arange(4000), 256, 4).numpy())
