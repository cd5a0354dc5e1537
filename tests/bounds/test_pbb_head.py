"""tfbound's stochastic head (``tfbound.bounds.pbb_head``, ``tfbound.training.pbb``, the file of
``tfbound.stochastic_head``): the exact Gibbs error and the KL against Monte Carlo, the
streamed scalars against the in-memory route, the training, and hostile files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy.special import ndtr

from tests.helpers import single_threaded
from tfbound.bounds.pac_bayes_search import DEFAULT_BETA_GRID
from tfbound.bounds.pbb_head import (
    kl_to_prior,
    pbb_head_bound,
    pbb_head_certificate,
    prior_geometry,
)
from tfbound.bounds.split import augment_features, split_indices
from tfbound.errors import CheckpointError
from tfbound.measures.binomial import kl_inv, xi
from tfbound.stochastic_head import read_stochastic_head, stochastic_head_payload
from tfbound.training.pbb import fit_pbb_mean

D, N, C = 6, 240, 0.7  # a bias constant other than 1 checks the scale's last row


def _task(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = np.zeros(D)
    mu[0] = 1.0
    y = rng.choice([-1.0, 1.0], size=N)
    return rng.normal(size=(N, D)) + y[:, None] * mu + 0.3, y


def _fitted(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, object, np.ndarray, np.ndarray]:
    idx1, idx2 = split_indices(N, 0, 0.5)
    geo = prior_geometry(z[idx1], y[idx1], bias_const=C, eps=0.1, lam=1e-3)
    x2 = geo.metric.whiten_features(augment_features(z[idx2], C))
    with single_threaded():
        fit = fit_pbb_mean(x2, y[idx2], geo.prior_directions, lam_grid=geo.lam_grid, delta_q=0.05)
    return geo.metric.inv_sqrt @ fit.mean_whitened, geo, idx2, fit.mean_whitened


def test_the_gibbs_error_is_the_error_of_heads_sampled_from_the_saved_file(tmp_path: Path) -> None:
    z, y = _task()
    mean_aug, geo, idx2, _ = _fitted(z, y)
    path = tmp_path / "sto.safetensors"
    path.write_bytes(stochastic_head_payload(mean_aug[:-1], mean_aug[-1] * C, geo.raw_scale()))
    head = read_stochastic_head(path, D)
    # sample raw heads (w, b) = mean + S xi from the file alone, count their errors on S2
    rng = np.random.default_rng(1)
    heads = 40_000
    mean = np.concatenate([head.weight, [head.bias]])
    draws = mean[None, :] + rng.normal(size=(heads, D + 1)) @ head.scale.T
    z2 = np.concatenate([z[idx2], np.ones((idx2.shape[0], 1))], axis=1)  # (z, 1): raw bias
    errors = (y[idx2][None, :] * (draws @ z2.T) <= 0).mean(axis=1)  # per sampled head
    res = pbb_head_bound(z, y, head.mean_aug(C), bias_const=C, split_seed=0, delta_q=0.05)
    exact = res.certificate.empirical_gibbs
    se = float(errors.std()) / np.sqrt(heads)
    assert abs(float(errors.mean()) - exact) < 5 * se + 1e-12, (errors.mean(), exact, se)
    # and example by example against the formula Phi(-y m'.z' / ||M^(-1/2) z'||)
    x2 = geo.metric.whiten_features(augment_features(z[idx2], C))
    per = ndtr(-y[idx2] * (augment_features(z[idx2], C) @ mean_aug) / np.linalg.norm(x2, axis=1))
    assert exact == pytest.approx(float(per.mean()), rel=1e-12)
    sampled = (y[idx2][None, :5] * (draws @ z2[:5].T) <= 0).mean(axis=0)
    assert np.all(np.abs(sampled - per[:5]) < 5 * np.sqrt(per[:5] * (1 - per[:5]) / heads) + 1e-9)


def test_the_kl_is_the_closed_form_and_agrees_with_monte_carlo() -> None:
    z, y = _task()
    mean_aug, geo, _, m_tilde = _fitted(z, y)
    res = pbb_head_bound(z, y, mean_aug, bias_const=C, split_seed=0, delta_q=0.05)
    cert = res.certificate
    u1 = geo.prior_directions[0]
    assert np.linalg.norm(u1) == pytest.approx(1.0, rel=1e-12)
    assert cert.kl == pytest.approx(float(np.sum((m_tilde - cert.beta * u1) ** 2)) / 2, rel=1e-9)
    best = min(kl_to_prior(float(m_tilde @ m_tilde), float(m_tilde @ u1), b)
               for b in DEFAULT_BETA_GRID)  # fmt: skip
    assert cert.kl == pytest.approx(best, rel=1e-9)
    # KL(Q || P) = E_Q[log q - log p] for identity covariances
    rng = np.random.default_rng(2)
    theta = m_tilde + rng.normal(size=(200_000, D + 1))
    prior = cert.beta * u1
    log_ratio = (np.sum((theta - prior) ** 2, axis=1) - np.sum((theta - m_tilde) ** 2, axis=1)) / 2
    se = float(log_ratio.std()) / np.sqrt(theta.shape[0])
    assert abs(float(log_ratio.mean()) - cert.kl) < 5 * se
    # the bound is kl_inv of these numbers with J = J_lambda J_beta = 50
    n2 = cert.n2
    log_term = np.log(xi(n2) * 50 / 0.05)
    assert cert.log_term == pytest.approx(log_term, rel=1e-12)
    assert cert.bound == kl_inv(cert.empirical_gibbs, (cert.kl + cert.log_term) / n2)


def test_streamed_scalars_give_the_in_memory_certificate() -> None:
    z, y = _task()
    mean_aug, geo, idx2, _ = _fitted(z, y)
    whole = pbb_head_bound(z, y, mean_aug, bias_const=C, split_seed=0, delta_q=0.05).certificate
    parts = [geo.scalars(z[idx2[i : i + 7]], mean_aug) for i in range(0, idx2.shape[0], 7)]
    msq, dots = geo.kl_inputs(mean_aug)
    streamed = pbb_head_certificate(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        y[idx2],
        mean_norm_sq=msq,
        mean_dot_prior=dots,
        delta_q=0.05,
        lam_grid=geo.lam_grid,
    )
    assert streamed.bound == pytest.approx(whole.bound, rel=1e-12)
    assert streamed.kl == pytest.approx(whole.kl, rel=1e-12)


def test_training_is_deterministic_and_never_worse_than_its_start() -> None:
    z, y = _task(3)
    idx1, idx2 = split_indices(N, 0, 0.5)
    geo = prior_geometry(z[idx1], y[idx1], bias_const=C, eps=0.1, lam=1e-3)
    x2 = geo.metric.whiten_features(augment_features(z[idx2], C))
    with single_threaded():
        a = fit_pbb_mean(x2, y[idx2], geo.prior_directions, lam_grid=geo.lam_grid, delta_q=0.05)
        b = fit_pbb_mean(x2, y[idx2], geo.prior_directions, lam_grid=geo.lam_grid, delta_q=0.05)
    assert np.array_equal(a.mean_whitened, b.mean_whitened)
    assert a.certificate.bound <= a.start_bound
    assert a.certificate.bound < 1.0


def test_a_cauchy_schwarz_violation_is_refused() -> None:
    with pytest.raises(ValueError, match="unit vectors"):
        pbb_head_certificate(
            np.ones(3), np.ones(3), np.ones(3), mean_norm_sq=1.0, mean_dot_prior=[2.0],
            delta_q=0.05, lam_grid=[1e-3],
        )  # fmt: skip


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"linear.weight": torch.zeros(1, D), "linear.bias": torch.zeros(1)}, "holds exactly"),
        (
            {
                "linear.weight": torch.zeros(1, D + 1),
                "linear.bias": torch.zeros(1),
                "posterior.scale": torch.eye(D + 1),
            },
            "expected",
        ),
        (
            {
                "linear.weight": torch.zeros(1, D),
                "linear.bias": torch.zeros(1),
                "posterior.scale": torch.eye(D + 1) * float("nan"),
            },
            "non-finite",
        ),
        (
            {
                "linear.weight": torch.zeros(1, D, dtype=torch.int64),
                "linear.bias": torch.zeros(1),
                "posterior.scale": torch.eye(D + 1),
            },
            "float32 or float64",
        ),
    ],
)
def test_a_bad_stochastic_head_file_is_refused_in_one_line(
    tmp_path: Path, tensors: dict[str, torch.Tensor], message: str
) -> None:
    path = _save(tmp_path / "bad.safetensors", tensors)
    with pytest.raises(CheckpointError, match=message) as info:
        read_stochastic_head(path, D)
    assert "\n" not in str(info.value)


def test_a_pickle_or_a_forged_header_is_refused(tmp_path: Path) -> None:
    pt = tmp_path / "sto.pt"
    torch.save({"linear.weight": torch.zeros(1, D)}, pt)
    with pytest.raises(CheckpointError, match="safetensors"):
        read_stochastic_head(pt, D)
    forged = tmp_path / "forged.safetensors"
    header = b'{"posterior.scale":{"dtype":"F64","shape":[100000,100000],"data_offsets":[0,8]}}'
    forged.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    with pytest.raises(CheckpointError):
        read_stochastic_head(forged, D)
