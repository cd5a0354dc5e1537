"""Plain networks and transformer norms read from modules: the bridge from ``nn.Module`` to the
typed chains and numbers of ``tfbound.measures.network`` (modules are read, never changed).

:func:`mlp_chain` writes tfbound's MLPs, heads and ``nn.Sequential`` stacks of ``nn.Linear`` and
known elementwise activations as a list of :class:`~tfbound.measures.network.Affine` layers;
:func:`transformer_feature_norm` bounds the norm of a ViT or BERT encoder's features.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tfbound.measures.network import (
    GELU_LIPSCHITZ,
    IDENTITY,
    Activation,
    Affine,
    f64,
    float32_slack,
    layernorm_output_bound,
)


def activation_of(module: nn.Module) -> Activation | None:
    """The activation a module applies, or None when it is not a known elementwise one."""
    if isinstance(module, nn.ReLU):
        return Activation("relu", 1.0, 1.0, True)
    if isinstance(module, nn.LeakyReLU):
        slope = abs(float(module.negative_slope))
        return Activation(
            f"leaky_relu({module.negative_slope:g})", max(1.0, slope), max(1.0, slope), slope <= 1
        )
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            return None
        return Activation("gelu", GELU_LIPSCHITZ, 1.0, False)  # |x Phi(x)| <= |x|
    if isinstance(module, nn.Tanh):
        return Activation("tanh", 1.0, 1.0, False)
    if isinstance(module, nn.Identity):
        return IDENTITY
    return None


def _sequential_chain(seq: nn.Sequential, prefix: str) -> list[Affine] | None:
    layers: list[Affine] = []
    children = list(seq.named_children())
    i = 0
    while i < len(children):
        name, child = children[i]
        if not isinstance(child, nn.Linear):
            return None
        act = IDENTITY
        if i + 1 < len(children) and not isinstance(children[i + 1][1], nn.Linear):
            found = activation_of(children[i + 1][1])
            if found is None:
                return None  # dropout, BatchNorm, an unknown module: not a plain MLP
            act = found
            i += 1
        bias = None if child.bias is None else f64(child.bias)
        layers.append(Affine(f"{prefix}{name}", f64(child.weight), bias, act))
        i += 1
    return layers or None


def mlp_chain(module: nn.Module) -> list[Affine] | None:
    """The affine layers of a plain MLP, or None when ``module`` is not one.

    Plain: tfbound's ``MLP``/``MLPEncoder`` (``net``), ``LinearHead``, ``MLPHead``, or an
    ``nn.Sequential`` alternating ``nn.Linear`` and known elementwise activations.
    """
    from tfbound.models.heads import LinearHead, MLPHead

    if isinstance(module, LinearHead):
        lin = module.linear
        return [Affine("linear", f64(lin.weight), f64(lin.bias), IDENTITY)]
    if isinstance(module, MLPHead):
        act = activation_of(module.act)
        if act is None:
            return None
        return [
            Affine("fc1", f64(module.fc1.weight), f64(module.fc1.bias), act),
            Affine("fc2", f64(module.fc2.weight), f64(module.fc2.bias), IDENTITY),
        ]
    if isinstance(module, nn.Sequential):
        return _sequential_chain(module, "")
    net = getattr(module, "net", None)
    if isinstance(net, nn.Sequential) and set(dict(module.named_children())) == {"net"}:
        return _sequential_chain(net, "net.")
    return None


def _hf_feature_norm(encoder: nn.Module) -> tuple[float | None, str]:
    """The data-free feature norm bound of an ``arch: hf`` encoder, where its architecture gives
    one: a final LayerNorm whose output every pooled token is (BERT and RoBERTa: the last
    layer's ``output.LayerNorm``, post-LN; DistilBERT: ``output_layer_norm``; ViT, ViT-MAE and
    DINOv2: the top ``layernorm``), the ``tanh`` pooler (``sqrt(d)``), or l2-normalised features
    (1). None (and why) for an intermediate ``layer`` of a pre-LN model or another type."""
    enc: Any = encoder
    model: Any = enc.model
    kind = str(enc.model_type)
    if enc.normalize:
        d = int(getattr(model.config, "hidden_size", 0) or 0)
        return float32_slack(max(d, 1)), "l2-normalised features (norm 1, float32 rounding)"
    if enc.pooling == "pooler":
        pooler = getattr(model, "pooler", None)
        activation = getattr(pooler, "activation", None)
        dense = getattr(pooler, "dense", None)
        if isinstance(activation, nn.Tanh) and isinstance(dense, nn.Linear):
            return (
                math.sqrt(dense.out_features),
                "the tanh pooler: each coordinate in [-1, 1] (float32 tanh stays in it)",
            )
        return None, "a pooler that is not dense + tanh"
    if enc.layer != "last":
        return None, "an intermediate hidden state (no LayerNorm ends it in every architecture)"
    final: nn.Module | None = None
    if kind in ("bert", "roberta"):
        final = model.encoder.layer[-1].output.LayerNorm
    elif kind == "distilbert":
        final = model.transformer.layer[-1].output_layer_norm
    elif kind in ("vit", "vit_mae", "dinov2"):
        final = getattr(model, "layernorm", None)
    if not isinstance(final, nn.LayerNorm):
        return None, f"a {kind} model (no final LayerNorm tfbound knows of)"
    pool = "CLS token" if enc.pooling == "cls" else "mean over tokens"
    return layernorm_output_bound(final.weight, final.bias), f"its final LayerNorm, {pool}"


def transformer_feature_norm(encoder: nn.Module) -> tuple[float | None, str]:
    """The data-free feature norm bound of a transformer encoder and where it comes from (None
    where no bound is known: an ``arch: hf`` model without a final LayerNorm)."""
    from tfbound.models.bert import BertEncoder
    from tfbound.models.vit import ViTEncoder

    if type(encoder).__name__ == "HFEncoder":
        return _hf_feature_norm(encoder)

    if isinstance(encoder, ViTEncoder):
        ln = encoder.norm
        pool = "CLS token" if encoder.pool == "cls" else "mean over tokens"
        return layernorm_output_bound(ln.weight, ln.bias), f"final LayerNorm `norm`, {pool}"
    assert isinstance(encoder, BertEncoder)
    last = encoder.encoder.layer[-1]
    assert isinstance(last, nn.Module)
    final = last.get_submodule("output.LayerNorm")
    assert isinstance(final, nn.LayerNorm)
    bound = layernorm_output_bound(final.weight, final.bias)
    if encoder.normalize:
        d = int(final.weight.numel())
        return min(float32_slack(d), bound), "l2-normalised features (norm 1, float32 rounding)"
    return bound, f"last post-norm LayerNorm, {encoder.pooling} pooling"


def ln_tensors(encoder: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    module = encoder.get_submodule(name)
    assert isinstance(module, nn.LayerNorm)
    return module.weight, module.bias


def vit_tokens(encoder: nn.Module) -> int:
    """The sequence length of an image transformer: its patches, plus the CLS token."""
    shape = getattr(encoder, "image_shape", None)
    if type(encoder).__name__ == "HFEncoder" and shape is not None:  # HF image models: + CLS
        p = int(getattr(encoder, "patch_size", 1))
        return (int(shape[1]) // p) * (int(shape[2]) // p) + 1
    n = int(getattr(encoder, "num_patches", 1))
    return n + (1 if getattr(encoder, "pool", "") == "cls" else 0)


__all__ = [
    "activation_of",
    "ln_tensors",
    "mlp_chain",
    "transformer_feature_norm",
    "vit_tokens",
]
