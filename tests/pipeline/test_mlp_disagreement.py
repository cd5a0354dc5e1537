"""The disagreement certificate for an MLP head (bound-spec 10.3 holds for any pair of heads):
the tool's linear probe on S1 against the head's own outputs on the pool, recomputed here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from safetensors.torch import load_file
from scipy.stats import beta

from tests.conftest import write_pipeline
from tfbound.bounds.split import augment_features, fit_prior_probe, split_indices
from tfbound.config import load_config
from tfbound.features import encode
from tfbound.models.build import build_module
from tfbound.pipeline import estimate
from tfbound.pipeline.stages import data_loaders


def _cp_upper(k: int, m: int, delta: float) -> float:
    return 1.0 if k == m else float(beta.ppf(1 - delta, k + 1, m - k))


def test_an_mlp_head_with_a_pool_gets_the_disagreement_certificate(tmp_path: Path) -> None:
    config = write_pipeline(tmp_path / "mlp", head="mlp")
    rng = np.random.default_rng(5)
    data = dict(np.load(config.parent / "data.npz"))
    data["pool_x"] = rng.random((150, 16)).astype(np.float32)
    np.savez(config.parent / "data.npz", **data)
    raw = yaml.safe_load(config.read_text())
    raw["data"]["downstream_unlabeled"] = {"path": "data.npz", "x": "pool_x"}
    config.write_text(yaml.safe_dump(raw))

    report = estimate(config).to_dict()
    dis = report["bounds"]["disagreement_bound"]
    assert "pac_bayes_deterministic_bound" not in report["bounds"]  # linear heads only
    assert (
        "disagreement_bound"
        in report["bounds"]["best_certified_test_error_bound"]["details"]["candidates"]
    )

    # independently: features, the MLP head by hand, the probe on S1, both limits by scipy
    cfg = load_config(config)
    train = data_loaders(cfg)[0](cfg.data.downstream_train)
    encoder = build_module(cfg.encoder)
    z = encode(encoder, train.x)
    zp = encode(encoder, data["pool_x"])
    w = {k: v.double().numpy() for k, v in load_file(str(cfg.head.weights)).items()}
    names = sorted(w)
    first = [k for k in names if k.endswith("weight")][0]
    hidden = np.maximum(zp @ w[first].T + w[first.replace("weight", "bias")], 0.0)
    last = [k for k in names if k.endswith("weight")][1]
    head_pool = hidden @ w[last].T.reshape(-1) + w[last.replace("weight", "bias")].reshape(-1)
    b = cfg.bound
    idx1, idx2 = split_indices(z.shape[0], b.split_seed, b.n1_fraction)
    theta_1 = fit_prior_probe(z[idx1], train.y[idx1], lam=b.prior_lam, bias_const=b.bias_const)
    errors = int(np.sum(train.y[idx2] * (augment_features(z[idx2], b.bias_const) @ theta_1) <= 0))
    probe_pool = augment_features(zp, b.bias_const) @ theta_1
    s_hat, s_1 = np.sign(head_pool), np.sign(probe_pool)
    disagreements = int(np.sum((s_hat != s_1) | (s_hat == 0) | (s_1 == 0)))
    d = dis["details"]
    assert (d["prior_errors"], d["n2"]) == (errors, len(idx2))
    assert abs(d["disagreements"] - disagreements) <= 1  # a float32 sign at a tie at most
    expected = _cp_upper(errors, len(idx2), d["delta_a"]) + _cp_upper(
        d["disagreements"], 150, d["delta_b"]
    )
    assert abs(dis["value"] - min(1.0, expected)) <= 1e-9
