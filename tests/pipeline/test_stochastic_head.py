"""``tfbound fit-head --stochastic`` and ``bound.stochastic_head``: tfbound's stochastic head,
certified beside the user's head (``stochastic_head_gibbs_bound``), never as it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import tfbound
from tests.helpers import REPO_ROOT, run_cli
from tfbound.bounds.pbb_head import pbb_head_bound
from tfbound.config import load_config
from tfbound.features import encode
from tfbound.models.build import build_module
from tfbound.pipeline.stages import data_loaders

KEY = "stochastic_head_gibbs_bound"


def _with_key(config: Path, value: str = "sto.safetensors", extra: str = "") -> Path:
    text = config.read_text()
    config.write_text(text.replace("bound:\n", f"bound:\n  stochastic_head: {value}\n{extra}", 1))
    return config


def _estimate(config: Path) -> dict[str, Any]:
    code, out, err = run_cli("estimate", str(config), "-f", "json", "-q", "--capacity", "off")
    assert code == 0, err
    return json.loads(out)


def test_fit_head_stochastic_then_estimate_certifies_it_beside_the_users_head(
    tiny: Path,
) -> None:
    before = _estimate(tiny)
    config = _with_key(tiny, extra="  delta_stochastic: 0.02\n")
    code, _, err = run_cli("fit-head", str(config), "--stochastic")
    assert code == 0, err
    assert "stochastic head" in err and "Gibbs certificate" in err
    head = tiny.parent / "sto.safetensors"
    record = json.loads(head.with_suffix(".json").read_text())
    assert record["kind"] == "stochastic" and record["written_by"] == "tfbound fit-head"
    assert record["posterior_trained_on"] == "S2" and record["prior_from"] == "S1"
    report = _estimate(config)
    term = report["bounds"][KEY]
    assert term["status"] == "certified" and term["quantity"] == "gibbs_test_error"
    assert term["confidence"] == pytest.approx(0.98)
    assert report["deltas"]["stochastic_head"] == 0.02
    assert term["details"]["sha256"] in term["formula"] or "sto.safetensors" in term["formula"]
    assert term["value"] == pytest.approx(record["certificate_at_fit"], rel=1e-12)
    # never the headline, never among its candidates; the user's certificates are unchanged
    best = report["bounds"]["best_certified_test_error_bound"]
    assert KEY not in best["details"]["candidates"]
    assert best == before["bounds"]["best_certified_test_error_bound"]
    for key, t in before["bounds"].items():
        assert report["bounds"][key]["value"] == t["value"], key
    assert "observed_stochastic_head_gibbs_test_error" in report["terms"]
    # recomputed independently from the files: encoder, data, the written mean
    cfg = load_config(config)
    train = data_loaders(cfg)[0](cfg.data.downstream_train)
    z = encode(build_module(cfg.encoder), train.x)
    state = load_file(str(head))
    mean = np.concatenate(
        [state["linear.weight"].double().numpy().reshape(-1), [float(state["linear.bias"])]]
    )
    res = pbb_head_bound(z, train.y, mean, bias_const=1.0, split_seed=0, delta_q=0.02)
    assert term["value"] == pytest.approx(res.certificate.bound, rel=1e-9)
    # the mean is a plain linear head: tfbound reads the file as head.weights
    text = config.read_text().replace("weights: head.safetensors", "weights: sto.safetensors")
    config.write_text(text)
    as_head = _estimate(config)
    assert as_head["model"]["head"]["fit"]["kind"] == "stochastic"
    assert "best_certified_test_error_bound" in as_head["bounds"]


def test_a_record_of_another_split_certifies_nothing(tiny: Path, tmp_path: Path) -> None:
    config = _with_key(tiny)
    assert run_cli("fit-head", str(config), "--stochastic")[0] == 0
    other = tmp_path / "other"
    shutil.copytree(tiny.parent, other)
    moved = other / tiny.name
    moved.write_text(moved.read_text().replace("bound:\n", "bound:\n  split_seed: 1\n", 1))
    report = _estimate(moved)
    assert KEY not in report["bounds"] and "stochastic_head" not in report["deltas"]
    assert any("split_seed is 0" in w for w in report["warnings"]), report["warnings"]


def test_a_file_tfbound_did_not_write_is_neither_replaced_nor_certified(tiny: Path) -> None:
    config = _with_key(tiny)
    head = tiny.parent / "sto.safetensors"
    d = 8
    save_file(
        {
            "linear.weight": torch.zeros(1, d, dtype=torch.float64),
            "linear.bias": torch.zeros(1, dtype=torch.float64),
            "posterior.scale": torch.eye(d + 1, dtype=torch.float64),
        },
        str(head),
    )
    report = _estimate(config)
    assert KEY not in report["bounds"]
    assert any("no matching record" in w for w in report["warnings"]), report["warnings"]
    code, _, err = run_cli("fit-head", str(config), "--stochastic")
    assert code == 3 and "refused to overwrite" in err and "\n" not in err.strip()
    assert run_cli("fit-head", str(config), "--stochastic", "--force")[0] == 0


def test_a_scale_that_is_not_the_s1_metric_certifies_nothing(tiny: Path) -> None:
    config = _with_key(tiny)
    assert run_cli("fit-head", str(config), "--stochastic")[0] == 0
    head = tiny.parent / "sto.safetensors"
    state = load_file(str(head))
    state["posterior.scale"] = state["posterior.scale"] * 0.5  # a narrower posterior
    save_file(state, str(head))
    rec = head.with_suffix(".json")
    record = json.loads(rec.read_text())
    record["head_sha256"] = hashlib.sha256(head.read_bytes()).hexdigest()  # a forged record
    rec.write_text(json.dumps(record))
    report = _estimate(config)
    assert KEY not in report["bounds"]
    assert any("posterior.scale" in w for w in report["warnings"]), report["warnings"]


def test_usage_errors(tiny: Path) -> None:
    code, _, err = run_cli("fit-head", str(tiny), "--stochastic")
    assert code == 3 and "bound.stochastic_head" in err  # nowhere to write
    code, _, err = run_cli("fit-head", str(tiny), "--stochastic", "--holdout")
    assert code == 2
    bad = _with_key(tiny, value="[1, 2]")
    code, _, err = run_cli("estimate", str(bad))
    assert code == 3 and "bound.stochastic_head" in err


def test_on_a_sample_model_the_headline_is_unchanged(tmp_path: Path) -> None:
    shutil.copytree(REPO_ROOT / "sample_models" / "ce_mlp", tmp_path / "ce_mlp")
    (tmp_path / "data").symlink_to(REPO_ROOT / "sample_models" / "data")
    config = tmp_path / "ce_mlp" / "tfbound.yaml"
    before = tfbound.estimate(config, capacity="off")
    _with_key(config)
    code, _, err = run_cli("fit-head", str(config), "--stochastic")
    assert code == 0, err
    after = tfbound.estimate(config, capacity="off")
    term = after.get(KEY)
    assert term is not None and term.value is not None and term.value < 1
    gibbs = after.get("observed_stochastic_head_gibbs_test_error")
    assert gibbs is not None and gibbs.value is not None and gibbs.value <= term.value
    assert after.get("best_certified_test_error_bound") == before.get(
        "best_certified_test_error_bound"
    )
    assert {t.key: t.value for t in before.bounds} == {
        t.key: t.value for t in after.bounds if t.key != KEY
    }
