"""The ramp (margin) loss."""

from __future__ import annotations

import numpy as np


def ramp_loss(margins: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """``phi_gamma(t)``: 1 for ``t <= 0``, ``1 - t/gamma`` on ``[0, gamma]``, 0 above.

    It dominates the 0-1 loss ``1{t <= 0}`` and is ``1/gamma``-Lipschitz.
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    t = np.asarray(margins, dtype=np.float64)
    return np.clip(1.0 - t / gamma, 0.0, 1.0)
