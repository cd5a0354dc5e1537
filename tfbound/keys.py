"""The report's key catalogue: every term key, its role, and the names of the delta shares.

The keys are the public contract of a CI tool (gates, baselines and dashboards read them), so each
is spelled once, here; renderers, gates and the headline read :class:`TermKey` and a term's
:class:`Role`, never a key prefix. A ``Term`` whose key is not catalogued is refused.

Conventions (docs/design.md): snake case; one prefix per stage (``pretext_`` for pre-training,
``finetuned_`` for the fine-tuned route, ``decomposition_``, ``transfer_``); a complete certificate
ends in ``_bound``; a statistic says what it is (``_sq``, ``_max``, ``_lower_bound``).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a term is for, which decides where a renderer shows it."""

    HEADLINE = "headline"  # best_certified_test_error_bound
    CERTIFICATE = "certificate"  # a complete bound on the user's head (or its Gibbs version)
    COMPONENT = "component"  # a summand of a certificate
    HELDOUT = "heldout"  # the observed test error and the test-set bound
    PRETEXT = "pretext"  # the pre-training task's loss, gap and certificate
    CAPACITY = "capacity"  # complexity numbers, norms, proxies
    DECOMPOSITION = "decomposition"  # the excess-risk decomposition (another quantity)
    TRANSFER = "transfer"  # the (C, beta) fit of tfbound transfer
    HETEROGENEITY = "heterogeneity"  # distances between pre-training and downstream data
    DIAGNOSTIC = "diagnostic"  # explanations: tightness, distances, demoted certificates


class TermKey(StrEnum):
    """Every key a report can hold."""

    BEST = "best_certified_test_error_bound"
    CERTIFIED = "certified_test_error_bound"
    PAC_BAYES_DETERMINISTIC = "pac_bayes_deterministic_bound"
    PAC_BAYES_GIBBS = "pac_bayes_gibbs_bound"
    DISAGREEMENT = "disagreement_bound"
    PAC_BAYES_POOL = "pac_bayes_pool_bound"
    HOLDOUT = "holdout_bound"
    #: tfbound's stochastic head (fit-head --stochastic): another predictor, never the headline
    STOCHASTIC_HEAD_GIBBS = "stochastic_head_gibbs_bound"
    FINETUNED = "finetuned_test_error_bound"
    # section 2 components
    DOWNSTREAM_EMPIRICAL_RISK = "downstream_empirical_risk"
    RIRC_TERM = "rirc_term"
    CONFIDENCE_FINETUNE = "confidence_finetune"
    # the fine-tuned route's components
    FINETUNED_EMPIRICAL_RISK = "finetuned_empirical_risk"
    FINETUNED_COMPLEXITY_TERM = "finetuned_complexity_term"
    FINETUNED_CONFIDENCE = "finetuned_confidence"
    FINETUNED_COMPLEXITY = "finetuned_complexity"
    # held out
    OBSERVED_TEST_ERROR = "observed_test_error"
    TEST_SET_BOUND = "test_set_bound"
    OBSERVED_GIBBS_TEST_ERROR = "observed_gibbs_test_error"
    OBSERVED_STOCHASTIC_HEAD_GIBBS = "observed_stochastic_head_gibbs_test_error"
    # pre-training
    PRETEXT_EMPIRICAL_RISK = "pretext_empirical_risk"
    PRETEXT_HELDOUT_RISK = "pretext_heldout_risk"
    PRETEXT_GENERALIZATION_GAP = "pretext_generalization_gap"
    PRETEXT_RADEMACHER_VEC = "pretext_rademacher_vec"
    PRETEXT_COMPLEXITY_TERM = "pretext_complexity_term"
    PRETEXT_CONFIDENCE = "pretext_confidence"
    PRETEXT_RISK_BOUND = "pretext_risk_bound"
    # capacity
    RIRC = "rirc"
    RIRC_HEAD = "rirc_head"
    RIRC_MLP_HEAD = "rirc_mlp_head"
    CAPACITY_RATIO = "capacity_ratio"
    GRS_COMPLEXITY = "grs_complexity"
    GRS_COMPLEXITY_HEAD = "grs_complexity_head"
    SPECTRAL_COMPLEXITY = "spectral_complexity"
    SPECTRAL_COMPLEXITY_REFERENCE = "spectral_complexity_reference"
    SPECTRAL_CAPACITY_RATIO = "spectral_capacity_ratio"
    FEATURE_NORM = "feature_norm"
    ATTENTION_QK_SPECTRAL_MAX = "attention_qk_spectral_max"
    ATTENTION_VO_SPECTRAL_MAX = "attention_vo_spectral_max"
    TRANSFORMER_CAPACITY_EGKZ = "transformer_capacity_egkz"
    TRANSFORMER_CAPACITY_TT = "transformer_capacity_tt"
    # diagnostics
    ENCODER_DISTANCE_TO_REFERENCE = "encoder_distance_to_reference"
    TIGHTNESS = "tightness"
    # the decomposition
    DECOMPOSITION_TRANSFER_TERM = "decomposition_transfer_term"
    DECOMPOSITION_RIRC_TERM = "decomposition_rirc_term"
    DECOMPOSITION_CONFIDENCE = "decomposition_confidence"
    DECOMPOSITION_TV_ASSUMED = "decomposition_tv_assumed"
    DECOMPOSITION_TOTAL = "decomposition_total"
    DECOMPOSITION_TRANSFER_CHECK = "decomposition_transfer_check"
    # tfbound transfer
    TRANSFER_BETA = "transfer_beta"
    TRANSFER_C = "transfer_c"
    TRANSFER_C_ENVELOPE = "transfer_c_envelope"
    TRANSFER_E_U_BASE = "transfer_e_u_base"
    TRANSFER_E_T_BASE = "transfer_e_t_base"
    TRANSFER_TERM_BASE = "transfer_term_base"
    TV_UPPER_ASSUMED = "tv_upper_assumed"
    # heterogeneity
    TV_LOWER_BOUND_INPUTS = "tv_lower_bound_inputs"
    TV_LOWER_BOUND_FEATURES = "tv_lower_bound_features"
    MMD2_UNBIASED_INPUTS = "mmd2_unbiased_inputs"
    MMD2_UNBIASED_FEATURES = "mmd2_unbiased_features"
    TRANSFORMATION_GAP_PRETRAIN = "transformation_gap_pretrain"
    TRANSFORMATION_GAP_DOWNSTREAM = "transformation_gap_downstream"


#: The deterministic certificates of the user's head that compete for the headline (spec 10.5).
DETERMINISTIC_CERTIFICATES: tuple[TermKey, ...] = (
    TermKey.CERTIFIED,
    TermKey.PAC_BAYES_DETERMINISTIC,
    TermKey.DISAGREEMENT,
    TermKey.PAC_BAYES_POOL,
    TermKey.HOLDOUT,
    TermKey.FINETUNED,
)

#: The shares of ``bound.delta`` (the headline's failure probability) that the certificates on
#: the user's head spend, by route (``tfbound.bounds.budget``).
HEADLINE_SHARES: tuple[str, ...] = (
    "finetune",  # delta_1, section 2 (and the fine-tuned route)
    "monte_carlo",  # delta_mc, section 2's Monte Carlo RIRC
    "pac_bayes",  # delta_pb, spec 10.2
    "pac_bayes_pool",  # delta_c, the pool's disagreement in pac_bayes_pool_bound
    "disagreement_prior",  # delta_a, spec 10.3
    "disagreement_pool",  # delta_b, spec 10.3
    "holdout",  # delta_h, a head fitted on S1 only certified on S2 (tfbound fit-head --holdout)
)
#: The statements beside the headline, each with its own failure probability: the test-set
#: bound (``bound.delta_test``), the pretext interval and certificate (``bound.delta_pretext``).
#: The stochastic head's certificate (``bound.delta_stochastic``) is one too: it is about another
#: predictor than the user's head.
SEPARATE_STATEMENTS: tuple[str, ...] = (
    "test_set",
    "pretext_heldout",
    "pretext_certificate",
    "stochastic_head",
)

#: ``tightness_<name>`` = certificate / test_set_bound, one per certificate.
TIGHTNESS_PREFIX = "tightness_"

_ROLES: dict[TermKey, Role] = {
    TermKey.BEST: Role.HEADLINE,
    **dict.fromkeys(
        (*DETERMINISTIC_CERTIFICATES, TermKey.PAC_BAYES_GIBBS, TermKey.STOCHASTIC_HEAD_GIBBS),
        Role.CERTIFICATE,
    ),
    **dict.fromkeys(
        (
            TermKey.DOWNSTREAM_EMPIRICAL_RISK,
            TermKey.RIRC_TERM,
            TermKey.CONFIDENCE_FINETUNE,
            TermKey.FINETUNED_EMPIRICAL_RISK,
            TermKey.FINETUNED_COMPLEXITY_TERM,
            TermKey.FINETUNED_CONFIDENCE,
        ),
        Role.COMPONENT,
    ),
    **dict.fromkeys(
        (
            TermKey.OBSERVED_TEST_ERROR,
            TermKey.TEST_SET_BOUND,
            TermKey.OBSERVED_GIBBS_TEST_ERROR,
            TermKey.OBSERVED_STOCHASTIC_HEAD_GIBBS,
        ),
        Role.HELDOUT,
    ),
    **{k: Role.PRETEXT for k in TermKey if k.value.startswith("pretext_")},
    **{k: Role.DECOMPOSITION for k in TermKey if k.value.startswith("decomposition_")},
    **{k: Role.TRANSFER for k in TermKey if k.value.startswith("transfer_")},
    TermKey.TV_UPPER_ASSUMED: Role.TRANSFER,
    **dict.fromkeys(
        (
            TermKey.TV_LOWER_BOUND_INPUTS,
            TermKey.TV_LOWER_BOUND_FEATURES,
            TermKey.MMD2_UNBIASED_INPUTS,
            TermKey.MMD2_UNBIASED_FEATURES,
            TermKey.TRANSFORMATION_GAP_PRETRAIN,
            TermKey.TRANSFORMATION_GAP_DOWNSTREAM,
        ),
        Role.HETEROGENEITY,
    ),
    TermKey.ENCODER_DISTANCE_TO_REFERENCE: Role.DIAGNOSTIC,
    TermKey.TIGHTNESS: Role.DIAGNOSTIC,
}


def role_of(key: str) -> Role:
    """The role of a catalogued key (``tightness_<certificate>`` included); a ``KeyError`` for
    any other key."""
    if key.startswith(TIGHTNESS_PREFIX):
        return Role.DIAGNOSTIC
    member = TermKey(key)  # ValueError for an unknown key
    return _ROLES.get(member, Role.CAPACITY)


def tightness_key(certificate: str) -> str:
    """The key of a certificate's tightness term: ``tightness`` for the section-2 bound,
    ``tightness_<name>`` for the others (``_bound`` and ``_test_error`` dropped)."""
    if certificate == TermKey.CERTIFIED:
        return TermKey.TIGHTNESS.value
    return TIGHTNESS_PREFIX + certificate.removesuffix("_bound").removesuffix("_test_error")


__all__ = [
    "DETERMINISTIC_CERTIFICATES",
    "HEADLINE_SHARES",
    "SEPARATE_STATEMENTS",
    "TIGHTNESS_PREFIX",
    "Role",
    "TermKey",
    "role_of",
    "tightness_key",
]
