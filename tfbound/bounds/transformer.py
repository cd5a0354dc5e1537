"""Transformer encoders (ViT, BERT): the certified feature norm after the final LayerNorm, the
per-head attention norms (diagnostic) and two transformer capacity numbers (proxy), all from the
exact norms of ``tfbound.inspect`` gathered in :class:`TransformerNorms` (bound-spec section 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tfbound.adapters.base import HeadRow, LayerRow
from tfbound.bounds.network import FEATURE_NORM_SOURCE
from tfbound.measures.network import GELU_LIPSCHITZ
from tfbound.terms import Status, Term

EGKZ_SOURCE = (
    "after Edelman, Goel, Kakade, Zhang (ICML 2022, arXiv 2110.10090): per-block Lipschitz "
    "factors times a sum of norm ratios, with a log T dependence on the sequence length; their "
    "constants, log factors and exact norms are not reproduced or verified here (proxy)"
)
TT_SOURCE = (
    "after Trauger, Tewari (AISTATS 2024, arXiv 2310.13088): norm-based and independent of the "
    "sequence length; their covering lemmas' constants and exact norms are not reproduced or "
    "verified here (proxy)"
)


@dataclass(frozen=True)
class TransformerNorms:
    """What the transformer terms read: plain numbers and the rows of ``tfbound.inspect``."""

    #: bound on every feature vector's norm (the encoder's final LayerNorm); None: none known
    feature_bound: float | None
    feature_bound_where: str
    heads: tuple[HeadRow, ...]
    layers: tuple[LayerRow, ...]
    layernorm_bounds: tuple[float, ...]  # output-norm bound of every LayerNorm, in layer order
    tokens: int  # sequence length T


def block_parent(block: str) -> str:
    """The module that holds attention block ``block`` (``blocks.0.attn`` -> ``blocks.0``)."""
    return block.rsplit(".", 1)[0] if "." in block else ""


def is_block_mlp_layer(name: str, block: str) -> bool:
    """Whether the linear layer ``name`` is one of the MLP matrices the terms read for the
    attention block ``block``: inside the block's parent, outside the attention module."""
    return name.startswith(block_parent(block) + ".") and not name.startswith(block + ".")


def rows_read(kind: str, name: str, blocks: tuple[str, ...]) -> bool:
    """Whether ``transformer_terms`` reads the layer row ``(kind, name)`` of an encoder with
    attention ``blocks``: every LayerNorm, and the linear layers of some block's MLP."""
    if kind == "layernorm":
        return True
    return kind == "linear" and any(is_block_mlp_layer(name, b) for b in blocks)


def transformer_terms(
    norms: TransformerNorms,
    *,
    observed_max_train: float,
    warnings: list[str],
    per_head: bool = True,
) -> list[Term]:
    """``feature_norm`` (certified), the per-head maxima (diagnostic) and the EGKZ and TT
    transformer capacity numbers (proxy) of a ViT or BERT encoder; ``feature_norm`` alone
    without ``per_head``."""
    bound, where = norms.feature_bound, norms.feature_bound_where
    observed = observed_max_train
    out: list[Term] = []
    if bound is None:
        warnings.append(f"no certified feature norm: {where}")
    else:
        out.append(
            Term(
                key="feature_norm",
                value=bound,
                status=Status.CERTIFIED,
                quantity="feature_norm",
                formula="min(sqrt(d) ||g||_inf, sqrt(d-1) ||g||_2) + ||beta||_2 of the LayerNorm "
                f"that ends the encoder ({where}); data-free, any input",
                source=FEATURE_NORM_SOURCE,
                confidence=1.0,
                details={"observed_max_train": observed},
            )
        )
    if not per_head:
        return out
    if not norms.heads:
        warnings.append("no per-head attention norms: the encoder's heads were not found")
        return out
    blocks: dict[str, list[Any]] = {}
    for h in norms.heads:
        blocks.setdefault(h.block, []).append(h)
    linear = [r for r in norms.layers if r.kind == "linear"]
    ln_bounds = norms.layernorm_bounds
    b_tok = max(ln_bounds) if ln_bounds else float("nan")
    per_block = []
    kappa_prod, ratio21, ratio_f = 1.0, 0.0, 0.0
    for block, heads in blocks.items():
        mlp = [r for r in linear if is_block_mlp_layer(r.name, block)]
        d_head = heads[0].head_dim
        s_qk = max(h.qk_spectral_norm.value for h in heads) / math.sqrt(d_head)
        s_vo = sum(h.vo_spectral_norm.value for h in heads)
        s_mlp = math.prod(r.spectral_norm.value for r in mlp if r.spectral_norm is not None)
        kappa = (1.0 + s_vo * (1.0 + 2.0 * s_qk * b_tok**2)) * (1.0 + GELU_LIPSCHITZ * s_mlp)
        r21 = sum(
            (h.qk_l21_norm.value / h.qk_spectral_norm.value) ** (2 / 3)
            + (h.vo_l21_norm.value / h.vo_spectral_norm.value) ** (2 / 3)
            for h in heads
            if h.qk_spectral_norm.value > 0 and h.vo_spectral_norm.value > 0
        )
        rf = sum(
            (h.qk_frobenius_norm.value / h.qk_spectral_norm.value) ** (2 / 3)
            + (h.vo_frobenius_norm.value / h.vo_spectral_norm.value) ** (2 / 3)
            for h in heads
            if h.qk_spectral_norm.value > 0 and h.vo_spectral_norm.value > 0
        )
        for r in mlp:
            s = r.spectral_norm.value if r.spectral_norm is not None else 0.0
            if s > 0 and r.l21_norm is not None and r.frobenius_norm is not None:
                r21 += (r.l21_norm.value / s) ** (2 / 3)
                rf += (r.frobenius_norm.value / s) ** (2 / 3)
        kappa_prod *= kappa
        ratio21 += r21
        ratio_f += rf
        per_block.append(
            {
                "block": block,
                "heads": len(heads),
                "qk_spectral_max": max(h.qk_spectral_norm.value for h in heads),
                "vo_spectral_max": max(h.vo_spectral_norm.value for h in heads),
                "vo_spectral_sum": s_vo,
                "logit_bias_max": max((h.logit_bias_norm or 0.0) for h in heads),
                "mlp_layers": [r.name for r in mlp],
                "mlp_spectral_product": s_mlp,
                "kappa": kappa,
            }
        )
    tokens = norms.tokens
    qk_max = max(norms.heads, key=lambda h: h.qk_spectral_norm.value)
    vo_max = max(norms.heads, key=lambda h: h.vo_spectral_norm.value)
    block_details = {"blocks": per_block, "token_norm_bound": b_tok}
    egkz = b_tok * kappa_prod * ratio21**1.5 * math.sqrt(math.log(max(tokens, 2)))
    tt = b_tok * kappa_prod * ratio_f**1.5
    kappa_text = (
        "kappa_l = (1 + sum_h ||VO_h||_2 (1 + 2 B^2 max_h ||QK_h||_2 / sqrt(d_head))) "
        "(1 + 1.129 prod ||W_mlp||_2), B the largest LayerNorm output norm bound"
    )
    out += [
        Term(
            key="attention_qk_spectral_max",
            value=qk_max.qk_spectral_norm.value,
            status=Status.DIAGNOSTIC,
            quantity="norm",
            formula="max over blocks and heads of ||QK_h||_2, QK_h = Wq[H_h]^T Wk[H_h] "
            "(exact; per block in details; `tfbound inspect` lists every head)",
            source="bound-spec section 4 (attention)",
            details={"block": qk_max.block, "head": qk_max.head, **block_details},
        ),
        Term(
            key="attention_vo_spectral_max",
            value=vo_max.vo_spectral_norm.value,
            status=Status.DIAGNOSTIC,
            quantity="norm",
            formula="max over blocks and heads of ||VO_h||_2, VO_h = Wo[:, H_h] Wv[H_h] (exact)",
            source="bound-spec section 4 (attention)",
            details={"block": vo_max.block, "head": vo_max.head},
        ),
        Term(
            key="transformer_capacity_egkz",
            value=egkz,
            status=Status.PROXY,
            quantity="complexity",
            formula="B prod_l kappa_l "
            "(sum_l sum_{M in block l} (||M||_{2,1} / ||M||_2)^(2/3))^(3/2) "
            f"sqrt(log T), M over QK_h, VO_h and the MLP matrices, T = {tokens} tokens; "
            + kappa_text,
            source=EGKZ_SOURCE,
            details={"tokens": tokens, "kappa_product": kappa_prod, "ratio_sum": ratio21},
        ),
        Term(
            key="transformer_capacity_tt",
            value=tt,
            status=Status.PROXY,
            quantity="complexity",
            formula="B prod_l kappa_l (sum_l sum_{M in block l} (||M||_F / ||M||_2)^(2/3))^(3/2) "
            "(no dependence on the sequence length); " + kappa_text,
            source=TT_SOURCE,
            details={"kappa_product": kappa_prod, "ratio_sum": ratio_f},
        ),
    ]
    return out


__all__ = [
    "EGKZ_SOURCE",
    "TT_SOURCE",
    "TransformerNorms",
    "block_parent",
    "is_block_mlp_layer",
    "rows_read",
    "transformer_terms",
]
