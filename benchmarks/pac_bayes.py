"""PAC-Bayes at large d: the prior probe's Hessian and the whitening metric, before and after.

Usage (from the repository root)::

    python benchmarks/pac_bayes.py [--repeats 2] [--threads N]
    python benchmarks/pac_bayes.py --case 4600x768 --case 1000x4096 --repeats 1

Each case ``NxD`` is a Gaussian task with ``N`` labeled examples of ``D`` features, split in half
(``n1_fraction = 0.5``, the default). Routes, timed alternately in one process, both the whole
``tfbound.bounds.pac_bayes.pac_bayes_linear``:

- before: the prior probe with the Hessian formed as ``(A^T D) A`` (copied here as it was) and
  the metric by the ``(d+1) x (d+1)`` eigendecomposition at every shape;
- after: ``fit_prior_probe`` now (``B^T B``, a symmetric rank-k update) and ``fit_metric`` now
  (the ``n1 x n1`` Gram route when ``d+1 > n1``).

Printed per case: both times, ``before / after`` and the largest relative difference of the two
certificates (goal: at most 1e-9, round-off). Goals: ``>= 1.5`` where the Gram route applies
(``d+1 > n1``: no ``(d+1)^3`` eigendecomposition), ``>= 1`` on the primal route (only the
Hessian's flops are halved; the eigendecomposition of ``M`` is still most of the time).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from _common import Result, add_thread_option, interleaved, setup_threads

import tfbound.bounds.pac_bayes as pac_bayes
from tfbound.bounds.split import (
    _NEWTON_FULL_STEP,
    _NEWTON_MAX_STEPS,
    _NEWTON_TOL,
    _objective,
    as_float64_matrix,
    as_labels,
    augment_features,
)
from tfbound.measures.gaussian import _fit_metric_eigh


def old_fit_prior_probe(
    z1: np.ndarray,
    y1: np.ndarray,
    *,
    lam: float,
    bias_const: float,
) -> np.ndarray:
    """fit_prior_probe before the rank-k Hessian (the reference route)."""
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
            hess = (za.T * weight) @ za / n + 2.0 * lam * np.eye(p)
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


@contextmanager
def old_routes() -> Iterator[None]:
    probe, metric = pac_bayes.fit_prior_probe, pac_bayes.fit_metric
    pac_bayes.fit_prior_probe = old_fit_prior_probe  # type: ignore[assignment]
    pac_bayes.fit_metric = _fit_metric_eigh
    try:
        yield
    finally:
        pac_bayes.fit_prior_probe, pac_bayes.fit_metric = probe, metric


def task(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) / math.sqrt(d)
    w = rng.normal(size=d)
    y = np.where(z @ w + 0.5 * rng.normal(size=n) > 0, 1.0, -1.0)
    theta = np.concatenate([3.0 * w / np.linalg.norm(w), [0.0]])
    return z, y, theta


def run_case(n: int, d: int, repeats: int) -> Result:
    z, y, theta = task(n, d)

    def certify() -> tuple[float, float]:
        r = pac_bayes.pac_bayes_linear(
            z, y, theta, bias_const=1.0, split_seed=0, delta_pb=0.01, n1_fraction=0.5
        )
        return r.gibbs_bound, r.deterministic_bound

    def before() -> tuple[float, float]:
        with old_routes():
            return certify()

    n1 = n // 2
    route = "Gram metric" if d + 1 > n1 else "primal"
    print(f"  case n={n}, d={d} (n1={n1}, d+1={d + 1}: {route})")
    times, outs = interleaved({"before": before, "after": certify}, repeats)
    for name, t in times.items():
        print(f"    {name:<7} {t.line()}")
    old, new = outs["before"], outs["after"]
    assert isinstance(old, tuple) and isinstance(new, tuple)
    rel = max(abs(a - b) / abs(a) for a, b in zip(old, new, strict=True))
    print(f"    bounds before {old}, after {new}; largest relative difference {rel:.3g}")
    if rel > 1e-9:
        raise SystemExit("the PAC-Bayes routes disagree beyond round-off")
    return Result(
        f"pac-bayes {n}x{d}: before / after",
        times["before"].wall / times["after"].wall,
        ">= 1.5" if d + 1 > n1 else ">= 1",
        f"{route}; rel diff {rel:.1g}",
    )


def run(cases: list[tuple[int, int]], repeats: int, threads: int | None) -> list[Result]:
    print(f"PAC-Bayes at large d; {setup_threads(threads)}")
    return [run_case(n, d, repeats) for n, d in cases]


def _case(text: str) -> tuple[int, int]:
    n, d = text.lower().split("x")
    return int(n), int(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", type=_case, action="append", help="NxD (repeatable)")
    parser.add_argument("--repeats", type=int, default=2)
    add_thread_option(parser)
    args = parser.parse_args()
    cases = args.case or [(3000, 768), (600, 1536)]
    for r in run(cases, args.repeats, args.threads):
        print(r.line())


if __name__ == "__main__":
    main()
