"""The estimate stage of ``bound.stochastic_head``: tfbound's stochastic head, certified beside
(never as) the user's head.

:func:`stochastic_head_stage` reads the file named by the configuration, checks its record
against this configuration (split, constants, ``n``, data digest), rebuilds the metric and the
prior from ``S1`` (reusing the PAC-Bayes stage's, which are the same functions of the same
``S1``, when it ran), checks the file's ``posterior.scale`` against that metric, and certifies
the stochastic head on ``S2`` (``tfbound.bounds.pbb_head``). A mismatch is a warning naming the
reason, and no certificate. The returned :class:`CheckedStochasticHead` gives the observed Gibbs
error on the test split.

The ``S2`` scalars (``m' . z'_i`` and ``||M^(-1/2) z'_i||``) are computed in one place,
:func:`s2_scalars`, from the in-memory features; a streamed pass replaces that function only.
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
    prior_geometry,
    stochastic_head_term,
)
from tfbound.bounds.split import split_indices
from tfbound.errors import InputError, first_line
from tfbound.terms import Term

if TYPE_CHECKING:
    from tfbound.bounds.budget import DeltaBudget
    from tfbound.bounds.pac_bayes import PacBayesResult
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

    def observed_term(self, z_test: np.ndarray, y_test: np.ndarray) -> Term:
        """``observed_stochastic_head_gibbs_test_error``: its exact Gibbs error on the test
        split."""
        m = self.head.mean_aug(self.geometry.bias_const)
        scores, norms = self.geometry.scalars(z_test, m)
        value = float(np.mean(gibbs_error_from_scalars(scores, norms, y_test)))
        return observed_stochastic_term(
            value, int(np.asarray(y_test).shape[0]), self.head.path.name
        )


def s2_scalars(
    geometry: PriorGeometry, features: np.ndarray, idx2: np.ndarray, mean_aug: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The per-example scalars of ``S2``: ``m' . z'_i`` and ``||M^(-1/2) z'_i||`` (in batches, so
    that no whitened ``n2 x (d+1)`` copy is held at once). The one place the estimate reads the
    ``S2`` features for this certificate."""
    scores, norms = [], []
    for start in range(0, idx2.shape[0], 4096):
        s, r = geometry.scalars(features[idx2[start : start + 4096]], mean_aug)
        scores.append(s)
        norms.append(r)
    return np.concatenate(scores), np.concatenate(norms)


def stochastic_head_stage(
    cfg: Setup,
    features: np.ndarray,
    y: np.ndarray,
    pac: PacBayesResult | None,
    budget: DeltaBudget,
    out: _Out,
) -> CheckedStochasticHead | None:
    """Append ``stochastic_head_gibbs_bound`` to ``out.bounds`` (or a warning saying why not)."""
    from tfbound.headfit import data_digest, read_fit_record
    from tfbound.stochastic_head import (
        SCALE_RTOL,
        read_stochastic_head,
        record_mismatch,
        scale_mismatch,
    )

    b = cfg.bound
    path = b.stochastic_head
    if path is None or not budget.has(STATEMENT):
        return None
    n, d = features.shape
    name = path.name
    try:
        head = read_stochastic_head(path, d)
    except InputError as exc:
        out.warnings.append(f"no stochastic_head_gibbs_bound: {first_line(exc)}")
        return None
    data = None if cfg.train.path is None else data_digest(cfg.train.path)
    why = record_mismatch(read_fit_record(path), b, n=n, data_sha256=data)
    if why is not None:
        out.warnings.append(
            f"no stochastic_head_gibbs_bound for bound.stochastic_head {name}: {why}"
        )
        return None
    # Metric and prior from S1 only: the PAC-Bayes stage's when it ran (the same functions of
    # the same S1 and constants), else fitted here.
    idx1, idx2 = split_indices(n, b.split_seed, b.n1_fraction)
    if pac is not None:
        geometry = geometry_of(pac.metric, pac.theta_prior, pac.lam_grid, b.bias_const)
    else:
        geometry = prior_geometry(
            features[idx1], y[idx1], bias_const=b.bias_const, eps=b.metric_eps, lam=b.prior_lam
        )
    gap = scale_mismatch(head.scale, geometry.raw_scale())
    if not gap <= SCALE_RTOL:
        out.warnings.append(
            f"no stochastic_head_gibbs_bound for bound.stochastic_head {name}: its "
            f"posterior.scale is not diag(1, c) M^(-1/2) of this estimate's S1 metric (relative "
            f"distance {gap:.3g}): it describes another posterior"
        )
        return None
    mean = head.mean_aug(b.bias_const)
    scores, norms = s2_scalars(geometry, features, idx2, mean)
    msq, dots = geometry.kl_inputs(mean)
    delta_q = budget.per_candidate(STATEMENT)
    cert = pbb_head_certificate(
        scores,
        norms,
        y[idx2],
        mean_norm_sq=msq,
        mean_dot_prior=dots,
        delta_q=delta_q,
        lam_grid=geometry.lam_grid,
    )
    out.bounds.append(
        stochastic_head_term(
            cert,
            head=f"tfbound's stochastic head {name} (sha256 {head.sha256[:12]})",
            n1=int(idx1.shape[0]),
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
    "s2_scalars",
    "stochastic_head_stage",
]
