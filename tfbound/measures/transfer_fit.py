"""``fit_transfer``: the (C, beta) relation ``E_T ~ C * E_U^beta`` over a family (bound-spec 6.2).

Pure: arrays in, a frozen :class:`TransferFit` out.

- **Points used.** A member enters the fit when ``E_U > z * se_U`` and ``E_T > z * se_T``
  (``z = noise_floor_z``; without standard errors, when both are positive). The others are left
  out and counted by reason; the slope under other values of ``z`` is reported as
  ``sensitivity`` (dropping points near the noise floor selects on the response and can bias
  the slope, so its effect is shown, not hidden).
- **Central fit.** ``log E_T = log C + beta log E_U`` by Deming regression (errors in both
  variables) with error-variance ratio ``lambda = mean var(log E_T) / mean var(log E_U)``
  (delta method: ``var(log E) ~ (se / E)^2``) when standard errors are given, else ``lambda = 1``
  (orthogonal regression, total least squares): with ``s`` the sample (co)variances,
  ``beta = (s_yy - lambda s_xx + sqrt((s_yy - lambda s_xx)^2 + 4 lambda s_xy^2)) / (2 s_xy)``,
  ``log C = mean(y) - beta mean(x)``.
- **Intervals.** Percentile bootstrap at ``level``: resampling whole runs when run labels are
  given (checkpoints of one run are not independent), else points; ``lambda`` held fixed.
- **Envelope.** ``C(beta) = max_j E_T_j / E_U_j^beta`` over the points used, on a grid of
  ``beta`` and at ``beta_fixed`` (fixed in advance, default 1/2): the constant the decomposition
  uses, never the central fit (half the family lies above a central fit by construction). It is
  a lower estimate of the constant in the definition: over the explored family only.
- **Identifiability.** ``E_U`` spanning less than one decade among the points used: flagged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_BETA_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(0, 41))
DEFAULT_SENSITIVITY_Z: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0)
MIN_POINTS = 3


@dataclass(frozen=True)
class SensitivityRow:
    """The central slope when the noise-floor rule uses ``noise_floor_z``."""

    noise_floor_z: float
    n_used: int
    beta: float | None


@dataclass(frozen=True)
class TransferFit:
    """The central log-log fit, its bootstrap intervals, the envelope and the bookkeeping."""

    beta: float | None
    log_c: float | None
    beta_interval: tuple[float, float] | None
    c_interval: tuple[float, float] | None
    level: float
    method: str
    error_ratio: float
    n_points: int
    used: tuple[bool, ...]
    excluded: tuple[tuple[str, int], ...]
    noise_floor_z: float
    identifiable: bool
    e_u_span_decades: float | None
    bootstrap_unit: str
    n_units: int
    n_boot: int
    n_boot_valid: int
    beta_fixed: float
    c_envelope: float | None
    envelope_member: int | None
    envelope_grid: tuple[tuple[float, float], ...]
    c_envelope_all_positive: float | None
    n_left_out_above_envelope: int
    sensitivity: tuple[SensitivityRow, ...]
    warnings: tuple[str, ...]

    @property
    def c(self) -> float | None:
        """``exp(log C)`` of the central fit (not the envelope)."""
        return None if self.log_c is None else math.exp(self.log_c)

    @property
    def n_used(self) -> int:
        return sum(self.used)


def deming_slope(
    x: np.ndarray, y: np.ndarray, error_ratio: float = 1.0, weights: np.ndarray | None = None
) -> np.ndarray:
    """Deming slopes of ``y`` on ``x`` (rows of ``weights`` give one slope each; NaN if undefined).

    ``error_ratio`` is ``var(error in y) / var(error in x)``; 1 is orthogonal regression.

    >>> float(deming_slope(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0]))[0])
    2.0
    """
    w = np.ones((1, x.size)) if weights is None else np.atleast_2d(weights).astype(np.float64)
    tot = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w @ x) / tot
        my = (w @ y) / tot
        sxx = (w @ (x * x)) / tot - mx * mx
        syy = (w @ (y * y)) / tot - my * my
        sxy = (w @ (x * y)) / tot - mx * my
        lam = float(error_ratio)
        diff = syy - lam * sxx
        root = np.sqrt(diff * diff + 4.0 * lam * sxy * sxy)
        # The conjugate form where diff < 0 avoids cancellation (large lambda: the OLS limit).
        slope = np.where(diff >= 0, (diff + root) / (2.0 * sxy), 2.0 * lam * sxy / (root - diff))
    scale = np.maximum(np.abs(sxx), np.abs(syy))
    bad = ~np.isfinite(slope) | (np.abs(sxy) <= 1e-14 * np.maximum(scale, 1e-300)) | (sxx <= 0)
    slope = np.where(bad, np.nan, slope)
    return np.asarray(slope, dtype=np.float64)


def _used_mask(
    e_u: np.ndarray, e_t: np.ndarray, se_u: np.ndarray | None, se_t: np.ndarray | None, z: float
) -> tuple[np.ndarray, dict[str, int]]:
    positive = (e_u > 0) & (e_t > 0)
    above = positive.copy()
    if se_u is not None:
        above &= e_u > z * se_u
    if se_t is not None:
        above &= e_t > z * se_t
    counts = {
        "not_positive": int((~positive).sum()),
        "inside_noise_floor": int((positive & ~above).sum()),
    }
    return above, counts


def _error_ratio(
    e_u: np.ndarray, e_t: np.ndarray, se_u: np.ndarray | None, se_t: np.ndarray | None
) -> tuple[float, str]:
    if se_u is None or se_t is None or e_u.size == 0:
        return 1.0, "orthogonal (total least squares) on log-log, error ratio 1"
    var_x = float(np.mean((se_u / e_u) ** 2))
    var_y = float(np.mean((se_t / e_t) ** 2))
    if not (var_x > 0 and var_y > 0 and math.isfinite(var_x) and math.isfinite(var_y)):
        return 1.0, "orthogonal (total least squares) on log-log, error ratio 1 (no usable errors)"
    ratio = var_y / var_x
    return ratio, (
        f"Deming on log-log, error ratio mean (se_T/E_T)^2 / mean (se_U/E_U)^2 = {ratio:.4g}"
    )


def _central(x: np.ndarray, y: np.ndarray, ratio: float) -> tuple[float | None, float | None]:
    if x.size < 2:
        return None, None
    slope = float(deming_slope(x, y, ratio)[0])
    if not math.isfinite(slope):
        return None, None
    return slope, float(np.mean(y) - slope * np.mean(x))


def _bootstrap_weights(
    n: int, runs: np.ndarray | None, n_boot: int, gen: np.random.Generator
) -> tuple[np.ndarray, str, int]:
    if runs is None:
        return gen.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64), "point", n
    _, run_index = np.unique(runs, return_inverse=True)
    n_runs = int(run_index.max()) + 1
    per_run = gen.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_boot)
    return per_run[:, run_index].astype(np.float64), "run", n_runs


def envelope_c(e_u: np.ndarray, e_t: np.ndarray, beta: float) -> tuple[float | None, int | None]:
    """``max_j E_T_j / E_U_j^beta`` over points with both positive (its value and argmax)."""
    ok = (e_u > 0) & (e_t > 0)
    if not ok.any():
        return None, None
    ratio = np.full(e_u.shape, -np.inf)
    ratio[ok] = np.exp(np.log(e_t[ok]) - beta * np.log(e_u[ok]))
    j = int(np.argmax(ratio))
    return float(ratio[j]), j


def fit_transfer(
    e_u: Sequence[float] | np.ndarray,
    e_t: Sequence[float] | np.ndarray,
    *,
    e_u_se: Sequence[float] | np.ndarray | None = None,
    e_t_se: Sequence[float] | np.ndarray | None = None,
    runs: Sequence[str] | np.ndarray | None = None,
    beta_fixed: float = 0.5,
    beta_grid: Sequence[float] = DEFAULT_BETA_GRID,
    noise_floor_z: float = 2.0,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    sensitivity_z: Sequence[float] = DEFAULT_SENSITIVITY_Z,
) -> TransferFit:
    """Fit ``E_T = C E_U^beta`` over a family; see the module docstring for every rule.

    ``e_u``, ``e_t``: per-member excess-risk estimates (the reference member excluded, or it is
    left out as not positive); ``e_u_se``, ``e_t_se``: their standard errors; ``runs``: a run
    label per member (bootstrap by run when given).

    >>> rng = np.random.default_rng(0)
    >>> eu = np.logspace(-3, -1, 12)
    >>> fit = fit_transfer(eu, 2.0 * eu**0.5 * np.exp(rng.normal(0, 0.05, 12)), n_boot=200)
    >>> round(fit.beta, 1), fit.identifiable
    (0.5, True)
    """
    eu = np.asarray(e_u, dtype=np.float64).reshape(-1)
    et = np.asarray(e_t, dtype=np.float64).reshape(-1)
    n = eu.size
    if et.size != n:
        raise ValueError(f"e_u has {n} values, e_t {et.size}")
    if not (np.isfinite(eu).all() and np.isfinite(et).all()):
        raise ValueError("e_u and e_t must be finite")
    se_u = None if e_u_se is None else np.asarray(e_u_se, dtype=np.float64).reshape(-1)
    se_t = None if e_t_se is None else np.asarray(e_t_se, dtype=np.float64).reshape(-1)
    for name, se in (("e_u_se", se_u), ("e_t_se", se_t)):
        if se is not None and (se.size != n or (se < 0).any() or not np.isfinite(se).all()):
            raise ValueError(f"{name} must hold {n} finite non-negative values")
    run_arr = None if runs is None else np.asarray([str(r) for r in runs])
    if run_arr is not None and run_arr.size != n:
        raise ValueError(f"runs has {run_arr.size} labels for {n} points")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    warnings: list[str] = []

    used, excluded = _used_mask(eu, et, se_u, se_t, noise_floor_z)
    x, y = np.log(eu[used]), np.log(et[used])
    ratio, method = _error_ratio(
        eu[used],
        et[used],
        None if se_u is None else se_u[used],
        None if se_t is None else se_t[used],
    )
    beta, log_c = _central(x, y, ratio) if used.sum() >= MIN_POINTS else (None, None)
    if used.sum() < MIN_POINTS:
        warnings.append(
            f"only {int(used.sum())} member(s) above the noise floor (need {MIN_POINTS}): no fit"
        )
    span = float(np.log10(eu[used].max() / eu[used].min())) if used.sum() >= 2 else None
    identifiable = span is not None and span >= 1.0
    if not identifiable:
        warnings.append(
            "E_U spans less than one order of magnitude among the members used "
            f"({'n/a' if span is None else f'{span:.2f} decades'}): beta is not identifiable"
        )

    beta_iv: tuple[float, float] | None = None
    c_iv: tuple[float, float] | None = None
    unit, n_units, n_valid = "point", int(used.sum()), 0
    if beta is not None and n_boot > 0:
        gen = np.random.default_rng(seed)
        sub_runs = None if run_arr is None else run_arr[used]
        if sub_runs is not None and np.unique(sub_runs).size < 2:
            warnings.append("fewer than 2 runs among the members used: bootstrap by point instead")
            sub_runs = None
        w, unit, n_units = _bootstrap_weights(x.size, sub_runs, n_boot, gen)
        distinct = (w > 0).sum(1)
        slopes = deming_slope(x, y, ratio, w)
        ok = np.isfinite(slopes) & (distinct >= 2)
        n_valid = int(ok.sum())
        if n_valid >= max(20, n_boot // 10):
            tot = w[ok].sum(1)
            intercepts = (w[ok] @ y) / tot - slopes[ok] * (w[ok] @ x) / tot
            alpha = (1.0 - level) / 2.0
            lo_b, hi_b = np.quantile(slopes[ok], [alpha, 1.0 - alpha])
            lo_c, hi_c = np.quantile(intercepts, [alpha, 1.0 - alpha])
            beta_iv = (float(lo_b), float(hi_b))
            c_iv = (float(math.exp(lo_c)), float(math.exp(hi_c)))
        else:
            warnings.append(f"only {n_valid} of {n_boot} bootstrap resamples gave a slope")
        if unit == "run" and n_units < 5:
            warnings.append(f"bootstrap by run over only {n_units} runs: the intervals are rough")

    grid = sorted({*(float(b) for b in beta_grid), float(beta_fixed)})
    envelope_grid = tuple(
        (b, c) for b in grid if (c := envelope_c(eu[used], et[used], b)[0]) is not None
    )
    c_env, j_env = envelope_c(eu[used], et[used], beta_fixed)
    member = None if j_env is None else int(np.flatnonzero(used)[j_env])
    c_all, _ = envelope_c(eu, et, beta_fixed)
    left_out = ~used & (eu > 0) & (et > 0)
    above = 0
    if c_env is not None:
        above = int((et[left_out] > c_env * eu[left_out] ** beta_fixed).sum())
        if above:
            warnings.append(
                f"{above} member(s) left out at the noise floor lie above the envelope "
                f"C({beta_fixed:g}); with them C({beta_fixed:g}) = {c_all:.4g}"
            )
    clearly_positive = et > 0 if se_t is None else et > noise_floor_z * se_t
    violating = int(((eu <= 0) & clearly_positive).sum())
    if violating:
        warnings.append(
            f"{violating} member(s) have E_U <= 0 but E_T clearly > 0: no finite C fits them "
            "(the transferability assumption fails there, or the reference is not pre-training "
            "optimal for them)"
        )

    sensitivity = []
    for z in sorted({*(float(v) for v in sensitivity_z), float(noise_floor_z)}):
        mask, _ = _used_mask(eu, et, se_u, se_t, z)
        b_z = None
        if mask.sum() >= MIN_POINTS:
            r_z, _ = _error_ratio(
                eu[mask],
                et[mask],
                None if se_u is None else se_u[mask],
                None if se_t is None else se_t[mask],
            )
            b_z, _ = _central(np.log(eu[mask]), np.log(et[mask]), r_z)
        sensitivity.append(SensitivityRow(z, int(mask.sum()), b_z))

    return TransferFit(
        beta=beta,
        log_c=log_c,
        beta_interval=beta_iv,
        c_interval=c_iv,
        level=level,
        method=method,
        error_ratio=ratio,
        n_points=n,
        used=tuple(bool(u) for u in used),
        excluded=tuple(sorted(excluded.items())),
        noise_floor_z=float(noise_floor_z),
        identifiable=identifiable,
        e_u_span_decades=span,
        bootstrap_unit=unit,
        n_units=n_units,
        n_boot=n_boot,
        n_boot_valid=n_valid,
        beta_fixed=float(beta_fixed),
        c_envelope=c_env,
        envelope_member=member,
        envelope_grid=envelope_grid,
        c_envelope_all_positive=c_all,
        n_left_out_above_envelope=above,
        sensitivity=tuple(sensitivity),
        warnings=tuple(warnings),
    )


__all__ = [
    "DEFAULT_BETA_GRID",
    "SensitivityRow",
    "TransferFit",
    "deming_slope",
    "envelope_c",
    "fit_transfer",
]
