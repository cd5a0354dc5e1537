"""Hold-out plus disagreement on an unlabeled pool (spec 10.3, 10.6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import gaussian_task, single_threaded
from tests.tolerances import FLOAT64_SOLVER
from tfbound.bounds.disagreement import check_pool_disjoint, disagreement
from tfbound.bounds.split import augment_features, fit_prior_probe, split_indices
from tfbound.errors import DataError
from tfbound.measures.binomial import clopper_pearson_lower, clopper_pearson_upper

# ------------------------------------------------------------------------------- the counts


def test_counts_ties_and_clopper_pearson_limits() -> None:
    # One feature, bias constant 1: a head (a, b) scores a z + b.
    z2 = np.array([[1.0], [2.0], [-1.0], [0.5], [3.0]])
    y2 = np.array([1.0, 1.0, -1.0, -1.0, 1.0])
    w_1 = np.array([1.0, -0.5])  # scores 0.5, 1.5, -1.5, 0.0 (tie: an error), 2.5
    pool = np.array([[-2.0], [0.0], [0.5], [1.0], [4.0], [0.25]])
    w_hat = np.array([2.0, -0.5])  # pool scores: -4.5, -0.5, 0.5, 1.5, 7.5, 0.0
    # w_1 on the pool: -2.5, -0.5, 0.0 (tie), 0.5, 3.5, -0.25
    res = disagreement(z2, y2, pool, w_hat, w_1, bias_const=1.0, delta_a=0.02, delta_b=0.03)
    assert res.prior_errors == 1 and res.n2 == 5
    # rows: agree, agree, tie of w_1, agree, agree, tie of w_hat  -> 2 disagreements
    assert res.disagreements == 2 and res.m_pool == 6
    assert res.err_prior_upper == clopper_pearson_upper(1, 5, 0.02)
    assert res.disagreement_upper == clopper_pearson_upper(2, 6, 0.03)
    assert res.bound == min(1.0, res.err_prior_upper + res.disagreement_upper) == 1.0
    assert res.prior_error_rate == 0.2 and res.disagreement_rate == pytest.approx(1 / 3)
    assert res.quantity == "downstream_test_error" and res.status == "certified"
    assert "1/5" in res.formula and "2/6" in res.formula and "Kaariainen" in res.formula


def test_identical_heads_pay_only_the_hold_out_term() -> None:
    z, y = gaussian_task(400, 5, seed=0)
    pool, _ = gaussian_task(3000, 5, seed=1)
    w = fit_prior_probe(z[:300], y[:300], lam=1e-3, bias_const=1.0)
    res = disagreement(
        z[300:], y[300:], pool, 4.0 * w, w, bias_const=1.0, delta_a=0.025, delta_b=0.025
    )
    assert res.disagreements == 0
    assert res.disagreement_upper == pytest.approx(1 - 0.025 ** (1 / 3000), rel=FLOAT64_SOLVER)
    errors = int(np.sum(y[300:] * (augment_features(z[300:], 1.0) @ w) <= 0))
    assert res.prior_errors == errors
    assert res.bound == pytest.approx(
        clopper_pearson_upper(errors, 100, 0.025) + res.disagreement_upper
    )


def test_valid_and_tight_on_a_learnable_task() -> None:
    z, y = gaussian_task(2000, 10, seed=2)
    pool, _ = gaussian_task(5000, 10, seed=3)
    idx1, idx2 = split_indices(2000, seed=0)
    w_1 = fit_prior_probe(z[idx1], y[idx1], lam=1e-3, bias_const=1.0)
    w_hat = fit_prior_probe(z, y, lam=1e-4, bias_const=1.0)  # the user's head, on all of S
    res = disagreement(
        z[idx2], y[idx2], pool, w_hat, w_1, bias_const=1.0, delta_a=0.025, delta_b=0.025
    )
    z_test, y_test = gaussian_task(50_000, 10, seed=4)
    zt = augment_features(z_test, 1.0)
    wrong_hat = y_test * (zt @ w_hat) <= 0
    errors = int(np.sum(wrong_hat))
    assert res.bound >= clopper_pearson_lower(errors, len(y_test), 0.001)
    assert res.bound < errors / len(y_test) + 0.08  # about 1.2x-1.5x at this size
    # Kaariainen's inequality holds pointwise, so on any sample:
    wrong_1 = y_test * (zt @ w_1) <= 0
    differ = np.sign(zt @ w_hat) != np.sign(zt @ w_1)
    assert np.all(wrong_hat <= (wrong_1 | differ))


def test_torch_inputs_and_bad_arguments() -> None:
    z, y = gaussian_task(50, 3, seed=5)
    pool, _ = gaussian_task(40, 3, seed=6)
    w = np.array([1.0, -1.0, 0.5, 0.1])
    a = disagreement(z, y, pool, w, -w, bias_const=2.0, delta_a=0.01, delta_b=0.01)
    b = disagreement(
        torch.tensor(z), torch.tensor(y), torch.tensor(pool, dtype=torch.float32).double(),
        torch.tensor(w), torch.tensor(-w), bias_const=2.0, delta_a=0.01, delta_b=0.01,
    )  # fmt: skip
    assert (a.prior_errors, a.disagreements, a.bound) == (b.prior_errors, b.disagreements, b.bound)
    assert a.disagreements == 40  # opposite heads disagree everywhere
    with pytest.raises(ValueError):
        disagreement(z, y, pool, w, w, bias_const=1.0, delta_a=0.0, delta_b=0.01)
    with pytest.raises(ValueError):
        disagreement(z, y, pool, w[:3], w, bias_const=1.0, delta_a=0.01, delta_b=0.01)
    with pytest.raises(DataError):
        disagreement(z, y, pool[:, :2], w, w, bias_const=1.0, delta_a=0.01, delta_b=0.01)
    with pytest.raises(DataError):
        disagreement(z, np.abs(y) - 1, pool, w, w, bias_const=1.0, delta_a=0.01, delta_b=0.01)


# --------------------------------------------------------------------------- disjointness


def test_pool_disjointness_check() -> None:
    rng = np.random.default_rng(7)
    train, test, pool = rng.normal(size=(20, 4)), rng.normal(size=(10, 4)), rng.normal(size=(8, 4))
    check_pool_disjoint(pool, train, test)  # disjoint: no error
    check_pool_disjoint(pool)  # nothing to compare with
    leaked = pool.copy()
    leaked[5] = test[3]
    with pytest.raises(DataError, match="pool row 5 equals its row 3"):
        check_pool_disjoint(leaked, train, test)
    # The same values in float32 and float64, and -0.0 against 0.0, are the same row.
    grid = np.array([[0.5, -0.0, 2.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    with pytest.raises(DataError):
        check_pool_disjoint(torch.tensor(grid), np.array([[0.5, 0.0, 2.0]]))
    # Images are compared per example; a change in one pixel makes rows distinct.
    images = rng.normal(size=(6, 1, 3, 3))
    other = images[2:4].copy()
    with pytest.raises(DataError, match="2 row"):
        check_pool_disjoint(images, other)
    other[:, 0, 1, 1] += 1e-12
    check_pool_disjoint(images, other)
    with pytest.raises(DataError, match="rows of"):
        check_pool_disjoint(pool, rng.normal(size=(3, 5)))
    with pytest.raises(DataError, match="NaN"):
        check_pool_disjoint(np.full((2, 4), np.nan), train)


# ------------------------------------------------------------------ the random-label control

RL_RUNS, RL_N, RL_D, RL_POOL = 200, 200, 250, 500
DELTA_A = DELTA_B = 0.025  # delta = 0.05 in all
RL_MAX_VIOLATIONS = 21  # the 0.999 quantile of Bin(200, 0.05)


@pytest.mark.slow
def test_random_label_control_disagreement() -> None:
    """Fair-coin labels independent of the inputs (every head has error 1/2), ``d > n`` so the
    user's head interpolates S. The correct pipeline uses the prior head fitted on S1; the
    deliberately leaky one fits it on all of S, so that its S2 error is no longer a hold-out."""
    correct = leaky = 0
    with single_threaded():
        for run in range(RL_RUNS):
            rng = np.random.default_rng(20_000 + run)
            z = rng.normal(size=(RL_N, RL_D))
            y = rng.choice([-1.0, 1.0], size=RL_N)
            pool = rng.normal(size=(RL_POOL, RL_D))
            w_hat = fit_prior_probe(z, y, lam=1e-4, bias_const=1.0)
            if run == 0:
                assert np.all(y * (augment_features(z, 1.0) @ w_hat) > 0)  # interpolates
            idx1, idx2 = split_indices(RL_N, seed=run)
            w_1 = fit_prior_probe(z[idx1], y[idx1], lam=1e-3, bias_const=1.0)
            w_leak = fit_prior_probe(z, y, lam=1e-3, bias_const=1.0)  # leak: S2 in the prior
            for head, is_leaky in ((w_1, False), (w_leak, True)):
                res = disagreement(
                    z[idx2], y[idx2], pool, w_hat, head,
                    bias_const=1.0, delta_a=DELTA_A, delta_b=DELTA_B,
                )  # fmt: skip
                if is_leaky:
                    leaky += res.bound < 0.5
                else:
                    correct += res.bound < 0.5
    assert correct <= RL_MAX_VIOLATIONS, f"correct pipeline: {correct}/{RL_RUNS} below 1/2"
    assert leaky >= RL_RUNS // 2, f"leaky pipeline: only {leaky}/{RL_RUNS} below 1/2"
