"""The streamed passes of ``estimate``: one pass per split, nothing of size ``n x d`` kept.

Each pass encodes its rows batch by batch and keeps per-example scalars (the head's outputs,
normalised margins, projections) and fixed-size statistics:

- the Monte Carlo RIRC sums ``sum_i sigma_k(i) z'_i`` (``K x (d+1)``), their signs drawn by
  example index from a counter-based generator (``tfbound.measures.rirc.counter_bits``), so the
  order of the rows, the batch size and a split across processes leave them unchanged;
- for the prior of spec 10.2, which depends on ``S1`` only: the rows of ``S1`` the probes are
  fitted on (all of ``S1`` when they fit in :data:`PRIOR_SAMPLE_BYTES`, else a seeded subset of
  them fixed by the configuration) and, for a larger ``S1``, the second moment ``C1`` of all of
  it. The training split is read ``S1`` first, then ``S2``: the quantities on ``S2`` need the
  prior.

A :class:`Shard` splits every pass across the processes of ``torchrun`` (every ``world``-th row
of each part); after each pass the per-example arrays (zero outside a process's rows) and the
statistics are summed across processes with ``torch.distributed``, so every process holds the
statistics of the whole split, and the certificates that follow are the same on every process.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tfbound.bounds.pac_bayes import (
    PacBayesPrior,
    PacBayesResult,
    fit_pac_bayes_prior,
    lam_grid_of,
)
from tfbound.bounds.split import split_indices
from tfbound.errors import DataError
from tfbound.features import ProgressFn, _encode_batch
from tfbound.measures.gaussian import Metric, margins_and_norms
from tfbound.measures.rirc import RircSums, augment

#: The most bytes of float64 ``S1`` features kept for the prior probes (but at least
#: :data:`PRIOR_SAMPLE_MIN_ROWS` rows); a larger ``S1`` gives the probes a seeded subset of its
#: rows (the metric still sums all of them).
PRIOR_SAMPLE_BYTES = 16 << 20
PRIOR_SAMPLE_MIN_ROWS = 4096

_PROBE_SUBSET_SEED = 0x5EED_5101  # mixed with split_seed: the subset is a configuration constant


@dataclass(frozen=True)
class Shard:
    """This process's part of every pass: rows ``rank, rank + world, ...`` of each part."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        """The shard of a ``torchrun`` process, else the whole split.

        Only a process that ``torchrun`` started (``TORCHELASTIC_RUN_ID`` set) is sharded, so a
        ``WORLD_SIZE`` left in the environment by a scheduler changes nothing; under torchrun,
        ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` must make sense
        (``UsageError`` otherwise)."""
        if not os.environ.get("TORCHELASTIC_RUN_ID"):
            return cls()
        from tfbound.errors import UsageError

        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
        except ValueError:
            raise UsageError("torchrun's WORLD_SIZE and RANK must be integers") from None
        if world < 1 or not 0 <= rank < world:
            raise UsageError("torchrun's RANK must lie in [0, WORLD_SIZE), WORLD_SIZE >= 1")
        if world > 1 and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
            raise UsageError("torchrun's MASTER_ADDR and MASTER_PORT are not set")
        return cls(rank, world) if world > 1 else cls()

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def part(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.world == 1 else rows[self.rank :: self.world]

    def sum_(self, *arrays: np.ndarray | torch.Tensor | None) -> None:
        """Sum each array in place across the processes (nothing to do for one process)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for a in arrays:
            if a is not None:
                dist.all_reduce(torch.as_tensor(a) if isinstance(a, np.ndarray) else a)

    def max_(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t[0])

    def sum_scalars(self, *values: float) -> tuple[float, ...]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        self.sum_(t)
        return tuple(float(v) for v in t)


LOCAL = Shard()


def take_rows(x: Any, rows: np.ndarray) -> np.ndarray:
    """The inputs ``rows`` (sorted indices) of a split as one float32 batch: token ids padded to
    the batch's longest text, images decoded, dataset items fetched, array rows read."""
    take = getattr(x, "rows", None)
    if callable(take) and getattr(x, "is_text", False):
        return np.asarray(take(rows))
    if hasattr(x, "dataset") and hasattr(x, "row"):  # DatasetInputs of the in-memory route
        return np.stack([x.row(int(i)) for i in rows])
    subset = getattr(x, "subset", None)
    if callable(subset):
        part = subset(rows)
        return np.asarray(part[0 : len(rows)], dtype=np.float32)
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:  # contiguous: a slice (memory maps)
        return np.asarray(x[int(rows[0]) : int(rows[-1]) + 1], dtype=np.float32)
    return np.asarray(x[rows], dtype=np.float32)


def row_batches(x: Any, rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """``rows`` in batches of at most ``batch_size``; texts in batches of similar length
    (``tfbound.io.text.TextInputs.batches``), each batch's indices sorted."""
    text_batches = getattr(x, "batches", None)
    if getattr(x, "is_text", False) and callable(text_batches):
        for index in text_batches(rows, batch_size):
            yield np.sort(index)
        return
    for start in range(0, rows.shape[0], batch_size):
        yield rows[start : start + batch_size]


@dataclass(frozen=True)
class Encoded:
    """One batch of a pass: the example indices, float64 features ``(b, d)`` and the head's
    float64 outputs ``(b,)``."""

    rows: np.ndarray
    z: torch.Tensor
    scores: np.ndarray

    def augmented(self, bias_const: float) -> torch.Tensor:
        return augment(self.z, bias_const)


def _head_for(models: Any) -> tuple[torch.nn.Module, torch.dtype]:
    """The head the pass applies and its dtype: the user's head, or under ``--dtype float64`` a
    float64 copy of it (the whole forward in float64)."""
    head = models.head
    where = models.placement
    if where is not None and where.dtype == torch.float64:
        return copy.deepcopy(head).to(torch.float64), torch.float64
    return head, next((p.dtype for p in head.parameters()), torch.float32)


def encoded(
    models: Any,
    x: Any,
    rows: np.ndarray,
    batch_size: int,
    *,
    what: str,
    path: Path | None,
    task: str,
    progress: ProgressFn | None,
    done: int = 0,
    total: int | None = None,
) -> Iterator[Encoded]:
    """Encoder and head over ``rows`` of ``x``, batch by batch (``models`` a
    ``tfbound.pipeline.stages.Models``); progress counts from ``done`` up to ``total``."""
    total = int(rows.shape[0]) if total is None else total
    head, head_dtype = _head_for(models)
    for batch_rows in row_batches(x, rows, batch_size):
        batch = torch.from_numpy(take_rows(x, batch_rows))
        if not bool(torch.isfinite(batch).all()):
            raise DataError(f"{what} contain NaN or Inf", path=path)
        z = _encode_batch(models.encoder, batch, 0, None, models.placement, path)
        z = z.reshape(batch.shape[0], -1)
        if not bool(torch.isfinite(z).all()):
            raise DataError("the encoder produced NaN or Inf features", path=path)
        # A placed pass returns float64 features; the head reads them in its own dtype.
        head_in = z if models.placement is None else z.to(head_dtype)
        scores = head(head_in).to(torch.float64).reshape(-1).numpy()
        yield Encoded(batch_rows, z.to(torch.float64), scores)
        done += int(batch_rows.shape[0])
        if progress is not None:
            progress(task, done, total)


# --------------------------------------------------------------------------------------------
# Per-batch linear algebra, in torch: a numpy (OpenBLAS) product between two torch products
# makes the two thread pools spin against each other (the whole 1M-row pass ran 3x slower)
# --------------------------------------------------------------------------------------------


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def _np(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.numpy(), dtype=np.float64)


def _whitened(
    za: torch.Tensor, y: np.ndarray, inv_sqrt: torch.Tensor, u: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray]:
    """``(gamma, ||x||)`` of ``x = M^(-1/2) z'`` for a batch (``gamma`` only with a direction
    ``u``), as the in-memory functions compute them (``measures.gaussian.margins_and_norms``)."""
    xw = za @ inv_sqrt
    if u is None:
        return None, _np(torch.linalg.vector_norm(xw, dim=1))
    return margins_and_norms(xw, y, u)


# --------------------------------------------------------------------------------------------
# The training split
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class S2Scalars:
    """Per-example values on ``S2`` (in ``idx2`` order) that need the prior: the prior heads'
    outputs ``(n2, J_lambda)``; for a linear head, the normalised margins ``gamma``; the whitened
    norms ``||M^(-1/2) z'||`` (linear head, or extra heads); the extra heads' outputs
    ``theta' . z'`` ``(n2, k)`` (the stochastic head's mean)."""

    prior_scores: np.ndarray
    gamma: np.ndarray | None
    x_norms: np.ndarray | None
    extra_scores: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class TrainStream:
    """What the certificates read of the training split."""

    n: int
    scores: np.ndarray  # (n,) the head's outputs, in the split's order
    rirc: RircSums
    max_norm: float  # max_i ||z_i||
    prior: PacBayesPrior | None
    s2: S2Scalars | None

    @property
    def sum_sq_with_constant(self) -> float:
        """``sum_i ||z'_i||^2 = sum_i ||z_i||^2 + n c^2``."""
        return self.rirc.sum_sq


def probe_rows(idx1: np.ndarray, dim: int, split_seed: int) -> np.ndarray:
    """The ``S1`` rows the prior probes are fitted on: all of them when their float64 features
    fit in :data:`PRIOR_SAMPLE_BYTES` (or are fewer than :data:`PRIOR_SAMPLE_MIN_ROWS`), else a
    seeded subset of that many (sorted): a rule of ``n1``, ``d`` and the split seed only."""
    cap = max(dim + 2, PRIOR_SAMPLE_MIN_ROWS, PRIOR_SAMPLE_BYTES // (8 * (dim + 1)))
    if idx1.shape[0] <= cap:
        return idx1
    rng = np.random.default_rng([int(split_seed), _PROBE_SUBSET_SEED])
    return np.sort(rng.choice(idx1, size=cap, replace=False))


def prior_from_features(
    z: np.ndarray, y: np.ndarray, idx1: np.ndarray, idx2: np.ndarray, bound: Any
) -> PacBayesPrior:
    """The prior :func:`stream_train` fits, from the whole float64 features of the training
    split (``tfbound fit-head --stochastic``): the probes on :func:`probe_rows`, the metric from
    all of ``S1``."""
    b = bound
    rows = probe_rows(idx1, int(z.shape[1]), b.split_seed)
    second = None
    if rows.shape[0] < idx1.shape[0]:  # the probes see a subset: the metric sums all of S1
        z1 = augment(z[idx1], b.bias_const)
        second = _np(z1.T @ z1) / len(z1)
    return fit_pac_bayes_prior(
        z[rows],
        y[rows],
        n=int(z.shape[0]),
        idx1=idx1,
        idx2=idx2,
        bias_const=b.bias_const,
        split_seed=b.split_seed,
        n1_fraction=b.n1_fraction,
        eps=b.metric_eps,
        lam_grid=lam_grid_of(b.prior_lam),
        second_moment=second,
    )


def stream_train(
    models: Any,
    x: Any,
    y: np.ndarray,
    *,
    what: str,
    path: Path | None,
    bound: Any,
    theta_aug: np.ndarray | None,
    need_prior: bool,
    extra_heads: np.ndarray | None = None,
    shard: Shard = LOCAL,
    progress: ProgressFn | None = None,
) -> TrainStream:
    """The training split in one pass, ``S1`` then ``S2`` (``bound``: the ``BoundSpec``).

    ``need_prior``: fit the prior of spec 10.2 on ``S1`` (PAC-Bayes, or the disagreement route)
    and keep the ``S2`` values that need it; ``theta_aug``: a linear head ``(theta, b/c)``, whose
    normalised margins on ``S2`` PAC-Bayes reads; ``extra_heads``: augmented heads ``(k, d+1)``
    scored on ``S2`` with the whitened norms (the stochastic head's mean)."""
    b = bound
    c = b.bias_const
    n = int(y.shape[0])
    d = int(models.feature_dim)
    idx1, idx2 = split_indices(n, b.split_seed, b.n1_fraction)
    where = models.placement  # the RIRC products run on the encoder's device
    rirc = RircSums(b.n_draws, d + 1, b.seed, "cpu" if where is None else where.device)
    scores = np.zeros(n)
    max_sq = 0.0
    task = "features (train)"
    part1, part2 = shard.part(idx1), shard.part(idx2)
    total = int(part1.shape[0] + part2.shape[0])

    def common(batch: Encoded) -> torch.Tensor:
        nonlocal max_sq
        za = batch.augmented(c)
        rirc.add(batch.rows, za)
        scores[batch.rows] = batch.scores
        max_sq = max(max_sq, float(torch.max(torch.sum(batch.z * batch.z, dim=1))))
        return za

    probe_at = probe_rows(idx1, d, b.split_seed) if need_prior else idx1[:0]
    probe = np.zeros((probe_at.shape[0], d)) if need_prior else None
    full_s1 = probe_at.shape[0] == idx1.shape[0]
    c1_sum = None if full_s1 or not need_prior else np.zeros((d + 1, d + 1))
    for batch in encoded(
        models, x, part1, b.batch_size, what=what, path=path, task=task,
        progress=progress, total=total,
    ):  # fmt: skip
        za = common(batch)
        if probe is not None:
            pos = np.minimum(np.searchsorted(probe_at, batch.rows), probe_at.shape[0] - 1)
            hit = probe_at[pos] == batch.rows
            probe[pos[hit]] = batch.z.numpy()[hit]
        if c1_sum is not None:
            c1_sum += _np(za.T @ za)
    prior = None
    if need_prior:
        assert probe is not None
        shard.sum_(probe, c1_sum)
        lam_grid = lam_grid_of(b.prior_lam)
        prior = fit_pac_bayes_prior(
            probe,
            y[probe_at],
            n=n,
            idx1=idx1,
            idx2=idx2,
            bias_const=c,
            split_seed=b.split_seed,
            n1_fraction=b.n1_fraction,
            eps=b.metric_eps,
            lam_grid=lam_grid,
            second_moment=None if c1_sum is None else c1_sum / idx1.shape[0],
        )
        del probe
    n2 = int(idx2.shape[0])
    linear = prior is not None and theta_aug is not None
    extra = None if prior is None else extra_heads
    prior_scores = None if prior is None else np.zeros((n2, prior.theta_prior.shape[0]))
    gamma = np.zeros(n2) if linear else None
    x_norms = np.zeros(n2) if linear or extra is not None else None
    extra_scores = None if extra is None else np.zeros((n2, extra.shape[0]))
    u = None if not linear else prior.direction(theta_aug)  # type: ignore[union-attr,arg-type]
    if prior is not None:
        inv_sqrt, thetas = _t(prior.metric.inv_sqrt), _t(prior.theta_prior.T)
    extra_t = None if extra is None else _t(extra.T)
    for batch in encoded(
        models, x, part2, b.batch_size, what=what, path=path, task=task,
        progress=progress, done=int(part1.shape[0]), total=total,
    ):  # fmt: skip
        za = common(batch)
        if prior is None:
            continue
        assert prior_scores is not None
        pos = np.searchsorted(idx2, batch.rows)
        prior_scores[pos] = _np(za @ thetas)
        if extra_t is not None and extra_scores is not None:
            extra_scores[pos] = _np(za @ extra_t)
        if x_norms is not None:
            g, x_norms[pos] = _whitened(za, y[batch.rows], inv_sqrt, u)
            if gamma is not None and g is not None:
                gamma[pos] = g
    rirc.to_cpu()
    shard.sum_(rirc.sums_t, scores, prior_scores, gamma, x_norms, extra_scores)
    rirc.sum_sq, n_seen = shard.sum_scalars(rirc.sum_sq, float(rirc.n))
    rirc.n = int(n_seen)
    max_sq = shard.max_(max_sq)
    s2 = None if prior_scores is None else S2Scalars(prior_scores, gamma, x_norms, extra_scores)
    return TrainStream(n, scores, rirc, float(np.sqrt(max_sq)), prior, s2)


# --------------------------------------------------------------------------------------------
# The pool and the test split
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PoolStream:
    """Per pool example: the user's head's output, the first prior head's output and, with a
    PAC-Bayes result, ``|u . x'| / ||x'||`` and whether it is a tie."""

    m: int
    head_scores: np.ndarray
    prior_scores: np.ndarray
    proj: np.ndarray | None
    tie: np.ndarray | None


def stream_pool(
    models: Any,
    x: Any,
    *,
    what: str,
    path: Path | None,
    bound: Any,
    prior: PacBayesPrior,
    theta_aug: np.ndarray | None,
    pac: PacBayesResult | None,
    shard: Shard = LOCAL,
    progress: ProgressFn | None = None,
) -> PoolStream:
    """The unlabeled pool in one pass. A linear head's outputs are ``theta' . z'`` in float64
    (what the disagreement with the float64 prior head compares); any other head's are its own."""
    from tfbound.bounds.pac_bayes_pool import pool_projections

    c = bound.bias_const
    m = int(x.shape[0])
    head_scores, prior_scores = np.zeros(m), np.zeros(m)
    proj = np.zeros(m) if pac is not None else None
    tie = np.zeros(m) if pac is not None else None
    theta_1 = _t(prior.theta_prior[0])
    head_t = None if theta_aug is None else _t(theta_aug)
    for batch in encoded(
        models, x, shard.part(np.arange(m)), bound.batch_size, what=what, path=path,
        task="features (unlabeled pool)", progress=progress,
    ):  # fmt: skip
        za = batch.augmented(c)
        head_scores[batch.rows] = batch.scores if head_t is None else _np(za @ head_t)
        prior_scores[batch.rows] = _np(za @ theta_1)
        if pac is not None and proj is not None and tie is not None:
            p, t = pool_projections(pac, za)
            proj[batch.rows], tie[batch.rows] = p, t
    shard.sum_(head_scores, prior_scores, proj, tie)
    return PoolStream(m, head_scores, prior_scores, proj, None if tie is None else tie > 0)


@dataclass(frozen=True, eq=False)
class TestStream:
    """Per test example: the head's output; with the prior's metric, the whitened norms and,
    with a direction, the normalised margins (the observed Gibbs error of PAC-Bayes's head); with
    extra heads, their outputs ``theta' . z'`` ``(m, k)`` (the stochastic head's mean)."""

    scores: np.ndarray
    gamma: np.ndarray | None = None
    x_norms: np.ndarray | None = None
    extra_scores: np.ndarray | None = None


def stream_test(
    models: Any,
    x: Any,
    y: np.ndarray,
    *,
    what: str,
    path: Path | None,
    bound: Any,
    metric: Metric | None = None,
    u: np.ndarray | None = None,
    extra_heads: np.ndarray | None = None,
    shard: Shard = LOCAL,
    progress: ProgressFn | None = None,
) -> TestStream:
    """The test split in one pass; ``metric``: the prior's (``S1``), with ``u`` a whitened
    direction for the margins and ``extra_heads`` augmented heads ``(k, d+1)`` to score."""
    m = int(y.shape[0])
    scores = np.zeros(m)
    x_norms = None if metric is None else np.zeros(m)
    gamma = None if metric is None or u is None else np.zeros(m)
    extra_scores = None if extra_heads is None else np.zeros((m, extra_heads.shape[0]))
    inv_sqrt = None if metric is None else _t(metric.inv_sqrt)
    heads = None if extra_heads is None else _t(extra_heads.T)
    for batch in encoded(
        models, x, shard.part(np.arange(m)), bound.batch_size, what=what, path=path,
        task="features (test)", progress=progress,
    ):  # fmt: skip
        scores[batch.rows] = batch.scores
        za = batch.augmented(bound.bias_const)
        if inv_sqrt is not None and x_norms is not None:
            g, x_norms[batch.rows] = _whitened(za, y[batch.rows], inv_sqrt, u)
            if gamma is not None and g is not None:
                gamma[batch.rows] = g
        if heads is not None and extra_scores is not None:
            extra_scores[batch.rows] = _np(za @ heads)
    shard.sum_(scores, gamma, x_norms, extra_scores)
    return TestStream(scores, gamma, x_norms, extra_scores)


__all__ = [
    "LOCAL",
    "PRIOR_SAMPLE_BYTES",
    "Encoded",
    "PoolStream",
    "S2Scalars",
    "Shard",
    "TestStream",
    "TrainStream",
    "encoded",
    "prior_from_features",
    "probe_rows",
    "stream_pool",
    "stream_test",
    "stream_train",
    "take_rows",
]
