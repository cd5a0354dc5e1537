"""The streamed estimate against an independent in-memory computation of every certificate.

The streamed pipeline never holds the ``n x d`` features: it keeps per-example scalars and
fixed-size sums, reads ``S1`` before ``S2`` and draws its signs by example index. Here every
certificate is recomputed from the whole feature matrices with the library's in-memory functions
(``rirc_linear``, ``margin_bound``, ``pac_bayes_linear``, ``disagreement``, ``pac_bayes_pool``),
on features from one float64 encoder pass (``tfbound.encode``), and compared to 1e-12.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tfbound.pipeline.stream as stream
from tfbound.bounds.disagreement import disagreement
from tfbound.bounds.margin import linear_head_norm, margin_bound
from tfbound.bounds.pac_bayes import fit_pac_bayes_prior, pac_bayes_certify, pac_bayes_linear
from tfbound.bounds.pac_bayes_pool import pac_bayes_pool
from tfbound.bounds.split import augment_features
from tfbound.config import load_config
from tfbound.features import encode
from tfbound.measures.gaussian import normalised_margins
from tfbound.measures.network import ROUNDING
from tfbound.measures.rirc import rirc_linear
from tfbound.pipeline.run import _augmented_linear_head, _head_chain, budget_of, estimate
from tfbound.pipeline.stages import build_models, data_loaders, load_splits

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
REL = 1e-12


def _value(report, key: str) -> float:
    found = [t for t in (*report.terms, *report.bounds) if t.key == key]
    assert found, key
    return float(found[0].value)


def _in_memory(name: str):
    cfg = load_config(SAMPLES / name)
    load_lab, _ = data_loaders(cfg)
    train = load_lab(cfg.data.downstream_train)
    models = build_models(cfg, train)
    splits = load_splits(cfg, train, need_pool=True, need_pretrain=False)
    feats = {
        "train": encode(models.encoder, train.x, dtype="float64"),
        "test": encode(models.encoder, splits.test.x, dtype="float64"),
        "pool": encode(models.encoder, splits.pool, dtype="float64"),
    }
    return cfg, models, splits, feats


@pytest.mark.parametrize("name", ["ce_mlp", "mae_vit"])
def test_streamed_report_equals_the_in_memory_certificates(name: str) -> None:
    cfg, models, splits, f = _in_memory(name)
    report = estimate(cfg, dtype="float64", capacity="off")
    b, c = cfg.bound, cfg.bound.bias_const
    budget = budget_of(cfg, pool=True, linear_head=True)
    z, y = f["train"], splits.train.y

    est = rirc_linear(
        z,
        1.0,
        n_draws=b.n_draws,
        seed=b.seed,
        delta_mc=budget.per_candidate("monte_carlo"),
        bias_const=c,
    )
    rirc = next(t for t in report.terms if t.key == "rirc")
    assert rirc.details["mc_mean"] == pytest.approx(est.norm_mean, rel=REL)

    head64 = models.head.to(torch.float64)  # --dtype float64 runs the head in float64 too
    scores = head64(torch.from_numpy(z)).reshape(-1).detach().numpy()
    head_norm = linear_head_norm(_head_chain(models.head)[0], c)
    mb = margin_bound(
        scores,
        y,
        head_norm,
        est.norm_upper * ROUNDING,
        delta_1=budget.per_candidate("finetune"),
        rho0=b.rho0,
        rirc_factor=1.0,
    )
    assert _value(report, "certified_test_error_bound") == pytest.approx(mb.total, rel=REL)

    theta = _augmented_linear_head(models.head, c)
    pac = pac_bayes_linear(
        z,
        y,
        theta,
        bias_const=c,
        split_seed=b.split_seed,
        delta_pb=budget.per_candidate("pac_bayes"),
        n1_fraction=b.n1_fraction,
        eps=b.metric_eps,
        lam=b.prior_lam,
    )
    assert _value(report, "pac_bayes_deterministic_bound") == pytest.approx(
        pac.deterministic_bound, rel=REL
    )
    assert _value(report, "pac_bayes_gibbs_bound") == pytest.approx(pac.gibbs_bound, rel=REL)
    gibbs_test = pac.gibbs_error(f["test"], splits.test.y)
    assert _value(report, "observed_gibbs_test_error") == pytest.approx(gibbs_test, rel=REL)

    dis = disagreement(
        z[pac.idx2],
        y[pac.idx2],
        f["pool"],
        theta,
        pac.theta_prior[0],
        bias_const=c,
        delta_a=budget.per_candidate("disagreement_prior"),
        delta_b=budget.per_candidate("disagreement_pool"),
    )
    assert _value(report, "disagreement_bound") == pytest.approx(dis.bound, rel=REL)
    pool = pac_bayes_pool(pac, z, y, f["pool"], delta_c=budget.per_candidate("pac_bayes_pool"))
    assert _value(report, "pac_bayes_pool_bound") == pytest.approx(pool.bound, rel=REL)

    test_scores = head64(torch.from_numpy(f["test"])).reshape(-1).detach().numpy()
    errors = int(np.sum(splits.test.y * test_scores <= 0))
    assert _value(report, "observed_test_error") == errors / splits.test.y.shape[0]


def test_a_large_s1_fits_the_probe_on_a_seeded_subset_and_the_metric_on_all_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With room for 120 rows only, the probes see a seeded subset of S1 and the metric the
    second moment of all of S1, summed batch by batch: compared with the same prior built from
    the whole arrays."""
    cfg, models, splits, f = _in_memory("ce_mlp")
    d = models.feature_dim
    monkeypatch.setattr(stream, "PRIOR_SAMPLE_BYTES", 120 * 8 * (d + 1))
    monkeypatch.setattr(stream, "PRIOR_SAMPLE_MIN_ROWS", 100)
    report = estimate(cfg, dtype="float64", capacity="off")
    b, c = cfg.bound, cfg.bound.bias_const
    z, y = f["train"], splits.train.y
    pac_term = next(t for t in report.bounds if t.key == "pac_bayes_deterministic_bound")
    assert "seeded subset of 120 of the 350 S1 rows" in pac_term.formula

    from tfbound.bounds.split import split_indices

    idx1, idx2 = split_indices(z.shape[0], b.split_seed, b.n1_fraction)
    rows = stream.probe_rows(idx1, d, b.split_seed)
    assert rows.shape[0] == 120 and np.all(np.isin(rows, idx1))
    z1 = augment_features(z[idx1], c)
    prior = fit_pac_bayes_prior(
        z[rows],
        y[rows],
        n=z.shape[0],
        idx1=idx1,
        idx2=idx2,
        bias_const=c,
        split_seed=b.split_seed,
        n1_fraction=b.n1_fraction,
        eps=b.metric_eps,
        lam_grid=(b.prior_lam,),
        second_moment=z1.T @ z1 / idx1.shape[0],
    )
    theta = _augmented_linear_head(models.head, c)
    x2 = prior.metric.whiten_features(augment_features(z[idx2], c))
    budget = budget_of(cfg, pool=True, linear_head=True)
    pac = pac_bayes_certify(
        prior,
        theta,
        normalised_margins(x2, y[idx2], prior.direction(theta)),
        delta_pb=budget.per_candidate("pac_bayes"),
    )
    assert pac_term.value == pytest.approx(pac.deterministic_bound, rel=1e-10)
    # the subset is a configuration constant: the same rows on every call
    assert np.array_equal(rows, stream.probe_rows(idx1, d, b.split_seed))


def test_the_streamed_numbers_do_not_depend_on_the_batch_size() -> None:
    cfg = load_config(SAMPLES / "ce_mlp")
    small = load_config(SAMPLES / "ce_mlp")
    object.__setattr__(small.bound, "batch_size", 7)
    a = estimate(cfg, dtype="float64", capacity="off").to_dict()
    b = estimate(small, dtype="float64", capacity="off").to_dict()
    for key, term in a["bounds"].items():
        assert b["bounds"][key]["value"] == pytest.approx(term["value"], rel=REL), key
    for key, term in a["terms"].items():
        # the pretext passes are not streamed by example index (float32, their own batches)
        if isinstance(term.get("value"), float) and not key.startswith("pretext"):
            # the Gibbs head's mu is an argmin of a flat objective: its round-off is the square
            # root of the objective's, and the observed Gibbs error is evaluated at it
            rel = 1e-6 if key == "observed_gibbs_test_error" else REL
            assert b["terms"][key]["value"] == pytest.approx(term["value"], rel=rel), key
