"""Norms of plain networks written as matrix chains: pure functions, tensors in, numbers out.

An MLP ``head o encoder`` is a list of :class:`Affine` layers (weight, bias, activation after it);
:func:`augmented_matrices` writes it bias-free on ``x' = (x, c)``. The Golowich-Rakhlin-Shamir and
Bartlett-Foster-Telgarsky quantities, the data-free feature-norm recursion and the LayerNorm output
bound of bound-spec section 4 are computed here; ``tfbound.bounds.network`` turns them into terms.
Every norm that enters a certified term is multiplied by :data:`ROUNDING`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tfbound.measures.norms import l21_norm, spectral_norm

ROUNDING = 1.0 + 1e-10  # a norm used in a certified term is inflated to cover float rounding
#: Lipschitz constant of exact (erf) GELU (bound-spec section 2).
GELU_LIPSCHITZ = 1.1290


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: ``lipschitz``, ``norm_ratio = sup |s(t)| / |t|`` and whether it
    is positively homogeneous with ``s(c) = c`` for ``c > 0`` (so a constant can be carried)."""

    name: str
    lipschitz: float
    norm_ratio: float
    homogeneous: bool


IDENTITY = Activation("identity", 1.0, 1.0, True)


@dataclass(frozen=True)
class Affine:
    """One affine layer of a plain MLP and the activation after it (identity for the output)."""

    name: str
    weight: torch.Tensor  # float64 (out, in)
    bias: torch.Tensor | None  # float64 (out,)
    activation: Activation


def f64(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, on the CPU, in float64."""
    return t.detach().to(device="cpu", dtype=torch.float64)


def augmented_matrices(layers: Sequence[Affine], bias_const: float) -> list[torch.Tensor]:
    """The bias-free network computing the same function on ``x' = (x, c)``.

    Hidden layers ``[[W, b / c], [0, ..., 0, 1]]`` (the last unit carries ``c``: every activation
    must map ``c`` to itself), the output layer ``[W, b / c]``.
    """
    if bias_const <= 0:
        raise ValueError("the carried constant must be positive")
    mats = []
    for j, layer in enumerate(layers):
        w = layer.weight
        b = layer.bias if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        a = torch.cat([w, (b / bias_const)[:, None]], dim=1)
        if j < len(layers) - 1:
            carry = torch.zeros(1, a.shape[1], dtype=a.dtype)
            carry[0, -1] = 1.0
            a = torch.cat([a, carry], dim=0)
        mats.append(a)
    return mats


def grs_factor(depth: int) -> float:
    """``sqrt(2 log(2) L) + 1``."""
    return math.sqrt(2.0 * math.log(2.0) * depth) + 1.0


def frobenius_product(mats: Sequence[torch.Tensor]) -> float:
    """``prod_j ||A_j||_F``, each factor inflated by ``1 + 1e-10`` for rounding."""
    return math.prod(float(torch.linalg.matrix_norm(a, ord="fro")) * ROUNDING for a in mats)


def grs_rademacher(mats: Sequence[torch.Tensor], sum_sq_inputs: float, n: int) -> float:
    """Golowich-Rakhlin-Shamir Thm 1 at ``Q = prod ||A_j||_F``:
    ``(sqrt(2 log(2) L) + 1) Q sqrt(sum ||x'_i||^2) / n``."""
    return grs_factor(len(mats)) * frobenius_product(mats) * math.sqrt(sum_sq_inputs) / n


def spectral_complexity(
    mats: Sequence[torch.Tensor],
    lipschitz: Sequence[float],
    references: Sequence[torch.Tensor | None] | None = None,
) -> tuple[float, list[float], list[float]]:
    """Bartlett-Foster-Telgarsky ``R_A = (prod rho_i ||A_i||_2)
    (sum_i (||(A_i - M_i)^T||_{2,1} / ||A_i||_2)^{2/3})^{3/2}``; also the spectral norms and the
    (2,1) distances. ``lipschitz[i]`` is the constant of the activation after layer ``i``."""
    refs = list(references) if references is not None else [None] * len(mats)
    spectral = [spectral_norm(a) for a in mats]
    l21 = [l21_norm(a, m) for a, m in zip(mats, refs, strict=True)]
    if any(s == 0 for s in spectral):
        return 0.0, spectral, l21
    prod = math.prod(r * s for r, s in zip(lipschitz, spectral, strict=True))
    total = sum((d / s) ** (2.0 / 3.0) for d, s in zip(l21, spectral, strict=True))
    return prod * total**1.5, spectral, l21


def feature_norm_bound(layers: Sequence[Affine], input_bound: float) -> list[float]:
    """``b_l = rho_l (||W_l||_2 b_{l-1} + ||c_l||_2)``, ``b_0 = input_bound``; every ``b_l``.

    ``rho_l = sup |s(t)| / |t|`` of the activation after layer ``l`` (1 for ReLU, GELU, tanh).
    """
    bounds = [input_bound]
    for layer in layers:
        bias = 0.0 if layer.bias is None else float(layer.bias.norm())
        s = spectral_norm(layer.weight) * ROUNDING
        bounds.append(layer.activation.norm_ratio * (s * bounds[-1] + bias * ROUNDING))
    return bounds[1:]


#: the unit roundoff of float32, the precision encoders run in
FLOAT32_UNIT = 2.0**-24


def float32_slack(d: int) -> float:
    """``1 + 8 d u`` (``u = 2^-24``): covers the float32 rounding of a LayerNorm or an
    l2-normalisation of ``d`` entries (a sum of ``d`` terms errs by at most ``d u`` relative, the
    mean, variance, square root and scaling add a few more ``u``). The exact bound of a
    computation done in real numbers is exceeded by float32 outputs: an initialised LayerNorm
    (gain 1, shift 0) gives tokens of norm ``sqrt(d)`` to within rounding."""
    return 1.0 + 8.0 * d * FLOAT32_UNIT


def layernorm_output_bound(gain: torch.Tensor, shift: torch.Tensor | None) -> float:
    """``(min(sqrt(d) ||g||_inf, sqrt(d - 1) ||g||_2) + ||beta||_2) (1 + 8 d 2^-24)``, times
    ``1 + 1e-10``: a bound on the norm of any LayerNorm output computed in float32 (the
    normalised vector ``u`` has ``||u||^2 <= d`` and ``sum u = 0``, so ``u_i^2 <= d - 1``; the
    factor covers float32 rounding, :func:`float32_slack`)."""
    g = f64(gain).reshape(-1)
    d = g.numel()
    scale = min(math.sqrt(d) * float(g.abs().max()), math.sqrt(max(d - 1, 0)) * float(g.norm()))
    beta = 0.0 if shift is None else float(f64(shift).norm())
    return (scale + beta) * float32_slack(d) * ROUNDING


def sum_sq_with_constant(x: np.ndarray, bias_const: float) -> float:
    """``sum_i ||x'_i||^2 = sum_i ||x_i||^2 + n c^2`` in float64 (rows flattened)."""
    flat = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    return float(np.einsum("ij,ij->", flat, flat)) + flat.shape[0] * bias_const**2


def observed_max_norm(features: np.ndarray) -> float:
    """``max_i ||z_i||_2`` of a float64 ``(n, d)`` array."""
    return float(np.sqrt(np.max(np.einsum("ij,ij->i", features, features))))


__all__ = [
    "FLOAT32_UNIT",
    "GELU_LIPSCHITZ",
    "IDENTITY",
    "ROUNDING",
    "Activation",
    "Affine",
    "augmented_matrices",
    "f64",
    "feature_norm_bound",
    "float32_slack",
    "frobenius_product",
    "grs_factor",
    "grs_rademacher",
    "layernorm_output_bound",
    "observed_max_norm",
    "spectral_complexity",
    "sum_sq_with_constant",
]
