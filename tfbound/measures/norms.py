"""Matrix norms of weight matrices, in float64. Torch or numpy in; floats or frozen values out.

``W`` is a weight as PyTorch stores it, ``(out, in)``; ``M`` a reference matrix of the same shape.

- ``spectral_norm(W) = sigma_max(W)``, exact: ``sqrt(lambda_max(G))`` for the smaller Gram matrix
  ``G = W W^T`` or ``W^T W``. ``G`` is formed in float64 (one GEMM) and its largest eigenvalue
  is taken by ``eigvalsh``; the sqrt halves the relative error of ``lambda_max``, which rounding
  perturbs by about ``eps * ||G||_2``, so the largest singular value keeps full relative accuracy
  (small singular values would not, but they are never used).
- ``spectral_norm_of_product(A, B) = ||A @ B||_2`` without forming the product: with QR
  factorisations ``A = Q_a R_a`` and ``B^T = Q_b R_b`` it is ``sigma_max(R_a R_b^T)``, a
  ``r x r`` matrix for the inner dimension ``r`` (a head dimension for attention products).
- ``spectral_norm_estimate(W)``: power iteration on ``W^T W``. Its value is a *lower* estimate
  (a Rayleigh quotient); its residual ``||W^T W v - s^2 v||`` does not bound it from above.
  Status ``estimated``: never use it in a certified term.
- ``frobenius_norm(W) = sqrt(sum_ij W_ij^2)``; ``frobenius_norm_sq`` its square.
- ``l21_norm(W, M) = ||(W - M)^T||_{2,1} = sum_i ||(W - M)[i, :]||_2``: the sum of the l2 norms of
  the **rows** (output units) of ``W - M``, as in Bartlett, Foster, Telgarsky 2017 (``M = 0`` when
  no reference is given).
- ``stable_rank(W) = ||W||_F^2 / ||W||_2^2`` (0 for the zero matrix).
- ``distance_to_reference(W, M) = ||W - M||_F``.

Certified terms multiply an exact value by ``1 + 1e-10`` to cover rounding (spec section 4);
these functions return the computed value itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Status = Literal["certified", "estimated", "proxy", "diagnostic"]
SpectralMode = Literal["exact", "estimate"]

ArrayLike = torch.Tensor | np.ndarray

_STATUS_RANK: dict[str, int] = {"certified": 0, "estimated": 1, "proxy": 2, "diagnostic": 3}


def weakest_status(*statuses: str) -> str:
    """The weakest of ``statuses``: ``certified`` < ``estimated`` < ``proxy`` < ``diagnostic``."""
    return max(statuses, key=lambda s: _STATUS_RANK[s]) if statuses else "certified"


@dataclass(frozen=True)
class NormValue:
    """One number with what it is worth: ``status`` (spec section 8) and how it was computed."""

    value: float
    status: str
    method: str


@dataclass(frozen=True)
class SpectralEstimate:
    """A power-iteration value of ``sigma_max(W)``: a lower estimate, never certified.

    ``residual = ||W^T W v - value^2 v||_2`` for the final unit vector ``v``: how far ``v`` is
    from a right singular vector; it does not bound ``sigma_max`` from above.
    """

    value: float
    residual: float
    n_iter: int
    seed: int
    status: str = "estimated"
    method: str = "power_iteration"


@dataclass(frozen=True)
class MatrixNorms:
    """All the norms of one matrix, each with its status and method."""

    shape: tuple[int, int]
    spectral_norm: NormValue
    frobenius_norm: NormValue
    l21_norm: NormValue
    stable_rank: NormValue
    distance_to_reference: NormValue | None
    l21_distance_to_reference: NormValue | None


def as_matrix(w: ArrayLike, name: str = "W") -> torch.Tensor:
    """``w`` as a detached float64 CPU matrix; raises ``ValueError`` unless 2-D and finite."""
    t = torch.as_tensor(w).detach()
    if t.is_complex():
        raise ValueError(f"{name} must be real, got {t.dtype}")
    t = t.to(device="cpu", dtype=torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values")
    return t


def _with_reference(w: torch.Tensor, reference: ArrayLike | None) -> torch.Tensor:
    if reference is None:
        return w
    m = as_matrix(reference, "reference")
    if m.shape != w.shape:
        raise ValueError(f"reference has shape {tuple(m.shape)}, W has {tuple(w.shape)}")
    return w - m


def gram_smaller(w: torch.Tensor) -> torch.Tensor:
    """The smaller of ``W W^T`` and ``W^T W`` (float64 in, float64 out), symmetrised exactly."""
    g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return 0.5 * (g + g.T)


def _lambda_max(g: torch.Tensor) -> float:
    if g.numel() == 0:
        return 0.0
    return max(float(torch.linalg.eigvalsh(g)[-1]), 0.0)


def spectral_norm_sq(w: ArrayLike) -> float:
    """``sigma_max(W)^2 = lambda_max`` of the smaller Gram matrix, exact (``eigvalsh``), >= 0."""
    return _lambda_max(gram_smaller(as_matrix(w)))


def spectral_norm(w: ArrayLike) -> float:
    """``sigma_max(W)``, exact: ``sqrt(lambda_max)`` of the smaller Gram matrix (``eigvalsh``).

    >>> spectral_norm(torch.diag(torch.tensor([3.0, -4.0, 1.0])))
    4.0
    """
    return math.sqrt(spectral_norm_sq(w))


def spectral_norm_of_product(a: ArrayLike, b: ArrayLike) -> float:
    """``||A @ B||_2`` exactly, without forming ``A @ B`` when the inner dimension is small.

    With ``A = Q_a R_a`` and ``B^T = Q_b R_b`` (reduced QR; ``Q`` with orthonormal columns),
    ``A B = Q_a (R_a R_b^T) Q_b^T`` has the singular values of ``R_a R_b^T``.
    """
    am, bm = as_matrix(a, "A"), as_matrix(b, "B")
    if am.shape[1] != bm.shape[0]:
        raise ValueError(f"inner dimensions differ: A {tuple(am.shape)}, B {tuple(bm.shape)}")
    r = am.shape[1]
    if r >= min(am.shape[0], bm.shape[1]):
        return spectral_norm(am @ bm)
    r_a = torch.linalg.qr(am, mode="r").R
    r_b = torch.linalg.qr(bm.T, mode="r").R
    return spectral_norm(r_a @ r_b.T)


def spectral_norm_estimate(w: ArrayLike, n_iter: int = 100, seed: int = 0) -> SpectralEstimate:
    """Power iteration on ``W^T W`` from a seeded Gaussian start: a lower estimate of ``sigma_max``.

    The value is ``||W v||`` for the final unit vector ``v``, never above the true value (up to
    rounding); the residual is ``||W^T W v - value^2 v||``. Status ``estimated``.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    wm = as_matrix(w)
    n = wm.shape[1]
    if wm.numel() == 0:
        return SpectralEstimate(0.0, 0.0, 0, int(seed))
    gen = torch.Generator().manual_seed(int(seed))
    v = torch.randn(n, generator=gen, dtype=torch.float64)
    v /= torch.linalg.vector_norm(v)
    done = 0
    for _ in range(n_iter):
        u = wm.T @ (wm @ v)
        nu = torch.linalg.vector_norm(u)
        done += 1
        if float(nu) == 0.0:
            break
        v = u / nu
    wv = wm @ v
    s_sq = float(wv @ wv)
    residual = float(torch.linalg.vector_norm(wm.T @ wv - s_sq * v))
    return SpectralEstimate(math.sqrt(s_sq), residual, done, int(seed))


def frobenius_norm_sq(w: ArrayLike) -> float:
    """``sum_ij W_ij^2``."""
    wm = as_matrix(w)
    return float(torch.sum(wm * wm))


def frobenius_norm(w: ArrayLike) -> float:
    """``sqrt(sum_ij W_ij^2)``."""
    return float(torch.linalg.matrix_norm(as_matrix(w), ord="fro"))


def l21_norm(w: ArrayLike, reference: ArrayLike | None = None) -> float:
    """``||(W - M)^T||_{2,1}``: the sum over the rows of ``W - M`` of their l2 norms.

    >>> l21_norm(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    6.0
    """
    d = _with_reference(as_matrix(w), reference)
    return float(torch.linalg.vector_norm(d, dim=1).sum())


def stable_rank(w: ArrayLike) -> float:
    """``||W||_F^2 / ||W||_2^2`` (exact spectral norm); 0 for the zero matrix."""
    wm = as_matrix(w)
    s_sq = _lambda_max(gram_smaller(wm))
    return float(torch.sum(wm * wm)) / s_sq if s_sq > 0 else 0.0


def distance_to_reference(w: ArrayLike, reference: ArrayLike) -> float:
    """``||W - M||_F``."""
    d = _with_reference(as_matrix(w), reference)
    return float(torch.linalg.matrix_norm(d, ord="fro"))


def matrix_norms(
    w: ArrayLike,
    *,
    reference: ArrayLike | None = None,
    spectral: SpectralMode = "exact",
    n_iter: int = 100,
    seed: int = 0,
) -> MatrixNorms:
    """Every norm of this module for one matrix, sharing one float64 copy and one Gram matrix.

    ``spectral="exact"`` (``eigvalsh`` of the smaller Gram matrix, status ``certified``) or
    ``"estimate"`` (power iteration, status ``estimated``; the stable rank is then an estimate too).
    """
    wm = as_matrix(w)
    fro_sq = float(torch.sum(wm * wm))
    if spectral == "exact":
        s = math.sqrt(_lambda_max(gram_smaller(wm)))
        spec = NormValue(s, "certified", "gram_eigvalsh")
    elif spectral == "estimate":
        est = spectral_norm_estimate(wm, n_iter=n_iter, seed=seed)
        s = est.value
        spec = NormValue(s, "estimated", f"power_iteration(n_iter={est.n_iter}, seed={seed})")
    else:
        raise ValueError(f"spectral must be 'exact' or 'estimate', not {spectral!r}")
    srank = fro_sq / (s * s) if s > 0 else 0.0
    dist = l21_dist = None
    if reference is not None:
        d = _with_reference(wm, reference)
        dist = NormValue(float(torch.linalg.matrix_norm(d, ord="fro")), "certified", "frobenius")
        l21_dist = NormValue(
            float(torch.linalg.vector_norm(d, dim=1).sum()), "certified", "row_l2_sum"
        )
    return MatrixNorms(
        shape=(int(wm.shape[0]), int(wm.shape[1])),
        spectral_norm=spec,
        frobenius_norm=NormValue(math.sqrt(fro_sq), "certified", "frobenius"),
        l21_norm=NormValue(
            float(torch.linalg.vector_norm(wm, dim=1).sum()), "certified", "row_l2_sum"
        ),
        stable_rank=NormValue(srank, spec.status, "frobenius_sq/spectral_sq"),
        distance_to_reference=dist,
        l21_distance_to_reference=l21_dist,
    )
