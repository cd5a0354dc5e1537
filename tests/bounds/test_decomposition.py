"""The excess-risk decomposition (bound-spec 6.2) beside the certified bound."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tfbound.bounds.decomposition import DecompositionInputs, decomposition_terms
from tfbound.cli import app
from tfbound.errors import InputError, UsageError
from tfbound.io.digest import sha256_file
from tfbound.pipeline import estimate
from tfbound.terms import Status, Term
from tfbound.transfer.inputs import (
    resolve_transfer_input,
    transfer_input_assumed,
    transfer_input_from_report,
)

runner = CliRunner()
N = 400
U_SIGMA = 30.0
DELTA_1 = 0.01
DELTA_MC = 0.002


def estimate_inputs(
    head_norm: float = 2.0, heldout_upper: float | None = 0.09, **changes: Any
) -> DecompositionInputs:
    """What the decomposition reads of an estimate."""
    values: dict[str, Any] = {
        "n": N,
        "u_sigma": U_SIGMA,
        "rirc_factor": 1.0,
        "delta_1": DELTA_1,
        "delta_mc": DELTA_MC,
        "head_norm": head_norm,
        "pretrain_heldout_upper": heldout_upper,
        **changes,
    }
    return DecompositionInputs(**values)


def by_key(terms: list[Term]) -> dict[str, Term]:
    return {t.key: t for t in terms}


def test_left_out_with_the_reason_when_no_transfer_input() -> None:
    terms, warnings = decomposition_terms(estimate_inputs(), None)
    assert terms == [] and len(warnings) == 1 and "left out" in warnings[0]
    terms, warnings = decomposition_terms(
        estimate_inputs(u_sigma=None), transfer_input_assumed(1, 0.5)
    )
    assert terms == [] and "RIRC" in warnings[0]


def test_assumed_c_and_beta_by_hand() -> None:
    terms, warnings = decomposition_terms(estimate_inputs(), transfer_input_assumed(2.0, 0.5))
    t = by_key(terms)
    assert t["decomposition_transfer_term"].value == pytest.approx(2.0 * math.sqrt(0.09))
    assert t["decomposition_transfer_term"].status is Status.ASSUMED
    assert t["decomposition_rirc_term"].value == pytest.approx(2 * 2.0 * U_SIGMA / N)
    assert t["decomposition_confidence"].value == pytest.approx(
        4 * math.sqrt(math.log(4 / DELTA_1) / (2 * N))
    )
    total = t["decomposition_total"]
    assert total.status is Status.ASSUMED
    assert total.value == pytest.approx(sum(t[k].value or 0 for k in total.components))
    assert all(x.quantity == "downstream_excess_risk" for x in terms)
    assert total.details["holds_with_probability_given_C_beta_E_U"] == pytest.approx(
        1 - DELTA_1 - DELTA_MC
    )
    assert "decomposition_transfer_check" not in t  # no report, no direct E_T
    terms, warnings = decomposition_terms(
        estimate_inputs(heldout_upper=None), transfer_input_assumed(2.0, 0.5)
    )
    assert terms == [] and "E_U" in warnings[0]


def fake_report(path: Path, **meta: Any) -> Path:
    member = {"e_u": {"value": 0.0, "interval": [0.0, 0.0]}, "e_t": {"value": 0.0}}
    data = {
        "kind": "transfer",
        "transfer": {"beta_fixed": 0.5, "probe_radius": 3.0, "bias_const": 1.0, **meta},
        "members": [
            {
                "kind": "base",
                "used_in_fit": False,
                "e_u": {"value": 0.004, "interval": [0.001, 0.009]},
                "e_t": {"value": 0.02, "interval": [0.0, 0.04]},
            },
            {**member, "used_in_fit": False, "kind": "perturbation"},
            {
                "kind": "perturbation",
                "used_in_fit": True,
                "e_u": {"value": 0.01},
                "e_t": {"value": 0.05},
            },
            {
                "kind": "perturbation",
                "used_in_fit": True,
                "e_u": {"value": 0.04},
                "e_t": {"value": 0.08},
            },
        ],
        "terms": {},
    }
    path.write_text(json.dumps(data))
    return path


def test_report_envelope_at_the_fixed_beta_and_at_a_user_beta(tmp_path: Path) -> None:
    report = fake_report(tmp_path / "t.json")
    terms, _ = decomposition_terms(estimate_inputs(), transfer_input_from_report(report))
    t = by_key(terms)
    c = max(0.05 / 0.01**0.5, 0.08 / 0.04**0.5)  # the envelope at beta = 1/2
    tt = t["decomposition_transfer_term"]
    assert tt.value == pytest.approx(c * 0.004**0.5) and tt.status is Status.ESTIMATED
    assert tt.interval == pytest.approx((c * 0.001**0.5, c * 0.009**0.5))
    assert t["decomposition_rirc_term"].value == pytest.approx(2 * 3.0 * U_SIGMA / N)
    assert t["decomposition_total"].status is Status.ESTIMATED
    assert t["decomposition_transfer_check"].value == 0.02
    assert t["decomposition_transfer_check"].status is Status.DIAGNOSTIC
    terms, _ = decomposition_terms(estimate_inputs(), transfer_input_from_report(report, beta=1.0))
    c1 = max(0.05 / 0.01, 0.08 / 0.04)
    assert by_key(terms)["decomposition_transfer_term"].value == pytest.approx(c1 * 0.004)
    terms, _ = decomposition_terms(estimate_inputs(), transfer_input_from_report(report, c=9.0))
    assert by_key(terms)["decomposition_total"].status is Status.ASSUMED


def test_report_for_another_encoder_or_bias_const_is_left_out(tmp_path: Path) -> None:
    weights = tmp_path / "enc.bin"
    weights.write_bytes(b"abc")
    report = fake_report(tmp_path / "t.json", base_encoder_sha256="0" * 64)
    terms, warnings = decomposition_terms(
        estimate_inputs(encoder_sha256=sha256_file(weights)), transfer_input_from_report(report)
    )
    assert terms == [] and "another encoder" in warnings[0]
    terms, warnings = decomposition_terms(
        estimate_inputs(bias_const=2.0), transfer_input_from_report(report)
    )
    assert terms == [] and "bias constant" in warnings[0]


def test_tv_upper_is_an_assumed_component(tmp_path: Path) -> None:
    report = fake_report(tmp_path / "t.json")
    data = json.loads(report.read_text())
    data["terms"] = {"tv_upper_assumed": {"value": 0.1}}
    report.write_text(json.dumps(data))
    terms, _ = decomposition_terms(estimate_inputs(), transfer_input_from_report(report))
    t = by_key(terms)
    assert t["decomposition_tv_assumed"].status is Status.ASSUMED
    assert "decomposition_tv_assumed" in t["decomposition_total"].components
    assert t["decomposition_total"].status is Status.ASSUMED


def test_resolve_rules(tmp_path: Path) -> None:
    assert resolve_transfer_input(None, None, None) is None
    with pytest.raises(UsageError):
        resolve_transfer_input(None, 1.0, None)
    with pytest.raises(UsageError):
        resolve_transfer_input(None, -1.0, 0.5)
    with pytest.raises(InputError):
        resolve_transfer_input(tmp_path / "missing.json", None, None)
    (tmp_path / "other.json").write_text(json.dumps({"kind": "estimate"}))
    with pytest.raises(InputError, match="not a transfer report"):
        resolve_transfer_input(tmp_path / "other.json", None, None)
    assumed = resolve_transfer_input(None, 2.0, 0.25)
    assert assumed is not None and assumed.assumed


def test_estimate_keeps_the_certified_bound_and_adds_the_decomposition(tiny: Path) -> None:
    plain = estimate(tiny)
    with_transfer = estimate(tiny, transfer=transfer_input_assumed(1.0, 0.5))
    assert plain.bounds == with_transfer.bounds
    assert any("decomposition" in w and "left out" in w for w in plain.warnings)
    keys = {t.key for t in with_transfer.terms}
    assert {"decomposition_transfer_term", "decomposition_total"} <= keys
    assert "decomposition_total" not in {b.key for b in with_transfer.bounds}
    total = with_transfer.get("decomposition_total")
    assert total is not None and total.quantity == "downstream_excess_risk"


def test_estimate_cli_with_a_transfer_report_and_assumed_values(tiny: Path, tmp_path: Path) -> None:
    transfer_yaml = tiny.parent / "transfer.yaml"
    transfer_yaml.write_text(
        yaml.safe_dump(
            {
                "transfer": {
                    "family": {"perturbations": {"scales": [0.3, 1.0, 3.0], "seeds": [0, 1, 2]}},
                    "heterogeneity": {"enabled": False},
                    "probe": {"logistic_steps": 100, "ramp_steps": 20},
                    "fit": {"n_boot": 50, "noise_floor_z": 0.0},
                }
            }
        )
    )
    report = tmp_path / "transfer.json"
    result = runner.invoke(app, ["transfer", str(transfer_yaml), "-q", "--json", str(report)])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(
        app, ["estimate", str(tiny), "-q", "-f", "json", "--transfer", str(report)]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    if json.loads(report.read_text())["fit"]["n_used"] > 0:
        assert data["terms"]["decomposition_total"]["status"] == "estimated"
    else:  # the tiny random encoder is no pre-training optimum: no member above the floor
        assert any("no member above the noise floor" in w for w in data["warnings"])
    fake = fake_report(tmp_path / "fake.json")  # no encoder hash: not checked
    result = runner.invoke(
        app, ["estimate", str(tiny), "-q", "-f", "json", "--transfer", str(fake)]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    total = data["terms"]["decomposition_total"]
    assert total["status"] == "estimated" and total["quantity"] == "downstream_excess_risk"
    assert "decomposition_total" not in data["bounds"]
    assert data["terms"]["decomposition_rirc_term"]["details"]["rho"] == 3.0
    result = runner.invoke(
        app,
        ["estimate", str(tiny), "-q", "-f", "json", "--transfer-c", "1", "--transfer-beta", "0.5"],
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["terms"]["decomposition_total"]["status"] == "assumed"
    result = runner.invoke(app, ["estimate", str(tiny), "-q", "--transfer-beta", "0.5"])
    assert result.exit_code == 2
