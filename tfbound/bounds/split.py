"""The seeded split of the labeled sample and the tool's own prior probe (spec section 10.1).

- ``split_indices(n, seed, fraction)``: a permutation of ``0..n-1`` drawn from a seed fixed in the
  configuration, cut into ``S1`` (the first ``floor(fraction * n)`` entries) and ``S2`` (the rest).
  Not stratified by label and not a function of the data: only ``n`` and the seed enter.
- ``fit_prior_probe(z1, y1, lam=..., bias_const=...)``: the prior head, the minimiser of
  ``(1/n1) sum_i log(1 + exp(-y_i theta' . z'_i)) + lam ||theta'||^2`` over augmented features
  ``z' = (z, c)`` (the penalty covers the bias coordinate too). It receives the ``S1`` arrays and
  configuration constants only: its signature has no slot for the user's head, its norm or any
  hyperparameter chosen on data that include ``S2``. Deterministic: damped Newton in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tfbound.errors import DataError

_NEWTON_MAX_STEPS = 100
_NEWTON_TOL = 1e-24  # on the Newton decrement squared / 2
_NEWTON_FULL_STEP = 1e-10


def split_indices(n: int, seed: int, fraction: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """``(idx1, idx2)``: sorted indices of ``S1`` and ``S2`` from a seeded permutation of ``n``.

    ``n1 = floor(fraction * n)``, and both parts must be non-empty. The permutation comes from
    ``numpy.random.default_rng(seed)`` and depends on nothing else.
    """
    n = int(n)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    n1 = int(math.floor(fraction * n))
    if n1 < 1 or n1 > n - 1:
        raise ValueError(f"cannot split n={n} at fraction {fraction} into two non-empty parts")
    perm = np.random.default_rng(int(seed)).permutation(n)
    return np.sort(perm[:n1]), np.sort(perm[n1:])


def as_float64_matrix(a: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """A finite ``(n, d)`` float64 copy of ``a`` (numpy or torch), else ``DataError``."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    out = np.array(a, dtype=np.float64)
    if out.ndim != 2 or out.shape[0] < 1:
        raise DataError(f"{name} must be a non-empty (n, d) matrix, got shape {out.shape}")
    if not np.all(np.isfinite(out)):
        raise DataError(f"{name} has non-finite entries")
    return out


def as_labels(y: np.ndarray | torch.Tensor, n: int, name: str) -> np.ndarray:
    """Labels in ``{-1, +1}`` as a float64 vector of length ``n``, else ``DataError``."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().to(torch.float64).numpy()
    out = np.array(y, dtype=np.float64).reshape(-1)
    if out.shape[0] != n:
        raise DataError(f"{name} has {out.shape[0]} labels for {n} feature rows")
    if not np.all((out == 1.0) | (out == -1.0)):
        raise DataError(f"{name} must hold labels in {{-1, +1}}")
    return out


def as_head(theta: np.ndarray | torch.Tensor, dim: int, name: str) -> np.ndarray:
    """A finite float64 vector of length ``dim`` (a head in augmented coordinates)."""
    if isinstance(theta, torch.Tensor):
        theta = theta.detach().cpu().to(torch.float64).numpy()
    out = np.array(theta, dtype=np.float64).reshape(-1)
    if out.shape[0] != dim:
        raise ValueError(
            f"{name} must have d+1 = {dim} entries (theta, b/c) in augmented coordinates, "
            f"got {out.shape[0]}"
        )
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} has non-finite entries")
    return out


def augment_features(z: np.ndarray, bias_const: float) -> np.ndarray:
    """``z'_i = (z_i, c)`` in float64."""
    if not (bias_const > 0 and math.isfinite(bias_const)):
        raise ValueError(f"bias_const must be a finite number > 0, got {bias_const}")
    return np.concatenate([z, np.full((z.shape[0], 1), float(bias_const))], axis=1)


def _objective(theta: np.ndarray, za: np.ndarray, y: np.ndarray, lam: float) -> float:
    margins = y * (za @ theta)
    return float(np.mean(np.logaddexp(0.0, -margins)) + lam * float(theta @ theta))


def fit_prior_probe(
    z1: np.ndarray | torch.Tensor,
    y1: np.ndarray | torch.Tensor,
    *,
    lam: float,
    bias_const: float,
) -> np.ndarray:
    """The prior head ``theta' = (theta, b/c)`` of shape ``(d+1,)``, fitted on ``S1`` only.

    Minimises ``mean_i log(1 + exp(-y_i theta' . z'_i)) + lam ||theta'||^2`` with ``z' = (z, c)``
    by damped Newton in float64, through the ``n1 x n1`` Gram matrix when ``d+1 > n1``. The
    objective is strongly convex for ``lam > 0``, so the minimiser is unique and the result
    deterministic. ``z1`` is ``(n1, d)``, ``y1`` in ``{-1, +1}``.
    """
    if not (lam > 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be a finite number > 0, got {lam}")
    z = as_float64_matrix(z1, "z1")
    y = as_labels(y1, z.shape[0], "y1")
    za = augment_features(z, bias_const)
    n, p = za.shape
    dual = p > n  # solve the Newton system through the n x n Gram matrix (Woodbury)
    gram = za @ za.T if dual else None
    theta = np.zeros(p)
    value = _objective(theta, za, y, lam)
    for _ in range(_NEWTON_MAX_STEPS):
        margins = y * (za @ theta)
        # sigma(-m) and sigma(m) sigma(-m), computed without overflow.
        s_neg = np.exp(-np.logaddexp(0.0, margins))
        weight = s_neg * np.exp(-np.logaddexp(0.0, -margins))
        grad = -(za.T @ (y * s_neg)) / n + 2.0 * lam * theta
        if gram is None:
            # H = B^T B + 2 lam I with B = D^(1/2) A: ``B.T @ B`` of one buffer is a symmetric
            # rank-k update in BLAS (half the flops of ``(A^T D) @ A``).
            scaled = za * np.sqrt(weight / n)[:, None]
            hess = scaled.T @ scaled
            hess[np.diag_indices(p)] += 2.0 * lam
            step = np.linalg.solve(hess, grad)
        else:
            # H = A^T D A + c I with D = diag(weight)/n, c = 2 lam; B = D^(1/2) A:
            # H^-1 g = (g - B^T (c I + B B^T)^-1 B g) / c.
            root = np.sqrt(weight / n)
            inner = root[:, None] * gram * root[None, :] + 2.0 * lam * np.eye(n)
            v = np.linalg.solve(inner, root * (za @ grad))
            step = (grad - za.T @ (root * v)) / (2.0 * lam)
        decrement = float(grad @ step)
        if decrement / 2.0 <= _NEWTON_TOL:
            break
        if decrement < _NEWTON_FULL_STEP:
            # Inside the quadratic-convergence region the objective cannot resolve the
            # decrease any more: take the pure Newton step.
            theta = theta - step
            value = _objective(theta, za, y, lam)
            continue
        t = 1.0
        while True:
            candidate = theta - t * step
            new_value = _objective(candidate, za, y, lam)
            if new_value <= value - 0.25 * t * decrement:
                break
            t *= 0.5
            if t < 1e-12:
                return theta  # no descent left at float precision
        theta, value = candidate, new_value
    return theta
