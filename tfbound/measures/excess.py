"""Paired excess risk of one member against a reference (bound-spec 6.2): per-example losses in,
a mean with its standard error and a normal (CLT) interval out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class ExcessEstimate:
    """``mean(loss_member - loss_reference)`` on held-out examples, paired."""

    value: float
    stderr: float
    interval: tuple[float, float]
    level: float
    m: int


def paired_excess(losses: np.ndarray, reference: np.ndarray, level: float) -> ExcessEstimate:
    """Paired difference of per-example losses, ``value +- z_{(1+level)/2} * stderr``.

    >>> paired_excess(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]), 0.95).value
    0.0
    """
    d = np.asarray(losses, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    m = int(d.size)
    value = float(d.mean())
    stderr = float(d.std(ddof=1) / math.sqrt(m)) if m > 1 else 0.0
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    return ExcessEstimate(value, stderr, (value - z * stderr, value + z * stderr), level, m)


__all__ = ["ExcessEstimate", "paired_excess"]
