"""Per-head attention products (spec section 4).

With weights stored ``(out, in)`` and head ``h`` owning rows ``H_h`` of the query/key/value
projections (``d_head = rows / heads`` consecutive rows each):

    QK_h = Wq[H_h, :]^T @ Wk[H_h, :]    so that logit_h(x, y) = (Wq x)_H . (Wk y)_H = x^T QK_h y
    VO_h = Wo[:, H_h] @ Wv[H_h, :]      the value-to-output map of head h

(``Wq[H_h] @ Wk[H_h]^T`` is a different, ``d_head x d_head`` matrix: a common bug.) The spectral
norms are exact and cheap through ``spectral_norms_of_products`` (the inner dimension is
``d_head``; all heads of a block in one batch); the Frobenius and (2,1) norms use the formed
``d x d`` products.
"""

from __future__ import annotations

import math

import torch

from tfbound.measures.norms import NormValue, spectral_norms_of_products

_SPECTRAL_METHOD = "factored_qr_eigvalsh"


def head_slices(rows: int, heads: int) -> list[slice]:
    """The row ranges ``H_h`` of ``heads`` equal consecutive blocks of ``rows`` rows."""
    if heads < 1 or rows % heads:
        raise ValueError(f"{heads} heads do not divide {rows} rows")
    step = rows // heads
    return [slice(h * step, (h + 1) * step) for h in range(heads)]


def qk_products(wq: torch.Tensor, wk: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """``QK_h = Wq[H_h]^T @ Wk[H_h]`` for every head (``d_in_q x d_in_k``, float64)."""
    q, k = wq.to(torch.float64), wk.to(torch.float64)
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"query has {q.shape[0]} rows, key {k.shape[0]}")
    return [q[h].T @ k[h] for h in head_slices(q.shape[0], heads)]


def vo_products(wv: torch.Tensor, wo: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """``VO_h = Wo[:, H_h] @ Wv[H_h]`` for every head (``d_out x d_in_v``, float64)."""
    v, o = wv.to(torch.float64), wo.to(torch.float64)
    if o.shape[1] != v.shape[0]:
        raise ValueError(f"Wo reads {o.shape[1]} columns, Wv has {v.shape[0]} rows")
    return [o[:, h] @ v[h] for h in head_slices(v.shape[0], heads)]


def head_factors(
    wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, wo: torch.Tensor, heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched factors ``(Wq[H_h]^T, Wk[H_h], Wo[:, H_h], Wv[H_h])`` over heads, so that
    ``QK = left_qk @ right_qk`` and ``VO = left_vo @ right_vo`` are ``(heads, ., .)`` batches."""
    q, k, v, o = (t.to(torch.float64) for t in (wq, wk, wv, wo))
    head_slices(q.shape[0], heads)  # validates
    head_slices(v.shape[0], heads)
    if q.shape[0] != k.shape[0] or o.shape[1] != v.shape[0]:
        raise ValueError(f"shapes do not fit: q {q.shape}, k {k.shape}, v {v.shape}, o {o.shape}")
    dh, dv = q.shape[0] // heads, v.shape[0] // heads
    left_qk = q.reshape(heads, dh, q.shape[1]).mT
    right_qk = k.reshape(heads, dh, k.shape[1])
    left_vo = o.reshape(o.shape[0], heads, dv).permute(1, 0, 2)
    right_vo = v.reshape(heads, dv, v.shape[1])
    return left_qk, right_qk, left_vo, right_vo


def product_norms(
    left: torch.Tensor, right: torch.Tensor
) -> tuple[list[NormValue], list[NormValue], list[NormValue]]:
    """Spectral, Frobenius and (2,1) norms of each ``left[i] @ right[i]``, all exact (certified)."""
    prod = left @ right
    spec = spectral_norms_of_products(left, right)
    row_sq = (prod * prod).sum(dim=2)
    fro = row_sq.sum(dim=1).sqrt()
    l21 = row_sq.sqrt().sum(dim=1)
    return (
        [NormValue(float(x), "certified", _SPECTRAL_METHOD) for x in spec],
        [NormValue(float(x), "certified", "frobenius") for x in fro],
        [NormValue(float(x), "certified", "row_l2_sum") for x in l21],
    )


def norm2(x: torch.Tensor | None) -> float | None:
    return None if x is None else math.sqrt(float((x.to(torch.float64) ** 2).sum()))
