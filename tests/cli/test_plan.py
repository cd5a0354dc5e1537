"""``tfbound plan``: projections of each certificate to other sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli
from tfbound.plan import plan

REPORT = REPO_ROOT / "tests" / "golden" / "inputs" / "ce_mlp.json"
PROJECTED = (
    "disagreement_bound",
    "pac_bayes_pool_bound",
    "pac_bayes_deterministic_bound",
    "certified_test_error_bound",
)


def _report() -> dict:
    return json.loads(REPORT.read_text())


def test_at_the_reports_own_sizes_the_projection_is_the_report() -> None:
    report = _report()
    p = plan(report)
    row = next(r for r in p.rows if r["n"] == p.n and r["m_pool"] == p.m_pool)
    for key in PROJECTED:
        assert row[key] == pytest.approx(report["bounds"][key]["value"], rel=1e-12), key
    assert row["best_certified_test_error_bound"] == pytest.approx(
        report["bounds"]["best_certified_test_error_bound"]["value"], rel=1e-12
    )


def test_more_data_never_loosens_a_projection_and_the_reach_is_the_first_size() -> None:
    report = _report()
    p = plan(report, target=0.35)
    fixed_pool = [r for r in p.rows if r["m_pool"] == p.m_pool]
    for key in PROJECTED:
        values = [r[key] for r in fixed_pool]
        assert values == sorted(values, reverse=True), key
    n_pb = p.reach["pac_bayes_deterministic_bound"]["n"]
    assert n_pb is not None
    row = plan(report, n_values=(n_pb, round(n_pb / 2 ** (1 / 8)) - 1)).rows
    assert row[0]["pac_bayes_deterministic_bound"] <= 0.35 < row[1]["pac_bayes_deterministic_bound"]


def test_cli_table_json_and_bad_input(tmp_path: Path) -> None:
    code, out, _ = run_cli("plan", str(REPORT), "--target", "0.3")
    assert code == 0 and "projection, not a bound" in out and "PAC-Bayes: 0.3000 at n =" in out
    code, out, _ = run_cli("plan", str(REPORT), "-f", "json")
    assert code == 0 and json.loads(out)["status"] == "estimated"
    assert run_cli("plan", str(REPORT), "--target", "1.5")[0] == 3
    bad = tmp_path / "x.json"
    bad.write_text("[]")
    assert run_cli("plan", str(bad))[0] == 3
