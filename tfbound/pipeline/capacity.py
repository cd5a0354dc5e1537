"""The capacity stage of ``estimate``: read the built modules into typed chains and norms, then
call the bound modules that turn them into terms (bound-spec sections 4, 5 and 6.1).

- MLP encoder and head: ``tfbound.bounds.network`` (GRS, BFT, feature norm, MLP-head terms), the
  fine-tuned route of ``tfbound.bounds.finetuned`` and the Context Encoder's certified pretext
  bound of ``tfbound.bounds.pretext``;
- ViT and BERT encoders: ``tfbound.bounds.transformer`` from the exact norms of
  ``tfbound.inspect``.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from tfbound.adapters.chain import (
    ln_tensors,
    mlp_chain,
    transformer_feature_norm,
    vit_tokens,
)
from tfbound.bounds.budget import DeltaBudget
from tfbound.bounds.finetuned import NO_TRANSFORMER_ROUTE, distance_term, finetuned_mlp_route
from tfbound.bounds.network import mlp_feature_norm_term, mlp_head_terms, mlp_network_terms
from tfbound.bounds.pretext import pretext_certificate_terms
from tfbound.bounds.transformer import TransformerNorms, rows_read, transformer_terms
from tfbound.config import Config
from tfbound.errors import UsageError
from tfbound.io.digest import state_dict_digest
from tfbound.measures.network import layernorm_output_bound, sum_sq_with_constant
from tfbound.pipeline.stages import (
    Models,
    PretextPass,
    Setup,
    Splits,
    masked_sum_sq,
    setup_of,
    task_of,
)
from tfbound.pipeline.stream import TrainStream
from tfbound.terms import Term

#: What ``--capacity`` may be (see ``tfbound.pipeline.estimate``).
CAPACITY_MODES = ("full", "fast", "off")
CAPACITY_OFF = "capacity numbers not computed (--capacity off): the certificates alone"
CAPACITY_FAST = "per-head attention norms and transformer proxies not computed (--capacity fast)"


def check_capacity_mode(mode: str) -> None:
    if mode not in CAPACITY_MODES:
        raise UsageError(f"capacity must be one of {', '.join(CAPACITY_MODES)}")


@dataclass
class CapacityOut:
    """The capacity terms, the fine-tuned certificate (if any) and the warnings."""

    terms: list[Term] = field(default_factory=list)
    bounds: list[Term] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_ROWS = 4096  # input rows read at a time by the input sums


def _sum_sq_inputs(x: np.ndarray, bias_const: float) -> float:
    """``sum_i ||x'_i||^2`` of the inputs, read ``_ROWS`` rows at a time (no float64 copy of
    the split)."""
    total, n = 0.0, int(x.shape[0])
    for start in range(0, n, _ROWS):
        total += sum_sq_with_constant(np.asarray(x[start : start + _ROWS]), 0.0)
    return total + n * bias_const**2


def _inputs_in_box(x: np.ndarray, box: tuple[float, float]) -> bool:
    lo, hi = box
    for start in range(0, int(x.shape[0]), _ROWS):
        rows = np.asarray(x[start : start + _ROWS], dtype=np.float64)
        if not bool(np.all((rows >= lo) & (rows <= hi))):
            return False
    return True


def capacity_stage(
    cfg: Config | Setup,
    models: Models,
    splits: Splits,
    train_pass: TrainStream,
    *,
    u_sigma: float,
    budget: DeltaBudget,
    pretext_train: PretextPass | None,
    mode: str = "full",
) -> CapacityOut:
    """Every capacity term that applies to the configured encoder, head and decoder, and the
    certificates that need the network's norms (the fine-tuned route, the pretext certificate).
    ``mode``: ``fast``, no per-layer norm pass of a transformer; ``off``, the certificates only."""
    from tfbound.models.bert import BertEncoder
    from tfbound.models.hf import HFEncoder
    from tfbound.models.vit import ViTEncoder

    if isinstance(cfg, Config):
        cfg = setup_of(cfg)

    out = CapacityOut()
    b = cfg.bound
    c = b.bias_const
    train_x, train_y = splits.train.x, splits.train.y
    finetuned = models.reference is not None
    enc_chain = mlp_chain(models.encoder)
    head_chain = mlp_chain(models.head)
    numbers = mode != "off"
    if not numbers:
        out.warnings.append(CAPACITY_OFF)
    if numbers and head_chain is not None and len(head_chain) > 1:
        out.terms += mlp_head_terms(
            head_chain,
            sum_sq_features_with_constant=train_pass.sum_sq_with_constant,
            n=train_pass.n,
            bias_const=c,
            u_sigma=u_sigma,
            delta_mc=budget.per_candidate("monte_carlo"),
        )
    if enc_chain is not None and head_chain is not None:
        s_x = _sum_sq_inputs(train_x, c)
        if numbers:
            out.terms += mlp_network_terms(
                enc_chain,
                head_chain,
                sum_sq_inputs_with_constant=s_x,
                n=train_x.shape[0],
                bias_const=c,
                margin_q=float(np.quantile(train_y * train_pass.scores, b.margin_quantile)),
                margin_quantile=b.margin_quantile,
            )
        if numbers and cfg.pretext is not None:
            out.terms.append(
                mlp_feature_norm_term(
                    enc_chain,
                    box=cfg.pretext.box,
                    input_dim=int(np.prod(train_x.shape[1:])),
                    inputs_in_box=_inputs_in_box(train_x, cfg.pretext.box),
                    observed_max_train=train_pass.max_norm,
                )
            )
        if models.reference is not None:
            route = finetuned_mlp_route(
                enc_chain,
                head_chain,
                mlp_chain(models.reference),
                scores=train_pass.scores,
                labels=train_y,
                sum_sq_inputs_with_constant=s_x,
                bias_const=c,
                delta_finetune=budget.share("finetune"),
                encoder_candidates=b.encoder_candidates,
                rho0=b.rho0,
                distances=_layer_distances(models.encoder, models.reference),
                reference_name=str(cfg.reference_name),
            )
            out.terms += route.terms
            out.bounds += route.bounds
            out.warnings += route.warnings
        out.terms += _pretext_certificate(cfg, models, splits, pretext_train, budget, out.warnings)
    elif isinstance(models.encoder, ViTEncoder | BertEncoder | HFEncoder):
        fast = mode == "fast"
        if fast:
            out.warnings.append(CAPACITY_FAST)
        if numbers:
            out.terms += transformer_terms(
                _transformer_norms(models.encoder, tuple(train_x.shape), per_layer=not fast),
                observed_max_train=train_pass.max_norm,
                warnings=out.warnings,
                per_head=not fast,
            )
        if models.reference is not None:
            out.warnings.append(NO_TRANSFORMER_ROUTE)
            out.terms.append(
                distance_term(
                    _layer_distances(models.encoder, models.reference),
                    str(cfg.reference_name),
                )
            )
    else:
        out.warnings.append(
            "capacity terms left out: the encoder is neither a plain MLP (Linear and elementwise "
            "activations) nor tfbound's ViT or BERT encoder"
        )
        if finetuned:
            out.warnings.append(
                "the encoder was fine-tuned (encoder.reference) but no certified route is "
                "implemented for its architecture (bound-spec section 5)"
            )
    if finetuned:
        out.warnings.append(
            "frozen-encoder certificates (bound-spec sections 2 and 10) are shown as diagnostic: "
            "the encoder was fine-tuned on the labeled sample (encoder.reference)"
        )
    return out


def _pretext_certificate(
    cfg: Setup,
    models: Models,
    splits: Splits,
    pretext_train: PretextPass | None,
    budget: DeltaBudget,
    warnings: list[str],
) -> list[Term]:
    """The Context Encoder's certified pretext bound (bound-spec 6.1), when it applies."""
    if cfg.pretext is None or models.decoder is None or pretext_train is None:
        return []
    if cfg.pretext.kind != "ce":
        return []
    enc = mlp_chain(models.encoder)
    dec = mlp_chain(models.decoder)
    assert enc is not None
    if dec is None or splits.pretrain_train is None:
        why = "the decoder is not a plain MLP" if dec is None else "no pre-training inputs"
        warnings.append(f"no certified pretext bound (bound-spec 6.1): {why}")
        return []
    task = task_of(cfg)
    assert task is not None
    x = splits.pretrain_train
    c = cfg.bound.bias_const
    return pretext_certificate_terms(
        enc,
        dec,
        sum_sq_masked_inputs_with_constant=masked_sum_sq(task, x, c),
        n=int(x.shape[0]),
        train_mean=pretext_train.mean_loss,
        n_pre=pretext_train.n,
        d_out=pretext_train.output_dim,
        box=cfg.pretext.box,
        bias_const=c,
        delta_pre=budget.share("pretext_certificate"),
        warnings=warnings,
    )


#: Transformer norms already computed in this process, by the digest of the encoder's weights
#: (most recent last): repeated estimates on one encoder (a training callback, a notebook) do not
#: decompose its matrices again.
_NORMS_CACHE: OrderedDict[tuple[str, str], TransformerNorms] = OrderedDict()
NORMS_CACHE_SIZE = 4


def clear_norms_cache() -> None:
    """Forget every cached transformer norm (tests, benchmarks)."""
    _NORMS_CACHE.clear()


def _transformer_norms(
    encoder: nn.Module, train_x_shape: tuple[int, ...], per_layer: bool = True
) -> TransformerNorms:
    """The exact per-head and per-layer norms of a ViT or BERT encoder (``tfbound.inspect``;
    none without ``per_layer``), its LayerNorm output bounds and its sequence length (text: the
    padded length of ``train_x``).

    Only the rows ``transformer_terms`` reads are computed (``rows_read``: the heads, the
    blocks' MLP linear layers and the LayerNorms; no embedding table or attention projection
    row), and the result is kept in a small LRU keyed by the digest of the weights."""
    bound, where = transformer_feature_norm(encoder)
    tokens = int(train_x_shape[-1]) if len(train_x_shape) == 3 else vit_tokens(encoder)
    if not per_layer:
        return TransformerNorms(bound, where, (), (), (), tokens)
    key = (type(encoder).__qualname__, state_dict_digest(encoder))
    cached = _NORMS_CACHE.get(key)
    if cached is None:
        cached = _compute_transformer_norms(encoder, bound, where)
        _NORMS_CACHE[key] = cached
        while len(_NORMS_CACHE) > NORMS_CACHE_SIZE:
            _NORMS_CACHE.popitem(last=False)
    else:
        _NORMS_CACHE.move_to_end(key)
    return dataclasses.replace(
        cached, feature_bound=bound, feature_bound_where=where, tokens=tokens
    )


def _compute_transformer_norms(
    encoder: nn.Module, bound: float | None, where: str
) -> TransformerNorms:
    from tfbound.inspect import inspect_module

    result = inspect_module(encoder, select=rows_read)
    ln_bounds = tuple(
        layernorm_output_bound(*ln_tensors(encoder, r.name))
        for r in result.layers
        if r.kind == "layernorm"
    )
    return TransformerNorms(bound, where, tuple(result.heads), tuple(result.layers), ln_bounds, 0)


def _layer_distances(encoder: nn.Module, reference: nn.Module) -> dict[str, float]:
    """``||W - M||_F`` per layer that ``encoder`` shares with ``reference``."""
    from tfbound.inspect import inspect_module

    result = inspect_module(encoder, reference=reference)
    return {
        r.name: r.distance_to_reference.value
        for r in result.layers
        if r.distance_to_reference is not None
    }
