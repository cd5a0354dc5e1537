"""Terms of the tighter certificates (bound-spec section 10) and the best certificate (10.5).

Each certificate is a complete, alternative bound on its quantity; none is ever added to another
or to the terms summed into ``certified_test_error_bound``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tfbound.bounds.disagreement import DisagreementResult
from tfbound.bounds.pac_bayes import PacBayesResult
from tfbound.keys import DETERMINISTIC_CERTIFICATES, tightness_key
from tfbound.terms import Status, Term

PAC_BAYES_SOURCE = (
    "Maurer (2004) PAC-Bayes-kl bound with xi(n2) <= 2 sqrt(n2), prior learned on S1 "
    "(Parrado-Hernandez et al. 2012), Gaussian posterior on the ray of the user's head; "
    "bound-spec 10.1-10.2"
)
DISAGREEMENT_SOURCE = (
    "Kaariainen (2005): err(w_hat) <= err(w_1) + P(sign w_hat != sign w_1), each by an exact "
    "Clopper-Pearson limit; bound-spec 10.3"
)


def pac_bayes_terms(res: PacBayesResult, confidence: float) -> list[Term]:
    """The two PAC-Bayes certificates; ``confidence`` is ``1 - delta_pb`` of the configuration
    (``res.delta_pb`` is smaller when the encoder was chosen among J candidates)."""
    common = {
        "n1": res.n1,
        "n2": res.n2,
        "split_seed": res.split_seed,
        "eps": res.eps,
        "lam_grid": list(res.lam_grid),
        "n_beta_grid": len(res.beta_grid),
        "n_tau_grid": len(res.tau_grid),
        "xi_n2": res.xi_n2,
        "delta_pb": res.delta_pb,
    }

    def cell(c: object) -> dict[str, float]:
        keys = ("beta", "tau", "mu", "kl", "empirical_loss", "kl_inv_value", "lam", "cos_prior")
        return {k: float(getattr(c, k)) for k in keys}

    return [
        Term(
            key="pac_bayes_deterministic_bound",
            value=res.deterministic_bound,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula=res.deterministic_formula,
            source=PAC_BAYES_SOURCE,
            confidence=confidence,
            details={**common, **cell(res.deterministic)},
        ),
        Term(
            key="pac_bayes_gibbs_bound",
            value=res.gibbs_bound,
            status=Status.CERTIFIED,
            quantity="gibbs_test_error",
            formula=res.gibbs_formula,
            source=PAC_BAYES_SOURCE,
            confidence=confidence,
            details={**common, **cell(res.gibbs)},
        ),
    ]


def observed_gibbs_term(gibbs_error: float, m_test: int) -> Term:
    return Term(
        key="observed_gibbs_test_error",
        value=gibbs_error,
        status=Status.DIAGNOSTIC,
        quantity="gibbs_test_error",
        formula="mean_test Phi(-mu gamma_i): the exact test error of the stochastic head Q_mu "
        "(compare with pac_bayes_gibbs_bound, never with observed_test_error)",
        source="bound-spec 10.2, on the test split",
        details={"m_test": m_test},
    )


def disagreement_term(res: DisagreementResult, confidence: float) -> Term:
    return Term(
        key="disagreement_bound",
        value=res.bound,
        status=Status.CERTIFIED,
        quantity="downstream_test_error",
        formula=res.formula,
        source=DISAGREEMENT_SOURCE,
        confidence=confidence,
        details={
            "err_prior_upper": res.err_prior_upper,
            "disagreement_upper": res.disagreement_upper,
            "prior_errors": res.prior_errors,
            "n2": res.n2,
            "disagreements": res.disagreements,
            "m_pool": res.m_pool,
            "delta_a": res.delta_a,
            "delta_b": res.delta_b,
        },
    )


def best_certificate(
    candidates: Sequence[Term],
    delta_total: float,
    shares: dict[str, float],
    encoder_candidates: int = 1,
) -> Term:
    """``best_certified_test_error_bound``: the minimum over the deterministic certificates.

    It holds jointly with every certificate computed, with probability at least
    ``1 - delta_total`` (the sum of the shares fixed in the configuration, listed in ``details``;
    each certificate about an encoder chosen among ``J = encoder_candidates`` was computed at
    its share divided by ``J``, a union bound over the candidates).
    """
    pool = [t for t in candidates if t.key in DETERMINISTIC_CERTIFICATES and t.value is not None]
    if not pool:
        raise ValueError("no deterministic certificate to choose from")
    best = min(pool, key=lambda t: (t.value, DETERMINISTIC_CERTIFICATES.index(t.key)))
    assert best.value is not None
    return Term(
        key="best_certified_test_error_bound",
        value=best.value,
        status=Status.CERTIFIED,
        quantity="downstream_test_error",
        formula="min over the deterministic certificates computed: "
        + ", ".join(t.key for t in pool)
        + " (a minimum, never a sum; Gibbs and test-set bounds excluded)",
        source="bound-spec 10.5: union bound over the certificates, shares fixed in advance",
        confidence=1.0 - delta_total,
        details={
            "chosen": best.key,
            "candidates": {t.key: t.value for t in pool},
            "delta": delta_total,
            "delta_shares": shares,
            **(
                {
                    "encoder_candidates": encoder_candidates,
                    "computed_at": {k: v / encoder_candidates for k, v in shares.items()},
                }
                if encoder_candidates > 1
                else {}
            ),
        },
    )


def tightness_terms(certificates: Sequence[Term], test_set_bound: float) -> list[Term]:
    """``tightness_<key>`` = certificate / test_set_bound for each deterministic certificate."""
    out = []
    for t in certificates:
        if t.value is None or t.key == "certified_test_error_bound":
            continue
        if t.key not in DETERMINISTIC_CERTIFICATES and t.key != "best_certified_test_error_bound":
            continue
        out.append(
            Term(
                key=tightness_key(t.key),
                value=t.value / test_set_bound if test_set_bound > 0 else None,
                status=Status.DIAGNOSTIC,
                quantity="ratio",
                formula=f"{t.key} / test_set_bound",
                source="how loose the certificate is against the held-out bound",
            )
        )
    return out
