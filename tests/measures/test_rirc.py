"""RIRC against exact enumeration, the orthogonal closed form, and the sandwich."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tests.tolerances import FLOAT64_EXACT
from tfbound.measures.rirc import augment, rademacher_signs, rirc_linear


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
    assert a == b


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


# --- The in-place sign buffer draws exactly what the per-block allocation drew -----------------


def _old_sign_blocks(n_draws: int, n: int, seed: int, block_elements: int = 1 << 23) -> list:
    """The sign generation before the buffer was preallocated (kept as the reference): a fresh
    ``torch.randint`` block per row block, converted to float64."""
    gen = torch.Generator().manual_seed(int(seed))
    rows = max(1, block_elements // max(n, 1))
    out = []
    for start in range(0, n_draws, rows):
        stop = min(n_draws, start + rows)
        block = torch.randint(0, 2, (stop - start, n), generator=gen).to(torch.float64)
        out.append(block.mul_(2).sub_(1))
    return out


def _old_norms(z: torch.Tensor, n_draws: int, seed: int, block_elements: int) -> torch.Tensor:
    blocks = _old_sign_blocks(n_draws, z.shape[0], seed, block_elements)
    return torch.cat([torch.linalg.vector_norm(s @ z, dim=1) for s in blocks])


@pytest.mark.parametrize("seed", [0, 1, 11, 12345])
@pytest.mark.parametrize(
    ("n_draws", "n", "d", "block_elements"),
    [
        (1, 1, 1, 1 << 23),
        (7, 13, 3, 1 << 23),
        (700, 30, 5, 1 << 23),
        (1000, 37, 4, 64),  # many blocks, a short last one
        (5, 200, 2, 64),  # one row per block (n > block size)
        (2500, 3500, 2, 1 << 23),  # two blocks at the real block size
    ],
)
def test_signs_and_estimate_equal_the_per_block_allocation(
    monkeypatch: pytest.MonkeyPatch, seed: int, n_draws: int, n: int, d: int, block_elements: int
) -> None:
    import tfbound.measures.rirc as rirc

    monkeypatch.setattr(rirc, "_BLOCK_ELEMENTS", block_elements)
    old = torch.cat(_old_sign_blocks(n_draws, n, seed, block_elements))
    assert torch.equal(rademacher_signs(n_draws, n, seed), old)
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    zp = augment(z, 1.0)
    norms = _old_norms(zp, n_draws, seed, block_elements)
    est = rirc_linear(z, 2.0, n_draws=n_draws, seed=seed, bias_const=1.0)
    assert est.norm_mean == float(norms.mean())
    k = norms.shape[0]
    std = float(norms.std(unbiased=True)) if k > 1 else 0.0
    assert est.norm_stderr == std / math.sqrt(k)
