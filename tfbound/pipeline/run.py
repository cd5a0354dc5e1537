"""``estimate(config) -> Report``: named stages over typed values.

1. load the labeled training split and build the models (:mod:`tfbound.pipeline.stages`);
2. load every other split once;
3. encode each split in one batched pass;
4. each certificate from ``tfbound.bounds`` at its share of the :class:`DeltaBudget`: section 2
   (margin + RIRC), PAC-Bayes and disagreement (section 10), held-out terms, pretext terms, the
   decomposition, capacity terms (:mod:`tfbound.pipeline.capacity`);
5. demote the frozen-encoder certificates of a fine-tuned encoder, then choose the best one;
6. assemble the report.

The whole estimate runs under ``torch.inference_mode()``; the caller's grad mode is untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tfbound.bounds.budget import DeltaBudget, headline_fractions
from tfbound.bounds.decomposition import (
    DecompositionInputs,
    TransferInput,
    decomposition_terms,
)
from tfbound.bounds.disagreement import disagreement_from_scores
from tfbound.bounds.finetuned import demote_frozen
from tfbound.bounds.heldout import heldout_terms, holdout_term, tightness_term
from tfbound.bounds.margin import (
    capacity_ratio_terms,
    certified_bound,
    linear_head_norm,
    margin_bound,
    margin_terms,
    relu_path_norm,
    rirc_terms,
    trivial_bound,
)
from tfbound.bounds.pac_bayes import PacBayesResult, pac_bayes_certify
from tfbound.bounds.pac_bayes_pool import pac_bayes_pool_from_margins, pac_bayes_pool_term
from tfbound.bounds.pretext import pretext_terms
from tfbound.bounds.split import split_indices
from tfbound.bounds.tight import (
    best_certificate,
    disagreement_term,
    observed_gibbs_term,
    pac_bayes_terms,
    tightness_terms,
)
from tfbound.config import BoundSpec, Config, load_config
from tfbound.errors import ConfigError, UsageError
from tfbound.features import DTYPES, ProgressFn, placement, resolve_device
from tfbound.io.digest import sha256_file
from tfbound.keys import DETERMINISTIC_CERTIFICATES, TermKey
from tfbound.measures.network import ROUNDING, Affine
from tfbound.measures.rirc import RircEstimate
from tfbound.models.heads import LinearHead, MLPHead
from tfbound.paths import relative_path
from tfbound.pipeline.capacity import capacity_stage, check_capacity_mode
from tfbound.pipeline.stages import (
    Models,
    PretextPass,
    Setup,
    Splits,
    build_models,
    checked_pool,
    data_loaders,
    holdout_split,
    load_splits,
    param_count,
    phase,
    pretext_pass,
    setup_of,
    task_of,
)
from tfbound.pipeline.stochastic import CheckedStochasticHead, read_checked, stochastic_head_stage
from tfbound.pipeline.stream import (
    LOCAL,
    Shard,
    TrainStream,
    stream_pool,
    stream_test,
    stream_train,
)
from tfbound.report import Report
from tfbound.stochastic_head import StochasticHeadFile
from tfbound.terms import Term


@dataclass
class _Collected:
    """What the certificate stages add: leaf terms, complete certificates, warnings, and the
    names of the delta shares the deterministic certificates spent."""

    terms: list[Term] = field(default_factory=list)
    bounds: list[Term] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    spent: set[str] = field(default_factory=set)
    #: the stochastic head of ``bound.stochastic_head``, when its checks passed
    stochastic: CheckedStochasticHead | None = None


@dataclass(frozen=True)
class Record:
    """What a report says its numbers rest on besides the terms: the configuration (or the
    settings of an in-memory call), the extra fields of ``model.encoder`` / ``model.head`` and of
    each labeled split in ``data`` (paths, or digests), and the encoder's digest, computed only
    when the decomposition checks it against a transfer report."""

    config: Mapping[str, Any]
    encoder: Mapping[str, Any]
    head: Mapping[str, Any]
    data: Mapping[str, Mapping[str, Any]]
    encoder_sha256: Callable[[], str | None]


def estimate(
    config: Config | str | Path,
    *,
    progress: ProgressFn | None = None,
    transfer: TransferInput | None = None,
    capacity: str = "full",
    drop_pool_overlap: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    shard: Shard = LOCAL,
) -> Report:
    """Load the models and data named in ``config`` and compute the itemised bound.

    ``transfer``: a ``tfbound.bounds.decomposition.TransferInput`` (C and beta) for the excess-risk
    decomposition of bound-spec 6.2, or None (the decomposition is left out, with the reason).
    ``capacity``: ``full`` (every capacity number), ``fast`` (no per-layer norm pass of a
    transformer: its per-head maxima and proxies are left out) or ``off`` (no capacity numbers;
    the certificates on the head do not need them).
    ``drop_pool_overlap``: drop the pool examples found in another split (counted in the
    report's ``data.downstream_unlabeled`` and a warning) instead of refusing the pool.
    ``device`` (``cpu``, ``cuda``, ``auto``) and ``dtype`` (``float32``, ``float64``,
    ``bfloat16``): where the encoder's feature passes run (``tfbound.features.placement``); the
    features are float64 on the CPU before any bound, and every bound is computed in float64.
    The caller's grad mode and the modules' state are left as they were.
    """
    check_capacity_mode(capacity)
    check_placement(device, dtype)  # a missing GPU is refused before anything is loaded
    cfg = config if isinstance(config, Config) else load_config(config)
    with torch.inference_mode():
        # Stages 1-2: models and splits, read from the configuration's files.
        load_lab, _ = data_loaders(cfg)
        train = load_lab(cfg.data.downstream_train)
        models = build_models(cfg, train)
        splits = load_splits(
            cfg,
            train,
            need_pool=True,  # every head: the disagreement route takes any head
            need_pretrain=models.decoder is not None,
        )
        return estimate_prepared(
            setup_of(cfg, drop_pool_overlap=drop_pool_overlap),
            models,
            splits,
            config_record(cfg),
            progress=progress,
            transfer=transfer,
            capacity=capacity,
            device=device,
            dtype=dtype,
            shard=shard,
        )


def check_placement(device: str | None, dtype: str | None) -> None:
    """``UsageError`` for an unknown device or dtype, ``DeviceError`` for a missing GPU."""
    if device is not None:
        resolve_device(device)
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")


def config_record(cfg: Config) -> Record:
    """The record of a configuration: its resolved form, the architectures and relative paths."""
    data = {"downstream_train": {"path": _rel(cfg.data.downstream_train.path, cfg)}}
    if cfg.data.downstream_test is not None:
        data["downstream_test"] = {"path": _rel(cfg.data.downstream_test.path, cfg)}
    weights = cfg.encoder.weights
    return Record(
        config=cfg.to_dict(),
        encoder={"arch": cfg.encoder.arch},
        head={"arch": cfg.head.arch},
        data=data,
        encoder_sha256=lambda: None if weights is None else sha256_file(weights),
    )


#: The separate statements and the term each one makes (its level is reported only when made).
STATEMENT_TERMS = {
    "test_set": TermKey.TEST_SET_BOUND,
    "pretext_heldout": TermKey.PRETEXT_HELDOUT_RISK,
    "pretext_certificate": TermKey.PRETEXT_RISK_BOUND,
    "stochastic_head": TermKey.STOCHASTIC_HEAD_GIBBS,
}


def budget_of(
    cfg: Config | Setup | BoundSpec,
    *,
    pool: bool = False,
    linear_head: bool = True,
    holdout: bool = False,
) -> DeltaBudget:
    """The delta budget of a configuration (or of a setup's bound constants): ``delta`` split
    among the certificates on the head by ``bound.delta_shares`` or, when None, by the rule of
    the configuration (a pool or not, a linear head or not); the test-set bound and the pretext
    statements at their own levels."""
    b = cfg if isinstance(cfg, BoundSpec) else cfg.bound
    if b.delta_shares is None:
        fractions = headline_fractions(pool=pool, linear_head=linear_head, holdout=holdout)
    else:
        fractions = dict(b.delta_shares)
        missing = [k for k in ("finetune", "monte_carlo") if k not in fractions]
        if missing:
            raise ConfigError(
                f"'bound.delta_shares' gives no share to {', '.join(missing)} (section 2 is "
                "always computed)"
            )
    separate = {
        "test_set": b.delta_test,
        "pretext_heldout": b.delta_pretext,
        "pretext_certificate": b.delta_pretext,
        "stochastic_head": b.delta_stochastic,
    }
    return DeltaBudget(b.delta, fractions, b.encoder_candidates, separate)


def estimate_prepared(
    setup: Setup,
    models: Models,
    splits: Splits,
    record: Record,
    *,
    progress: ProgressFn | None = None,
    transfer: TransferInput | None = None,
    capacity: str = "full",
    device: str | None = None,
    dtype: str | None = None,
    shard: Shard = LOCAL,
) -> Report:
    """Stages 3-6 on built models (in eval mode) and loaded splits: the one code path of the
    config route (:func:`estimate`) and the in-memory route (``tfbound.api.estimate``).
    ``device`` and ``dtype``: where the feature passes run (see :func:`estimate`). ``shard``:
    this process's part of every pass under ``torchrun`` (:mod:`tfbound.pipeline.stream`); every
    process returns the same report."""
    check_capacity_mode(capacity)
    check_placement(device, dtype)
    with torch.inference_mode():
        if device is not None or dtype is not None:
            models = replace(models, placement=placement(models.encoder, device, dtype))
        return _estimate(setup, models, splits, record, progress, transfer, capacity, shard)


def _estimate(
    cfg: Setup,
    models: Models,
    splits: Splits,
    record: Record,
    progress: ProgressFn | None,
    transfer: TransferInput | None,
    capacity_mode: str,
    shard: Shard,
) -> Report:
    b = cfg.bound
    linear = isinstance(models.head, LinearHead)
    holdout = holdout_split(models)
    budget = budget_of(
        cfg, pool=cfg.pool is not None, linear_head=linear, holdout=holdout is not None
    )
    out = _Collected()
    splits = checked_pool(splits, cfg)  # every head: the disagreement route takes any head
    out.warnings += list(models.notes)  # e.g. a 2-logit head certified through w1 - w0
    out.warnings += splits.warnings

    # Stage 3: the training split in one streamed pass (S1, then S2).
    head_chain = _head_chain(models.head)
    train = splits.train
    theta_aug = (
        _augmented_linear_head(models.head, b.bias_const)
        if isinstance(models.head, LinearHead)
        else None
    )
    # tfbound's stochastic head (bound.stochastic_head): read first, its mean scored on S2
    stochastic = read_checked(cfg, models.feature_dim, int(train.y.shape[0]), budget, out)
    need_prior = (
        (theta_aug is not None and budget.has("pac_bayes"))
        or (splits.pool is not None and cfg.pool is not None and budget.has("disagreement_prior"))
        or stochastic is not None
    )
    train_pass = stream_train(
        models,
        train.x,
        train.y,
        what=f"inputs '{cfg.train.name}'",
        path=cfg.train.path,
        bound=b,
        theta_aug=theta_aug,
        need_prior=need_prior,
        extra_heads=None if stochastic is None else stochastic.mean_aug(b.bias_const)[None, :],
        shard=shard,
        progress=progress,
    )
    n = train_pass.n

    # Stage 4: the certificates.
    est = train_pass.rirc.estimate(
        1.0, delta_mc=budget.per_candidate("monte_carlo"), bias_const=b.bias_const
    )
    u_sigma = est.norm_upper * ROUNDING
    head_norm, factor = _section2(
        models, head_chain, train_pass, splits, est, u_sigma, budget, cfg, out
    )
    with phase(progress, "PAC-Bayes and disagreement certificates"):
        pac = _section10(
            models, train_pass, theta_aug, stochastic, splits, budget, cfg, shard, progress, out
        )
    if holdout is not None and budget.has("holdout"):
        _, idx2 = split_indices(n, *holdout)
        errors = int(np.sum(train.y[idx2] * train_pass.scores[idx2] <= 0))
        out.bounds.append(
            holdout_term(
                errors,
                int(idx2.shape[0]),
                budget.per_candidate("holdout"),
                budget.confidence("holdout"),
                "tfbound fit-head --holdout, checked against its record",
            )
        )
        out.spent |= {"holdout"}
    _heldout(models, splits, pac, budget, cfg, shard, progress, out)
    pretext_train, pretext_val = _pretext(models, splits, cfg, budget, progress, out)

    decomposition, decomposition_warnings = decomposition_terms(
        _decomposition_inputs(cfg, record, out, n, u_sigma, head_norm, factor, budget, transfer),
        transfer,
    )
    out.terms += decomposition
    out.warnings += decomposition_warnings

    with phase(progress, "capacity norms"):
        capacity = capacity_stage(
            cfg,
            models,
            splits,
            train_pass,
            u_sigma=u_sigma,
            budget=budget,
            pretext_train=pretext_train,
            mode=capacity_mode,
        )
    out.warnings += capacity.warnings

    # Stage 5: a fine-tuned encoder voids the frozen-encoder certificates; then the best one.
    terms, bounds = out.terms, out.bounds
    if models.reference is not None:
        terms, bounds = demote_frozen(terms) + demote_frozen(bounds), []
        out.spent = set()
    terms += capacity.terms
    bounds += capacity.bounds
    if capacity.bounds:
        out.spent |= {"finetune"}
    _best(bounds, terms, budget, out.spent, splits)

    # Stage 6: the report.
    pretext = (pretext_train, pretext_val)
    report = _report(
        record, models, splits, n, head_norm, pretext, terms, bounds, out.warnings, budget, shard
    )
    return report


def _decomposition_inputs(
    cfg: Setup,
    record: Record,
    out: _Collected,
    n: int,
    u_sigma: float,
    head_norm: float | None,
    rirc_factor: float,
    budget: DeltaBudget,
    transfer: TransferInput | None,
) -> DecompositionInputs:
    """What the decomposition (bound-spec 6.2) reads of this estimate."""
    rirc = next((t for t in out.terms if t.key == TermKey.RIRC), None)
    held = next((t for t in out.terms if t.key == TermKey.PRETEXT_HELDOUT_RISK), None)
    need_hash = transfer is not None and transfer.encoder_sha256 is not None
    return DecompositionInputs(
        n=n,
        u_sigma=u_sigma if rirc is not None else None,
        rirc_factor=rirc_factor,
        delta_1=budget.per_candidate("finetune"),
        delta_mc=budget.per_candidate("monte_carlo"),
        head_norm=head_norm,
        pretrain_heldout_upper=None if held is None or held.interval is None else held.interval[1],
        bias_const=cfg.bound.bias_const,
        encoder_sha256=record.encoder_sha256() if need_hash else None,
    )


def _head_chain(head: LinearHead | MLPHead) -> list[Affine]:
    from tfbound.adapters.chain import mlp_chain

    chain = mlp_chain(head)
    assert chain is not None or isinstance(head, MLPHead)
    return chain or []


def _section2(
    models: Models,
    head_chain: list[Affine],
    train_pass: TrainStream,
    splits: Splits,
    est: RircEstimate,
    u_sigma: float,
    budget: DeltaBudget,
    cfg: Setup,
    out: _Collected,
) -> tuple[float | None, float]:
    """The paper's route: the margin bound with the RIRC (bound-spec section 2); the head's norm
    (None when no certificate applies) and the RIRC factor (1 linear, 2 ReLU head)."""
    b = cfg.bound
    head = models.head
    head_kind = "linear" if isinstance(head, LinearHead) else "mlp"
    head_norm: float | None
    if isinstance(head, LinearHead):
        head_norm, factor = linear_head_norm(head_chain[0], b.bias_const), 1.0
    elif head.activation == "relu":
        head_norm, factor = relu_path_norm(head_chain, b.bias_const), 2.0
    else:
        out.warnings.append(
            f"no certified bound: an MLP head with activation {head.activation!r} "
            "needs the three-way grid of bound-spec section 2; only linear and ReLU heads are "
            "certified"
        )
        return None, 0.0
    y = splits.train.y
    mb = margin_bound(
        train_pass.scores,
        y,
        head_norm,
        u_sigma,
        delta_1=budget.per_candidate("finetune"),
        rho0=b.rho0,
        rirc_factor=factor,
    )
    if mb.best is None:
        out.warnings.append("the head is zero: the certified bound is the trivial 1")
        out.bounds.append(trivial_bound())
    else:
        out.terms += margin_terms(
            mb, budget.per_candidate("finetune"), budget.per_candidate("monte_carlo")
        )
        out.terms += rirc_terms(est, mb, head_kind)
        out.bounds.append(certified_bound(mb, budget))
        if mb.total >= 1.0:
            out.warnings.append(
                "the certified bound is vacuous (>= 1) for this head and sample size"
            )
    out.spent |= {"finetune", "monte_carlo"}
    out.terms += capacity_ratio_terms(est, head_norm, y * train_pass.scores, b.margin_quantile)
    return head_norm, factor


def _section10(
    models: Models,
    train_pass: TrainStream,
    theta_aug: np.ndarray | None,
    stochastic: StochasticHeadFile | None,
    splits: Splits,
    budget: DeltaBudget,
    cfg: Setup,
    shard: Shard,
    progress: ProgressFn | None,
    out: _Collected,
) -> PacBayesResult | None:
    """PAC-Bayes with a prior learned on S1, hold-out plus disagreement on a pool (section 10)."""
    b = cfg.bound
    pac: PacBayesResult | None = None  # computed for a linear head only
    prior, s2 = train_pass.prior, train_pass.s2
    if theta_aug is None:
        out.warnings.append(
            "PAC-Bayes (spec 10.2) certifies linear heads only: for this MLP head the "
            "deterministic certificates are section 2's and, with a pool, the disagreement "
            "bound (spec 10.4)"
        )
    elif budget.has("pac_bayes"):
        assert prior is not None and s2 is not None and s2.gamma is not None
        pac = pac_bayes_certify(
            prior, theta_aug, s2.gamma, delta_pb=budget.per_candidate("pac_bayes")
        )
        out.bounds += pac_bayes_terms(pac, confidence=budget.confidence("pac_bayes"))
        out.spent |= {"pac_bayes"}
    if stochastic is not None and prior is not None and s2 is not None:
        assert s2.extra_scores is not None and s2.x_norms is not None
        out.stochastic = stochastic_head_stage(
            cfg,
            stochastic,
            prior,
            s2.extra_scores[:, 0],
            s2.x_norms,
            splits.train.y[prior.idx2],
            budget,
            out,
        )
    if splits.pool is None or cfg.pool is None or prior is None or s2 is None:
        return pac
    pool = stream_pool(
        models,
        splits.pool,
        what=f"inputs '{cfg.pool.name}'",
        path=cfg.pool.path,
        bound=b,
        prior=prior,
        theta_aug=theta_aug,
        pac=pac if budget.has("pac_bayes_pool") else None,
        shard=shard,
        progress=progress,
    )
    y2 = splits.train.y[prior.idx2]
    if budget.has("disagreement_prior") and budget.has("disagreement_pool"):
        dis = disagreement_from_scores(
            s2.prior_scores[:, 0],
            y2,
            pool.head_scores,
            pool.prior_scores,
            delta_a=budget.per_candidate("disagreement_prior"),
            delta_b=budget.per_candidate("disagreement_pool"),
            bias_const=b.bias_const,
            head="w_hat" if theta_aug is not None else "the user's head",
        )
        out.bounds.append(
            disagreement_term(
                dis, confidence=budget.confidence("disagreement_prior", "disagreement_pool")
            )
        )
        out.spent |= {"disagreement_prior", "disagreement_pool"}
    if pac is not None and budget.has("pac_bayes_pool"):
        assert s2.gamma is not None and pool.proj is not None and pool.tie is not None
        pool_result = pac_bayes_pool_from_margins(
            pac, s2.gamma, pool.proj, pool.tie, delta_c=budget.per_candidate("pac_bayes_pool")
        )
        out.bounds.append(
            pac_bayes_pool_term(
                pool_result, confidence=budget.confidence("pac_bayes", "pac_bayes_pool")
            )
        )
        out.spent |= {"pac_bayes_pool"}
    return pac


def _heldout(
    models: Models,
    splits: Splits,
    pac: PacBayesResult | None,
    budget: DeltaBudget,
    cfg: Setup,
    shard: Shard,
    progress: ProgressFn | None,
    out: _Collected,
) -> None:
    """Observed test error, the test-set bound and each certificate's tightness."""
    test, stoch = splits.test, out.stochastic
    if test is None or cfg.test is None:
        out.warnings.append("no downstream_test split: no observed test error or test-set bound")
        return
    test_pass = stream_test(
        models,
        test.x,
        test.y,
        what=f"inputs '{cfg.test.name}'",
        path=cfg.test.path,
        bound=cfg.bound,
        # the S1 prior's metric (PAC-Bayes's and the stochastic head's are the same one)
        metric=pac.metric if pac is not None else None if stoch is None else stoch.geometry.metric,
        u=None if pac is None else pac.u,
        extra_heads=None if stoch is None else stoch.mean_aug[None, :],
        shard=shard,
        progress=progress,
    )
    errors = int(np.sum(test.y * test_pass.scores <= 0))
    m_test = int(test.y.shape[0])
    held = heldout_terms(errors, m_test, budget.share("test_set"))
    out.terms += held
    certified = next((t for t in out.bounds if t.key == TermKey.CERTIFIED), None)
    if certified is not None and certified.value is not None:
        out.terms.append(tightness_term(certified.value, held[1].value or 0.0))
    if pac is not None and test_pass.gamma is not None and test_pass.x_norms is not None:
        gibbs = pac.gibbs_error_from_margins(test_pass.gamma, test_pass.x_norms > 0)
        out.terms.append(observed_gibbs_term(gibbs, m_test))
    if stoch is not None and test_pass.extra_scores is not None and test_pass.x_norms is not None:
        scores = test_pass.extra_scores[:, 0]
        out.terms.append(stoch.observed_term(scores, test_pass.x_norms, test.y))
    out.terms += tightness_terms(out.bounds, held[1].value or 0.0)


def _pretext(
    models: Models,
    splits: Splits,
    cfg: Setup,
    budget: DeltaBudget,
    progress: ProgressFn | None,
    out: _Collected,
) -> tuple[PretextPass | None, PretextPass | None]:
    """The pretext loss on the pre-training split and its held-out gap (bound-spec 6.1)."""
    if cfg.pretext is None:
        out.warnings.append("no pretext section: pre-training terms are left out")
        return None, None
    if models.decoder is None or splits.pretrain_train is None:
        return None, None
    task = task_of(cfg)
    assert task is not None and cfg.pretrain_train is not None
    spec, b = cfg.pretext, cfg.bound
    train = pretext_pass(
        task,
        models,
        splits.pretrain_train,
        cfg.pretrain_train,
        spec,
        spec.seed,
        b.batch_size,
        "pretext (train)",
        progress,
    )
    if splits.pretrain_val is None or cfg.pretrain_val is None:
        out.warnings.append("no pretrain_val split: no held-out pretext gap")
        return train, None
    val = pretext_pass(
        task,
        models,
        splits.pretrain_val,
        cfg.pretrain_val,
        spec,
        spec.seed + 1,
        b.batch_size,
        "pretext (held out)",
        progress,
    )
    out.terms += pretext_terms(
        train.mean_loss,
        train.n,
        val.mean_loss,
        val.n,
        spec.box,
        budget.share("pretext_heldout"),
        task=spec.kind,
        output_dim=train.output_dim,
    )
    return train, val


def _best(
    bounds: list[Term],
    terms: list[Term],
    budget: DeltaBudget,
    spent: set[str],
    splits: Splits,
) -> None:
    """``best_certified_test_error_bound`` over the certified deterministic certificates, at the
    shares they spent; inserted first among the bounds, with its tightness."""
    if not any(t.key in DETERMINISTIC_CERTIFICATES for t in bounds):
        return
    shares = budget.spent(spent)
    best = best_certificate(bounds, sum(shares.values()), shares, budget.encoder_candidates)
    bounds.insert(0, best)
    if splits.test is not None:
        tsb = next(t for t in terms if t.key == TermKey.TEST_SET_BOUND).value or 0.0
        terms += tightness_terms([best], tsb)


def _report(
    record: Record,
    models: Models,
    splits: Splits,
    n: int,
    head_norm: float | None,
    pretext: tuple[PretextPass | None, PretextPass | None],
    terms: list[Term],
    bounds: list[Term],
    warnings: list[str],
    budget: DeltaBudget,
    shard: Shard = LOCAL,
) -> Report:
    train, test = splits.train, splits.test
    where = models.placement
    model = {
        "encoder": {
            **record.encoder,
            "parameters": param_count(models.encoder),
            "feature_dim": models.feature_dim,
            # where the feature passes ran (--device, --dtype; torchrun processes)
            "feature_pass": {
                "device": "cpu" if where is None else str(where.device),
                "dtype": "float32" if where is None else str(where.dtype).removeprefix("torch."),
                "processes": shard.world,
            },
        },
        "head": {
            **record.head,
            "parameters": param_count(models.head),
            "head_norm": head_norm,
            # how the head was read (a 2-logit head's difference) and fitted (tfbound fit-head);
            # a plain 1-logit head adds nothing
            **{
                k: v
                for k, v in models.head_details.items()
                if not (k == "output_logits" and v == 1)
            },
        },
    }
    data: dict[str, Any] = {
        "downstream_train": {
            "n": n,
            "positives": int(np.sum(train.y > 0)),
            "input_shape": list(train.x.shape[1:]),
            **record.data.get("downstream_train", {}),
        },
    }
    if test is not None:
        data["downstream_test"] = {
            "m_test": int(test.y.shape[0]),
            "positives": int(np.sum(test.y > 0)),
            **record.data.get("downstream_test", {}),
        }
    if splits.pool_record is not None:
        data["downstream_unlabeled"] = dict(splits.pool_record)
    pre_train, pre_val = pretext
    if pre_train is not None and models.decoder is not None:
        pre: dict[str, Any] = {
            "n_pretrain": pre_train.n,
            "output_dim": pre_train.output_dim,
            "decoder_parameters": param_count(models.decoder),
        }
        if pre_val is not None:
            pre["N_val"] = pre_val.n
        data["pretrain"] = pre
    return Report(
        kind="estimate",
        config=record.config,
        model=model,
        data=data,
        deltas=budget.to_dict(
            made=(
                s
                for s, key in STATEMENT_TERMS.items()
                if any(t.key == key for t in (*terms, *bounds))
            )
        ),
        terms=tuple(terms),
        bounds=tuple(bounds),
        warnings=tuple(warnings),
    )


def _augmented_linear_head(head: LinearHead, bias_const: float) -> np.ndarray:
    """``theta' = (theta, b / c)`` in float64."""
    theta = head.linear.weight.detach().to(torch.float64).reshape(-1).numpy()
    bias = float(head.linear.bias.detach().to(torch.float64).reshape(()))
    return np.concatenate([theta, [bias / bias_const]])


def _rel(path: Path, cfg: Config) -> str:
    return relative_path(path, cfg.base)


__all__ = ["ProgressFn", "Record", "budget_of", "config_record", "estimate", "estimate_prepared"]
