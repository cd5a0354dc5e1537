"""PAC-Bayes certificates with an S1-learned prior (spec 10.1, 10.2, 10.6)."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import pytest
import torch

import tfbound.bounds.pac_bayes as pb
from tests.helpers import gaussian_task, single_threaded
from tests.tolerances import FLOAT64_EXACT, FLOAT64_SOLVER
from tfbound.adapters.functional import pac_bayes_mlp_gibbs
from tfbound.bounds.pac_bayes import gibbs_error_exact, pac_bayes_linear
from tfbound.bounds.pac_bayes_search import (
    DEFAULT_BETA_GRID,
    DEFAULT_TAU_GRID,
    pac_bayes_from_margins,
)
from tfbound.bounds.split import augment_features, fit_prior_probe, split_indices
from tfbound.errors import DataError
from tfbound.measures.binomial import clopper_pearson_lower, kl_inv, xi
from tfbound.measures.gaussian import (
    fit_metric,
    kl_inv_vec,
    kl_isotropic,
    normalised_margins,
    std_normal_cdf,
    unit_direction,
)
from tfbound.models.heads import MLPHead


class Task(NamedTuple):
    z: np.ndarray
    y: np.ndarray
    theta_hat: np.ndarray
    result: pb.PacBayesResult


@pytest.fixture(scope="module")
def task() -> Task:
    z, y = gaussian_task(600, 12, seed=1)
    theta_hat = fit_prior_probe(z, y, lam=1e-4, bias_const=1.0)  # the "user's head", on all of S
    result = pac_bayes_linear(z, y, theta_hat, bias_const=1.0, split_seed=7, delta_pb=0.05)
    return Task(z, y, theta_hat, result)


# ---------------------------------------------------------------------------- split and prior


def test_split_is_a_seeded_unstratified_partition() -> None:
    idx1, idx2 = split_indices(101, seed=3)
    assert idx1.shape[0] == 80 and idx2.shape[0] == 21  # floor(0.8 n)
    assert np.array_equal(np.sort(np.concatenate([idx1, idx2])), np.arange(101))
    assert np.all(np.diff(idx1) > 0) and np.all(np.diff(idx2) > 0)
    again = split_indices(101, seed=3)
    assert np.array_equal(again[0], idx1) and np.array_equal(again[1], idx2)
    other = split_indices(101, seed=4)
    assert not np.array_equal(other[0], idx1)
    a, b = split_indices(10, seed=0, fraction=0.5)
    assert a.shape[0] == 5 and b.shape[0] == 5
    # Nothing but n and the seed enters: the signature has no slot for data.
    assert list(inspect.signature(split_indices).parameters) == ["n", "seed", "fraction"]


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.8), (2, 0.4), (5, 1.0), (5, 0.0)])
def test_split_rejects_empty_parts(n: int, fraction: float) -> None:
    with pytest.raises(ValueError):
        split_indices(n, seed=0, fraction=fraction)


def test_prior_probe_signature_takes_s1_arrays_and_constants_only() -> None:
    params = inspect.signature(fit_prior_probe).parameters
    assert list(params) == ["z1", "y1", "lam", "bias_const"]
    assert params["lam"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["bias_const"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(("n", "d"), [(300, 6), (60, 150)])  # primal and Gram (d+1 > n) paths
def test_prior_probe_is_the_regularised_logistic_minimiser(n: int, d: int) -> None:
    z, y = gaussian_task(n, d, seed=2)
    lam, c = 1e-3, 2.0
    theta = fit_prior_probe(z, y, lam=lam, bias_const=c)
    za = augment_features(z, c)
    m = y * (za @ theta)
    grad = -(za.T @ (y / (1.0 + np.exp(m)))) / len(y) + 2 * lam * theta
    assert np.max(np.abs(grad)) < FLOAT64_EXACT
    assert np.array_equal(theta, fit_prior_probe(z, y, lam=lam, bias_const=c))  # deterministic
    from_torch = fit_prior_probe(torch.tensor(z), torch.tensor(y), lam=lam, bias_const=c)
    assert np.allclose(from_torch, theta, rtol=0, atol=FLOAT64_EXACT)


def test_prior_probe_rejects_bad_inputs() -> None:
    z, y = gaussian_task(20, 3, seed=0)
    with pytest.raises(DataError):
        fit_prior_probe(z, (y + 1) / 2, lam=1e-3, bias_const=1.0)  # {0, 1} labels
    with pytest.raises(DataError):
        fit_prior_probe(np.where(z > 1, np.nan, z), y, lam=1e-3, bias_const=1.0)
    with pytest.raises(ValueError):
        fit_prior_probe(z, y, lam=0.0, bias_const=1.0)
    with pytest.raises(ValueError):
        fit_prior_probe(z, y, lam=1e-3, bias_const=0.0)


def test_prior_never_sees_s2(task: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    z, y, theta_hat = task.z, task.y, task.theta_hat
    base = task.result
    idx2 = base.idx2
    # Changing S2 (its labels and its features) changes neither the prior head nor the metric.
    y_mod, z_mod = y.copy(), z.copy()
    y_mod[idx2] = -y_mod[idx2]
    z_mod[idx2] = np.random.default_rng(0).normal(size=(idx2.shape[0], z.shape[1])) * 5
    changed = pac_bayes_linear(z_mod, y_mod, theta_hat, bias_const=1.0, split_seed=7, delta_pb=0.05)
    assert np.array_equal(changed.theta_prior, base.theta_prior)
    assert np.array_equal(changed.metric.sqrt, base.metric.sqrt)
    assert np.array_equal(changed.idx1, base.idx1)
    # ... nor does the user's head: the prior is fitted before and apart from it.
    other_head = pac_bayes_linear(z, y, -3 * theta_hat, bias_const=1.0, split_seed=7, delta_pb=0.05)
    assert np.array_equal(other_head.theta_prior, base.theta_prior)
    # The probe receives exactly the S1 rows.
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def recording_probe(z1: np.ndarray, y1: np.ndarray, *, lam: float, bias_const: float):
        seen.append((np.array(z1), np.array(y1)))
        return fit_prior_probe(z1, y1, lam=lam, bias_const=bias_const)

    monkeypatch.setattr(pb, "fit_prior_probe", recording_probe)
    pac_bayes_linear(z, y, theta_hat, bias_const=1.0, split_seed=7, delta_pb=0.05)
    assert len(seen) == 1
    assert np.array_equal(seen[0][0], z[base.idx1])
    assert np.array_equal(seen[0][1], y[base.idx1])


# ------------------------------------------------------------------ exact formulas vs sampling


def test_gibbs_error_formula_against_monte_carlo() -> None:
    rng = np.random.default_rng(5)
    n, dim, draws = 30, 8, 40_000
    x = rng.normal(size=(n, dim))
    y = rng.choice([-1.0, 1.0], size=n)
    u = rng.normal(size=dim)
    for mu, tau in ((1.3, 0.0), (2.5, 0.7), (0.4, 1.5)):
        exact = gibbs_error_exact(x, y, mu, u, tau=tau)
        theta = mu * unit_direction(u) + rng.normal(size=(draws, dim))
        margins = (theta @ x.T) * y / np.linalg.norm(x, axis=1)
        per_draw = np.mean(margins <= tau, axis=1)
        mc, se = per_draw.mean(), per_draw.std(ddof=1) / math.sqrt(draws)
        assert abs(exact - mc) < 5 * se + 1e-12
    # u is normalised: the scale of u does not matter.
    assert gibbs_error_exact(x, y, 1.3, 7.0 * u) == pytest.approx(gibbs_error_exact(x, y, 1.3, u))


def test_kl_of_isotropic_gaussians_against_monte_carlo() -> None:
    rng = np.random.default_rng(6)
    dim, draws = 5, 200_000
    u, u1 = unit_direction(rng.normal(size=dim)), unit_direction(rng.normal(size=dim))
    for mu, beta in ((1.7, 0.9), (3.0, 0.0), (0.5, 2.5)):
        closed = kl_isotropic(mu, beta, float(u @ u1))
        assert closed == pytest.approx(
            0.5 * float(np.sum((mu * u - beta * u1) ** 2)), rel=FLOAT64_EXACT
        )
        theta = mu * u + rng.normal(size=(draws, dim))
        log_ratio = 0.5 * (
            np.sum((theta - beta * u1) ** 2, axis=1) - np.sum((theta - mu * u) ** 2, axis=1)
        )
        se = log_ratio.std(ddof=1) / math.sqrt(draws)
        assert abs(log_ratio.mean() - closed) < 5 * se


def test_vectorised_kl_inv_brackets_the_exact_one() -> None:
    rng = np.random.default_rng(7)
    q = rng.random(400) ** 2
    c = rng.random(400) * rng.choice([1e-3, 0.1, 2.0], size=400)
    got = kl_inv_vec(q, c)
    ref = np.array([kl_inv(float(a), float(b)) for a, b in zip(q, c, strict=True)])
    assert np.max(np.abs(got - ref)) < FLOAT64_SOLVER
    assert kl_inv_vec(np.array([0.0, 1.0, 0.3]), np.array([1.0, 0.2, 100.0])) == pytest.approx(
        [1 - math.exp(-1.0), 1.0, 1.0]
    )


# ------------------------------------------------------------------------ the certificate


def test_reported_numbers_recompute_exactly(task: Task) -> None:
    z, y = task.z, task.y
    res = task.result
    n2 = res.n2
    assert (res.n, res.n1, n2) == (600, 480, 120)
    log_term = math.log(xi(n2) * 1 * len(DEFAULT_BETA_GRID) * len(DEFAULT_TAU_GRID) / 0.05)
    assert res.log_term == pytest.approx(log_term, rel=FLOAT64_EXACT)
    x2 = res.metric.whiten_features(augment_features(z[res.idx2], 1.0))
    for cell in (res.gibbs, res.deterministic):
        assert cell.n2 == n2 and cell.mu > 0
        assert cell.beta in DEFAULT_BETA_GRID and cell.tau in DEFAULT_TAU_GRID
        assert cell.kl == pytest.approx(kl_isotropic(cell.mu, cell.beta, cell.cos_prior))
        assert cell.rhs == pytest.approx((cell.kl + log_term) / n2, rel=FLOAT64_EXACT)
        e_hat = gibbs_error_exact(x2, y[res.idx2], cell.mu, res.u, tau=cell.tau)
        assert cell.empirical_loss == pytest.approx(e_hat, rel=FLOAT64_EXACT, abs=FLOAT64_EXACT)
        assert cell.kl_inv_value == kl_inv(cell.empirical_loss, cell.rhs)
        assert cell.phi_tau == pytest.approx(0.5 * math.erfc(-cell.tau / math.sqrt(2)))
        assert cell.status == "certified"
    assert res.gibbs.tau == 0.0 and res.gibbs.quantity == "gibbs_test_error"
    assert res.gibbs_bound == res.gibbs.kl_inv_value
    assert res.deterministic.quantity == "downstream_test_error"
    assert res.deterministic_bound == min(
        1.0, res.deterministic.kl_inv_value / res.deterministic.phi_tau
    )
    assert res.cos_prior[0] == pytest.approx(
        float(unit_direction(res.metric.whiten_head(res.theta_prior[0])) @ res.u)
    )
    for key in ("n1=480", "n2=120", "eps=0.1", "beta=", "tau=", "mu=", "KL=", "e_hat_tau="):
        assert key in res.deterministic_formula and key in res.gibbs_formula


def test_search_is_not_beaten_by_other_cells(task: Task) -> None:
    """Every (beta, tau, mu) is valid; the reported minimum must not be beaten by a sample."""
    z, y = task.z, task.y
    res = task.result
    x2 = res.metric.whiten_features(augment_features(z[res.idx2], 1.0))
    gamma = normalised_margins(x2, y[res.idx2], res.u)
    rng = np.random.default_rng(8)
    cos = res.cos_prior[0]
    for _ in range(300):
        beta = float(rng.choice(DEFAULT_BETA_GRID))
        tau = float(rng.choice(DEFAULT_TAU_GRID))
        mu = float(np.exp(rng.uniform(math.log(0.05), math.log(400.0))))
        if rng.random() < 0.5:  # near the prior's scale, where the good cells are
            mu = beta * cos * float(np.exp(rng.normal(0, 0.1))) + 1e-3
        e = float(np.mean(std_normal_cdf(tau - mu * gamma)))
        value = kl_inv(e, (kl_isotropic(mu, beta, cos) + res.log_term) / res.n2)
        assert min(1.0, value / (0.5 * math.erfc(-tau / math.sqrt(2)))) >= (
            res.deterministic_bound - 1e-9
        )
        if tau == 0.0:
            assert value >= res.gibbs_bound - 1e-9


def test_derandomisation_holds_pointwise_on_s2(task: Task) -> None:
    z, y, theta_hat = task.z, task.y, task.theta_hat
    res = task.result
    z2a, y2 = augment_features(z[res.idx2], 1.0), y[res.idx2]
    det_err = float(np.mean(y2 * (z2a @ theta_hat) <= 0))
    x2 = res.metric.whiten_features(z2a)
    for tau in (0.0, 0.5, 2.0):
        for mu in (0.3, 3.0, 30.0):
            phi = 0.5 * math.erfc(-tau / math.sqrt(2))
            assert det_err <= gibbs_error_exact(x2, y2, mu, res.u, tau=tau) / phi + 1e-12


def test_bounds_are_valid_and_informative_on_a_learnable_task(task: Task) -> None:
    theta_hat = task.theta_hat
    res = task.result
    z_test, y_test = gaussian_task(20_000, 12, seed=99)
    errors = int(np.sum(y_test * (augment_features(z_test, 1.0) @ theta_hat) <= 0))
    test_err = errors / len(y_test)
    assert res.deterministic_bound >= clopper_pearson_lower(errors, len(y_test), 0.001)
    assert res.deterministic_bound < 0.6  # the learned prior makes it non-vacuous
    gibbs_test = res.gibbs_error(z_test, y_test)
    assert test_err <= gibbs_test <= res.gibbs_bound  # the stochastic head errs more
    assert res.gibbs_bound <= res.deterministic_bound <= 2 * res.gibbs_bound + 1e-12
    assert 0.5 < res.cos_prior[0] <= 1.0


def test_scale_of_the_head_does_not_matter(task: Task) -> None:
    z, y, theta_hat = task.z, task.y, task.theta_hat
    res = task.result
    scaled = pac_bayes_linear(
        torch.tensor(z), torch.tensor(y), torch.tensor(37.0 * theta_hat),
        bias_const=1.0, split_seed=7, delta_pb=0.05,
    )  # fmt: skip
    assert scaled.deterministic_bound == pytest.approx(res.deterministic_bound, abs=FLOAT64_SOLVER)
    assert scaled.gibbs_bound == pytest.approx(res.gibbs_bound, abs=FLOAT64_SOLVER)


def test_lambda_grid_enters_the_union() -> None:
    z, y = gaussian_task(300, 6, seed=3)
    theta_hat = fit_prior_probe(z, y, lam=1e-4, bias_const=1.0)
    one = pac_bayes_linear(z, y, theta_hat, bias_const=1.0, split_seed=0, delta_pb=0.05)
    two = pac_bayes_linear(
        z, y, theta_hat, bias_const=1.0, split_seed=0, delta_pb=0.05, lam=(1e-3, 1e-1)
    )
    assert two.lam_grid == (1e-3, 1e-1) and two.theta_prior.shape == (2, 7)
    assert two.log_term == pytest.approx(one.log_term + math.log(2))
    assert np.array_equal(two.theta_prior[0], one.theta_prior[0])


def test_zero_head_and_bad_configuration() -> None:
    z, y = gaussian_task(100, 4, seed=4)
    res = pac_bayes_linear(z, y, np.zeros(5), bias_const=1.0, split_seed=0, delta_pb=0.05)
    assert res.head_is_zero and res.deterministic_bound == 1.0 and res.gibbs_bound == 1.0
    theta = np.ones(5)
    with pytest.raises(ValueError):
        pac_bayes_linear(z, y, np.ones(4), bias_const=1.0, split_seed=0, delta_pb=0.05)
    with pytest.raises(ValueError):  # the data-free prior must be in the grid
        pac_bayes_linear(
            z, y, theta, bias_const=1.0, split_seed=0, delta_pb=0.05, beta_grid=(1.0, 2.0)
        )
    with pytest.raises(ValueError):
        pac_bayes_linear(z, y, theta, bias_const=1.0, split_seed=0, delta_pb=0.05, tau_grid=(1,))
    with pytest.raises(ValueError):
        pac_bayes_linear(z, y, theta, bias_const=1.0, split_seed=0, delta_pb=1.5)
    with pytest.raises(ValueError):
        pac_bayes_linear(z, y, theta, bias_const=1.0, split_seed=0, delta_pb=0.05, eps=0.0)
    with pytest.raises(DataError):
        pac_bayes_linear(z, y * 2, theta, bias_const=1.0, split_seed=0, delta_pb=0.05)


# ------------------------------------------------------------------ the random-label control

RL_RUNS, RL_N, RL_D, RL_DELTA = 200, 200, 250, 0.05
RL_MAX_VIOLATIONS = 21  # the 0.999 quantile of Bin(200, 0.05)


def random_label_sample(run: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels are fair coins independent of the inputs (every head has error exactly 1/2);
    ``d > n``, so the user's head (a lightly regularised logistic fit on all of S) interpolates."""
    rng = np.random.default_rng(10_000 + run)
    z = rng.normal(size=(RL_N, RL_D))
    y = rng.choice([-1.0, 1.0], size=RL_N)
    theta_hat = fit_prior_probe(z, y, lam=1e-4, bias_const=1.0)
    return z, y, theta_hat


def leaky_deterministic_bound(
    z: np.ndarray, y: np.ndarray, theta_hat: np.ndarray, split_seed: int
) -> float:
    """A deliberately WRONG pipeline: the prior (its mean head and its metric) is fitted on all
    of S instead of S1, then the certificate is evaluated on S2 exactly as the library does."""
    _, idx2 = split_indices(z.shape[0], split_seed)
    za = augment_features(z, 1.0)
    metric = fit_metric(za, 0.1)  # leak: S2 is in the metric
    theta_1 = fit_prior_probe(z, y, lam=1e-3, bias_const=1.0)  # leak: S2 is in the prior head
    u = unit_direction(metric.whiten_head(theta_hat))
    u1 = unit_direction(metric.whiten_head(theta_1))
    gamma = normalised_margins(metric.whiten_features(za[idx2]), y[idx2], u)
    _, det = pac_bayes_from_margins(gamma, [float(u @ u1)], lam_grid=[1e-3], delta_pb=RL_DELTA)
    return det.bound


@pytest.mark.slow
def test_random_label_control_pac_bayes() -> None:
    correct = leaky = 0
    with single_threaded():
        for run in range(RL_RUNS):
            z, y, theta_hat = random_label_sample(run)
            if run == 0:
                assert np.all(y * (augment_features(z, 1.0) @ theta_hat) > 0)  # interpolates
            res = pac_bayes_linear(
                z, y, theta_hat, bias_const=1.0, split_seed=run, delta_pb=RL_DELTA
            )
            correct += res.deterministic_bound < 0.5
            leaky += leaky_deterministic_bound(z, y, theta_hat, split_seed=run) < 0.5
    assert correct <= RL_MAX_VIOLATIONS, f"correct pipeline: {correct}/{RL_RUNS} below 1/2"
    assert leaky >= RL_RUNS // 2, f"leaky pipeline: only {leaky}/{RL_RUNS} below 1/2"


# ------------------------------------------------------------ MLP heads: sampled Gibbs bound


def _fit_mlp(init: MLPHead, z: np.ndarray, y: np.ndarray, steps: int = 200) -> MLPHead:
    head = copy.deepcopy(init)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    zt, yt = torch.tensor(z, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.softplus(-yt * head(zt)).mean().backward()
        opt.step()
    return head


@pytest.fixture
def one_thread() -> Iterator[None]:
    with single_threaded():
        yield


@pytest.mark.usefixtures("one_thread")
def test_mlp_gibbs_bound_recomputes_and_is_valid() -> None:
    z, y = gaussian_task(800, 5, seed=11)
    idx1, idx2 = split_indices(800, seed=0)
    torch.manual_seed(0)
    init = MLPHead(5, 8)  # the data-free prior mean: a seed and the configuration only
    head = _fit_mlp(init, z, y)
    prior_s1 = _fit_mlp(init, z[idx1], y[idx1])  # an S1 fit started from the same init
    head.train()
    res = pac_bayes_mlp_gibbs(
        head, [init, prior_s1], z[idx2], y[idx2],
        sigma_grid=(0.03, 0.1, 0.3), n_samples=400, delta_pb=0.025, delta_s=0.025, seed=3,
    )  # fmt: skip
    assert head.training  # the mode is restored
    assert res.quantity == "gibbs_test_error" and len(res.cells) == 6
    flat = torch.nn.utils.parameters_to_vector(head.parameters()).detach().double()
    assert res.log_term == pytest.approx(math.log(xi(160) * 6 / 0.025))
    assert res.sampling_term == pytest.approx(math.log(3 / 0.025) / 400)
    for cell in res.cells:
        prior = [init, prior_s1][cell.prior_index]
        flat_0 = torch.nn.utils.parameters_to_vector(prior.parameters()).detach().double()
        dist2 = float(torch.sum((flat - flat_0) ** 2))
        assert cell.kl == pytest.approx(dist2 / (2 * cell.sigma**2), rel=FLOAT64_SOLVER)
        assert cell.sampled_upper == kl_inv(cell.sampled_error, res.sampling_term)
        assert cell.rhs == pytest.approx((cell.kl + res.log_term) / 160)
        assert cell.bound == kl_inv(cell.sampled_upper, cell.rhs)
    assert res.gibbs_bound == min(c.bound for c in res.cells) < 1.0
    # The S1 prior is closer to the head than the initialisation.
    assert res.cells[3].kl < res.cells[0].kl
    # Validity: the stochastic head's error on a large test set, sampled independently.
    z_test, y_test = gaussian_task(5000, 5, seed=12)
    best = res.best
    gen = torch.Generator().manual_seed(99)
    zt, yt = torch.tensor(z_test, dtype=torch.float32), torch.tensor(y_test)
    errs = []
    probe = copy.deepcopy(head)
    with torch.no_grad():
        for _ in range(100):
            noise = torch.randn(flat.numel(), generator=gen, dtype=torch.float64)
            torch.nn.utils.vector_to_parameters(
                (flat + best.sigma * noise).float(), probe.parameters()
            )
            errs.append(float(np.mean((yt * probe(zt).double() <= 0).numpy())))
    assert float(np.mean(errs)) <= res.gibbs_bound


@pytest.mark.usefixtures("one_thread")
def test_mlp_gibbs_small_noise_recovers_the_deterministic_error() -> None:
    z, y = gaussian_task(300, 4, seed=13)
    torch.manual_seed(1)
    init = MLPHead(4, 6)
    head = _fit_mlp(init, z, y, steps=100)
    res = pac_bayes_mlp_gibbs(
        head, [init], z[200:], y[200:],
        sigma_grid=(1e-9,), n_samples=5, delta_pb=0.05, delta_s=0.05, seed=0,
    )  # fmt: skip
    with torch.no_grad():
        scores = head(torch.tensor(z[200:], dtype=torch.float64).float()).double().numpy()
    assert res.cells[0].sampled_error == pytest.approx(float(np.mean(y[200:] * scores <= 0)))
    with pytest.raises(ValueError, match="architecture"):
        pac_bayes_mlp_gibbs(
            head, [MLPHead(4, 7)], z, y,
            sigma_grid=(0.1,), n_samples=5, delta_pb=0.05, delta_s=0.05, seed=0,
        )  # fmt: skip
    with pytest.raises(ValueError):
        pac_bayes_mlp_gibbs(
            head, [init], z, y, sigma_grid=(0.0,), n_samples=5, delta_pb=0.05, delta_s=0.05, seed=0
        )
