"""The estimate stage of ``bound.stochastic_head``: tfbound's stochastic head, certified beside
(never as) the user's head.

:func:`stochastic_head_stage` reads the file named by the configuration, checks its record
against this configuration (split, constants, ``n``, data digest), rebuilds the metric and the
prior from ``S1`` (reusing the PAC-Bayes stage's, which are the same functions of the same
``S1``, when it ran), checks the file's ``posterior.scale`` against that metric, and certifies
the stochastic head on ``S2`` (``tfbound.bounds.pbb_head``). A mismatch is a warning naming the
reason, and no certificate. The returned :class:`CheckedStochasticHead` gives the observed Gibbs
error on the test split.

The file is read (:func:`read_checked`) before the training pass, which scores its mean on
``S2`` beside the prior heads (``tfbound.pipeline.stream``); the certificate
(:func:`stochastic_head_stage`) reads only those per-example scalars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from tfbound.bounds.pbb_head import (
    PbbHeadCertificate,
    PriorGeometry,
    geometry_of,
    gibbs_error_from_scalars,
    observed_stochastic_term,
    pbb_head_certificate,
    stochastic_head_term,
)
from tfbound.errors import InputError, first_line
from tfbound.terms import Term

if TYPE_CHECKING:
    from tfbound.bounds.budget import DeltaBudget
    from tfbound.bounds.pac_bayes import PacBayesPrior
    from tfbound.pipeline.stages import Setup
    from tfbound.stochastic_head import StochasticHeadFile

#: the name of the separate statement (its level: ``bound.delta_stochastic``)
STATEMENT = "stochastic_head"


class _Out(Protocol):
    bounds: list[Term]
    warnings: list[str]


@dataclass(frozen=True, eq=False)
class CheckedStochasticHead:
    """A stochastic head whose record and scale matched this configuration, and its geometry."""

    head: StochasticHeadFile
    geometry: PriorGeometry
    certificate: PbbHeadCertificate

    @property
    def mean_aug(self) -> np.ndarray:
        """``m' = (w, b / c)``."""
        return self.head.mean_aug(self.geometry.bias_const)

    def observed_term(self, scores: np.ndarray, norms: np.ndarray, y_test: np.ndarray) -> Term:
        """``observed_stochastic_head_gibbs_test_error``: its exact Gibbs error on the test split
        from the per-example ``m' . z'_i`` and ``||M^(-1/2) z'_i||`` of the streamed test pass."""
        value = float(np.mean(gibbs_error_from_scalars(scores, norms, y_test)))
        return observed_stochastic_term(
            value, int(np.asarray(y_test).shape[0]), self.head.path.name
        )


def read_checked(cfg: Setup, feature_dim: int, n: int, budget: DeltaBudget, out: _Out) -> (
    StochasticHeadFile | None
):  # fmt: skip
    """The file of ``bound.stochastic_head`` when it reads and its record matches this
    configuration (split, constants, ``n``, data digest); else None, with a warning saying why.
    Read before the training pass, which then scores its mean on ``S2``."""
    from tfbound.headfit import data_digest, read_fit_record
    from tfbound.stochastic_head import read_stochastic_head, record_mismatch

    b = cfg.bound
    path = b.stochastic_head
    if path is None or not budget.has(STATEMENT):
        return None
    try:
        head = read_stochastic_head(path, feature_dim)
    except InputError as exc:
        out.warnings.append(f"no stochastic_head_gibbs_bound: {first_line(exc)}")
        return None
    data = None if cfg.train.path is None else data_digest(cfg.train.path)
    why = record_mismatch(read_fit_record(path), b, n=n, data_sha256=data)
    if why is not None:
        out.warnings.append(
            f"no stochastic_head_gibbs_bound for bound.stochastic_head {path.name}: {why}"
        )
        return None
    return head


def stochastic_head_stage(
    cfg: Setup,
    head: StochasticHeadFile,
    prior: PacBayesPrior,
    s2_scores: np.ndarray,
    s2_norms: np.ndarray,
    y2: np.ndarray,
    budget: DeltaBudget,
    out: _Out,
) -> CheckedStochasticHead | None:
    """Append ``stochastic_head_gibbs_bound`` to ``out.bounds`` (or a warning saying why not).

    ``prior``: the metric and probes the training pass fitted on ``S1``; ``s2_scores``,
    ``s2_norms``: ``m' . z'_i`` and ``||M^(-1/2) z'_i||`` on ``S2`` (``prior.idx2`` order)."""
    from tfbound.stochastic_head import SCALE_RTOL, scale_mismatch

    b = cfg.bound
    name = head.path.name
    geometry = geometry_of(prior.metric, prior.theta_prior, prior.lam_grid, b.bias_const)
    gap = scale_mismatch(head.scale, geometry.raw_scale())
    if not gap <= SCALE_RTOL:
        out.warnings.append(
            f"no stochastic_head_gibbs_bound for bound.stochastic_head {name}: its "
            f"posterior.scale is not diag(1, c) M^(-1/2) of this estimate's S1 metric (relative "
            f"distance {gap:.3g}): it was fitted on other features (fit-head encodes in float32 "
            "on the CPU: run estimate without --dtype bfloat16) or describes another posterior"
        )
        return None
    mean = head.mean_aug(b.bias_const)
    msq, dots = geometry.kl_inputs(mean)
    try:
        cert = pbb_head_certificate(
            s2_scores,
            s2_norms,
            y2,
            mean_norm_sq=msq,
            mean_dot_prior=dots,
            delta_q=budget.per_candidate(STATEMENT),
            lam_grid=geometry.lam_grid,
        )
    except ValueError as exc:  # e.g. a mean so large its norm overflows
        out.warnings.append(
            f"no stochastic_head_gibbs_bound for bound.stochastic_head {name}: {first_line(exc)}"
        )
        return None
    out.bounds.append(
        stochastic_head_term(
            cert,
            head=f"tfbound's stochastic head {name} (sha256 {head.sha256[:12]})",
            n1=int(prior.idx1.shape[0]),
            split_seed=b.split_seed,
            eps=b.metric_eps,
            confidence=budget.confidence(STATEMENT),
            sha256=head.sha256,
        )
    )
    return CheckedStochasticHead(head, geometry, cert)


__all__ = [
    "STATEMENT",
    "CheckedStochasticHead",
    "read_checked",
    "stochastic_head_stage",
]
