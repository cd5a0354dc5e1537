"""Per-member refits and excess risks (bound-spec 6.2): features in, per-example losses out.

- **Decoder refit** on the frozen representation, pretext loss of section 6.1
  (``(1/D) ||clip(pred) - t||^2`` over the counted coordinates):
  ``ridge`` -- an affine decoder in closed form, per output coordinate
  ``W_j = argmin sum_i m_ij (w . z'_i - t_ij)^2 + lambda_j ||w_{1..d}||^2`` (intercept unpenalised,
  ``lambda_j = ridge * trace(sum_i m_ij z_i z_i^T) / d``, scale-free); or ``configured`` -- the
  configured decoder architecture from a seeded fresh initialisation, full-batch Adam on the
  masked square loss for a fixed number of steps.
- **Probe** of the head class: a linear head ``f(z) = theta . z + b`` in the ball
  ``||(theta, b / c)||_2 <= rho``; projected Adam on the logistic loss (a convex upper bound of the
  ramp), then on the ramp ``phi_1`` itself, keeping the iterate of least empirical ramp risk (an
  approximate ERM of the ramp loss over the ball; its optimisation error is not certified).
  Risks are measured with ``phi_1(y f(x))``, the loss of the decomposition.
- **Excess risk** against the reference member: the mean of paired per-example differences with
  its standard error and a normal (CLT) interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def _affine(z: np.ndarray) -> np.ndarray:
    return np.concatenate([z, np.ones((z.shape[0], 1))], axis=1)


def fit_ridge_decoder(
    z: np.ndarray, targets: np.ndarray, mask: np.ndarray, ridge: float
) -> np.ndarray:
    """Weights ``(d + 1, D_full)`` of the affine decoder (see the module docstring)."""
    za = _affine(z)
    d = z.shape[1]
    weights = np.zeros((d + 1, targets.shape[1]))
    # Columns sharing a mask pattern (a CE block; one MAE patch) share one linear solve.
    patterns, inverse = np.unique(mask.T, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for p in range(patterns.shape[0]):
        cols = np.flatnonzero(inverse == p)
        m = patterns[p]
        if not m.any():
            continue
        zm = za * m[:, None]
        gram = za.T @ zm
        lam = ridge * float(np.trace(gram[:d, :d])) / d
        gram[np.arange(d), np.arange(d)] += lam
        rhs = zm.T @ targets[:, cols]
        try:
            weights[:, cols] = np.linalg.solve(gram, rhs)
        except np.linalg.LinAlgError:  # ridge = 0 and collinear features: least norm
            weights[:, cols] = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return weights


def ridge_predict(z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return _affine(z) @ weights


def fit_configured_decoder(
    decoder: nn.Module,
    z: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    *,
    steps: int,
    lr: float,
    seed: int,
) -> nn.Module:
    """Reinitialise ``decoder`` (seeded) and fit it by full-batch Adam on the masked square loss."""
    torch.manual_seed(seed)
    for module in decoder.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    zt = torch.from_numpy(z).float()
    tt = torch.from_numpy(targets).float()
    mt = torch.from_numpy(mask).float()
    per_example = mt.sum(1)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    decoder.train()
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            pred = decoder(zt).reshape(tt.shape)
            loss = (((pred - tt) ** 2 * mt).sum(1) / per_example).mean()
            loss.backward()
            opt.step()
    return decoder.eval()


@torch.inference_mode()
def decoder_predict(decoder: nn.Module, z: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    pred = decoder(torch.from_numpy(z).float()).reshape(out_shape)
    return np.asarray(pred.to(torch.float64).numpy())


@dataclass(frozen=True)
class Probe:
    """A linear head ``f(z) = theta . z + b`` with ``||(theta, b / c)|| <= radius``."""

    theta: np.ndarray
    bias: float
    radius: float
    bias_const: float
    train_ramp_risk: float

    def scores(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z @ self.theta + self.bias, dtype=np.float64)


def ramp_losses(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``phi_1(y f)``: 1 below 0, ``1 - t`` on ``[0, 1]``, 0 above."""
    return np.asarray(np.clip(1.0 - y * scores, 0.0, 1.0), dtype=np.float64)


def fit_probe(
    z: np.ndarray,
    y: np.ndarray,
    *,
    radius: float,
    bias_const: float,
    logistic_steps: int = 300,
    ramp_steps: int = 200,
    lr: float = 0.05,
) -> Probe:
    """Approximate ramp-loss ERM over the ball ``||(theta, b/c)|| <= radius`` (deterministic).

    ``w' = radius * u`` with ``||u|| <= 1``; Adam on ``u`` (NumPy, full batch) with projection onto
    the unit ball after every step, starting from ``u = 0``.
    """
    if not radius > 0:
        raise ValueError(f"the probe radius must be positive, got {radius}")
    za = np.concatenate([np.asarray(z, dtype=np.float64), np.full((z.shape[0], 1), bias_const)], 1)
    yv = np.asarray(y, dtype=np.float64)
    n = za.shape[0]
    u = np.zeros(za.shape[1])
    m1 = np.zeros_like(u)
    m2 = np.zeros_like(u)
    b1, b2, eps = 0.9, 0.999, 1e-8
    best_u, best_risk = u.copy(), math.inf
    total = logistic_steps + ramp_steps
    for step in range(total + 1):
        margins = yv * (radius * (za @ u))
        risk = float(np.clip(1.0 - margins, 0.0, 1.0).mean())
        if risk < best_risk:
            best_risk, best_u = risk, u.copy()
        if step == total:
            break
        if step < logistic_steps:
            dmargin = -0.5 * (1.0 - np.tanh(0.5 * margins))  # d/dm softplus(-m) = -sigmoid(-m)
        else:
            dmargin = np.where((margins > 0.0) & (margins < 1.0), -1.0, 0.0)
        grad = radius * (za.T @ (dmargin * yv)) / n
        m1 = b1 * m1 + (1 - b1) * grad
        m2 = b2 * m2 + (1 - b2) * grad * grad
        t = step + 1
        u = u - lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
        norm = float(np.linalg.norm(u))
        if norm > 1.0:
            u /= norm
    w = radius * best_u
    return Probe(w[:-1].copy(), float(w[-1] * bias_const), radius, bias_const, best_risk)


__all__ = [
    "Probe",
    "decoder_predict",
    "fit_configured_decoder",
    "fit_probe",
    "fit_ridge_decoder",
    "ramp_losses",
    "ridge_predict",
]
