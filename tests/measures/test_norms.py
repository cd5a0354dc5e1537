"""Matrix norms against closed forms, ``svdvals`` in float64, and the inequalities between them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tolerances import FLOAT64_EXACT, FLOAT64_SOLVER, ITERATIVE
from tfbound.measures.norms import (
    distance_to_reference,
    frobenius_norm,
    frobenius_norm_sq,
    l21_norm,
    matrix_norms,
    spectral_norm,
    spectral_norm_estimate,
    spectral_norm_of_product,
    spectral_norm_sq,
    stable_rank,
    weakest_status,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _rand(shape: tuple[int, int], seed: int, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=gen, dtype=torch.float64)


def _svd_max(w: torch.Tensor) -> float:
    return float(torch.linalg.svdvals(w.to(torch.float64))[0])


def test_diagonal_matrix_closed_forms() -> None:
    d = torch.tensor([3.0, -4.0, 1.0, 0.0], dtype=torch.float64)
    w = torch.diag(d)
    assert spectral_norm(w) == pytest.approx(4.0, rel=FLOAT64_EXACT)
    assert spectral_norm_sq(w) == pytest.approx(16.0, rel=FLOAT64_EXACT)
    assert frobenius_norm(w) == pytest.approx(math.sqrt(26.0), rel=FLOAT64_EXACT)
    assert frobenius_norm_sq(w) == pytest.approx(26.0, rel=FLOAT64_EXACT)
    assert l21_norm(w) == pytest.approx(8.0, rel=FLOAT64_EXACT)  # sum of |d_i|
    assert stable_rank(w) == pytest.approx(26.0 / 16.0, rel=FLOAT64_EXACT)


def test_rank_one_matrix_closed_forms() -> None:
    u = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)  # ||u|| = 3
    v = torch.tensor([3.0, 4.0], dtype=torch.float64)  # ||v|| = 5
    w = torch.outer(u, v)
    assert spectral_norm(w) == pytest.approx(15.0, rel=FLOAT64_EXACT)
    assert frobenius_norm(w) == pytest.approx(15.0, rel=FLOAT64_EXACT)
    assert stable_rank(w) == pytest.approx(1.0, rel=FLOAT64_EXACT)
    assert l21_norm(w) == pytest.approx(float(u.abs().sum()) * 5.0, rel=FLOAT64_EXACT)


def test_orthogonal_matrix_closed_forms() -> None:
    q, _ = torch.linalg.qr(_rand((7, 7), seed=3))
    assert spectral_norm(q) == pytest.approx(1.0, rel=FLOAT64_EXACT)
    assert frobenius_norm(q) == pytest.approx(math.sqrt(7.0), rel=FLOAT64_EXACT)
    assert l21_norm(q) == pytest.approx(7.0, rel=FLOAT64_EXACT)
    assert stable_rank(q) == pytest.approx(7.0, rel=FLOAT64_EXACT)
    # A semi-orthogonal 5 x 9 block (orthonormal rows) has all singular values 1.
    q2, _ = torch.linalg.qr(_rand((9, 5), seed=4))
    assert spectral_norm(q2.T) == pytest.approx(1.0, rel=FLOAT64_EXACT)


def test_zero_and_empty_matrices() -> None:
    z = torch.zeros(3, 5)
    assert spectral_norm(z) == 0.0
    assert stable_rank(z) == 0.0
    assert l21_norm(z) == 0.0
    assert spectral_norm(torch.zeros(0, 4)) == 0.0


@pytest.mark.parametrize(
    "shape",
    [(1, 1), (1, 9), (9, 1), (17, 17), (40, 13), (13, 40), (200, 64), (64, 300), (150, 90),
     (90, 150), (256, 256)],
)  # fmt: skip
@pytest.mark.parametrize("seed", [0, 1])
def test_spectral_norm_matches_svdvals(shape: tuple[int, int], seed: int) -> None:
    w = _rand(shape, seed)
    assert spectral_norm(w) == pytest.approx(_svd_max(w), rel=FLOAT64_SOLVER)


def _with_singular_values(s: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    u, _ = torch.linalg.qr(_rand((m, m), seed=seed))
    v, _ = torch.linalg.qr(_rand((s.numel(), s.numel()), seed=seed + 1))
    return u[:, : s.numel()] @ torch.diag(s) @ v.T


def test_certified_lanczos_path_and_its_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    import tfbound.measures.norms as norms

    # n > 64 takes the Lanczos + Cholesky route: an upper value within 1e-12 of the exact one
    w = _rand((120, 100), seed=21)
    out = matrix_norms(w)
    assert out.spectral_norm.method == "gram_lanczos_cholesky_certificate"
    exact = _svd_max(w)
    assert exact * (1 - 1e-14) <= out.spectral_norm.value <= exact * (1 + FLOAT64_EXACT)
    # a repeated top singular value, a tiny gap, and the identity (a one-step Krylov space)
    for s in (
        torch.cat([torch.full((2,), 3.0), torch.linspace(2.9, 0.1, 98)]),
        torch.cat([torch.tensor([3.0, 3.0 - 1e-9]), torch.linspace(2.0, 0.1, 98)]),
        torch.ones(100),
    ):
        w = _with_singular_values(s.to(torch.float64), 110, seed=22)
        assert spectral_norm(w) == pytest.approx(float(s.max()), rel=FLOAT64_SOLVER)
    # too few Lanczos steps: the certificate fails and eigvalsh takes over, still exact
    monkeypatch.setattr(norms, "_LANCZOS_MAX_STEPS", 1)
    w = _rand((100, 100), seed=23)
    out = matrix_norms(w)
    assert out.spectral_norm.method == "gram_eigvalsh"
    assert out.spectral_norm.value == pytest.approx(_svd_max(w), rel=FLOAT64_SOLVER)


def test_spectral_norm_ill_conditioned_and_float32_input() -> None:
    # Singular values spanning 12 decades: the largest is still exact through the Gram matrix.
    u, _ = torch.linalg.qr(_rand((30, 30), seed=5))
    v, _ = torch.linalg.qr(_rand((20, 20), seed=6))
    s = torch.logspace(0, -12, 20, dtype=torch.float64) * 7.5
    w = u[:, :20] @ torch.diag(s) @ v.T
    assert spectral_norm(w) == pytest.approx(7.5, rel=FLOAT64_SOLVER)
    w32 = _rand((50, 30), seed=7).to(torch.float32)
    assert spectral_norm(w32) == pytest.approx(_svd_max(w32), rel=FLOAT64_SOLVER)
    assert spectral_norm(w32.numpy()) == spectral_norm(w32)


def test_spectral_norm_of_product_matches_formed_product() -> None:
    for seed in range(4):
        a = _rand((48, 6), seed)
        b = _rand((6, 40), seed + 100)
        expected = _svd_max(a @ b)
        assert spectral_norm_of_product(a, b) == pytest.approx(expected, rel=FLOAT64_SOLVER)
    # inner dimension not small: falls back to the formed product
    a, b = _rand((5, 8), 9), _rand((8, 6), 10)
    assert spectral_norm_of_product(a, b) == pytest.approx(_svd_max(a @ b), rel=FLOAT64_SOLVER)
    with pytest.raises(ValueError, match="need batches"):
        spectral_norm_of_product(a, a)


def test_power_iteration_is_a_lower_estimate_with_residual() -> None:
    w = _rand((60, 40), seed=11)
    true = _svd_max(w)
    est = spectral_norm_estimate(w, n_iter=5, seed=0)
    assert est.status == "estimated"
    assert est.value <= true * (1 + FLOAT64_EXACT)
    assert est.residual > 0
    converged = spectral_norm_estimate(w, n_iter=3000, seed=0)
    assert converged.value == pytest.approx(true, rel=ITERATIVE)
    assert converged.residual < est.residual
    # seeded: the same seed gives the same value
    assert spectral_norm_estimate(w, n_iter=5, seed=0) == est


def test_l21_and_distance_with_reference() -> None:
    w = _rand((6, 4), seed=12)
    m = _rand((6, 4), seed=13)
    d = w - m
    assert l21_norm(w, m) == pytest.approx(float(d.norm(dim=1).sum()), rel=FLOAT64_EXACT)
    assert distance_to_reference(w, m) == pytest.approx(
        float(torch.sqrt((d * d).sum())), rel=FLOAT64_EXACT
    )
    assert distance_to_reference(w, w) == 0.0
    with pytest.raises(ValueError, match="reference has shape"):
        l21_norm(w, m.T)


def test_rows_not_columns_for_l21() -> None:
    # (out, in) = (1, 2): one row of norm 5; summing column norms would give 7.
    w = torch.tensor([[3.0, 4.0]])
    assert l21_norm(w) == pytest.approx(5.0)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="2-D"):
        spectral_norm(torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="non-finite"):
        frobenius_norm(torch.tensor([[1.0, float("nan")]]))
    for bad in (float("nan"), float("inf")):
        w = torch.ones(80, 70)
        w[3, 4] = bad
        with pytest.raises(ValueError, match="non-finite"):
            spectral_norm(w)
        with pytest.raises(ValueError, match="non-finite"):
            matrix_norms(w)
    with pytest.raises(ValueError, match="n_iter"):
        spectral_norm_estimate(torch.ones(2, 2), n_iter=0)
    with pytest.raises(ValueError, match="spectral must be"):
        matrix_norms(torch.ones(2, 2), spectral="fast")  # type: ignore[arg-type]


def test_matrix_norms_bundle_agrees_with_single_functions() -> None:
    w, m = _rand((30, 12), seed=14), _rand((30, 12), seed=15)
    out = matrix_norms(w, reference=m)
    assert out.shape == (30, 12)
    assert out.spectral_norm.value == spectral_norm(w)
    assert out.spectral_norm.status == "certified"
    assert out.frobenius_norm.value == pytest.approx(frobenius_norm(w), rel=FLOAT64_EXACT)
    assert out.l21_norm.value == pytest.approx(l21_norm(w), rel=FLOAT64_EXACT)
    assert out.stable_rank.value == pytest.approx(stable_rank(w), rel=FLOAT64_EXACT)
    assert out.distance_to_reference is not None
    assert out.distance_to_reference.value == pytest.approx(
        distance_to_reference(w, m), rel=FLOAT64_EXACT
    )
    assert out.l21_distance_to_reference is not None
    assert out.l21_distance_to_reference.value == pytest.approx(l21_norm(w, m), rel=FLOAT64_EXACT)
    est = matrix_norms(w, spectral="estimate", n_iter=3)
    assert est.spectral_norm.status == est.stable_rank.status == "estimated"
    assert est.distance_to_reference is None


def test_weakest_status_order() -> None:
    assert weakest_status("certified", "estimated") == "estimated"
    assert weakest_status("certified", "proxy", "estimated") == "proxy"
    assert weakest_status() == "certified"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(-50.0, 50.0).filter(lambda x: abs(x) > 1e-3),
)
def test_inequalities_and_homogeneity(rows: int, cols: int, seed: int, scale: float) -> None:
    w = _rand((rows, cols), seed)
    s, f, l21 = spectral_norm(w), frobenius_norm(w), l21_norm(w)
    rank = int(torch.linalg.matrix_rank(w))
    tol = 1e-12
    assert s <= f * (1 + tol)
    assert f <= math.sqrt(rank) * s * (1 + tol)
    assert f <= l21 * (1 + tol)  # sum of row norms >= l2 norm of the row-norm vector
    assert l21 <= math.sqrt(rows) * f * (1 + tol)
    sr = stable_rank(w)
    assert sr >= 1 - tol and sr <= rank * (1 + tol)
    # max row norm <= spectral norm
    assert float(w.norm(dim=1).max()) <= s * (1 + tol)
    # absolute homogeneity
    a = abs(scale)
    assert spectral_norm(scale * w) == pytest.approx(a * s, rel=FLOAT64_EXACT)
    assert frobenius_norm(scale * w) == pytest.approx(a * f, rel=FLOAT64_EXACT)
    assert l21_norm(scale * w) == pytest.approx(a * l21, rel=FLOAT64_EXACT)
    assert stable_rank(scale * w) == pytest.approx(stable_rank(w), rel=FLOAT64_SOLVER)
    # transpose invariance of the spectral and Frobenius norms
    assert spectral_norm(w.T) == pytest.approx(s, rel=FLOAT64_EXACT)
    # triangle inequality
    w2 = _rand((rows, cols), seed + 1)
    assert spectral_norm(w + w2) <= (s + spectral_norm(w2)) * (1 + tol)
    # submultiplicativity
    w3 = _rand((cols, 5), seed + 2)
    assert spectral_norm(w @ w3) <= s * spectral_norm(w3) * (1 + tol)


def test_numpy_input_is_accepted() -> None:
    w = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert spectral_norm(w) == pytest.approx(_svd_max(torch.from_numpy(w)), rel=FLOAT64_SOLVER)
