"""The whitening metric of bound-spec 10.2: ``M^(1/2)`` and ``M^(-1/2)`` of ``M = C1 + r I``,
checked against their defining identities, and the Gram route (``d+1 > n1``) against the
``(d+1) x (d+1)`` eigendecomposition."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tolerances import FLOAT64_SOLVER
from tfbound.measures.gaussian import _fit_metric_eigh, _fit_metric_gram, fit_metric


def _features(n1: int, p: int, seed: int, repeat_rows: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n1, p)) * rng.uniform(0.1, 3.0, size=p)
    if repeat_rows:  # a singular Gram matrix: zero eigenvalues take the limit branch
        z[1::2] = z[::2][: z[1::2].shape[0]]
    z[:, -1] = 1.0  # the bias constant of the augmented features
    return z


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize(
    ("n1", "p", "repeat"), [(5, 40, False), (30, 31, False), (40, 300, False), (40, 300, True)]
)
def test_gram_route_satisfies_the_definitions(n1: int, p: int, repeat: bool) -> None:
    z = _features(n1, p, seed=n1 + p, repeat_rows=repeat)
    metric = fit_metric(z, 0.1)
    c1 = z.T @ z / n1
    ridge = 0.1 * np.trace(c1) / p
    m = c1 + ridge * np.eye(p)
    assert metric.ridge == pytest.approx(ridge, rel=1e-13)
    assert _rel(metric.sqrt @ metric.sqrt, m) < FLOAT64_SOLVER
    assert _rel(metric.sqrt @ metric.inv_sqrt, np.eye(p)) < FLOAT64_SOLVER
    assert _rel(metric.sqrt, metric.sqrt.T) < FLOAT64_SOLVER  # the symmetric square root
    # ... and it is the symmetric root that the eigendecomposition gives.
    ref = _fit_metric_eigh(z, 0.1)
    assert _rel(metric.sqrt, ref.sqrt) < FLOAT64_SOLVER
    assert _rel(metric.inv_sqrt, ref.inv_sqrt) < FLOAT64_SOLVER


def test_routes_by_shape() -> None:
    wide, tall = _features(10, 50, seed=0), _features(50, 10, seed=1)
    assert _rel(fit_metric(wide, 0.1).sqrt, _fit_metric_gram(wide, 0.1).sqrt) == 0.0
    assert _rel(fit_metric(tall, 0.1).sqrt, _fit_metric_eigh(tall, 0.1).sqrt) == 0.0
    tall_metric = fit_metric(tall, 0.1)
    c1 = tall.T @ tall / 50
    m = c1 + tall_metric.ridge * np.eye(10)
    assert _rel(tall_metric.sqrt @ tall_metric.sqrt, m) < FLOAT64_SOLVER
