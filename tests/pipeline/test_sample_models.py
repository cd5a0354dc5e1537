"""The bundled sample models: every certificate holds on their held-out split."""

from __future__ import annotations

import pytest

import tfbound
from tests.helpers import REPO_ROOT
from tests.tolerances import FLOAT64_EXACT
from tfbound.keys import DETERMINISTIC_CERTIFICATES, HEADLINE_SHARES, SEPARATE_STATEMENTS
from tfbound.measures.binomial import clopper_pearson_lower
from tfbound.report import Report

#: The frozen-encoder certificates (the sample encoders are frozen: no fine-tuned route).
# the frozen-encoder certificates of the samples (their heads were fitted on all of S)
FROZEN = tuple(
    k
    for k in DETERMINISTIC_CERTIFICATES
    if k not in ("finetuned_test_error_bound", "holdout_bound")
)
ROOT = REPO_ROOT / "sample_models"


@pytest.fixture(scope="module", params=["ce_mlp", "mae_vit"])
def report(request: pytest.FixtureRequest) -> Report:
    return tfbound.estimate(ROOT / request.param)


def _value(report: Report, key: str) -> float:
    term = report.get(key)
    assert term is not None and term.value is not None, key
    return term.value


def test_every_deterministic_certificate_holds_on_held_out_data(report: Report) -> None:
    observed = report.get("observed_test_error")
    assert observed is not None and observed.value is not None
    cp_lower = clopper_pearson_lower(observed.details["errors"], observed.details["m_test"], 0.001)
    present = [k for k in DETERMINISTIC_CERTIFICATES if report.get(k) is not None]
    assert set(present) == set(FROZEN)  # both sample configs have a pool
    for key in (*present, "best_certified_test_error_bound"):
        assert _value(report, key) >= observed.value
        assert _value(report, key) >= cp_lower
    assert _value(report, "test_set_bound") >= observed.value
    # The Gibbs certificate bounds the stochastic head, checked against its own test error.
    assert _value(report, "pac_bayes_gibbs_bound") >= _value(report, "observed_gibbs_test_error")


def test_section_2_total_is_the_sum_of_its_certified_terms(report: Report) -> None:
    bound = report.get("certified_test_error_bound")
    assert bound is not None and bound.components
    parts = [report.get(k) for k in bound.components]
    assert all(p is not None and p.status.value == "certified" for p in parts)
    assert _value(report, "certified_test_error_bound") == pytest.approx(
        sum(p.value for p in parts if p is not None and p.value is not None), rel=FLOAT64_EXACT
    )


def test_best_certificate_is_the_minimum_with_the_summed_confidence(report: Report) -> None:
    best = report.get("best_certified_test_error_bound")
    assert best is not None and best.confidence is not None
    assert not best.components  # a minimum, never a sum
    assert best.value == min(_value(report, k) for k in FROZEN)
    d = report.deltas
    headline = [k for k in HEADLINE_SHARES if k in d]
    assert sum(d[k] for k in headline) == pytest.approx(d["delta"])  # delta is the headline's
    assert best.confidence == pytest.approx(1 - d["delta"])
    assert best.details["delta_shares"] == {k: d[k] for k in headline}
    made = {t.key for t in (*report.terms, *report.bounds)}
    statements = {"test_set": "test_set_bound", "pretext_heldout": "pretext_heldout_risk"}
    statements["pretext_certificate"] = "pretext_risk_bound"
    statements["stochastic_head"] = "stochastic_head_gibbs_bound"
    assert set(statements) == set(SEPARATE_STATEMENTS)
    for k, key in statements.items():  # separate statements, each at its own level, if made
        assert (k in d) == (key in made), k
        if k in d:
            assert d[k] == pytest.approx(0.05)


def test_pretext_terms_present(report: Report) -> None:
    keys = {t.key for t in report.terms}
    assert {"pretext_empirical_risk", "pretext_generalization_gap", "rirc", "rirc_term"} <= keys
