"""Plain networks and transformer norms read from modules: the bridge from ``nn.Module`` to the
typed chains and numbers of ``tfbound.measures.network`` (modules are read, never changed).

:func:`mlp_chain` writes tfbound's MLPs, heads and ``nn.Sequential`` stacks of ``nn.Linear`` and
known elementwise activations as a list of :class:`~tfbound.measures.network.Affine` layers;
:func:`transformer_feature_norm` bounds the norm of a ViT or BERT encoder's features.
"""

from __future__ import annotations

import torch
from torch import nn

from tfbound.measures.network import (
    GELU_LIPSCHITZ,
    IDENTITY,
    Activation,
    Affine,
    f64,
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


def transformer_feature_norm(encoder: nn.Module) -> tuple[float, str]:
    from tfbound.models.bert import BertEncoder
    from tfbound.models.vit import ViTEncoder

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
        return min(1.0, bound), "l2-normalised features (norm 1)"
    return bound, f"last post-norm LayerNorm, {encoder.pooling} pooling"


def ln_tensors(encoder: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    module = encoder.get_submodule(name)
    assert isinstance(module, nn.LayerNorm)
    return module.weight, module.bias


def vit_tokens(encoder: nn.Module) -> int:
    n = int(getattr(encoder, "num_patches", 1))
    return n + (1 if getattr(encoder, "pool", "") == "cls" else 0)


__all__ = [
    "activation_of",
    "ln_tensors",
    "mlp_chain",
    "transformer_feature_norm",
    "vit_tokens",
]
