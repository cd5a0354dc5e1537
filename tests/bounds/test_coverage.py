"""Coverage of every certificate on a Gaussian-mixture feature model with a closed-form error.

``y`` is +1 or -1 with probability 1/2 and ``z | y ~ N(y mu, I_d)``; a linear head
``f(z) = w . z + b`` errs with probability ``(Phi(-(w.mu + b)/||w||) + Phi((b - w.mu)/||w||)) / 2``
(exactly 1/2 for every head when ``mu = 0``: fair-coin labels). Each draw fits a head on a fresh
sample, certifies it with ``tfbound.certify`` (the pipeline's own budget rule and splits) and
counts a violation when a certificate lies below the head's true error. A certificate at failure
probability ``delta_C`` passes when the Clopper-Pearson *lower* limit (at level 0.999) of its
violation rate is below ``delta_C``.

Power: leaky variants (the prior head fitted on all of ``S``; for the pool certificate also the
pool taken from ``S``) are certified the same way and must fail, so the test can fail. The long
form (200 draws per setting) is marked ``slow`` and runs in CI; the default form runs 30.

tfbound's stochastic head (``fit-head --stochastic``, ``Q = N(m', M^(-1))``) is checked the same
way against its true Gibbs error ``E_theta err(theta)`` (the closed form per head, averaged over
heads drawn from ``Q``; exactly 1/2 under fair-coin labels), with its leaky variant (metric and
prior fitted on all of ``S``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from scipy.special import ndtr

import tfbound
import tfbound.bounds.pac_bayes as pac_bayes_module
from tests.helpers import single_threaded
from tfbound.bounds.disagreement import disagreement
from tfbound.bounds.pac_bayes import pac_bayes_linear
from tfbound.bounds.pac_bayes_pool import pac_bayes_pool
from tfbound.bounds.split import fit_prior_probe
from tfbound.measures.binomial import clopper_pearson_lower

CERTIFICATES = (
    "certified_test_error_bound",
    "pac_bayes_deterministic_bound",
    "pac_bayes_pool_bound",
    "disagreement_bound",
    "best_certified_test_error_bound",
)
LEVEL = 0.001  # the Clopper-Pearson lower limit at 0.999
#: (name, d, n, m_pool, |mu|): a task with signal, and fair-coin labels with d > n (interpolation)
SETTINGS = (("signal", 20, 300, 300, 1.0), ("random labels", 150, 100, 200, 0.0))


def true_error(w: np.ndarray, b: float, mu: np.ndarray) -> float:
    norm = float(np.linalg.norm(w))
    return float(0.5 * ndtr(-(w @ mu + b) / norm) + 0.5 * ndtr((b - w @ mu) / norm))


def draw(rng: np.random.Generator, n: int, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = rng.choice([-1.0, 1.0], size=n)
    return rng.normal(size=(n, mu.shape[0])) + y[:, None] * mu, y


@contextmanager
def prior_on_all_of(z: np.ndarray, y: np.ndarray) -> Iterator[None]:
    """The leak: the prior probe is fitted on all of S instead of S1."""
    real = pac_bayes_module.fit_prior_probe

    def leaky(z1: np.ndarray, y1: np.ndarray, *, lam: float, bias_const: float) -> np.ndarray:
        return real(z, y, lam=lam, bias_const=bias_const)

    pac_bayes_module.fit_prior_probe = leaky  # type: ignore[assignment]
    try:
        yield
    finally:
        pac_bayes_module.fit_prior_probe = real  # type: ignore[assignment]


def run(setting: tuple[str, int, int, int, float], runs: int) -> dict[str, tuple[int, float]]:
    """Violations and failure probability per certificate (correct and leaky variants)."""
    _, d, n, m, mu_norm = setting
    mu = np.zeros(d)
    mu[0] = mu_norm
    counts = {k: 0 for k in CERTIFICATES} | {f"leaky {k}": 0 for k in LEAKY}
    deltas: dict[str, float] = {}
    with single_threaded():
        for r in range(runs):
            rng = np.random.default_rng(70_000 + r)
            z, y = draw(rng, n, mu)
            pool = draw(rng, m, mu)[0]
            theta = fit_prior_probe(z, y, lam=1e-4, bias_const=1.0)  # the user's head
            w, b = theta[:-1], float(theta[-1])
            err = true_error(w, b, mu)
            report = tfbound.certify(z, y, w, b, z_pool=pool, n_draws=200, seed=r)
            for key in CERTIFICATES:
                term = report.get(key)
                assert term is not None and term.value is not None and term.confidence
                counts[key] += term.value < err
                deltas[key] = 1.0 - term.confidence
            for key, value in leaky_values(report, z, y, pool, theta).items():
                counts[f"leaky {key}"] += value < err
                deltas[f"leaky {key}"] = deltas[key]
    return {k: (counts[k], deltas[k]) for k in counts}


LEAKY = ("pac_bayes_deterministic_bound", "pac_bayes_pool_bound", "disagreement_bound")


def leaky_values(
    report: tfbound.Report, z: np.ndarray, y: np.ndarray, pool: np.ndarray, theta: np.ndarray
) -> dict[str, float]:
    """The three leaky certificates at the deltas the report used."""
    d = report.deltas
    with prior_on_all_of(z, y):
        pac = pac_bayes_linear(
            z, y, theta, bias_const=1.0, split_seed=0, delta_pb=d["pac_bayes"], n1_fraction=0.5
        )
    dis = disagreement(
        z[pac.idx2], y[pac.idx2], pool, theta, pac.theta_prior[0], bias_const=1.0,
        delta_a=d["disagreement_prior"], delta_b=d["disagreement_pool"],
    )  # fmt: skip
    pool_leak = pac_bayes_pool(pac, z, y, z, delta_c=d["pac_bayes_pool"])  # the pool is S
    return {
        "pac_bayes_deterministic_bound": pac.deterministic_bound,
        "pac_bayes_pool_bound": pool_leak.bound,
        "disagreement_bound": dis.bound,
    }


def check(results: dict[str, tuple[int, float]], runs: int, need_power: bool) -> None:
    for key in CERTIFICATES:
        violations, delta = results[key]
        lower = clopper_pearson_lower(violations, runs, LEVEL)
        assert lower < delta, f"{key}: {violations}/{runs} violations (lower limit {lower:.3g})"
    if need_power:  # fair-coin labels, d > n: every leaky variant must be caught
        for key in LEAKY:
            violations, delta = results[f"leaky {key}"]
            lower = clopper_pearson_lower(violations, runs, LEVEL)
            assert lower > delta, f"leaky {key}: only {violations}/{runs} violations"


@pytest.mark.parametrize("setting", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_certificates_cover_the_true_error_and_leaks_are_caught(
    setting: tuple[str, int, int, int, float],
) -> None:
    runs = 30
    check(run(setting, runs), runs, need_power=setting[4] == 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_coverage_over_200_draws(setting: tuple[str, int, int, int, float]) -> None:
    runs = 200
    check(run(setting, runs), runs, need_power=setting[4] == 0.0)


# --------------------------------------------------------------------------------------------
# tfbound's stochastic head (fit-head --stochastic): its Gibbs certificate against its true
# Gibbs error
# --------------------------------------------------------------------------------------------

#: heads sampled from Q to average the closed-form error of each (the true Gibbs error is
#: E_theta err(theta), with err(theta) the closed form above: not closed form itself)
GIBBS_HEADS = 20_000
DELTA_Q = 0.05


def true_gibbs_error(
    mean_aug: np.ndarray, inv_sqrt: np.ndarray, mu: np.ndarray, rng: np.random.Generator
) -> float:
    """``E_(theta' ~ N(m', M^(-1))) err(theta')`` with ``err`` the closed form of a linear head
    (``z' = (z, 1)``): exactly 1/2 when ``mu = 0``, else averaged over ``GIBBS_HEADS`` draws (its
    Monte Carlo error is about 1e-3 of the value)."""
    if not np.any(mu):
        return 0.5
    theta = mean_aug[None, :] + rng.normal(size=(GIBBS_HEADS, mean_aug.shape[0])) @ inv_sqrt
    w, b = theta[:, :-1], theta[:, -1]
    norm = np.linalg.norm(w, axis=1)
    return float(np.mean(0.5 * ndtr(-(w @ mu + b) / norm) + 0.5 * ndtr((b - w @ mu) / norm)))


def stochastic_run(setting: tuple[str, int, int, int, float], runs: int) -> dict[str, int]:
    """Violations of the stochastic head's certificate, correct and leaky (the metric and the
    prior fitted on all of ``S``, the posterior then trained and certified on ``S2``)."""
    from tfbound.bounds.pbb_head import pbb_head_bound, prior_geometry
    from tfbound.bounds.split import augment_features, split_indices
    from tfbound.training.pbb import fit_pbb_mean

    _, d, n, _, mu_norm = setting
    mu = np.zeros(d)
    mu[0] = mu_norm
    counts = {"correct": 0, "leaky": 0}
    idx1, idx2 = split_indices(n, 0, 0.5)
    with single_threaded():
        for r in range(runs):
            rng = np.random.default_rng(80_000 + r)
            z, y = draw(rng, n, mu)
            for variant, rows in (("correct", idx1), ("leaky", np.arange(n))):
                geo = prior_geometry(z[rows], y[rows], bias_const=1.0, eps=0.1, lam=1e-3)
                x2 = geo.metric.whiten_features(augment_features(z[idx2], 1.0))
                fit = fit_pbb_mean(
                    x2, y[idx2], geo.prior_directions, lam_grid=geo.lam_grid, delta_q=DELTA_Q
                )
                mean_aug = geo.metric.inv_sqrt @ fit.mean_whitened
                res = pbb_head_bound(
                    z, y, mean_aug, bias_const=1.0, split_seed=0, delta_q=DELTA_Q, geometry=geo
                )
                truth = true_gibbs_error(mean_aug, geo.metric.inv_sqrt, mu, rng)
                counts[variant] += res.certificate.bound < truth
    return counts


def stochastic_check(counts: dict[str, int], runs: int, need_power: bool) -> None:
    lower = clopper_pearson_lower(counts["correct"], runs, LEVEL)
    assert lower < DELTA_Q, f"stochastic head: {counts['correct']}/{runs} violations"
    if need_power:  # fair-coin labels, d > n: the leaky prior must be caught
        lower = clopper_pearson_lower(counts["leaky"], runs, LEVEL)
        assert lower > DELTA_Q, f"leaky stochastic head: only {counts['leaky']}/{runs} violations"


@pytest.mark.parametrize("setting", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_the_stochastic_head_certificate_covers_its_gibbs_error_and_a_leak_is_caught(
    setting: tuple[str, int, int, int, float],
) -> None:
    runs = 30
    stochastic_check(stochastic_run(setting, runs), runs, need_power=setting[4] == 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_stochastic_head_coverage_over_200_draws(
    setting: tuple[str, int, int, int, float],
) -> None:
    runs = 200
    stochastic_check(stochastic_run(setting, runs), runs, need_power=setting[4] == 0.0)
