"""Terms of ``tfbound transfer`` (bound-spec 6.2): the (C, beta) fit over the family and the
configured encoder's excess risks, each an estimate over the explored family only."""

from __future__ import annotations

from tfbound.measures.excess import ExcessEstimate
from tfbound.measures.transfer_fit import TransferFit
from tfbound.terms import Status, Term

FIT_SOURCE = (
    "bound-spec 6.2: errors-in-variables log-log fit, bootstrap by run, envelope "
    "C(beta) = max_j E_T/E_U^beta at a beta fixed in advance"
)
EXCESS_SOURCE = "bound-spec 6.2: paired per-example differences against the reference member"


def transfer_fit_terms(fit: TransferFit, level: float) -> list[Term]:
    """``transfer_beta``, ``transfer_c`` (central fit) and ``transfer_c_envelope`` (estimated)."""
    details = {
        "identifiable": fit.identifiable,
        "e_u_span_decades": fit.e_u_span_decades,
        "n_used": fit.n_used,
        "bootstrap_unit": fit.bootstrap_unit,
    }
    return [
        Term(
            key="transfer_beta",
            value=fit.beta,
            status=Status.ESTIMATED,
            quantity="transfer_exponent",
            formula="slope of the errors-in-variables fit log E_T = log C + beta log E_U",
            source=FIT_SOURCE,
            interval=fit.beta_interval,
            confidence=level if fit.beta_interval is not None else None,
            details=details,
        ),
        Term(
            key="transfer_c",
            value=fit.c,
            status=Status.ESTIMATED,
            quantity="transfer_constant",
            formula="exp(intercept) of the central fit (half the family lies above it: "
            "not for the decomposition)",
            source=FIT_SOURCE,
            interval=fit.c_interval,
            confidence=level if fit.c_interval is not None else None,
            details=details,
        ),
        Term(
            key="transfer_c_envelope",
            value=fit.c_envelope,
            status=Status.ESTIMATED,
            quantity="transfer_constant",
            formula=f"C(beta) = max_j E_T_j / E_U_j^beta at beta = {fit.beta_fixed:g} fixed in "
            "advance, over the members used (over the explored family only: a lower estimate "
            "of the constant in the definition)",
            source=FIT_SOURCE,
            details={
                "beta": fit.beta_fixed,
                "c_envelope_all_positive": fit.c_envelope_all_positive,
                "n_left_out_above_envelope": fit.n_left_out_above_envelope,
            },
        ),
    ]


def transfer_base_terms(
    e_u: ExcessEstimate, e_t: ExcessEstimate, fit: TransferFit, level: float, is_ref: bool
) -> list[Term]:
    """The configured encoder's ``E_U``, measured ``E_T`` and ``C E_U^beta`` (estimated)."""
    note = "the configured encoder is the reference: 0 by construction, relative to the "
    note += "explored family only" if is_ref else "explored family only"
    terms = [
        Term(
            key="transfer_e_u_base",
            value=e_u.value,
            status=Status.ESTIMATED,
            quantity="pretext_excess_risk",
            formula="E_U(h_hat): refit pretext risk of the configured encoder minus the "
            "reference's, paired on the pretrain_val estimate part",
            source=EXCESS_SOURCE,
            interval=e_u.interval,
            stderr=e_u.stderr,
            confidence=level,
            details={"note": note},
        ),
        Term(
            key="transfer_e_t_base",
            value=e_t.value,
            status=Status.ESTIMATED,
            quantity="downstream_excess_risk",
            formula="E_T(h_hat) measured directly: probe ramp risk of the configured encoder "
            "minus the reference's, paired on the held-out split (the check of the "
            "extrapolation)",
            source=EXCESS_SOURCE,
            interval=e_t.interval,
            stderr=e_t.stderr,
            confidence=level,
            details={"note": note},
        ),
    ]
    if fit.c_envelope is not None:
        b = fit.beta_fixed
        lo, hi = (max(0.0, v) for v in e_u.interval)
        terms.append(
            Term(
                key="transfer_term_base",
                value=fit.c_envelope * max(0.0, e_u.value) ** b,
                status=Status.ESTIMATED,
                quantity="downstream_excess_risk",
                formula=f"C({b:g}) * max(0, E_U(h_hat))^{b:g} (envelope C; compare with "
                "transfer_e_t_base)",
                source=FIT_SOURCE,
                interval=(fit.c_envelope * lo**b, fit.c_envelope * hi**b),
                confidence=level,
            )
        )
    return terms


def tv_upper_term(tv_upper: float) -> Term:
    """The user's upper bound on TV(U, T) (assumed)."""
    return Term(
        key="tv_upper_assumed",
        value=tv_upper,
        status=Status.ASSUMED,
        quantity="tv_distance_upper_bound",
        formula="an upper bound on TV(U, T) supplied by the user (not measurable from samples)",
        source="transfer.heterogeneity.tv_upper",
    )


__all__ = [
    "EXCESS_SOURCE",
    "FIT_SOURCE",
    "transfer_base_terms",
    "transfer_fit_terms",
    "tv_upper_term",
]
