"""Hold-out plus disagreement on an unlabeled downstream pool (spec 10.3, Kaariainen 2005).

For two heads ``w_hat`` (the user's) and ``w_1`` (the prior head, fitted on ``S1`` and fixed in
advance), pointwise ``1{w_hat errs} <= 1{w_1 errs} + 1{sign(w_hat . z') != sign(w_1 . z')}``, so

    err(w_hat) <= err(w_1) + P(sign(w_hat . z') != sign(w_1 . z')).

- ``err(w_1)``: the Clopper-Pearson upper limit at ``delta_a`` of its errors on ``S2``
  (``w_1`` is independent of ``S2``); an error is ``y w_1 . z' <= 0`` (a tie counts as an error);
- the disagreement: the Clopper-Pearson upper limit at ``delta_b`` on the unlabeled pool (both
  heads are fixed given ``S``); a tie of either head counts as a disagreement;
- ``bound = min(1, sum)``, quantity ``downstream_test_error``, holding with probability
  ``1 - delta_a - delta_b``. It holds for any pair of heads, linear or not (this module evaluates
  linear heads in augmented coordinates).

The pool must be drawn from the downstream input distribution, disjoint from ``S``, from the test
split and from everything the encoder saw, and independent of the user's head, of ``w_1``, of
every configuration constant and of the encoder choice; ``check_pool_disjoint`` checks the
disjointness that can be checked. With a grid of ``J_lambda`` prior heads, or ``J`` encoders
chosen on ``S``, the caller divides ``delta_a`` and ``delta_b`` accordingly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from tfbound.bounds.split import as_float64_matrix, as_head, as_labels, augment_features
from tfbound.errors import DataError
from tfbound.measures.binomial import clopper_pearson_upper


@dataclass(frozen=True)
class DisagreementResult:
    """``bound = min(1, err_prior_upper + disagreement_upper)`` and its counts."""

    bound: float
    err_prior_upper: float  # Clopper-Pearson upper limit of err(w_1) on S2 at delta_a
    disagreement_upper: float  # Clopper-Pearson upper limit of the disagreement at delta_b
    prior_errors: int  # errors of w_1 on S2 (ties counted)
    n2: int
    disagreements: int  # pool points where the signs differ (ties counted)
    m_pool: int
    delta_a: float
    delta_b: float
    bias_const: float
    formula: str
    quantity: str = "downstream_test_error"
    status: str = "certified"

    @property
    def prior_error_rate(self) -> float:
        return self.prior_errors / self.n2

    @property
    def disagreement_rate(self) -> float:
        return self.disagreements / self.m_pool


def disagreement(
    z2: np.ndarray | torch.Tensor,
    y2: np.ndarray | torch.Tensor,
    z_pool: np.ndarray | torch.Tensor,
    theta_hat: np.ndarray | torch.Tensor,
    theta_1: np.ndarray | torch.Tensor,
    *,
    bias_const: float,
    delta_a: float,
    delta_b: float,
) -> DisagreementResult:
    """The hold-out plus disagreement certificate for the user's linear head ``theta_hat``.

    ``z2``, ``y2``: the ``S2`` features and labels in ``{-1, +1}``; ``z_pool``: the unlabeled
    pool's features ``(m_pool, d)``; ``theta_hat`` and ``theta_1`` (the prior head fitted on
    ``S1``): heads ``(theta, b/c)`` in augmented coordinates, ``d+1`` entries each.
    """
    z2m = as_float64_matrix(z2, "z2")
    n2, d = z2m.shape
    y2m = as_labels(y2, n2, "y2")
    pool = as_float64_matrix(z_pool, "z_pool")
    if pool.shape[1] != d:
        raise DataError(f"z_pool has {pool.shape[1]} feature columns, S2 has {d}")
    w_hat = as_head(theta_hat, d + 1, "theta_hat")
    w_1 = as_head(theta_1, d + 1, "theta_1")

    pool_aug = augment_features(pool, bias_const)
    return disagreement_from_scores(
        augment_features(z2m, bias_const) @ w_1,
        y2m,
        pool_aug @ w_hat,
        pool_aug @ w_1,
        delta_a=delta_a,
        delta_b=delta_b,
        bias_const=bias_const,
    )


def disagreement_from_scores(
    prior_scores_s2: np.ndarray,
    y2: np.ndarray | torch.Tensor,
    head_scores_pool: np.ndarray,
    prior_scores_pool: np.ndarray,
    *,
    delta_a: float,
    delta_b: float,
    bias_const: float = 1.0,
    head: str = "w_hat",
) -> DisagreementResult:
    """The same certificate from the two heads' real-valued outputs: the prior head's on ``S2``
    and both heads' on the pool (any heads: the user's may be an MLP; a score of 0 is a tie)."""
    for name, delta in (("delta_a", delta_a), ("delta_b", delta_b)):
        if not 0 < delta < 1:
            raise ValueError(f"{name} must lie in (0, 1), got {delta}")
    p2 = np.asarray(prior_scores_s2, dtype=np.float64).reshape(-1)
    n2 = int(p2.shape[0])
    y2m = as_labels(y2, n2, "y2")
    s_hat = np.sign(np.asarray(head_scores_pool, dtype=np.float64).reshape(-1))
    s_1 = np.sign(np.asarray(prior_scores_pool, dtype=np.float64).reshape(-1))
    if s_hat.shape != s_1.shape or s_hat.size == 0:
        raise DataError("the pool scores of the two heads must be non-empty and of one length")
    prior_errors = int(np.sum(y2m * p2 <= 0))
    disagreements = int(np.sum((s_hat != s_1) | (s_hat == 0) | (s_1 == 0)))
    m_pool = int(s_hat.shape[0])

    err_upper = clopper_pearson_upper(prior_errors, n2, delta_a)
    dis_upper = clopper_pearson_upper(disagreements, m_pool, delta_b)
    bound = min(1.0, err_upper + dis_upper)
    formula = (
        "disagreement_bound = min(1, CP_upper(errors of w_1 on S2; n2, delta_a) "
        f"+ CP_upper(sign disagreements of {head} and w_1 on the pool; m_pool, delta_b)) "
        f"(Kaariainen 2005: err({head}) <= err(w_1) + P(sign {head}(z) != sign w_1.z'); exact "
        "one-sided Clopper-Pearson limits; ties count as errors and as disagreements); "
        f"w_1 = the tool's logistic probe on S1; errors {prior_errors}/{n2} -> {err_upper:.6g} "
        f"at delta_a={delta_a:g}; disagreements {disagreements}/{m_pool} -> {dis_upper:.6g} "
        f"at delta_b={delta_b:g}; holds with probability 1 - delta_a - delta_b"
    )
    return DisagreementResult(
        bound=bound,
        err_prior_upper=err_upper,
        disagreement_upper=dis_upper,
        prior_errors=prior_errors,
        n2=n2,
        disagreements=disagreements,
        m_pool=m_pool,
        delta_a=float(delta_a),
        delta_b=float(delta_b),
        bias_const=float(bias_const),
        formula=formula,
    )


_HASH_CHUNK_VALUES = 1 << 22  # values converted to float64 at a time


def _row_digests(a: np.ndarray | torch.Tensor, name: str) -> tuple[list[bytes], int]:
    """A 16-byte digest of every row (flattened per example, as float64, ``-0.0 -> 0.0``)."""
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if arr.ndim < 1:
        raise DataError(f"{name} must have one row per example, got a scalar")
    flat = arr.reshape(arr.shape[0], -1)
    width = int(flat.shape[1])
    rows = max(1, _HASH_CHUNK_VALUES // max(width, 1))
    digests: list[bytes] = []
    for start in range(0, flat.shape[0], rows):
        chunk = np.ascontiguousarray(flat[start : start + rows], dtype=np.float64) + 0.0
        if np.isnan(chunk).any():
            raise DataError(f"{name} has NaN entries; rows cannot be compared")
        digests.extend(hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in chunk)
    return digests, width


def _row(a: np.ndarray | torch.Tensor, i: int) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return np.asarray(arr[i], dtype=np.float64).reshape(-1)


def check_pool_disjoint(
    pool: np.ndarray | torch.Tensor, *others: np.ndarray | torch.Tensor
) -> None:
    """Raise ``DataError`` if a row of ``pool`` equals a row of any array in ``others``.

    Rows are hashed (BLAKE2b over their float64 bytes, ``-0.0`` read as ``0.0``) and a hash
    match is confirmed by comparing the values, so the check is exact. Arrays of more than two
    dimensions are flattened per example (images: ``(N, C, H, W)``). Arrays whose rows have a
    different width than the pool's raise as well: comparing inputs with features is a mistake.
    """
    pool_keys, width = _row_digests(pool, "pool")
    index: dict[bytes, int] = {}
    for i, key in enumerate(pool_keys):
        index.setdefault(key, i)
    for j, other in enumerate(others):
        keys, other_width = _row_digests(other, f"array {j}")
        if other_width != width:
            raise DataError(
                f"cannot compare the pool (rows of {width} values) with array {j} "
                f"(rows of {other_width} values)"
            )
        shared = [
            (index[k], r)
            for r, k in enumerate(keys)
            if k in index and np.array_equal(_row(pool, index[k]), _row(other, r))
        ]
        if shared:
            i, r = shared[0]
            raise DataError(
                f"the unlabeled pool shares {len(shared)} row(s) with array {j} "
                f"(first: pool row {i} equals its row {r}); the pool must be disjoint from "
                "the labeled, test and RadReg data"
            )
