"""Held-out checks of a certificate (bound-spec section 2): never inside the certified bound."""

from __future__ import annotations

from tfbound.measures.binomial import clopper_pearson_upper
from tfbound.terms import Status, Term

CP_SOURCE = (
    "Clopper and Pearson (1934): exact one-sided binomial inversion (Langford 2005, test-set bound)"
)


def holdout_term(errors: int, n2: int, delta_h: float, confidence: float, fit: str) -> Term:
    """``holdout_bound``: a head fitted on ``S1`` only, certified on ``S2`` (a test set for it)."""
    upper = clopper_pearson_upper(errors, n2, delta_h)
    return Term(
        key="holdout_bound",
        value=upper,
        status=Status.CERTIFIED,
        quantity="downstream_test_error",
        formula="holdout_bound = CP_upper(errors of the head on S2; n2, delta_h) = "
        f"CP_upper({errors}/{n2}) = {upper:.6g} at delta_h={delta_h:g}: the head was fitted on "
        f"S1 only ({fit}), so S2 is a test set for it (the split of bound-spec 10.1)",
        source=CP_SOURCE,
        confidence=confidence,
        details={"errors": errors, "n2": n2, "delta_h": delta_h},
    )


def heldout_terms(errors: int, m_test: int, delta_test: float) -> list[Term]:
    """``observed_test_error`` and ``test_set_bound`` for one head independent of the test pairs."""
    upper = clopper_pearson_upper(errors, m_test, delta_test)
    return [
        Term(
            key="observed_test_error",
            value=errors / m_test,
            status=Status.DIAGNOSTIC,
            quantity="downstream_test_error",
            formula="(1/m_test) sum_test 1{y f_hat(x) <= 0} (ties count as errors)",
            source="the test split",
            details={"errors": errors, "m_test": m_test},
        ),
        Term(
            key="test_set_bound",
            value=upper,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="max{p : P(Bin(m_test, p) <= errors) >= delta_test}",
            source=CP_SOURCE,
            confidence=1.0 - delta_test,
            details={"errors": errors, "m_test": m_test, "delta_test": delta_test},
        ),
    ]


def tightness_term(certified_bound: float, test_set_bound: float) -> Term:
    return Term(
        key="tightness",
        value=certified_bound / test_set_bound if test_set_bound > 0 else None,
        status=Status.DIAGNOSTIC,
        quantity="ratio",
        formula="certified_test_error_bound / test_set_bound",
        source="how loose the certificate is against the held-out bound",
    )
