"""The layer-handler registry: which layers a checkpoint holds, identified by dotted name.

Two inputs, one planner:

- a bare state dict (names, shapes and dtypes; no architecture): the kind of a layer is read off
  its parameter names and shapes (``*.weight`` 2-D -> linear, 3-D/4-D/5-D -> conv, a name with
  ``embed`` -> embedding, a 1-D ``*.weight`` in a module named like a norm -> layernorm, ...);
- an ``nn.Module``: ``describe_modules`` asks the module handlers (``MODULE_HANDLERS``, keyed by
  type, first match along the MRO) for each submodule's kind and options (conv geometry, number
  of heads, BatchNorm eps), and ``batchnorm_inputs`` finds which conv/linear feeds each BatchNorm
  (from the ``torch.fx`` graph, else from the order inside an ``nn.Sequential``).

Attention blocks are recognised among the linear layers: ``nn.MultiheadAttention``
(``in_proj_weight`` + ``out_proj``), a fused ``qkv`` with a ``proj``/``out_proj`` sibling
(timm, MAE, tfbound's ViT) and separate projections (BERT ``self.query/key/value`` with
``output.dense``; ``q_proj/k_proj/v_proj`` with ``out_proj``/``o_proj``; ``q/k/v/o``).

Whatever no handler takes is returned as ``Skipped`` with its reason; nothing is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from torch import nn

from tfbound.adapters.base import (
    BATCHNORM,
    CONV,
    EMBEDDING,
    LAYERNORM,
    LINEAR,
    MHA,
    AttentionPlan,
    ConvOptions,
    LayerPlan,
    ModuleInfo,
    ParamRows,
    Plan,
    Skipped,
    TensorInfo,
)

ModuleHandler = Callable[[nn.Module], ModuleInfo]

_HEAD_ATTRS = ("num_heads", "num_attention_heads", "heads", "n_heads", "n_head")
_EMBED_NAME = re.compile(r"embed|^wte$|^wpe$", re.IGNORECASE)
_NORM_NAME = re.compile(r"norm|^ln(_|\d|$)|_ln$|^ln", re.IGNORECASE)
_DEFAULT_BN_EPS = 1e-5


def _split(name: str) -> tuple[str, str]:
    i = name.rfind(".")
    return (name[:i], name[i + 1 :]) if i >= 0 else ("", name)


def _join(module: str, leaf: str) -> str:
    return f"{module}.{leaf}" if module else leaf


def _last(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def _heads_of(module: nn.Module) -> int | None:
    for attr in _HEAD_ATTRS:
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# ---------------------------------------------------------------------------------------------
# Module handlers (nn.Module path)


def _linear_info(m: nn.Module) -> ModuleInfo:
    return ModuleInfo(LINEAR, type(m).__name__)


def _conv_info(m: nn.Module) -> ModuleInfo:
    assert isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)
    padding = m.padding if isinstance(m.padding, str) else tuple(int(p) for p in m.padding)
    options = ConvOptions(
        stride=tuple(int(s) for s in m.stride),
        padding=padding,
        dilation=tuple(int(d) for d in m.dilation),
        groups=int(m.groups),
        padding_mode=str(m.padding_mode),
    )
    return ModuleInfo(CONV, type(m).__name__, conv=options)


def _embedding_info(m: nn.Module) -> ModuleInfo:
    return ModuleInfo(EMBEDDING, type(m).__name__)


def _layernorm_info(m: nn.Module) -> ModuleInfo:
    return ModuleInfo(LAYERNORM, type(m).__name__, eps=getattr(m, "eps", None))


def _batchnorm_info(m: nn.Module) -> ModuleInfo:
    return ModuleInfo(BATCHNORM, type(m).__name__, eps=float(getattr(m, "eps", _DEFAULT_BN_EPS)))


def _mha_info(m: nn.Module) -> ModuleInfo:
    return ModuleInfo(MHA, type(m).__name__, heads=_heads_of(m))


MODULE_HANDLERS: dict[type[nn.Module], ModuleHandler | None] = {
    nn.Linear: _linear_info,
    nn.Conv1d: _conv_info,
    nn.Conv2d: _conv_info,
    nn.Conv3d: _conv_info,
    nn.Embedding: _embedding_info,
    nn.LayerNorm: _layernorm_info,
    nn.modules.batchnorm._BatchNorm: _batchnorm_info,
    nn.MultiheadAttention: _mha_info,
}
"""Module type -> handler. ``None`` marks a type ignored on purpose (its parameters are skipped
with that reason); a type absent here falls back to the name rules of a bare state dict."""


def register_module_handler(cls: type[nn.Module], handler: ModuleHandler | None) -> None:
    """Add or replace the handler of a module type (``None``: ignore its parameters on purpose)."""
    MODULE_HANDLERS[cls] = handler


def _handler_for(module: nn.Module) -> tuple[bool, ModuleHandler | None]:
    for cls in type(module).__mro__:
        if cls in MODULE_HANDLERS:
            return True, MODULE_HANDLERS[cls]
    return False, None


def describe_modules(model: nn.Module) -> dict[str, ModuleInfo]:
    """``ModuleInfo`` of every submodule by dotted name (``kind=None`` where no handler applies).

    ``kind="ignored"`` marks a type registered with a ``None`` handler.
    """
    out: dict[str, ModuleInfo] = {}
    for name, module in model.named_modules():
        found, handler = _handler_for(module)
        if found and handler is None:
            out[name] = ModuleInfo("ignored", type(module).__name__)
        elif handler is not None:
            out[name] = handler(module)
        else:
            out[name] = ModuleInfo(None, type(module).__name__, heads=_heads_of(module))
    return out


def batchnorm_inputs(model: nn.Module) -> dict[str, tuple[str, str]]:
    """``{batchnorm name: (conv or linear name, how it was found)}`` for BatchNorms to fold.

    From the ``torch.fx`` graph when the model traces: a BatchNorm whose only input is the output
    of a conv/linear call, that output used by nothing else and both modules called once.
    Otherwise from ``nn.Sequential`` containers: a BatchNorm right after a conv/linear child.
    """
    layer_types = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    modules = dict(model.named_modules())
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules.values()):
        return {}  # nothing to fold: do not trace
    try:
        import torch.fx

        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure means: use the fallback
        graph = None
    pairs: dict[str, tuple[str, str]] = {}
    if graph is not None:
        calls: dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls[str(node.target)] = calls.get(str(node.target), 0) + 1
        for node in graph.nodes:
            if node.op != "call_module":
                continue
            bn = str(node.target)
            if not isinstance(modules.get(bn), nn.modules.batchnorm._BatchNorm):
                continue
            src = node.args[0] if node.args else None
            if not isinstance(src, torch.fx.Node) or src.op != "call_module":
                continue
            layer = str(src.target)
            if (
                isinstance(modules.get(layer), layer_types)
                and len(src.users) == 1
                and calls.get(layer) == 1
                and calls.get(bn) == 1
            ):
                pairs[bn] = (layer, "torch.fx graph")
        return pairs
    for name, module in modules.items():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (prev_name, prev), (child_name, child) in zip(children, children[1:], strict=False):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and isinstance(prev, layer_types):
                pairs[_join(name, child_name)] = (_join(name, prev_name), "nn.Sequential order")
    return pairs


# ---------------------------------------------------------------------------------------------
# Planning from names and shapes


def _infer_kind(module: str, leaves: Mapping[str, TensorInfo]) -> str | None:
    if "in_proj_weight" in leaves or "q_proj_weight" in leaves:
        return MHA
    if "running_mean" in leaves and "running_var" in leaves:
        return BATCHNORM
    weight = leaves.get("weight")
    if weight is None or not weight.is_floating:
        return None
    if weight.ndim == 2:
        # an embedding table has no bias: MAE's ``decoder_embed`` is an nn.Linear
        has_bias = "bias" in leaves and leaves["bias"].shape == weight.shape[:1]
        return EMBEDDING if _EMBED_NAME.search(_last(module)) and not has_bias else LINEAR
    if weight.ndim in (3, 4, 5):
        return CONV
    if weight.ndim == 1 and _NORM_NAME.search(_last(module)):
        return LAYERNORM
    return None


def _bias_role(module: str, leaves: Mapping[str, TensorInfo], n_out: int) -> list[tuple[str, str]]:
    bias = leaves.get("bias")
    if bias is not None and bias.is_floating and bias.shape == (n_out,):
        return [("bias", _join(module, "bias"))]
    return []


def _plan_module(
    module: str, leaves: Mapping[str, TensorInfo], kind: str, info: ModuleInfo | None
) -> tuple[list[LayerPlan], list[AttentionPlan], list[str]]:
    """Plans for one module's own parameters; returns (layers, attention, notes)."""
    note = ""
    if info is not None and info.kind != kind:
        note = f"kind inferred from name and shape ({info.type_name} has no module handler)"
    w = leaves.get("weight")
    if kind in (LINEAR, EMBEDDING) and w is not None and w.ndim == 2 and w.is_floating:
        roles = [("weight", _join(module, "weight"))]
        if kind == LINEAR:
            roles += _bias_role(module, leaves, w.shape[0])
        return [LayerPlan(module, kind, tuple(roles), note=note)], [], []
    if kind == CONV and w is not None and w.ndim >= 3 and w.is_floating:
        roles = [("weight", _join(module, "weight")), *_bias_role(module, leaves, w.shape[0])]
        conv = info.conv if info is not None else None
        return [LayerPlan(module, CONV, tuple(roles), conv=conv, note=note)], [], []
    if kind == LAYERNORM and w is not None and w.ndim == 1 and w.is_floating:
        roles = [("weight", _join(module, "weight")), *_bias_role(module, leaves, w.shape[0])]
        return [LayerPlan(module, LAYERNORM, tuple(roles), note=note)], [], []
    if kind == BATCHNORM and "running_mean" in leaves and "running_var" in leaves:
        c = leaves["running_mean"].shape
        roles = [
            ("running_mean", _join(module, "running_mean")),
            ("running_var", _join(module, "running_var")),
        ]
        for leaf in ("weight", "bias"):
            t = leaves.get(leaf)
            if t is not None and t.shape == c and t.is_floating:
                roles.append((leaf, _join(module, leaf)))
        if "num_batches_tracked" in leaves:
            roles.append(("num_batches_tracked", _join(module, "num_batches_tracked")))
        eps = info.eps if info is not None and info.eps is not None else None
        return [LayerPlan(module, BATCHNORM, tuple(roles), eps=eps, note=note)], [], []
    if kind == MHA:
        return _plan_mha(module, leaves, info)
    return [], [], []


def _plan_mha(
    module: str, leaves: Mapping[str, TensorInfo], info: ModuleInfo | None
) -> tuple[list[LayerPlan], list[AttentionPlan], list[str]]:
    heads = info.heads if info is not None else None
    out = _join(module, "out_proj.weight")
    out_bias = _join(module, "out_proj.bias")
    fused = leaves.get("in_proj_weight")
    bias = leaves.get("in_proj_bias")
    if fused is not None and fused.ndim == 2 and fused.shape[0] % 3 == 0:
        e = fused.shape[0] // 3
        roles = [("weight", _join(module, "in_proj_weight"))]
        if bias is not None and bias.shape == (3 * e,):
            roles.append(("bias", _join(module, "in_proj_bias")))
        layer = LayerPlan(_join(module, "in_proj"), LINEAR, tuple(roles))
        w, b = _join(module, "in_proj_weight"), _join(module, "in_proj_bias")
        has_b = bias is not None and bias.shape == (3 * e,)
        attn = AttentionPlan(
            name=module,
            style="torch_mha",
            query=ParamRows(w, 0, e),
            key=ParamRows(w, e, 2 * e),
            value=ParamRows(w, 2 * e, 3 * e),
            out=out,
            query_bias=ParamRows(b, 0, e) if has_b else None,
            key_bias=ParamRows(b, e, 2 * e) if has_b else None,
            value_bias=ParamRows(b, 2 * e, 3 * e) if has_b else None,
            out_bias=out_bias,
            heads=heads,
            heads_source="module" if heads else "",
        )
        return [layer], [attn], []
    layers = []
    names = {}
    for role in ("q", "k", "v"):
        t = leaves.get(f"{role}_proj_weight")
        if t is not None and t.ndim == 2:
            names[role] = _join(module, f"{role}_proj_weight")
            layers.append(
                LayerPlan(_join(module, f"{role}_proj"), LINEAR, (("weight", names[role]),))
            )
    if len(names) < 3:
        return layers, [], []
    e = leaves["q_proj_weight"].shape[0]
    has_b = bias is not None and bias.shape == (3 * e,)
    b = _join(module, "in_proj_bias")
    attn = AttentionPlan(
        name=module,
        style="torch_mha",
        query=ParamRows(names["q"]),
        key=ParamRows(names["k"]),
        value=ParamRows(names["v"]),
        out=out,
        query_bias=ParamRows(b, 0, e) if has_b else None,
        key_bias=ParamRows(b, e, 2 * e) if has_b else None,
        value_bias=ParamRows(b, 2 * e, 3 * e) if has_b else None,
        out_bias=out_bias,
        heads=heads,
        heads_source="module" if heads else "",
    )
    return layers, [attn], []


_SEPARATE_STYLES: tuple[tuple[tuple[str, str, str], tuple[str, ...]], ...] = (
    # (query, key, value) leaf names, output projection candidates relative to their parent P
    (("query", "key", "value"), ("^.output.dense", ".out", ".output", ".out_proj", ".o_proj")),
    (("q_proj", "k_proj", "v_proj"), (".out_proj", ".o_proj")),
    (("q", "k", "v"), (".o", ".out")),
)


def _resolve(parent: str, rel: str) -> str:
    """``.x`` -> sibling ``parent.x``; ``^.x`` -> ``grandparent.x`` (BERT's ``output.dense``)."""
    if rel.startswith("^"):
        return _join(_split(parent)[0], rel[2:])
    return _join(parent, rel[1:])


def _find_attention(
    layers: list[LayerPlan], shapes: Mapping[str, TensorInfo]
) -> list[AttentionPlan]:
    linear = {lp.name: lp for lp in layers if lp.kind == LINEAR}
    found: list[AttentionPlan] = []

    def weight(lp: LayerPlan) -> TensorInfo:
        return shapes[lp.roles[0][1]]

    def bias(lp: LayerPlan) -> str | None:
        return lp.param("bias")

    for name, lp in linear.items():
        parent, leaf = _split(name)
        if leaf != "qkv" or weight(lp).shape[0] % 3:
            continue
        e = weight(lp).shape[0] // 3
        for rel in (".proj", ".out_proj", ".o_proj"):
            out = linear.get(_resolve(parent, rel))
            if out is not None and weight(out).shape[1] == e:
                w, b = lp.roles[0][1], bias(lp)
                found.append(
                    AttentionPlan(
                        name=parent,
                        style="fused_qkv",
                        query=ParamRows(w, 0, e),
                        key=ParamRows(w, e, 2 * e),
                        value=ParamRows(w, 2 * e, 3 * e),
                        out=out.roles[0][1],
                        query_bias=ParamRows(b, 0, e) if b else None,
                        key_bias=ParamRows(b, e, 2 * e) if b else None,
                        value_bias=ParamRows(b, 2 * e, 3 * e) if b else None,
                        out_bias=bias(out),
                    )
                )
                break
    for (qn, kn, vn), outs in _SEPARATE_STYLES:
        for name, q in linear.items():
            parent, leaf = _split(name)
            if leaf != qn:
                continue
            k, v = linear.get(_join(parent, kn)), linear.get(_join(parent, vn))
            if k is None or v is None:
                continue
            for rel in outs:
                out = linear.get(_resolve(parent, rel))
                if out is None or weight(out).shape[1] != weight(v).shape[0]:
                    continue
                block = _split(parent)[0] if rel.startswith("^") else parent
                qb, kb, vb = bias(q), bias(k), bias(v)
                found.append(
                    AttentionPlan(
                        name=block or parent,
                        style="separate_qkv",
                        query=ParamRows(q.roles[0][1]),
                        key=ParamRows(k.roles[0][1]),
                        value=ParamRows(v.roles[0][1]),
                        out=out.roles[0][1],
                        query_bias=ParamRows(qb) if qb else None,
                        key_bias=ParamRows(kb) if kb else None,
                        value_bias=ParamRows(vb) if vb else None,
                        out_bias=bias(out),
                    )
                )
                break
    return found


def _skip_reason(info: TensorInfo, module_info: ModuleInfo | None) -> str:
    leaf = _split(info.name)[1]
    if not info.is_floating:
        return f"non-floating tensor ({info.dtype}): a buffer, not a weight"
    if module_info is not None and module_info.kind == "ignored":
        return f"module type {module_info.type_name} is ignored on purpose"
    where = f" of a {module_info.type_name}" if module_info is not None else ""
    if leaf == "bias":
        return f"bias{where} with no weight handled beside it"
    if info.ndim == 0:
        return f"scalar parameter{where}"
    if info.ndim == 1 and leaf == "weight":
        return f"1-D weight{where} not recognised as a norm layer (its name gives no hint)"
    if "token" in leaf:
        return "learned token vector (input to the network, not a weight matrix)"
    return f"no handler for '{leaf}'{where} with shape {info.shape}"


def plan_tensors(
    tensors: Iterable[TensorInfo],
    *,
    modules: Mapping[str, ModuleInfo] | None = None,
    bn_inputs: Mapping[str, tuple[str, str]] | None = None,
    heads: int | None = None,
    heads_source: str = "argument",
) -> Plan:
    """What to compute for a checkpoint, from its tensors' names, shapes and dtypes.

    ``modules`` (from ``describe_modules``) and ``bn_inputs`` (from ``batchnorm_inputs``) are
    given when the ``nn.Module`` is known; without them the name rules of the module doc apply
    and BatchNorm statistics are skipped (their preceding layer cannot be proven from names).
    ``heads`` is used for attention blocks whose module does not say.
    """
    infos = {t.name: t for t in tensors}
    groups: dict[str, dict[str, TensorInfo]] = {}
    for t in infos.values():
        module, leaf = _split(t.name)
        groups.setdefault(module, {})[leaf] = t
    layers: list[LayerPlan] = []
    attention: list[AttentionPlan] = []
    notes: list[str] = []
    for module, leaves in groups.items():
        info = modules.get(module) if modules is not None else None
        if info is not None and info.kind == "ignored":
            continue
        kind = info.kind if info is not None and info.kind is not None else None
        kind = kind or _infer_kind(module, leaves)
        if kind is None:
            continue
        new_layers, new_attn, new_notes = _plan_module(module, leaves, kind, info)
        layers.extend(new_layers)
        attention.extend(new_attn)
        notes.extend(new_notes)
    attention.extend(_find_attention(layers, infos))
    layers, dropped = _fold_batchnorms(layers, infos, modules, bn_inputs)
    claimed = {p for lp in layers for p in lp.params}
    claimed |= {p for ap in attention for p in ap.params}
    skipped: list[Skipped] = []
    for name, t in infos.items():
        if name in claimed:
            continue
        module, leaf = _split(name)
        info = modules.get(module) if modules is not None else None
        squeezed = tuple(s for s in t.shape if s != 1)
        if (
            t.is_floating
            and (info is None or info.kind != "ignored")
            and _EMBED_NAME.search(leaf)
            and len(squeezed) == 2
        ):
            note = "parameter named like an embedding; size-1 dimensions squeezed"
            layers.append(LayerPlan(name, EMBEDDING, (("weight", name),), note=note))
            continue
        reason = dropped.get(name) or _skip_reason(t, info)
        skipped.append(Skipped(name, t.shape, t.dtype, reason))
    attention = _assign_heads(attention, infos, modules, heads, heads_source, notes)
    if modules is None:
        notes.insert(0, "bare state dict: layer kinds inferred from parameter names and shapes")
    order = {name: i for i, name in enumerate(infos)}
    layers.sort(key=lambda lp: min(order[p] for p in lp.params))
    return Plan(tuple(layers), tuple(attention), tuple(skipped), tuple(notes))


def _fold_batchnorms(
    layers: list[LayerPlan],
    infos: Mapping[str, TensorInfo],
    modules: Mapping[str, ModuleInfo] | None,
    bn_inputs: Mapping[str, tuple[str, str]] | None,
) -> tuple[list[LayerPlan], dict[str, str]]:
    """Attach each BatchNorm to the layer feeding it; returns (layers, {dropped param: reason}).

    In a bare state dict (``modules is None``) BatchNorms are never folded: which layer feeds
    them cannot be proven from names (pre-activation blocks put the BatchNorm *before* the conv).
    """
    by_name = {lp.name: lp for lp in layers}
    removed: set[str] = set()
    dropped: dict[str, str] = {}
    for lp in layers:
        if lp.kind != BATCHNORM:
            continue
        if modules is None:
            removed.add(lp.name)
            reason = (
                "BatchNorm: folding it into the layer that feeds it needs the module structure "
                "(pass the nn.Module); not folded"
            )
            dropped.update(dict.fromkeys(lp.params, reason))
            continue
        src = (bn_inputs or {}).get(lp.name)
        target = by_name.get(src[0]) if src else None
        mean = lp.param("running_mean")
        channels = infos[mean].shape[0] if mean else -1
        if (
            src is not None
            and target is not None
            and target.kind in (LINEAR, CONV)
            and target.fold is None
            and infos[target.roles[0][1]].shape[0] == channels
        ):
            by_name[target.name] = replace(target, fold=lp, fold_source=src[1])
            removed.add(lp.name)
    return [by_name[lp.name] for lp in layers if lp.name not in removed], dropped


def _rows(p: ParamRows, infos: Mapping[str, TensorInfo]) -> int:
    if p.start is not None and p.stop is not None:
        return p.stop - p.start
    return infos[p.name].shape[0]


def _heads_problem(ap: AttentionPlan, n_heads: int, infos: Mapping[str, TensorInfo]) -> str:
    q, k, v = _rows(ap.query, infos), _rows(ap.key, infos), _rows(ap.value, infos)
    out = infos[ap.out].shape
    if q != k:
        return f"query has {q} rows and key {k} (grouped-query attention is not supported)"
    if q % n_heads or v % n_heads:
        return f"{n_heads} heads do not divide the projections ({q} query, {v} value rows)"
    if len(out) != 2 or out[1] != v:
        return f"output projection {out} does not read the {v} value rows"
    return ""


def _assign_heads(
    attention: list[AttentionPlan],
    infos: Mapping[str, TensorInfo],
    modules: Mapping[str, ModuleInfo] | None,
    heads: int | None,
    heads_source: str,
    notes: list[str],
) -> list[AttentionPlan]:
    out = []
    for ap in attention:
        n_heads, source = ap.heads, ap.heads_source
        if n_heads is None and modules is not None:
            candidates = [ap.name, _split(ap.query.name)[0], _split(_split(ap.query.name)[0])[0]]
            for cand in candidates:
                info = modules.get(cand)
                if info is not None and info.heads:
                    n_heads, source = info.heads, "module"
                    break
        if n_heads is None and heads is not None:
            n_heads, source = heads, heads_source
        if n_heads is None:
            notes.append(
                f"{ap.name}: number of attention heads unknown, per-head norms not computed "
                "(pass heads=)"
            )
        else:
            problem = _heads_problem(ap, n_heads, infos)
            if problem:
                notes.append(f"{ap.name}: {problem}; per-head norms not computed")
                n_heads = None
        out.append(replace(ap, heads=n_heads, heads_source=source if n_heads else ""))
    return out
