"""The excess-risk decomposition in the paper's form (bound-spec 6.2), beside the certified bound.

Under (C, beta)-transferability (``E_T(h) <= C E_U(h)^beta`` for every ``h`` in the class), for a
head that is an empirical risk minimiser of the ramp loss ``phi_1`` (``B_l = 1``, ``G_l = 1``) over
the ball ``||(theta, b/c)|| <= rho`` with ``rho`` fixed in advance, with probability
``1 - delta - delta_mc``::

    R_T(f_hat o h_hat) - inf_f R_T(f o h*)
        <= C * E_U(h_hat)^beta                 decomposition_transfer_term
         + 2 G_l Rhat_S                        decomposition_rirc_term
         + 4 B_l sqrt(log(4/delta) / (2n))     decomposition_confidence
        (+ eps_opt, the head's optimisation error as an ERM: not included)

It bounds the *excess surrogate risk* (quantity ``downstream_excess_risk``), a different quantity
from the certified test-error bound: never a sharper or looser version of it. ``C`` is the
envelope ``C(beta) = max_j E_T_j / E_U_j^beta`` of a transfer report at a ``beta`` fixed in
advance (never the central fit), or a user's value (status ``assumed``). No heterogeneity term
arises under this definition; a TV term appears only as a user-supplied upper bound (``assumed``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tfbound.terms import Status, Term

DECOMPOSITION_SOURCE = (
    "bound-spec 6.2 (our reconstruction of the paper's decomposition, not verified against its "
    "text): symmetrisation + Talagrand contraction + McDiarmid on the ERM over a fixed ball"
)
QUANTITY = "downstream_excess_risk"
LEFT_OUT = "excess-risk decomposition (bound-spec 6.2) left out: "


@dataclass(frozen=True)
class TransferInput:
    """``C`` and ``beta`` for the decomposition, ``E_U(h_hat)``, and where each comes from.

    Build it with ``tfbound.transfer.inputs`` (from a transfer report, or assumed values).
    """

    beta: float
    #: An explicit ``C`` (status ``assumed``); None: the envelope at ``beta`` over ``members``.
    c: float | None
    source: str
    beta_from: str  # "report" | "user"
    #: ``(E_U, E_T)`` of the members the report's fit used.
    members: tuple[tuple[float, float], ...] = ()
    e_u_base: float | None = None
    e_u_base_interval: tuple[float, float] | None = None
    e_t_base: float | None = None
    e_t_base_interval: tuple[float, float] | None = None
    probe_radius: float | None = None
    bias_const: float | None = None
    encoder_sha256: str | None = None
    tv_upper: float | None = None

    @property
    def assumed(self) -> bool:
        """C from the user, or beta from the user without a report."""
        return self.c is not None or (self.beta_from == "user" and not self.members)


@dataclass(frozen=True)
class DecompositionInputs:
    """What the decomposition reads of the estimate, as typed values.

    ``u_sigma``: the certified upper value of ``E||sum sigma_i z'_i||`` (None when the head has no
    certified RIRC); ``rirc_factor`` 1 for a linear head, 2 for a ReLU head; ``delta_1`` and
    ``delta_mc`` the shares the estimate's section-2 statement used (already divided by J);
    ``head_norm`` the head's radius ``r_hat``; ``pretrain_heldout_upper`` the upper end of the
    held-out pretext risk interval (None without ``pretrain_val``); ``encoder_sha256`` the hash of
    the encoder's weights (None when not computed).
    """

    n: int
    u_sigma: float | None
    rirc_factor: float
    delta_1: float
    delta_mc: float
    head_norm: float | None
    pretrain_heldout_upper: float | None
    bias_const: float | None = None
    encoder_sha256: str | None = None


def decomposition_terms(
    inputs: DecompositionInputs, transfer: TransferInput | None
) -> tuple[list[Term], list[str]]:
    """The decomposition's terms (quantity ``downstream_excess_risk``) and warnings.

    Without a transfer report, the ``E_U`` bound is ``inputs.pretrain_heldout_upper`` (the best
    pair's risk is >= 0). Returns ``([], [reason])`` when the decomposition is left out. The terms
    go to the report's ``terms`` (not ``bounds``: the total is an estimate, not a certificate).
    """
    n = inputs.n
    bias_const = inputs.bias_const
    if transfer is None:
        return [], [
            LEFT_OUT + "no C and beta (a transfer report with --transfer, or assumed values "
            "with --transfer-c and --transfer-beta)"
        ]
    if inputs.u_sigma is None:
        return [], [LEFT_OUT + "no certified RIRC for this head (bound-spec section 2)"]
    warnings: list[str] = []
    if (
        transfer.encoder_sha256 is not None
        and inputs.encoder_sha256 is not None
        and inputs.encoder_sha256 != transfer.encoder_sha256
    ):
        return [], [
            LEFT_OUT + f"the transfer report ({transfer.source}) was made for another "
            "encoder (its weights' sha256 differs)"
        ]
    if (
        bias_const is not None
        and transfer.bias_const is not None
        and not math.isclose(bias_const, transfer.bias_const)
    ):
        return [], [
            LEFT_OUT + f"the transfer report uses bias constant c = {transfer.bias_const:g}, "
            f"this estimate c = {bias_const:g}"
        ]
    factor = inputs.rirc_factor
    u_sigma = inputs.u_sigma
    delta_1 = inputs.delta_1
    delta_mc: float | None = inputs.delta_mc
    head_norm = inputs.head_norm
    if transfer.probe_radius is not None:
        rho, rho_from = (
            transfer.probe_radius,
            f"the transfer report's probe radius ({transfer.source})",
        )
    elif head_norm is not None:
        rho, rho_from = (
            float(head_norm),
            "the head's radius r_hat (fitted on S: not fixed in advance)",
        )
    else:
        return [], [LEFT_OUT + "no radius: neither a transfer report nor a head norm"]

    # E_U(h_hat)
    e_u_interval: tuple[float, float]
    if transfer.e_u_base is not None and transfer.e_u_base_interval is not None:
        e_u, e_u_interval = transfer.e_u_base, transfer.e_u_base_interval
        e_u_from = f"E_U(h_hat) of the transfer report's base member ({transfer.source})"
        e_u_status = Status.ESTIMATED
    else:
        if inputs.pretrain_heldout_upper is None:
            return [], [
                LEFT_OUT + "no E_U(h_hat): neither a transfer report with a base member nor a "
                "held-out pretext risk (pretrain_val)"
            ]
        e_u = inputs.pretrain_heldout_upper
        e_u_interval = (e_u, e_u)
        e_u_from = (
            "upper end of pretext_heldout_risk: E_U(h_hat) <= L_U(g_hat o h_hat) - 0 (the best "
            "pair's risk is >= 0), at 1 - delta_val"
        )
        e_u_status = Status.ESTIMATED

    beta = transfer.beta
    c_status = Status.ASSUMED if transfer.assumed else Status.ESTIMATED
    envelope = transfer.c if transfer.c is not None else _envelope(transfer.members, beta)
    if transfer.c is not None:
        c_from = "assumed (--transfer-c)"
    else:
        if envelope is None:
            return [], [
                LEFT_OUT + f"the transfer report ({transfer.source}) has no member above the "
                "noise floor, so no envelope C(beta)"
            ]
        c_from = (
            f"envelope C({beta:g}) = max_j E_T/E_U^beta over the {len(transfer.members)} members "
            f"of the report's fit (over the explored family only), beta "
            f"{'fixed in the report' if transfer.beta_from == 'report' else 'given by the user'}"
        )

    assert envelope is not None
    c_val: float = envelope
    lo, hi = (max(0.0, v) for v in e_u_interval)
    transfer_value = c_val * max(0.0, e_u) ** beta
    rirc_value = 2.0 * factor * rho * u_sigma / n
    confidence = 4.0 * math.sqrt(math.log(4.0 / delta_1) / (2.0 * n))
    common = {"rho": rho, "rho_from": rho_from, "n": n}
    out = [
        Term(
            key="decomposition_transfer_term",
            value=transfer_value,
            status=Status.ASSUMED if c_status is Status.ASSUMED else e_u_status,
            quantity=QUANTITY,
            formula=f"C * max(0, E_U(h_hat))^beta, C = {c_val:.4g}, beta = {beta:g}",
            source=DECOMPOSITION_SOURCE,
            interval=(c_val * lo**beta, c_val * hi**beta),
            details={
                "c": c_val,
                "c_from": c_from,
                "beta": beta,
                "e_u": e_u,
                "e_u_interval": list(e_u_interval),
                "e_u_from": e_u_from,
            },
        ),
        Term(
            key="decomposition_rirc_term",
            value=rirc_value,
            # spec 6.2: the whole decomposition has status estimated (C, beta, E_U are
            # estimates), although this part alone is a certified value
            status=Status.ESTIMATED,
            quantity=QUANTITY,
            formula=f"2 G_l Rhat_S <= 2 * {factor:g} * rho * U_sigma / n (ramp phi_1, G_l = 1, "
            "ball of radius rho)",
            source="bound-spec sections 3 and 6.2 (U_sigma: the estimate's certified value)",
            confidence=None if delta_mc is None else 1.0 - delta_mc,
            details={**common, "u_sigma": u_sigma, "rirc_factor": factor},
        ),
        Term(
            key="decomposition_confidence",
            value=confidence,
            status=Status.ESTIMATED,  # part of the decomposition (spec 6.2), see above
            quantity=QUANTITY,
            formula="4 B_l sqrt(log(4/delta_1) / (2n)), B_l = 1",
            source=DECOMPOSITION_SOURCE,
            details={"delta_1": delta_1, "n": n},
        ),
    ]
    if transfer.tv_upper is not None:
        out.append(
            Term(
                key="decomposition_tv_assumed",
                value=transfer.tv_upper,
                status=Status.ASSUMED,
                quantity=QUANTITY,
                formula="B_l * TV(U, T), TV an upper bound supplied by the user (no such term "
                "is needed under the definition of (C, beta)-transferability; shown for the "
                "paper's four-factor form; measured TV values are lower bounds and never used)",
                source="transfer.heterogeneity.tv_upper",
            )
        )
    components = tuple(t.key for t in out)
    total_status = (
        Status.ASSUMED if any(t.status is Status.ASSUMED for t in out) else Status.ESTIMATED
    )
    fixed = sum(t.value or 0.0 for t in out[1:])
    total = transfer_value + fixed
    iv = out[0].interval
    assert iv is not None
    out.append(
        Term(
            key="decomposition_total",
            value=total,
            status=total_status,
            quantity=QUANTITY,
            formula="sum of the decomposition terms (+ eps_opt, the head's optimisation error "
            "as an ERM over the ball: not included); bounds R_T(f_hat o h_hat) - "
            "inf_f R_T(f o h*) for the ramp loss, a different quantity from "
            "certified_test_error_bound",
            source=DECOMPOSITION_SOURCE,
            interval=(iv[0] + fixed, iv[1] + fixed),
            components=components,
            details={
                "holds_with_probability_given_C_beta_E_U": None
                if delta_mc is None
                else 1.0 - delta_1 - delta_mc,
                "note": "estimated over the explored family only; the radius must be fixed in "
                "advance for the statement to hold",
                "transfer_source": transfer.source,
                "vacuous": total >= 1.0,
            },
        )
    )
    if transfer.e_t_base is not None and transfer.e_t_base_interval is not None:
        out.append(
            Term(
                key="decomposition_transfer_check",
                value=transfer.e_t_base,
                status=Status.DIAGNOSTIC,
                quantity=QUANTITY,
                formula="E_T(h_hat) measured directly by a probe (the check of C * E_U^beta)",
                source=f"transfer report {transfer.source}",
                interval=transfer.e_t_base_interval,
            )
        )
    if transfer.probe_radius is None and transfer.members:
        warnings.append("the transfer report gives no probe radius; the head's radius is used")
    return out, warnings


def _envelope(members: Sequence[tuple[float, float]], beta: float) -> float | None:
    ratios = [et / eu**beta for eu, et in members if eu > 0 and et > 0]
    return max(ratios) if ratios else None


__all__ = ["DecompositionInputs", "TransferInput", "decomposition_terms"]
