"""Heterogeneity diagnostics (bound-spec section 7): MMD, TV lower bound, transformation gap."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import tfbound.measures.heterogeneity as het
from tests.tolerances import FLOAT64_EXACT, FLOAT64_SOLVER
from tfbound.config import load_config
from tfbound.io.datasets import load_inputs, load_labeled
from tfbound.measures.heterogeneity import (
    balanced_accuracy_lcb,
    median_bandwidth,
    mmd2_unbiased,
    transformation_gap,
    tv_lower_bound,
)
from tfbound.models.build import build_module
from tfbound.terms import Status
from tfbound.transfer.heterogeneity import heterogeneity_terms
from tfbound.transfer.run import pretext_task


def _mmd2_brute(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma * sigma))

    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def test_mmd2_matches_the_u_statistic_by_brute_force() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(23, 3)), rng.normal(0.3, 1.2, size=(31, 3))
    est = mmd2_unbiased(x, y, n_permutations=30, seed=1)
    assert est.mmd2 == pytest.approx(
        _mmd2_brute(x, y, est.bandwidth), rel=FLOAT64_SOLVER, abs=FLOAT64_EXACT
    )
    assert est.p_value == pytest.approx((1 + est.n_exceed) / 31)
    assert (est.m, est.n) == (23, 31)


def test_mmd2_blocks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(35, 2))
    whole = mmd2_unbiased(x, y, n_permutations=50, seed=3)
    monkeypatch.setattr(het, "_KERNEL_BLOCK_ELEMENTS", 7 * 75)  # blocks of 7 rows
    blocked = mmd2_unbiased(x, y, n_permutations=50, seed=3)
    assert blocked.mmd2 == pytest.approx(whole.mmd2, rel=FLOAT64_EXACT, abs=FLOAT64_EXACT)
    assert blocked.n_exceed == whole.n_exceed


def test_median_bandwidth_is_the_median_pairwise_distance() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(size=(30, 4))
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    iu = np.triu_indices(30, 1)
    # torch's median of an even count is the lower of the two middle values
    assert median_bandwidth(z) == pytest.approx(
        np.sort(d[iu])[(len(iu[0]) - 1) // 2], rel=FLOAT64_EXACT
    )


def test_mmd2_null_mean_zero_and_uniform_p_values() -> None:
    values, p_values = [], []
    for seed in range(60):
        rng = np.random.default_rng(1000 + seed)
        est = mmd2_unbiased(
            rng.normal(size=(30, 2)), rng.normal(size=(30, 2)), n_permutations=49, seed=seed
        )
        values.append(est.mmd2)
        p_values.append(est.p_value)
    v = np.array(values)
    assert abs(v.mean()) < 3 * v.std(ddof=1) / math.sqrt(v.size)  # unbiased: 0 in expectation
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    assert 0.02 <= np.mean(np.array(p_values) <= 0.2) <= 0.4


def test_mmd2_large_for_a_shifted_gaussian() -> None:
    rng = np.random.default_rng(3)
    est = mmd2_unbiased(rng.normal(size=(60, 2)), rng.normal(2.0, 1.0, size=(60, 2)), seed=0)
    assert est.mmd2 > 0.3
    assert est.p_value == pytest.approx(1 / (est.n_permutations + 1))


def test_mmd2_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        mmd2_unbiased(np.zeros((1, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError):
        mmd2_unbiased(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="degenerate"):
        mmd2_unbiased(np.zeros((5, 2)), np.zeros((5, 2)))


def test_balanced_accuracy_lcb_by_hand() -> None:
    a_hat, lcb = balanced_accuracy_lcb(np.array([1, 1, 0, 1]), np.array([1, 0]), 0.1)
    assert a_hat == pytest.approx(0.5 * (0.75 + 0.5))
    assert lcb == pytest.approx(a_hat - math.sqrt((1 / 4 + 1 / 2) * math.log(10) / 8))


def test_tv_lower_bound_near_zero_for_one_distribution() -> None:
    for seed in range(3):
        rng = np.random.default_rng(seed)
        tv = tv_lower_bound(rng.normal(size=(300, 5)), rng.normal(size=(300, 5)), seed=seed)
        assert tv.tv_lower_bound <= 0.1
        assert abs(tv.balanced_accuracy - 0.5) < 0.1


def test_tv_lower_bound_near_one_for_disjoint_distributions() -> None:
    rng = np.random.default_rng(4)
    u = rng.uniform(0.0, 1.0, size=(500, 3))
    t = rng.uniform(2.0, 3.0, size=(500, 3))
    tv = tv_lower_bound(u, t, delta_tv=0.05)
    assert tv.balanced_accuracy == 1.0
    width = math.sqrt((1 / tv.m_u + 1 / tv.m_t) * math.log(1 / 0.05) / 8)
    assert tv.tv_lower_bound == pytest.approx(1 - 2 * width)
    assert tv.tv_lower_bound > 0.85
    assert (tv.m_u, tv.m_t) == (200, 200) and tv.n_train == (200, 200)


def test_transformation_gap_by_hand() -> None:
    clean = np.array([[0.0, 0.0], [3.0, 4.0]])
    corrupted = np.array([[3.0, 4.0], [3.0, 4.0]])
    gap = transformation_gap(clean, corrupted)
    assert gap.mean == pytest.approx(2.5)
    assert gap.mean_feature_norm == pytest.approx(2.5) and gap.relative == pytest.approx(1.0)
    assert gap.stderr == pytest.approx(np.std([5.0, 0.0], ddof=1) / math.sqrt(2))


def test_heterogeneity_terms_on_the_tiny_pipeline(tiny: Path) -> None:
    cfg = load_config(tiny)
    assert cfg.pretext is not None and cfg.data.pretrain_val is not None
    encoder = build_module(cfg.encoder)
    terms = heterogeneity_terms(
        encoder,
        pretext_task(cfg.pretext),
        load_inputs(cfg.data.pretrain_val),
        load_labeled(cfg.data.downstream_train).x,
        n_permutations=20,
    )
    keys = [t.key for t in terms]
    assert keys == [
        "tv_lower_bound_inputs",
        "tv_lower_bound_features",
        "mmd2_unbiased_inputs",
        "mmd2_unbiased_features",
        "transformation_gap_pretrain",
        "transformation_gap_downstream",
    ]
    assert all(t.status is Status.DIAGNOSTIC for t in terms)
    assert all(0 <= t.value <= 1 for t in terms[:2] if t.value is not None)
    assert all((t.value or 0) > 0 for t in terms[4:])  # zeroing a block moves the features
