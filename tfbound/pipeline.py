"""``estimate(config) -> Report``: load, one batched pass over the data, the bound term by term."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tfbound.bounds.disagreement import check_pool_disjoint, disagreement
from tfbound.bounds.heldout import heldout_terms, tightness_term
from tfbound.bounds.margin import (
    MARGIN_SOURCE,
    ROUNDING,
    MarginBound,
    linear_head_norm,
    margin_bound,
    relu_path_norm,
)
from tfbound.bounds.pac_bayes import PacBayesResult, pac_bayes_linear
from tfbound.bounds.pretext import pretext_terms
from tfbound.bounds.tight import (
    DETERMINISTIC_CERTIFICATES,
    best_certificate,
    disagreement_term,
    observed_gibbs_term,
    pac_bayes_terms,
    tightness_terms,
)
from tfbound.config import ArraySource, Config, PretextSpec, load_config
from tfbound.errors import ConfigError, DataError
from tfbound.features import ProgressFn, feature_batches, input_batches
from tfbound.io.datasets import load_inputs, load_labeled
from tfbound.measures.rirc import RircEstimate, rirc_linear
from tfbound.models.build import build_head, build_module, feature_dim_of
from tfbound.models.heads import LinearHead, MLPHead
from tfbound.pretext import (
    PretextTask,
    clipped_square_loss,
    pretext_batch,
    pretext_task,
)
from tfbound.report import Report
from tfbound.terms import Status, Term

RIRC_SOURCE = (
    "bound-spec section 3: Monte Carlo over K sign vectors; McDiarmid upper value "
    "mean + sqrt(sum ||z'||^2) sqrt(2 log(1/delta_mc)/K), capped by Jensen sqrt(sum ||z'||^2)"
)


@dataclass(frozen=True)
class _Pass:
    features: np.ndarray | None  # float64 (n, d), kept only for the training split
    scores: np.ndarray  # float64 (n,)


@torch.inference_mode()
def _feature_pass(
    encoder: nn.Module,
    head: nn.Module,
    x: np.ndarray,
    source: ArraySource,
    batch_size: int,
    keep_features: bool,
    task: str,
    progress: ProgressFn | None,
) -> _Pass:
    feats: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for z in feature_batches(
        encoder,
        x,
        batch_size,
        what=f"inputs '{source.x}'",
        path=source.path,
        task=task,
        progress=progress,
    ):
        scores.append(head(z).to(torch.float64).numpy())
        if keep_features:
            feats.append(z.to(torch.float64).numpy())
    return _Pass(np.concatenate(feats) if keep_features else None, np.concatenate(scores))


@torch.inference_mode()
def _pretext_mean_loss(
    task: PretextTask,
    encoder: nn.Module,
    decoder: nn.Module,
    source: ArraySource,
    spec: PretextSpec,
    seed: int,
    batch_size: int,
    label: str,
    progress: ProgressFn | None,
) -> tuple[float, int, int]:
    x = load_inputs(source)
    gen = torch.Generator().manual_seed(seed)
    total, n, out_dim = 0.0, 0, 0
    for batch in input_batches(
        x, batch_size, what=f"inputs '{source.x}'", path=source.path, task=label, progress=progress
    ):
        try:
            pred, target = pretext_batch(task, encoder, decoder, batch, gen)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ConfigError(f"the pretext task does not fit the models or data: {exc}") from exc
        if pred.shape != target.shape:
            raise ConfigError(
                f"the decoder predicts {tuple(pred.shape[1:])} values, the pretext target has "
                f"{tuple(target.shape[1:])}"
            )
        lo, hi = spec.box
        if bool((target < lo).any() or (target > hi).any()):
            raise DataError(f"pretext targets leave the box [{lo}, {hi}]", path=source.path)
        total += float(clipped_square_loss(pred, target, spec.box).to(torch.float64).sum())
        n += batch.shape[0]
        out_dim = int(target.shape[1])
    return total / n, n, out_dim


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _rirc_terms(est: RircEstimate, mb: MarginBound, head_kind: str) -> list[Term]:
    """The certified RIRC of the chosen ball, its display form, and the sandwich."""
    best = mb.best
    assert best is not None
    a = mb.rirc_factor
    ball = "linear ball ||theta'|| <= rho_k" if head_kind == "linear" else "ReLU path-norm ball"
    common: dict[str, Any] = {
        "U_sigma": mb.u_sigma,
        "mc_mean": est.norm_mean,
        "mc_stderr": est.norm_stderr,
        "mc_upper": est.norm_mc_upper,
        "jensen_upper": est.norm_jensen,
        "khintchine_lower": est.norm_lower,
        "upper_source": est.upper_source,
        "n_draws": est.n_draws,
        "bias_const": est.bias_const,
        "n": est.n,
        "rho_k": best.rho,
    }
    factor = "" if a == 1 else f"{a:g} "
    return [
        Term(
            key="rirc",
            value=best.rirc,
            status=Status.CERTIFIED,
            quantity="complexity",
            formula=f"{factor}rho_k* U_sigma / n (RIRC of the {ball}, in 0-1 units after /gamma)",
            source=RIRC_SOURCE,
            interval=(a * best.rho * est.norm_lower / est.n, best.rirc),
            confidence=1.0 - est.delta_mc,
            details=common,
        ),
        Term(
            key="rirc_term",
            value=best.rirc_term,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="2 * rirc",
            source=MARGIN_SOURCE,
            details={"rirc_factor": a},
        ),
    ]


def _margin_terms(mb: MarginBound, delta_1: float, delta_mc: float) -> list[Term]:
    best = mb.best
    assert best is not None
    return [
        Term(
            key="downstream_empirical_risk",
            value=best.empirical_risk,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="(1/n) sum_i phi_1(y_i f_k*(x_i)), f_k = (rho_k / r_hat) f_hat (ramp loss)",
            source=MARGIN_SOURCE,
            details={"gamma": mb.gamma, "head_norm": mb.head_norm, "k_star": best.k},
        ),
        Term(
            key="confidence_finetune",
            value=best.confidence,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="3 sqrt(log(2 k*(k*+1) / delta_1) / (2 n))",
            source=MARGIN_SOURCE,
            details={"delta_1": delta_1, "delta_k": best.delta_k, "k_star": best.k},
        ),
    ]


def _capacity_terms(
    est: RircEstimate, head_norm: float, margins: np.ndarray, q: float
) -> list[Term]:
    rirc_head = head_norm * est.norm_mean / est.n
    quantile = float(np.quantile(margins, q))
    return [
        Term(
            key="rirc_head",
            value=rirc_head,
            status=Status.ESTIMATED,
            quantity="complexity",
            formula="r_hat * (MC mean of ||sum sigma_i z'_i||) / n (grows with the head's scale)",
            source=RIRC_SOURCE,
            stderr=head_norm * est.norm_stderr / est.n,
        ),
        Term(
            key="capacity_ratio",
            value=rirc_head / quantile if quantile > 0 else None,
            status=Status.ESTIMATED,
            quantity="complexity",
            formula=f"rirc_head / q, q the {q:g} quantile of the training margins y_i f_hat(x_i) "
            "(scale-free; null when q <= 0)",
            source="bound-spec section 2 (a gateable capacity number)",
            details={"margin_quantile": q, "q": quantile},
        ),
    ]


def estimate(
    config: Config | str | Path,
    *,
    progress: ProgressFn | None = None,
    transfer: Any = None,
) -> Report:
    """Load the models and data named in ``config`` and compute the itemised bound.

    ``transfer``: a ``tfbound.bounds.decomposition.TransferInput`` (C and beta) for the excess-risk
    decomposition of bound-spec 6.2, or None (the decomposition is left out, with the reason).
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    b = cfg.bound
    deltas = {share: b.delta_of(share) for share in b.delta_shares}
    torch.set_grad_enabled(False)
    try:
        return _estimate(cfg, deltas, progress, transfer)
    finally:
        torch.set_grad_enabled(True)


def _estimate(
    cfg: Config, deltas: dict[str, float], progress: ProgressFn | None, transfer: Any = None
) -> Report:
    b = cfg.bound
    warnings: list[str] = []
    load_lab, load_in = _loaders(cfg)
    train = load_lab(cfg.data.downstream_train)
    test = load_lab(cfg.data.downstream_test) if cfg.data.downstream_test else None
    encoder = build_module(cfg.encoder)
    first = torch.from_numpy(np.asarray(train.x[:1], dtype=np.float32))
    try:
        d = feature_dim_of(encoder, first)
    except RuntimeError as exc:
        raise DataError(
            f"the encoder cannot read these inputs (shape {tuple(train.x.shape[1:])}): "
            f"{str(exc).splitlines()[0]}",
            path=train.source.path,
        ) from exc
    head = build_head(cfg.head, d)
    train_pass = _feature_pass(
        encoder, head, train.x, train.source, b.batch_size, True, "features (train)", progress
    )
    assert train_pass.features is not None
    n = train_pass.features.shape[0]
    c = b.bias_const
    # An encoder chosen among J candidates by looking at S: every candidate's statement at delta/J.
    j = b.encoder_candidates
    delta_1, delta_mc = deltas["finetune"] / j, deltas["mc"] / j

    est = rirc_linear(
        train_pass.features,
        1.0,
        n_draws=b.n_draws,
        seed=b.seed,
        delta_mc=delta_mc,
        bias_const=c,
    )
    u_sigma = est.norm_upper * ROUNDING
    head_kind = "linear" if isinstance(head, LinearHead) else "mlp"
    head_norm: float | None
    if isinstance(head, LinearHead):
        head_norm, factor = linear_head_norm(head, c), 1.0
    elif isinstance(head, MLPHead) and head.activation == "relu":
        head_norm, factor = relu_path_norm(head, c), 2.0
    else:
        head_norm, factor = None, 0.0
        warnings.append(
            f"no certified bound: an MLP head with activation {getattr(head, 'activation', '?')!r} "
            "needs the three-way grid of bound-spec section 2; only linear and ReLU heads are "
            "certified"
        )

    terms: list[Term] = []
    bounds: list[Term] = []
    margins = train.y * train_pass.scores
    certified_value: float | None = None
    if head_norm is not None:
        mb = margin_bound(
            train_pass.scores,
            train.y,
            head_norm,
            u_sigma,
            delta_1=delta_1,
            rho0=b.rho0,
            rirc_factor=factor,
        )
        if mb.best is None:
            warnings.append("the head is zero: the certified bound is the trivial 1")
            certified_value = 1.0
            bounds.append(_trivial_bound(deltas))
        else:
            terms += _margin_terms(mb, delta_1, delta_mc)
            terms += _rirc_terms(est, mb, head_kind)
            certified_value = mb.total
            bounds.append(_certified_bound(mb, deltas, j))
            if mb.total >= 1.0:
                warnings.append(
                    "the certified bound is vacuous (>= 1) for this head and sample size"
                )
        terms += _capacity_terms(est, head_norm, margins, b.margin_quantile)

    # Section 10: PAC-Bayes with a prior learned on S1, hold-out plus disagreement on a pool.
    pac: PacBayesResult | None = None
    theta_aug = _augmented_linear_head(head, c) if isinstance(head, LinearHead) else None
    if theta_aug is not None:
        pac = pac_bayes_linear(
            train_pass.features,
            train.y,
            theta_aug,
            bias_const=c,
            split_seed=b.split_seed,
            delta_pb=deltas["pb"] / j,
            n1_fraction=b.n1_fraction,
            eps=b.metric_eps,
            lam=b.prior_lam,
        )
        bounds += pac_bayes_terms(pac, confidence=1.0 - deltas["pb"])
    else:
        warnings.append(
            "PAC-Bayes (spec 10.2) certifies linear heads only: for this MLP head the "
            "deterministic certificate is section 2's (spec 10.4)"
        )
    if cfg.data.downstream_unlabeled is not None:
        if pac is None or theta_aug is None:
            warnings.append("the disagreement certificate is implemented for linear heads only")
        else:
            pool = load_in(cfg.data.downstream_unlabeled)
            _check_pool(pool, cfg, train.x, None if test is None else test.x)
            pool_pass = _feature_pass(
                encoder,
                head,
                pool,
                cfg.data.downstream_unlabeled,
                b.batch_size,
                True,
                "features (unlabeled pool)",
                progress,
            )
            assert pool_pass.features is not None
            dis = disagreement(
                train_pass.features[pac.idx2],
                train.y[pac.idx2],
                pool_pass.features,
                theta_aug,
                pac.theta_prior[0],
                bias_const=c,
                delta_a=deltas["a"] / j,
                delta_b=deltas["b"] / j,
            )
            bounds.append(disagreement_term(dis, confidence=1.0 - deltas["a"] - deltas["b"]))

    test_summary: dict[str, Any] = {}
    if test is not None:
        test_pass = _feature_pass(
            encoder,
            head,
            test.x,
            test.source,
            b.batch_size,
            pac is not None,
            "features (test)",
            progress,
        )
        errors = int(np.sum(test.y * test_pass.scores <= 0))
        m_test = int(test.y.shape[0])
        held = heldout_terms(errors, m_test, deltas["test"])
        terms += held
        if certified_value is not None:
            terms.append(tightness_term(certified_value, held[1].value or 0.0))
        if pac is not None and test_pass.features is not None:
            terms.append(observed_gibbs_term(pac.gibbs_error(test_pass.features, test.y), m_test))
        terms += tightness_terms(bounds, held[1].value or 0.0)
        test_summary = {
            "m_test": m_test,
            "positives": int(np.sum(test.y > 0)),
            "path": _rel(test.source.path, cfg),
        }
    else:
        warnings.append("no downstream_test split: no observed test error or test-set bound")

    pretext_summary: dict[str, Any] = {}
    decoder: nn.Module | None = None
    pretext_fit: tuple[float, int, int] | None = None
    if cfg.pretext is not None and cfg.decoder is not None and cfg.data.pretrain_train is not None:
        decoder = build_module(cfg.decoder)
        task = pretext_task(cfg.pretext)
        tr_mean, n_pre, out_dim = _pretext_mean_loss(
            task,
            encoder,
            decoder,
            cfg.data.pretrain_train,
            cfg.pretext,
            cfg.pretext.seed,
            b.batch_size,
            "pretext (train)",
            progress,
        )
        pretext_summary = {"N": n_pre, "D": out_dim, "decoder_parameters": _param_count(decoder)}
        pretext_fit = (tr_mean, n_pre, out_dim)
        if cfg.data.pretrain_val is not None:
            va_mean, n_val, _ = _pretext_mean_loss(
                task,
                encoder,
                decoder,
                cfg.data.pretrain_val,
                cfg.pretext,
                cfg.pretext.seed + 1,
                b.batch_size,
                "pretext (held out)",
                progress,
            )
            terms += pretext_terms(
                tr_mean,
                n_pre,
                va_mean,
                n_val,
                cfg.pretext.box,
                deltas["pretext_val"],
                task=cfg.pretext.kind,
                output_dim=out_dim,
            )
            pretext_summary["N_val"] = n_val
        else:
            warnings.append("no pretrain_val split: no held-out pretext gap")
    elif cfg.pretext is None:
        warnings.append("no pretext section: pre-training terms are left out")

    from tfbound.bounds.decomposition import decomposition_terms

    decomposition, decomposition_warnings = decomposition_terms(
        terms, n, transfer, encoder_weights=cfg.encoder.weights, bias_const=c
    )
    terms += decomposition
    warnings += decomposition_warnings

    if any(t.key in DETERMINISTIC_CERTIFICATES for t in bounds):
        spent = {"finetune", "mc"} if head_norm is not None else set()
        spent |= {"pb"} if pac is not None else set()
        spent |= {"a", "b"} if any(t.key == "disagreement_bound" for t in bounds) else set()
        shares = {k: deltas[k] for k in sorted(spent)}
        best = best_certificate(bounds, sum(shares.values()), shares)
        bounds.insert(0, best)
        if test is not None:
            tsb = next(t for t in terms if t.key == "test_set_bound").value or 0.0
            terms += tightness_terms([best], tsb)

    # Network complexity terms (bound-spec 4, 5, 6.1); for a fine-tuned encoder the frozen-encoder
    # certificates above become diagnostic and the section-5 route is added.
    from tfbound.bounds.capacity import CapacityInputs, capacity_terms

    capacity = capacity_terms(
        CapacityInputs(
            cfg=cfg,
            encoder=encoder,
            head=head,
            train_x=train.x,
            train_y=train.y,
            scores=train_pass.scores,
            features=train_pass.features,
            u_sigma=u_sigma,
            deltas=deltas,
            decoder=decoder,
            pretext_train=pretext_fit,
            load_inputs=load_in,
        )
    )
    terms, bounds = capacity.apply(terms, bounds)
    warnings += capacity.warnings

    model = {
        "encoder": {
            "arch": cfg.encoder.arch,
            "parameters": _param_count(encoder),
            "feature_dim": d,
        },
        "head": {"arch": cfg.head.arch, "parameters": _param_count(head), "head_norm": head_norm},
    }
    data = {
        "downstream_train": {
            "n": n,
            "positives": int(np.sum(train.y > 0)),
            "input_shape": list(train.x.shape[1:]),
            "path": _rel(train.source.path, cfg),
        },
    }
    if test_summary:
        data["downstream_test"] = test_summary
    if pretext_summary:
        data["pretrain"] = pretext_summary
    deltas_out = {"delta": b.delta, **deltas}
    return Report(
        kind="estimate",
        config=cfg.to_dict(),
        model=model,
        data=data,
        deltas=deltas_out,
        terms=tuple(terms),
        bounds=tuple(bounds),
        warnings=tuple(warnings),
    )


def _loaders(cfg: Config) -> tuple[Callable[[ArraySource], Any], Callable[[ArraySource], Any]]:
    """Data loaders: numeric arrays, or texts tokenized for a BERT encoder ((n, 2, T) arrays)."""
    if cfg.encoder.arch == "bert":
        from tfbound.models.bert import TextData

        text = TextData.from_spec(cfg.encoder)
        return text.load_labeled, text.load_inputs
    return load_labeled, load_inputs


def _augmented_linear_head(head: LinearHead, bias_const: float) -> np.ndarray:
    """``theta' = (theta, b / c)`` in float64."""
    theta = head.linear.weight.detach().to(torch.float64).reshape(-1).numpy()
    b = float(head.linear.bias.detach().to(torch.float64).reshape(()))
    return np.concatenate([theta, [b / bias_const]])


def _check_pool(
    pool: np.ndarray, cfg: Config, train_x: np.ndarray, test_x: np.ndarray | None
) -> None:
    """The unlabeled pool must share no input with S, the test split or the pre-training data."""
    others = [np.asarray(train_x)]
    if test_x is not None:
        others.append(np.asarray(test_x))
    for src in (cfg.data.pretrain_train, cfg.data.pretrain_val):
        if src is not None:
            others.append(np.asarray(load_inputs(src)))
    check_pool_disjoint(np.asarray(pool), *others)


def _rel(path: Path, cfg: Config) -> str:
    try:
        return path.relative_to(cfg.base).as_posix()
    except ValueError:
        return path.as_posix()


def _certified_bound(mb: MarginBound, deltas: dict[str, float], n_candidates: int) -> Term:
    best = mb.best
    assert best is not None
    return Term(
        key="certified_test_error_bound",
        value=best.total,
        status=Status.CERTIFIED,
        quantity="downstream_test_error",
        formula="min_k [downstream_empirical_risk + rirc_term + confidence_finetune] (at k*)",
        source=MARGIN_SOURCE,
        confidence=1.0 - deltas["finetune"] - deltas["mc"],
        components=("downstream_empirical_risk", "rirc_term", "confidence_finetune"),
        details={
            "k_star": best.k,
            "rho_k_star": best.rho,
            "gamma": mb.gamma,
            "delta_k_star": best.delta_k,
            "delta_1": mb.delta_1,
            "delta_mc": deltas["mc"] / n_candidates,
            "encoder_candidates": n_candidates,
            "rho0": mb.rho0,
            "cells_scanned": mb.n_cells,
            "head_norm": mb.head_norm,
            "vacuous": best.total >= 1.0,
            "assumes": "encoder, feature map, c, rho0, K and seed fixed independently of the "
            "labeled sample (or chosen among encoder_candidates J of them, each at delta/J); "
            "features in eval mode",
        },
    )


def _trivial_bound(deltas: dict[str, float]) -> Term:
    return Term(
        key="certified_test_error_bound",
        value=1.0,
        status=Status.CERTIFIED,
        quantity="downstream_test_error",
        formula="1 (the head is zero: every prediction is a tie, counted as an error)",
        source="trivial",
        confidence=1.0,
    )


__all__ = ["ProgressFn", "estimate"]
