"""Types shared by the layer handlers: what a checkpoint holds, what a handler plans to compute,
and the rows it returns. Frozen dataclasses only; no tensors are stored in a plan or a row."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tfbound.measures.norms import NormValue

# Layer kinds a handler can take (the ``kind`` column of a row).
LINEAR, CONV, EMBEDDING, LAYERNORM, BATCHNORM = (
    "linear",
    "conv",
    "embedding",
    "layernorm",
    "batchnorm",
)
MHA = "multihead_attention"  # nn.MultiheadAttention: its fused in-projection becomes a linear row

_FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def dtype_name(dtype: object) -> str:
    """``torch.float32`` or safetensors' ``'F32'`` -> ``'float32'``."""
    text = str(dtype)
    return _SAFETENSORS_DTYPES.get(text, text.removeprefix("torch."))


@dataclass(frozen=True)
class TensorInfo:
    """A tensor of a checkpoint known by name, shape and dtype only (nothing loaded)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_floating(self) -> bool:
        return self.dtype in _FLOAT_DTYPES


@dataclass(frozen=True)
class ConvOptions:
    """PyTorch's conv arguments, known only when the module is."""

    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str


@dataclass(frozen=True)
class ModuleInfo:
    """What a module handler reads off an ``nn.Module``: its kind and the options norms need."""

    kind: str | None  # one of the layer kinds or MHA; None: no handler (a container or custom)
    type_name: str
    heads: int | None = None
    conv: ConvOptions | None = None
    eps: float | None = None


@dataclass(frozen=True)
class LayerPlan:
    """One row to compute: a layer ``name``, its ``kind`` and the parameters it reads by role.

    ``roles`` pairs a role (``weight``, ``bias``, ``running_mean``, ...) with a parameter name;
    ``fold`` is a BatchNorm plan folded into this layer before its norms are taken.
    """

    name: str
    kind: str
    roles: tuple[tuple[str, str], ...]
    conv: ConvOptions | None = None
    eps: float | None = None
    fold: LayerPlan | None = None
    fold_source: str = ""
    note: str = ""

    def param(self, role: str) -> str | None:
        return dict(self.roles).get(role)

    @property
    def params(self) -> tuple[str, ...]:
        own = tuple(name for _, name in self.roles)
        return own + (self.fold.params if self.fold is not None else ())


@dataclass(frozen=True)
class ParamRows:
    """Rows ``[start, stop)`` of a parameter (all rows when both are None)."""

    name: str
    start: int | None = None
    stop: int | None = None


@dataclass(frozen=True)
class AttentionPlan:
    """One attention block: query/key/value projections and the output projection ``Wo``.

    ``style``: ``torch_mha`` (``in_proj_weight``), ``fused_qkv`` (timm/MAE ``qkv``) or
    ``separate_qkv`` (BERT ``query``/``key``/``value``, ``q_proj``/``k_proj``/``v_proj``).
    """

    name: str
    style: str
    query: ParamRows
    key: ParamRows
    value: ParamRows
    out: str
    query_bias: ParamRows | None = None
    key_bias: ParamRows | None = None
    value_bias: ParamRows | None = None
    out_bias: str | None = None
    heads: int | None = None
    heads_source: str = ""

    @property
    def params(self) -> tuple[str, ...]:
        names = [self.query.name, self.key.name, self.value.name, self.out]
        for extra in (self.query_bias, self.key_bias, self.value_bias):
            if extra is not None:
                names.append(extra.name)
        if self.out_bias is not None:
            names.append(self.out_bias)
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Skipped:
    """A parameter no handler takes, and why (never dropped silently)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    reason: str


@dataclass(frozen=True)
class WorkUnit:
    """Plans computed together: their tensors are loaded once and released after the unit."""

    layers: tuple[LayerPlan, ...]
    attention: tuple[AttentionPlan, ...]

    @property
    def params(self) -> tuple[str, ...]:
        names: list[str] = []
        for lp in self.layers:
            names.extend(lp.params)
        for ap in self.attention:
            names.extend(ap.params)
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Plan:
    """Everything a checkpoint's names and shapes say about what to compute."""

    layers: tuple[LayerPlan, ...]
    attention: tuple[AttentionPlan, ...]
    skipped: tuple[Skipped, ...]
    notes: tuple[str, ...] = ()

    def units(self) -> tuple[WorkUnit, ...]:
        """Attention blocks together with the linear layers they read; other layers alone."""
        by_param: dict[str, int] = {}
        units: list[tuple[list[LayerPlan], list[AttentionPlan]]] = []
        for ap in self.attention:
            units.append(([], [ap]))
            for name in ap.params:
                by_param.setdefault(name, len(units) - 1)
        for lp in self.layers:
            hit = next((by_param[p] for p in lp.params if p in by_param), None)
            if hit is None:
                units.append(([lp], []))
            else:
                units[hit][0].append(lp)
        order = {lp.name: i for i, lp in enumerate(self.layers)}

        def first(u: tuple[list[LayerPlan], list[AttentionPlan]]) -> int:
            return min((order[lp.name] for lp in u[0]), default=len(order))

        units.sort(key=first)
        return tuple(WorkUnit(tuple(ls), tuple(a)) for ls, a in units)


@dataclass(frozen=True)
class LayerRow:
    """The norms of one layer. Values carry their status; None where not applicable.

    For ``linear`` rows the matrix is the weight ``(out, in)``; ``conv`` rows the operator at the
    input size when known, else the kernel reshaped to ``(c_out, -1)`` (status ``proxy``);
    ``embedding`` rows the table as stored (rows = entries); ``layernorm`` and ``batchnorm`` rows
    the diagonal map ``diag(g)`` (``spectral_norm = ||g||_inf``, ``frobenius_norm = ||g||_2``,
    ``l21_norm = ||g||_1``). ``distance_to_reference`` is always the parameter distance
    ``||W - M||_F`` (after folding, when a BatchNorm was folded in).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    n_params: int
    spectral_norm: NormValue | None
    frobenius_norm: NormValue | None
    l21_norm: NormValue | None
    stable_rank: NormValue | None
    distance_to_reference: NormValue | None = None
    l21_distance_to_reference: NormValue | None = None
    bias_norm: float | None = None
    params: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class HeadRow:
    """Per-head attention products (spec section 4), both ``d x d`` acting on column vectors.

    ``QK_h = Wq[H_h, :]^T @ Wk[H_h, :]`` (the bilinear form of the logits, before the
    ``1/sqrt(d_head)`` scaling) and ``VO_h = Wo[:, H_h] @ Wv[H_h, :]``.
    Biases: ``logit_bias_norm = ||Wk[H_h]^T bq[H_h]||_2`` is the only part of the query/key biases
    that changes which key a query attends to (the rest is constant over keys and cancels in the
    softmax); ``value_bias_out_norm = ||Wo[:, H_h] bv[H_h]||_2`` is the constant the head adds.
    """

    block: str
    head: int
    heads: int
    head_dim: int
    qk_spectral_norm: NormValue
    qk_frobenius_norm: NormValue
    qk_l21_norm: NormValue
    vo_spectral_norm: NormValue
    vo_frobenius_norm: NormValue
    vo_l21_norm: NormValue
    query_bias_norm: float | None = None
    key_bias_norm: float | None = None
    value_bias_norm: float | None = None
    logit_bias_norm: float | None = None
    value_bias_out_norm: float | None = None
    style: str = ""
