"""``tfbound fit-head --holdout``: a head fitted on S1 only is certified on S2 (holdout_bound)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from scipy.stats import beta

from tests.helpers import run_cli
from tfbound.bounds.split import split_indices
from tfbound.config import load_config
from tfbound.features import encode
from tfbound.models.build import build_module
from tfbound.pipeline.stages import data_loaders


def _errors_on_s2(config: Path) -> tuple[int, int]:
    """The head's errors on S2, recomputed from the files (encoder, head, split) directly."""
    cfg = load_config(config)
    train = data_loaders(cfg)[0](cfg.data.downstream_train)
    z = encode(build_module(cfg.encoder), train.x)
    state = load_file(str(cfg.head.weights))
    scores = z @ state["linear.weight"].double().numpy().reshape(-1) + float(
        state["linear.bias"].double()
    )
    _, idx2 = split_indices(z.shape[0], cfg.bound.split_seed, cfg.bound.n1_fraction)
    return int(np.sum(train.y[idx2] * scores[idx2] <= 0)), int(idx2.shape[0])


def test_a_head_fitted_on_s1_is_certified_on_s2(tiny: Path) -> None:
    torch.manual_seed(0)
    code, _, err = run_cli("fit-head", str(tiny), "--holdout", "--force")
    assert code == 0, err
    record = json.loads((tiny.parent / "head.json").read_text())
    assert record["fitted_on"] == "S1" and record["n1"] == record["n"] // 2
    code, out, err = run_cli("estimate", str(tiny), "-f", "json", "-q", "--n-draws", "200")
    assert code == 0, err
    report = json.loads(out)
    holdout = report["bounds"]["holdout_bound"]
    errors, n2 = _errors_on_s2(tiny)
    delta_h = report["deltas"]["holdout"]
    assert holdout["details"] == {"errors": errors, "n2": n2, "delta_h": delta_h}
    # the exact Clopper-Pearson upper limit, from scipy's beta quantile (bisection: the upper end)
    exact = float(beta.ppf(1 - delta_h, errors + 1, n2 - errors))
    assert exact <= holdout["value"] <= exact * (1 + 1e-12)
    assert delta_h == report["deltas"]["delta"] / 2  # the rule: half of delta
    best = report["bounds"]["best_certified_test_error_bound"]
    assert "holdout_bound" in best["details"]["candidates"]
    assert best["confidence"] == 1 - report["deltas"]["delta"]


def test_a_record_of_another_split_or_data_certifies_nothing(tiny: Path, tmp_path: Path) -> None:
    assert run_cli("fit-head", str(tiny), "--holdout", "--force")[0] == 0
    other = tmp_path / "other"
    shutil.copytree(tiny.parent, other)
    config = other / tiny.name
    text = config.read_text().replace("split_seed: 0", "split_seed: 1")
    if "split_seed" not in text:
        text = text.replace("bound:\n", "bound:\n  split_seed: 1\n")
    config.write_text(text)
    code, out, err = run_cli("estimate", str(config), "-f", "json", "-q", "--n-draws", "200")
    assert code == 0, err
    report = json.loads(out)
    assert "holdout_bound" not in report["bounds"] and "holdout" not in report["deltas"]
    assert any("another split or data" in w for w in report["warnings"])
