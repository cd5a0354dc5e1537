"""Matrix norms of weight matrices, in float64. Torch or numpy in; floats or frozen values out.

``W`` is a weight as PyTorch stores it, ``(out, in)``; ``M`` a reference matrix of the same shape.

- ``spectral_norm(W) = sigma_max(W)``, exact: ``sqrt(lambda_max(G))`` for the smaller Gram matrix
  ``G = W W^T`` or ``W^T W``, formed in float64 (one GEMM). Rounding perturbs ``lambda_max`` by
  about ``eps * ||G||_2`` and the sqrt halves that relative error, so the largest singular value
  keeps full relative accuracy (small singular values would not, but they are never used).
  ``lambda_max(G)``: ``eigvalsh`` for ``n <= 64``; above, a Lanczos Rayleigh quotient ``theta``
  (a lower value) certified by a Cholesky factorisation of ``theta (1 + 1e-12) I - G``: success
  proves ``lambda_max < theta (1 + 1e-12)``, which is returned (an upper value, within 1e-12
  relative of the exact one); on failure, ``eigvalsh``. The method string says which ran.
- ``spectral_norm_of_product(A, B) = ||A @ B||_2`` without forming the product: with QR
  factorisations ``A = Q_a R_a`` and ``B^T = Q_b R_b`` it is ``sigma_max(R_a R_b^T)``, a
  ``r x r`` matrix for the inner dimension ``r`` (a head dimension for attention products);
  ``spectral_norms_of_products`` does a batch of them (all heads of a block) at once.
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


def as_matrix(w: ArrayLike, name: str = "W", *, check_finite: bool = True) -> torch.Tensor:
    """``w`` as a detached float64 CPU matrix; raises ``ValueError`` unless 2-D (and finite,
    when ``check_finite``; callers that form ``sum W_ij^2`` anyway check that instead)."""
    t = torch.as_tensor(w).detach()
    if t.is_complex():
        raise ValueError(f"{name} must be real, got {t.dtype}")
    t = t.to(device="cpu", dtype=torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(t.shape)}")
    if check_finite and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values")
    return t


def _require_finite(value: float, name: str = "W") -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} contains non-finite values (or its squares overflow)")
    return value


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


_DIRECT_MAX_N = 64  # below this size eigvalsh is as cheap as anything else
_CERT_RTOL = 1e-12  # width of the certified bracket [theta, theta (1 + rtol)] on lambda_max
_LANCZOS_MAX_STEPS = 160


def _eigvalsh_max(g: torch.Tensor) -> float:
    return max(float(torch.linalg.eigvalsh(g)[-1]), 0.0)


def _lanczos_rayleigh(g: torch.Tensor, max_steps: int) -> float:
    """A Rayleigh quotient ``y^T G y / y^T y <= lambda_max(G)`` of the top Lanczos Ritz vector.

    Lanczos with full reorthogonalisation from a fixed seeded start; stops when the top Ritz
    value no longer moves (relative change below 1e-15) or after ``max_steps`` steps.
    """
    n = g.shape[0]
    steps = min(n, max_steps)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(n, generator=gen, dtype=torch.float64)
    basis = torch.empty(steps, n, dtype=torch.float64)
    basis[0] = q / torch.linalg.vector_norm(q)
    alphas: list[float] = []
    betas: list[float] = []
    theta_prev = -math.inf
    s_top = torch.ones(1, dtype=torch.float64)
    for j in range(steps):
        w = g @ basis[j]
        alphas.append(float(w @ basis[j]))
        qj = basis[: j + 1]
        w -= qj.T @ (qj @ w)
        w -= qj.T @ (qj @ w)  # twice is enough (Kahan, Parlett)
        beta = float(torch.linalg.vector_norm(w))
        if j % 4 == 3 or j == steps - 1 or beta == 0.0:
            t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
            if betas:
                off = torch.tensor(betas, dtype=torch.float64)
                t += torch.diag(off, 1) + torch.diag(off, -1)
            evals, evecs = torch.linalg.eigh(t)
            theta, s_top = float(evals[-1]), evecs[:, -1]
            if abs(theta - theta_prev) <= 1e-15 * abs(theta):
                break
            theta_prev = theta
        if j + 1 == steps or beta <= 1e-300:
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    y = basis[: s_top.shape[0]].T @ s_top
    return float(y @ (g @ y)) / float(y @ y)


def _lambda_max(g: torch.Tensor) -> tuple[float, str]:
    """``lambda_max`` of a symmetric PSD matrix, exact to ``_CERT_RTOL`` relative (and rounding).

    Small matrices: ``eigvalsh``. Larger ones: a Lanczos Rayleigh quotient ``theta`` (a lower
    value) and a Cholesky factorisation of ``t I - G`` with ``t = theta (1 + 1e-12)``: if it
    succeeds, ``t I - G`` is positive definite, so ``theta <= lambda_max < t`` and ``t`` is
    returned (up to the rounding of the factorisation, of order ``n eps lambda_max``, the same
    order as ``eigvalsh``'s own error). If it fails, ``eigvalsh``.
    """
    n = g.shape[0]
    if n == 0:
        return 0.0, "empty"
    _require_finite(float(g.diagonal().sum()))  # trace(G) = ||W||_F^2
    if n <= _DIRECT_MAX_N:
        return _eigvalsh_max(g), "gram_eigvalsh"
    theta = _lanczos_rayleigh(g, _LANCZOS_MAX_STEPS)
    if theta > 0:
        upper = theta * (1.0 + _CERT_RTOL)
        shifted = torch.diag_embed(torch.full((n,), upper, dtype=torch.float64)) - g
        if int(torch.linalg.cholesky_ex(shifted).info) == 0:
            return upper, "gram_lanczos_cholesky_certificate"
    return _eigvalsh_max(g), "gram_eigvalsh"


def spectral_norm_sq(w: ArrayLike) -> float:
    """``sigma_max(W)^2 = lambda_max`` of the smaller Gram matrix, exact, >= 0."""
    return _lambda_max(gram_smaller(as_matrix(w, check_finite=False)))[0]


def spectral_norm(w: ArrayLike) -> float:
    """``sigma_max(W)``, exact: ``sqrt(lambda_max)`` of the smaller Gram matrix (module doc).

    >>> spectral_norm(torch.diag(torch.tensor([3.0, -4.0, 1.0])))
    4.0
    """
    return math.sqrt(spectral_norm_sq(w))


def spectral_norm_of_product(a: ArrayLike, b: ArrayLike) -> float:
    """``||A @ B||_2`` exactly, without forming ``A @ B`` when the inner dimension is small.

    With ``A = Q_a R_a`` and ``B^T = Q_b R_b`` (reduced QR; ``Q`` with orthonormal columns),
    ``A B = Q_a (R_a R_b^T) Q_b^T`` has the singular values of ``R_a R_b^T``.
    """
    am, bm = as_matrix(a, "A", check_finite=False), as_matrix(b, "B", check_finite=False)
    return float(spectral_norms_of_products(am.unsqueeze(0), bm.unsqueeze(0))[0])


def spectral_norms_of_products(a: ArrayLike, b: ArrayLike) -> torch.Tensor:
    """``||A_i @ B_i||_2`` for a batch ``A: (k, m, r)``, ``B: (k, r, n)``, exact, float64 ``(k,)``.

    For ``r < min(m, n)`` the ``r x r`` cores ``R_a R_b^T`` of ``spectral_norm_of_product``;
    otherwise the products themselves; then ``eigvalsh`` of each core's smaller Gram matrix.
    """
    at = torch.as_tensor(a).detach().to(device="cpu", dtype=torch.float64)
    bt = torch.as_tensor(b).detach().to(device="cpu", dtype=torch.float64)
    if at.ndim != 3 or bt.ndim != 3 or at.shape[0] != bt.shape[0] or at.shape[2] != bt.shape[1]:
        raise ValueError(
            f"need batches (k, m, r) and (k, r, n), got {tuple(at.shape)} and {tuple(bt.shape)}"
        )
    r = at.shape[2]
    if r < min(at.shape[1], bt.shape[2]):
        core = torch.linalg.qr(at, mode="r").R @ torch.linalg.qr(bt.mT, mode="r").R.mT
    else:
        core = at @ bt
    g = core @ core.mT if core.shape[1] <= core.shape[2] else core.mT @ core
    g = 0.5 * (g + g.mT)
    if g.shape[1] == 0:
        return torch.zeros(g.shape[0], dtype=torch.float64)
    _require_finite(float(g.diagonal(dim1=1, dim2=2).sum()), "A or B")
    top: torch.Tensor = torch.linalg.eigvalsh(g)[:, -1]  # torch.linalg is untyped (Any)
    return top.clamp_min(0.0).sqrt()


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
    g = gram_smaller(as_matrix(w, check_finite=False))
    s_sq = _lambda_max(g)[0]
    return float(g.diagonal().sum()) / s_sq if s_sq > 0 else 0.0


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

    ``spectral="exact"`` (the smaller Gram matrix, status ``certified``) or ``"estimate"``
    (power iteration, status ``estimated``; the stable rank is then an estimate too).
    """
    wm = as_matrix(w, check_finite=False)
    row_norm = torch.linalg.vector_norm(wm, dim=1)  # no W-sized temporary (streaming memory)
    row_sq = row_norm * row_norm
    fro_sq = _require_finite(float(row_sq.sum()))
    if spectral == "exact":
        lam, method = _lambda_max(gram_smaller(wm))
        s = math.sqrt(lam)
        spec = NormValue(s, "certified", method)
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
        l21_norm=NormValue(float(row_norm.sum()), "certified", "row_l2_sum"),
        stable_rank=NormValue(srank, spec.status, "frobenius_sq/spectral_sq"),
        distance_to_reference=dist,
        l21_distance_to_reference=l21_dist,
    )
