"""The bundled sample models: the certificate holds on their held-out split."""

from __future__ import annotations

from pathlib import Path

import pytest

import tfbound
from tfbound.measures.binomial import clopper_pearson_lower

ROOT = Path(__file__).resolve().parents[1] / "sample_models"


@pytest.mark.parametrize("name", ["ce_mlp", "mae_vit"])
def test_certified_bound_holds_on_held_out_data(name: str) -> None:
    report = tfbound.estimate(ROOT / name)
    bound = report.get("certified_test_error_bound")
    observed = report.get("observed_test_error")
    test_bound = report.get("test_set_bound")
    assert bound is not None and observed is not None and test_bound is not None
    assert bound.value is not None and observed.value is not None
    errors = observed.details["errors"]
    m_test = observed.details["m_test"]
    # The certificate is at least the observed error and at least its Clopper-Pearson lower limit.
    assert bound.value >= observed.value
    assert bound.value >= clopper_pearson_lower(errors, m_test, 0.001)
    assert test_bound.value is not None and test_bound.value >= observed.value
    assert bound.value == pytest.approx(
        sum(report.get(k).value for k in bound.components)  # type: ignore[union-attr]
    )
    keys = {t.key for t in report.terms}
    assert {"pretrain_empirical_risk", "pretrain_generalization_gap", "rirc", "rirc_term"} <= keys
