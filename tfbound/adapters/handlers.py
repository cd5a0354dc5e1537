"""Layer handlers: a plan and its tensors in, a row of norms out (one handler per layer kind).

``LAYER_HANDLERS`` maps a kind to its handler; ``register_layer_handler`` adds one. A handler
gets a ``fetch(name) -> Tensor`` for the checkpoint and, when a reference checkpoint is given, a
``fetch_reference(name) -> Tensor | None`` (None: the reference lacks that tensor).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch

from tfbound.adapters.attention import head_factors, norm2, product_norms
from tfbound.adapters.base import (
    BATCHNORM,
    CONV,
    EMBEDDING,
    LAYERNORM,
    LINEAR,
    AttentionPlan,
    HeadRow,
    LayerPlan,
    LayerRow,
    ParamRows,
)
from tfbound.errors import CheckpointError
from tfbound.measures.conv import conv_operator_norms, fold_batchnorm
from tfbound.measures.norms import NormValue, SpectralMode, matrix_norms

Fetch = Callable[[str], torch.Tensor]
FetchReference = Callable[[str], torch.Tensor | None]


@dataclass(frozen=True)
class ComputeOptions:
    """How to compute: spectral mode, power-iteration settings, known conv input sizes."""

    spectral: SpectralMode = "exact"
    n_iter: int = 100
    seed: int = 0
    input_sizes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


LayerHandler = Callable[[LayerPlan, Fetch, FetchReference | None, ComputeOptions], LayerRow]


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


def _numel(fetched: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in fetched.values() if t.is_floating_point())


def _fetch_all(plan: LayerPlan, fetch: Fetch) -> dict[str, torch.Tensor]:
    return {name: fetch(name) for name in plan.params}


def _check_finite(
    plan: LayerPlan, fetched: Mapping[str, torch.Tensor], *, except_weight: bool = False
) -> None:
    """Raise ``CheckpointError`` for a non-finite parameter. ``except_weight``: the weight is
    checked by the measure itself (through ``sum W_ij^2``), which ``_measure_errors`` maps."""
    weight = plan.roles[0][1]
    for name, t in fetched.items():
        if except_weight and name == weight:
            continue
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{plan.name}: parameter {name} contains non-finite values")


@contextlib.contextmanager
def _measure_errors(plan: LayerPlan) -> Iterator[None]:
    """A measure's ``ValueError`` (non-finite values, shapes) as a ``CheckpointError``."""
    try:
        yield
    except ValueError as exc:
        weight = plan.roles[0][1]
        raise CheckpointError(f"{plan.name}: parameter {weight}: {exc}") from exc


def _reference(
    plan: LayerPlan, fetch_reference: FetchReference | None, shape: tuple[int, ...]
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The reference tensors of a plan, or None with a note when the reference lacks them."""
    if fetch_reference is None:
        return None, ""
    ref: dict[str, torch.Tensor] = {}
    for name in plan.params:
        t = fetch_reference(name)
        if t is None:
            return None, f"reference lacks {name}"
        ref[name] = t
    w = plan.roles[0][1]
    if tuple(ref[w].shape) != shape:
        raise CheckpointError(
            f"{plan.name}: reference {w} has shape {tuple(ref[w].shape)}, expected {shape}"
        )
    return ref, ""


def _folded(
    plan: LayerPlan, tensors: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's weight and bias, with its BatchNorm folded in when the plan says so."""
    w = _f64(tensors[plan.roles[0][1]])
    b_name = plan.param("bias")
    b = _f64(tensors[b_name]) if b_name else None
    bn = plan.fold
    if bn is None:
        return w, b

    def get(role: str) -> torch.Tensor | None:
        name = bn.param(role)
        return None if name is None else tensors[name]

    mean, var = get("running_mean"), get("running_var")
    assert mean is not None and var is not None
    eps = bn.eps if bn.eps is not None else 1e-5
    return fold_batchnorm(w, b, mean, var, get("weight"), get("bias"), eps)


def _fold_note(plan: LayerPlan) -> str:
    if plan.fold is None:
        return ""
    eps = plan.fold.eps if plan.fold.eps is not None else 1e-5
    return f"BatchNorm {plan.fold.name} folded in (eval mode, eps={eps:g}; {plan.fold_source})"


def _join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def linear_handler(
    plan: LayerPlan, fetch: Fetch, fetch_reference: FetchReference | None, opts: ComputeOptions
) -> LayerRow:
    """A weight matrix ``(out, in)``, BatchNorm folded in when one follows it."""
    tensors = _fetch_all(plan, fetch)
    _check_finite(plan, tensors, except_weight=True)
    w, b = _folded(plan, tensors)
    ref, ref_note = _reference(plan, fetch_reference, tuple(tensors[plan.roles[0][1]].shape))
    m = _folded(plan, ref)[0] if ref is not None else None
    with _measure_errors(plan):
        norms = matrix_norms(
            w, reference=m, spectral=opts.spectral, n_iter=opts.n_iter, seed=opts.seed
        )
    return LayerRow(
        name=plan.name,
        kind=plan.kind,
        shape=tuple(w.shape),
        n_params=_numel(tensors),
        spectral_norm=norms.spectral_norm,
        frobenius_norm=norms.frobenius_norm,
        l21_norm=norms.l21_norm,
        stable_rank=norms.stable_rank,
        distance_to_reference=norms.distance_to_reference,
        l21_distance_to_reference=norms.l21_distance_to_reference,
        bias_norm=norm2(b),
        params=plan.params,
        note=_join_notes(plan.note, _fold_note(plan), ref_note),
    )


def embedding_handler(
    plan: LayerPlan, fetch: Fetch, fetch_reference: FetchReference | None, opts: ComputeOptions
) -> LayerRow:
    """An embedding table as stored, ``(entries, dim)`` (size-1 dimensions squeezed)."""
    tensors = _fetch_all(plan, fetch)
    _check_finite(plan, tensors, except_weight=True)
    raw = tensors[plan.roles[0][1]]
    table = _f64(raw).reshape([s for s in raw.shape if s != 1] if raw.ndim != 2 else raw.shape)
    ref, ref_note = _reference(plan, fetch_reference, tuple(raw.shape))
    m = _f64(ref[plan.roles[0][1]]).reshape(table.shape) if ref is not None else None
    with _measure_errors(plan):
        norms = matrix_norms(
            table, reference=m, spectral=opts.spectral, n_iter=opts.n_iter, seed=opts.seed
        )
    return LayerRow(
        name=plan.name,
        kind=EMBEDDING,
        shape=tuple(raw.shape),
        n_params=_numel(tensors),
        spectral_norm=norms.spectral_norm,
        frobenius_norm=norms.frobenius_norm,
        l21_norm=norms.l21_norm,
        stable_rank=norms.stable_rank,
        distance_to_reference=norms.distance_to_reference,
        l21_distance_to_reference=norms.l21_distance_to_reference,
        params=plan.params,
        note=_join_notes(plan.note, "norms of the table as stored (rows = entries)", ref_note),
    )


def _proxy(v: NormValue, method: str) -> NormValue:
    return NormValue(v.value, "proxy", method)


def conv_handler(
    plan: LayerPlan, fetch: Fetch, fetch_reference: FetchReference | None, opts: ComputeOptions
) -> LayerRow:
    """The conv operator at its input size when known (FFT), else reshaped-kernel proxies."""
    tensors = _fetch_all(plan, fetch)
    _check_finite(plan, tensors)
    k, b = _folded(plan, tensors)
    ref, ref_note = _reference(plan, fetch_reference, tuple(tensors[plan.roles[0][1]].shape))
    m = _folded(plan, ref)[0] if ref is not None else None
    flat = matrix_norms(
        k.reshape(k.shape[0], -1),
        reference=None if m is None else m.reshape(m.shape[0], -1),
        spectral=opts.spectral,
        n_iter=opts.n_iter,
        seed=opts.seed,
    )
    size = opts.input_sizes.get(plan.name)
    dist = flat.distance_to_reference
    l21_dist = flat.l21_distance_to_reference
    if dist is not None and l21_dist is not None:
        dist = NormValue(dist.value, "certified", "kernel_frobenius")
        l21_dist = _proxy(l21_dist, "reshaped_kernel_row_l2_sum")
    if plan.conv is not None and size is not None:
        op = conv_operator_norms(
            k,
            size,
            stride=plan.conv.stride,
            padding=plan.conv.padding,
            dilation=plan.conv.dilation,
            groups=plan.conv.groups,
            padding_mode=plan.conv.padding_mode,
        )
        s, f = op.spectral_norm.value, op.frobenius_norm.value
        srank_status = "certified" if op.exact else "proxy"
        srank_method = "frobenius_sq/spectral_sq" if op.exact else "frobenius_sq/spectral_upper_sq"
        spectral, fro, l21 = op.spectral_norm, op.frobenius_norm, op.l21_norm
        srank = NormValue(f * f / (s * s) if s > 0 else 0.0, srank_status, srank_method)
        note = f"operator at input size {tuple(size)}, output {op.geometry.output_size}"
    else:
        spectral = _proxy(flat.spectral_norm, "reshaped_kernel")
        fro = _proxy(flat.frobenius_norm, "kernel_frobenius")
        l21 = _proxy(flat.l21_norm, "reshaped_kernel_row_l2_sum")
        srank = _proxy(flat.stable_rank, "reshaped_kernel")
        why = "conv geometry unknown" if plan.conv is None else "input size unknown"
        note = f"{why}: reshaped-kernel proxies (pass the module and an example input)"
    return LayerRow(
        name=plan.name,
        kind=CONV,
        shape=tuple(k.shape),
        n_params=_numel(tensors),
        spectral_norm=spectral,
        frobenius_norm=fro,
        l21_norm=l21,
        stable_rank=srank,
        distance_to_reference=dist,
        l21_distance_to_reference=l21_dist,
        bias_norm=norm2(b),
        params=plan.params,
        note=_join_notes(plan.note, _fold_note(plan), note, ref_note),
    )


def _diagonal_row(
    plan: LayerPlan,
    gain: torch.Tensor,
    shift: torch.Tensor | None,
    ref_gain: torch.Tensor | None,
    n_params: int,
    method: str,
    note: str,
) -> LayerRow:
    a = gain.abs()
    s, f = float(a.max()) if a.numel() else 0.0, math.sqrt(float((a * a).sum()))
    dist = l21_dist = None
    if ref_gain is not None:
        d = (gain - ref_gain).abs()
        dist = NormValue(math.sqrt(float((d * d).sum())), "certified", "frobenius")
        l21_dist = NormValue(float(d.sum()), "certified", "diag_l1")
    return LayerRow(
        name=plan.name,
        kind=plan.kind,
        shape=tuple(gain.shape),
        n_params=n_params,
        spectral_norm=NormValue(s, "certified", f"{method}_max_abs"),
        frobenius_norm=NormValue(f, "certified", f"{method}_l2"),
        l21_norm=NormValue(float(a.sum()), "certified", f"{method}_l1"),
        stable_rank=NormValue(f * f / (s * s) if s > 0 else 0.0, "certified", "diag"),
        distance_to_reference=dist,
        l21_distance_to_reference=l21_dist,
        bias_norm=norm2(shift),
        params=plan.params,
        note=note,
    )


def layernorm_handler(
    plan: LayerPlan, fetch: Fetch, fetch_reference: FetchReference | None, opts: ComputeOptions
) -> LayerRow:
    """LayerNorm gains ``g`` and bias ``beta``: the diagonal map ``diag(g)``.

    ``spectral_norm = ||g||_inf``, ``frobenius_norm = ||g||_2``, ``bias_norm = ||beta||_2``.
    """
    tensors = _fetch_all(plan, fetch)
    _check_finite(plan, tensors)
    g = _f64(tensors[plan.roles[0][1]])
    b_name = plan.param("bias")
    beta = _f64(tensors[b_name]) if b_name else None
    ref, ref_note = _reference(plan, fetch_reference, tuple(g.shape))
    ref_g = _f64(ref[plan.roles[0][1]]) if ref is not None else None
    note = _join_notes(plan.note, "diag(gain): spectral = max|g|, frobenius = ||g||_2", ref_note)
    return _diagonal_row(plan, g, beta, ref_g, _numel(tensors), "diag_gain", note)


def batchnorm_handler(
    plan: LayerPlan, fetch: Fetch, fetch_reference: FetchReference | None, opts: ComputeOptions
) -> LayerRow:
    """An unfolded eval-mode BatchNorm: ``x -> s x + (beta - s mean)``, ``s = g/sqrt(var+eps)``."""
    tensors = _fetch_all(plan, fetch)
    _check_finite(plan, tensors)

    def scale_shift(ts: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mean_name, var_name = plan.param("running_mean"), plan.param("running_var")
        assert mean_name is not None and var_name is not None
        mean, var = _f64(ts[mean_name]), _f64(ts[var_name])
        w_name, b_name = plan.param("weight"), plan.param("bias")
        gamma = _f64(ts[w_name]) if w_name else torch.ones_like(mean)
        beta = _f64(ts[b_name]) if b_name else torch.zeros_like(mean)
        scale = gamma / torch.sqrt(var + eps)
        return scale, beta - scale * mean

    eps = plan.eps if plan.eps is not None else 1e-5
    mean_name = plan.param("running_mean")
    assert mean_name is not None
    scale, shift = scale_shift(tensors)
    ref, ref_note = _reference(plan, fetch_reference, tuple(tensors[plan.roles[0][1]].shape))
    ref_scale = scale_shift(ref)[0] if ref is not None else None
    note = _join_notes(
        plan.note,
        f"not folded (no conv/linear feeds it alone); diag(gamma/sqrt(var+eps)), eps={eps:g}",
        ref_note,
    )
    return _diagonal_row(plan, scale, shift, ref_scale, _numel(tensors), "diag_scale", note)


LAYER_HANDLERS: dict[str, LayerHandler] = {
    LINEAR: linear_handler,
    CONV: conv_handler,
    EMBEDDING: embedding_handler,
    LAYERNORM: layernorm_handler,
    BATCHNORM: batchnorm_handler,
}


def register_layer_handler(kind: str, handler: LayerHandler) -> None:
    """Add or replace the handler of a layer kind."""
    LAYER_HANDLERS[kind] = handler


def compute_layer(
    plan: LayerPlan,
    fetch: Fetch,
    fetch_reference: FetchReference | None = None,
    options: ComputeOptions | None = None,
) -> LayerRow:
    """The row of one planned layer, by the handler of its kind."""
    handler = LAYER_HANDLERS.get(plan.kind)
    if handler is None:
        raise KeyError(f"no layer handler for kind {plan.kind!r}")
    return handler(plan, fetch, fetch_reference, options or ComputeOptions())


def _rows_of(p: ParamRows | None, fetch: Fetch) -> torch.Tensor | None:
    if p is None:
        return None
    t = _f64(fetch(p.name))
    return t if p.start is None else t[p.start : p.stop]


def compute_attention(plan: AttentionPlan, fetch: Fetch) -> list[HeadRow]:
    """Per-head rows of one attention block (none when the number of heads is unknown)."""
    if plan.heads is None:
        return []
    wq, wk, wv = (_rows_of(p, fetch) for p in (plan.query, plan.key, plan.value))
    assert wq is not None and wk is not None and wv is not None
    wo = _f64(fetch(plan.out))
    bq, bk, bv = (_rows_of(p, fetch) for p in (plan.query_bias, plan.key_bias, plan.value_bias))
    for name, t in (("query", wq), ("key", wk), ("value", wv), ("out", wo)):
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{plan.name}: {name} projection contains non-finite values")
    left_qk, right_qk, left_vo, right_vo = head_factors(wq, wk, wv, wo, plan.heads)
    qk = product_norms(left_qk, right_qk)
    vo = product_norms(left_vo, right_vo)
    dh, dv = right_qk.shape[1], right_vo.shape[1]

    def per_head(x: torch.Tensor | None, width: int) -> torch.Tensor | None:
        return None if x is None else x.reshape(-1, width)

    bq_h, bk_h, bv_h = per_head(bq, dh), per_head(bk, dh), per_head(bv, dv)
    # Wk[H_h]^T bq[H_h] and Wo[:, H_h] bv[H_h], every head at once
    logit = None if bq_h is None else (right_qk.mT @ bq_h.unsqueeze(2)).squeeze(2)
    value_out = None if bv_h is None else (left_vo @ bv_h.unsqueeze(2)).squeeze(2)

    def at(x: torch.Tensor | None, h: int) -> torch.Tensor | None:
        return None if x is None else x[h]

    rows = [
        HeadRow(
            block=plan.name,
            head=h,
            heads=plan.heads,
            head_dim=dh,
            qk_spectral_norm=qk[0][h],
            qk_frobenius_norm=qk[1][h],
            qk_l21_norm=qk[2][h],
            vo_spectral_norm=vo[0][h],
            vo_frobenius_norm=vo[1][h],
            vo_l21_norm=vo[2][h],
            query_bias_norm=norm2(at(bq_h, h)),
            key_bias_norm=norm2(at(bk_h, h)),
            value_bias_norm=norm2(at(bv_h, h)),
            logit_bias_norm=norm2(at(logit, h)),
            value_bias_out_norm=norm2(at(value_out, h)),
            style=plan.style,
        )
        for h in range(plan.heads)
    ]
    return rows
