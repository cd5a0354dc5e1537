"""``estimate(config) -> Report``: load, one batched pass over the data, the bound term by term."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tfbound.bounds.heldout import heldout_terms, tightness_term
from tfbound.bounds.margin import (
    MARGIN_SOURCE,
    ROUNDING,
    MarginBound,
    linear_head_norm,
    margin_bound,
    relu_path_norm,
)
from tfbound.bounds.pretext import pretext_terms
from tfbound.config import ArraySource, Config, PretextSpec, load_config
from tfbound.errors import ConfigError, DataError
from tfbound.io.datasets import load_inputs, load_labeled
from tfbound.measures.rirc import RircEstimate, rirc_linear
from tfbound.models.build import build_head, build_module, feature_dim_of
from tfbound.models.heads import LinearHead, MLPHead
from tfbound.pretext import (
    ContextEncoderTask,
    MaskedAutoencoderTask,
    PretextTask,
    clipped_square_loss,
    pretext_batch,
)
from tfbound.report import Report
from tfbound.terms import Status, Term

#: ``progress(task, done, total)`` is called after every batch.
ProgressFn = Callable[[str, int, int], None]

RIRC_SOURCE = (
    "bound-spec section 3: Monte Carlo over K sign vectors; McDiarmid upper value "
    "mean + sqrt(sum ||z'||^2) sqrt(2 log(1/delta_mc)/K), capped by Jensen sqrt(sum ||z'||^2)"
)


def _batches(
    x: np.ndarray, batch_size: int, source: ArraySource, task: str, progress: ProgressFn | None
) -> Iterator[torch.Tensor]:
    n = x.shape[0]
    for start in range(0, n, batch_size):
        batch = torch.from_numpy(np.asarray(x[start : start + batch_size], dtype=np.float32))
        if not bool(torch.isfinite(batch).all()):
            raise DataError(f"inputs '{source.x}' contain NaN or Inf", path=source.path)
        yield batch
        if progress is not None:
            progress(task, min(n, start + batch_size), n)


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
    for batch in _batches(x, batch_size, source, task, progress):
        z = encoder(batch).reshape(batch.shape[0], -1)
        if not bool(torch.isfinite(z).all()):
            raise DataError("the encoder produced NaN or Inf features", path=source.path)
        scores.append(head(z).to(torch.float64).numpy())
        if keep_features:
            feats.append(z.to(torch.float64).numpy())
    return _Pass(np.concatenate(feats) if keep_features else None, np.concatenate(scores))


def _pretext_task(spec: PretextSpec) -> PretextTask:
    if spec.kind == "ce":
        assert spec.image_shape is not None and spec.block is not None
        try:
            return ContextEncoderTask(spec.image_shape, spec.block)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    assert spec.mask_ratio is not None
    return MaskedAutoencoderTask(spec.mask_ratio)


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
    for batch in _batches(x, batch_size, source, label, progress):
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
) -> Report:
    """Load the models and data named in ``config`` and compute the itemised bound."""
    cfg = config if isinstance(config, Config) else load_config(config)
    b = cfg.bound
    deltas = {share: b.delta_of(share) for share in b.delta_shares}
    torch.set_grad_enabled(False)
    try:
        return _estimate(cfg, deltas, progress)
    finally:
        torch.set_grad_enabled(True)


def _estimate(cfg: Config, deltas: dict[str, float], progress: ProgressFn | None) -> Report:
    b = cfg.bound
    warnings: list[str] = []
    train = load_labeled(cfg.data.downstream_train)
    test = load_labeled(cfg.data.downstream_test) if cfg.data.downstream_test else None
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

    est = rirc_linear(
        train_pass.features,
        1.0,
        n_draws=b.n_draws,
        seed=b.seed,
        delta_mc=deltas["mc"],
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
            delta_1=deltas["finetune"],
            rho0=b.rho0,
            rirc_factor=factor,
        )
        if mb.best is None:
            warnings.append("the head is zero: the certified bound is the trivial 1")
            certified_value = 1.0
            bounds.append(_trivial_bound(deltas))
        else:
            terms += _margin_terms(mb, deltas["finetune"], deltas["mc"])
            terms += _rirc_terms(est, mb, head_kind)
            certified_value = mb.total
            bounds.append(_certified_bound(mb, deltas))
            if mb.total >= 1.0:
                warnings.append(
                    "the certified bound is vacuous (>= 1) for this head and sample size"
                )
        terms += _capacity_terms(est, head_norm, margins, b.margin_quantile)

    test_summary: dict[str, Any] = {}
    if test is not None:
        test_pass = _feature_pass(
            encoder, head, test.x, test.source, b.batch_size, False, "features (test)", progress
        )
        errors = int(np.sum(test.y * test_pass.scores <= 0))
        m_test = int(test.y.shape[0])
        held = heldout_terms(errors, m_test, deltas["test"])
        terms += held
        if certified_value is not None:
            terms.append(tightness_term(certified_value, held[1].value or 0.0))
        test_summary = {
            "m_test": m_test,
            "positives": int(np.sum(test.y > 0)),
            "path": _rel(test.source.path, cfg),
        }
    else:
        warnings.append("no downstream_test split: no observed test error or test-set bound")

    pretext_summary: dict[str, Any] = {}
    if cfg.pretext is not None and cfg.decoder is not None and cfg.data.pretrain_train is not None:
        decoder = build_module(cfg.decoder)
        task = _pretext_task(cfg.pretext)
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


def _rel(path: Path, cfg: Config) -> str:
    try:
        return path.relative_to(cfg.base).as_posix()
    except ValueError:
        return path.as_posix()


def _certified_bound(mb: MarginBound, deltas: dict[str, float]) -> Term:
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
            "delta_1": deltas["finetune"],
            "delta_mc": deltas["mc"],
            "rho0": mb.rho0,
            "cells_scanned": mb.n_cells,
            "head_norm": mb.head_norm,
            "vacuous": best.total >= 1.0,
            "assumes": "encoder, feature map, c, rho0, K and seed fixed independently of the "
            "labeled sample; features in eval mode",
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
