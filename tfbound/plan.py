"""``tfbound plan``: how each certificate would move with more labeled or unlabeled data.

From a saved report, each certificate on the head is recomputed at other sizes with the rates the
report observed held fixed (status ``estimated``: a projection, not a bound):

- ``holdout_bound``: the head's error rate on ``S2`` kept, the Clopper-Pearson limit at ``n2'``;
- ``disagreement_bound``: the probe's error rate on ``S2`` and the disagreement rate on the pool
  kept, each Clopper-Pearson limit at the new sizes;
- ``pac_bayes_deterministic_bound``: the chosen cell's empirical loss and KL kept,
  ``kl_inv(e_hat, (KL + log(xi(n2') J / delta_pb)) / n2') / Phi(tau)``;
- ``pac_bayes_pool_bound``: the same for the Gibbs part, and the pool's disagreement rate at
  ``m'``;
- ``certified_test_error_bound``: the ramp risk kept, the complexity and confidence terms scaled
  by ``sqrt(n / n')`` (both shrink as ``1/sqrt(n)`` for i.i.d. features);
- the best: the smallest projection at each size.

The split fraction of the report (``n2 / n``) is kept. Nothing here reads a model or data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tfbound.errors import InputError
from tfbound.keys import TermKey
from tfbound.measures.binomial import clopper_pearson_upper, kl_inv, xi
from tfbound.measures.gaussian import phi_scalar

#: labeled sizes (multiples of the report's n) and pool sizes (multiples of its m) tabulated
N_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: how far the search for the size that reaches a target goes (multiples of n or m)
MAX_FACTOR = 1024.0
#: the posterior-scale grid size of pac_bayes_pool_bound (tfbound.bounds.pac_bayes_pool)
J_MU_POOL = 65
_EXACT_XI_UP_TO = 20_000

Projection = Callable[[int, int], float]


@functools.lru_cache(maxsize=4096)
def _xi(n: int) -> float:
    """Maurer's xi(n), exact up to 20,000 and its upper bound 2 sqrt(n) above (conservative)."""
    return xi(n) if n <= _EXACT_XI_UP_TO else 2.0 * math.sqrt(n)


def _cp(rate: float, n: int, delta: float) -> float:
    return clopper_pearson_upper(min(n, max(0, round(rate * n))), n, delta)


@dataclass(frozen=True)
class Plan:
    """Projected certificates on a grid of sizes, and the sizes that reach ``target``."""

    n: int
    m_pool: int | None
    target: float | None
    rows: tuple[dict[str, Any], ...]  # {"n": n', "m_pool": m', certificate: value, ...}
    reach: dict[str, dict[str, int | None]]  # certificate -> {"n": .., "m_pool": ..}
    certificates: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        from tfbound.report import envelope

        return {
            **envelope("tfbound.plan"),
            "status": "estimated",
            "note": "projections with the report's rates held fixed, not bounds",
            "n": self.n,
            "m_pool": self.m_pool,
            "target": self.target,
            "certificates": list(self.certificates),
            "rows": [dict(r) for r in self.rows],
            "reach": self.reach,
        }


def _holdout(d: Mapping[str, Any], n: int) -> Projection:
    rate, frac = d["errors"] / d["n2"], d["n2"] / n

    def project(n_new: int, m_new: int) -> float:
        return _cp(rate, max(1, round(frac * n_new)), d["delta_h"])

    return project


def _disagreement(d: Mapping[str, Any], n: int) -> Projection:
    err, frac = d["prior_errors"] / d["n2"], d["n2"] / n
    rate = d["disagreements"] / d["m_pool"]

    def project(n_new: int, m_new: int) -> float:
        n2 = max(1, round(frac * n_new))
        return min(1.0, _cp(err, n2, d["delta_a"]) + _cp(rate, m_new, d["delta_b"]))

    return project


def _gibbs_upper(pb: Mapping[str, Any], n: int) -> Callable[[int, float, float], float]:
    """The PAC-Bayes-kl bound of spec 10.2 at another size, for a kept loss and KL."""
    grids = len(pb["lam_grid"]) * pb["n_beta_grid"] * pb["n_tau_grid"]
    frac = pb["n2"] / n

    def upper(n_new: int, e_hat: float, kl: float) -> float:
        n2 = max(1, round(frac * n_new))
        log_term = math.log(_xi(n2) * grids / pb["delta_pb"])
        return kl_inv(min(1.0, max(0.0, e_hat)), (kl + log_term) / n2)

    return upper


def _pac_bayes(pb: Mapping[str, Any], n: int) -> Projection:
    upper = _gibbs_upper(pb, n)

    def project(n_new: int, m_new: int) -> float:
        return min(1.0, upper(n_new, pb["empirical_loss"], pb["kl"]) / phi_scalar(pb["tau"]))

    return project


def _pac_bayes_pool(q: Mapping[str, Any], pb: Mapping[str, Any], n: int) -> Projection:
    upper = _gibbs_upper(pb, n)

    def project(n_new: int, m_new: int) -> float:
        e = upper(n_new, q["gibbs_empirical"], q["kl"])
        c = math.log(_xi(m_new) * J_MU_POOL / q["delta_c"]) / m_new
        return min(1.0, e + kl_inv(min(1.0, q["disagreement_empirical"]), c))

    return project


def _margin(ramp: float, rirc: float, conf: float, n: int) -> Projection:
    def project(n_new: int, m_new: int) -> float:
        return ramp + (rirc + conf) * math.sqrt(n / n_new)

    return project


def _projections(report: Mapping[str, Any]) -> dict[str, Projection]:
    bounds, terms = report["bounds"], report["terms"]
    n = int(report["data"]["downstream_train"]["n"])
    out: dict[str, Projection] = {}
    if TermKey.HOLDOUT in bounds:
        out[TermKey.HOLDOUT] = _holdout(bounds[TermKey.HOLDOUT]["details"], n)
    if TermKey.DISAGREEMENT in bounds:
        out[TermKey.DISAGREEMENT] = _disagreement(bounds[TermKey.DISAGREEMENT]["details"], n)
    pb = bounds.get(TermKey.PAC_BAYES_DETERMINISTIC)
    if pb is not None:
        out[TermKey.PAC_BAYES_DETERMINISTIC] = _pac_bayes(pb["details"], n)
        if TermKey.PAC_BAYES_POOL in bounds:
            q = bounds[TermKey.PAC_BAYES_POOL]["details"]
            out[TermKey.PAC_BAYES_POOL] = _pac_bayes_pool(q, pb["details"], n)
    margin = bounds.get(TermKey.CERTIFIED)
    parts = [terms.get(k) for k in (margin or {}).get("components", [])]
    if margin is not None and len(parts) == 3 and all(p is not None for p in parts):
        ramp, rirc, conf = (float(p["value"]) for p in parts if p is not None)
        out[TermKey.CERTIFIED] = _margin(ramp, rirc, conf, n)
    return out


def _smallest(f: Callable[[int], float], start: int, target: float) -> int | None:
    """The smallest size on a geometric grid (ratio 2^(1/8)) from ``start / 8`` up to
    ``MAX_FACTOR * start`` where ``f(size) <= target``, or None."""
    k = 0
    while True:
        size = max(1, round(start * 2.0 ** (k / 8) / 8))  # from start / 8
        if size > MAX_FACTOR * start:
            return None
        if f(size) <= target:
            return size
        k += 1


def plan(
    report: Mapping[str, Any],
    target: float | None = None,
    n_values: tuple[int, ...] | None = None,
    m_values: tuple[int | None, ...] | None = None,
) -> Plan:
    """Project every certificate of ``report`` (a report's dict form) over sizes."""
    if report.get("kind") != "estimate":
        raise InputError("tfbound plan reads a report of 'tfbound estimate'")
    if target is not None and not 0 < target < 1:
        raise InputError(f"--target must lie in (0, 1), got {target}")
    n = int(report["data"]["downstream_train"]["n"])
    dis = report["bounds"].get(TermKey.DISAGREEMENT) or report["bounds"].get(TermKey.PAC_BAYES_POOL)
    m = None if dis is None else int(dis["details"]["m_pool"])
    proj = _projections(report)
    if not proj:
        raise InputError("the report has no certificate that tfbound plan can project")
    ns = n_values or tuple(max(2, round(f * n)) for f in N_FACTORS)
    ms: tuple[int | None, ...] = m_values or ((m,) if m is None else (m, 4 * m))
    rows = []
    for m_new in ms:
        for n_new in ns:
            row: dict[str, Any] = {"n": n_new, "m_pool": m_new}
            for key, f in proj.items():
                needs_pool = key in (TermKey.DISAGREEMENT, TermKey.PAC_BAYES_POOL)
                row[key] = None if needs_pool and m_new is None else f(n_new, m_new or 1)
            values = [v for k, v in row.items() if k not in ("n", "m_pool") and v is not None]
            row[TermKey.BEST.value] = min(values) if values else None
            rows.append(row)
    reach: dict[str, dict[str, int | None]] = {}
    if target is not None:
        for key, f in proj.items():
            pooled = key in (TermKey.DISAGREEMENT, TermKey.PAC_BAYES_POOL)
            mm = m or 1

            def at_n(size: int, f: Projection = f, mm: int = mm) -> float:
                return f(size, mm)

            entry: dict[str, int | None] = {"n": _smallest(at_n, n, target)}
            if pooled and m is not None:  # both sizes scaled by one factor
                ratio = m / n

                def together(size: int, f: Projection = f, ratio: float = ratio) -> float:
                    return f(size, max(1, round(ratio * size)))

                both = _smallest(together, n, target)
                entry["n_with_pool"] = both
                entry["m_pool_with_n"] = None if both is None else max(1, round(ratio * both))
            reach[key] = entry
    return Plan(n, m, target, tuple(rows), reach, tuple(proj))


__all__ = ["Plan", "plan"]
