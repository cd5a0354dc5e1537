"""The test-set bound's Clopper-Pearson inversions: the binomial coefficients computed once per
inversion against once per bisection step.

Usage (from the repository root)::

    python benchmarks/binomial.py [--m 20000] [--errors 2000] [--repeats 3] [--threads N]
    python benchmarks/binomial.py --m 100000 --errors 10000 --repeats 1   # the issue's size

Routes, timed alternately in one process: before (``log C(m, j)`` for ``j <= k`` by
``math.lgamma`` inside every evaluation of the CDF, as ``tfbound.measures.binomial`` did; copied
here) and after (``clopper_pearson_upper`` / ``clopper_pearson_lower`` now). Each route computes
the upper and the lower limit at ``delta = 0.05``.

Printed: both times, ``before / after`` (goal >= 10) and the relative difference of the limits
(goal: at most 1e-15).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import numpy as np
from _common import Result, add_thread_option, interleaved, setup_threads

from tfbound.measures.binomial import clopper_pearson_lower, clopper_pearson_upper


def _old_cdf(k: int, m: int, p: float) -> float:
    if k == m:
        return 1.0
    ks = np.arange(k + 1)
    log_comb = (
        math.lgamma(m + 1)
        - np.array([math.lgamma(j + 1) for j in ks])
        - np.array([math.lgamma(m - j + 1) for j in ks])
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(ks > 0, ks * math.log(p) if p > 0 else -np.inf, 0.0)
        b = np.where(m - ks > 0, (m - ks) * math.log1p(-p) if p < 1 else -np.inf, 0.0)
    lp = np.asarray(log_comb + a + b, dtype=np.float64)
    top = float(np.max(lp))
    if top == -np.inf:
        return 0.0
    return float(min(1.0, math.exp(top) * float(np.sum(np.exp(lp - top)))))


def _bisect(pred: Callable[[float], bool], lo: float, hi: float) -> tuple[float, float]:
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if pred(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def before(k: int, m: int, delta: float) -> tuple[float, float]:
    upper = 1.0 if k == m else _bisect(lambda p: _old_cdf(k, m, p) >= delta, 0.0, 1.0)[1]
    lower = 0.0
    if k > 0:
        lower = _bisect(lambda p: 1.0 - _old_cdf(k - 1, m, p) < delta, 0.0, 1.0)[0]
    return upper, lower


def after(k: int, m: int, delta: float) -> tuple[float, float]:
    return clopper_pearson_upper(k, m, delta), clopper_pearson_lower(k, m, delta)


def run(m: int, errors: int, repeats: int, threads: int | None) -> list[Result]:
    print(f"test-set bound: {errors} errors of m={m}, delta=0.05; {setup_threads(threads)}")
    times, outs = interleaved(
        {"before": lambda: before(errors, m, 0.05), "after": lambda: after(errors, m, 0.05)},
        repeats,
    )
    for name, t in times.items():
        print(f"  {name:<7} {t.line()}")
    old, new = outs["before"], outs["after"]
    assert isinstance(old, tuple) and isinstance(new, tuple)
    rel = max(abs(a - b) / abs(a) if a else abs(b) for a, b in zip(old, new, strict=True))
    print(f"  limits before {old}, after {new}; largest relative difference {rel:.3g}")
    if rel > 1e-15:
        raise SystemExit("the hoisted coefficients changed the test-set bound")
    return [
        Result(
            "test-set bound: before / after",
            times["before"].wall / times["after"].wall,
            ">= 10",
            f"m={m}, errors={errors}; rel diff {rel:.1g}",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=20_000)
    parser.add_argument("--errors", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    add_thread_option(parser)
    args = parser.parse_args()
    for r in run(args.m, args.errors, args.repeats, args.threads):
        print(r.line())


if __name__ == "__main__":
    main()
