"""Rebuild the networks named in a config and load their weights."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from tfbound.config import ModuleSpec
from tfbound.errors import CheckpointError, ConfigError, InputError
from tfbound.io.checkpoints import load_module_weights, load_tensors
from tfbound.models.heads import LinearHead, MLPHead
from tfbound.models.mlp import MLP, MLPEncoder
from tfbound.models.vit import ViTEncoder

#: the environment variable that lets a config's ``arch: factory`` import and run user code
ALLOW_CODE_ENV = "TFBOUND_ALLOW_CODE"
_allow_code: list[bool] = [False]


def allow_code(flag: bool = True) -> None:
    """Let ``arch: factory`` import user code (the CLI's ``--allow-code``); off by default."""
    _allow_code[0] = bool(flag)


def code_allowed() -> bool:
    """``allow_code(True)`` was called, or ``TFBOUND_ALLOW_CODE=1`` is set."""
    return _allow_code[0] or os.environ.get(ALLOW_CODE_ENV, "").strip() == "1"


def _factory(spec: ModuleSpec) -> nn.Module:
    if not code_allowed():  # before anything is imported: a config file is not an opt-in
        raise ConfigError(
            f"refused: '{spec.role}.arch: factory' imports and runs code named by the config; "
            f"pass --allow-code or set {ALLOW_CODE_ENV}=1 if you trust it"
        )
    target = spec.options["factory"]
    if not isinstance(target, str) or ":" not in target:
        raise ConfigError(
            f"'{spec.role}.factory' must read 'package.module:function', got {target!r}"
        )
    module_name, _, attr = target.partition(":")
    try:
        fn = cast(Callable[..., Any], getattr(importlib.import_module(module_name), attr))
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {spec.role} factory {target!r}: {exc}") from exc
    kwargs = spec.options.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"'{spec.role}.kwargs' must be a mapping")
    module = fn(**kwargs)
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"{spec.role} factory {target!r} returned {type(module).__name__}, not an nn.Module"
        )
    return module


def _construct(spec: ModuleSpec) -> nn.Module:
    o = spec.options
    try:
        if spec.arch == "factory":
            return _factory(spec)
        if spec.role == "encoder" and spec.arch == "mlp":
            return MLPEncoder(o["input_dim"], o["hidden"], o["feature_dim"], o["activation"])
        if spec.role == "encoder" and spec.arch == "vit":
            return ViTEncoder(
                o["image_size"],
                o["patch_size"],
                o["in_chans"],
                o["dim"],
                o["depth"],
                o["heads"],
                o["mlp_ratio"],
                o["pool"],
            )
        if spec.role == "decoder" and spec.arch == "mlp":
            return MLP(o["input_dim"], o["hidden"], o["output_dim"], o["activation"])
        if spec.role == "decoder" and spec.arch == "linear":
            return MLP(o["input_dim"], [], o["output_dim"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build the {spec.role} ({spec.arch}): {exc}") from exc
    raise ConfigError(f"no builder for {spec.role} arch {spec.arch!r}")


def build_module(spec: ModuleSpec) -> nn.Module:
    """Encoder or decoder from its spec, weights loaded strictly, in eval mode."""
    if spec.role == "encoder" and spec.arch == "bert":
        from tfbound.models.bert import build_bert_encoder

        return build_bert_encoder(spec)
    module = _construct(spec)
    if spec.weights is not None:
        load_module_weights(module, spec.weights, spec.role)
    return module.eval()


def build_head(spec: ModuleSpec, feature_dim: int) -> LinearHead | MLPHead:
    """The head, its input dimension read from its weights and checked against the encoder's."""
    assert spec.weights is not None
    tensors = load_tensors(spec.weights)
    key = "linear.weight" if spec.arch == "linear" else "fc1.weight"
    weight = tensors.get(key)
    if weight is None or weight.ndim != 2:
        raise CheckpointError(
            f"a {spec.arch} head needs a 2-D '{key}' (found: {', '.join(sorted(tensors)[:6])})",
            path=spec.weights,
        )
    head_dim = int(weight.shape[1])
    if head_dim != feature_dim:
        raise InputError(
            f"feature dimension mismatch: the encoder gives {feature_dim} features, "
            f"the head expects {head_dim}",
            path=spec.weights,
        )
    head: LinearHead | MLPHead
    if spec.arch == "linear":
        head = LinearHead(head_dim)
    else:
        head = MLPHead(head_dim, int(weight.shape[0]), spec.options["activation"])
    load_module_weights(head, spec.weights, "head")
    return head.eval()


@torch.inference_mode()
def feature_dim_of(encoder: nn.Module, example: torch.Tensor) -> int:
    """The encoder's output dimension on one example (eval mode)."""
    out = encoder(example[:1])
    return int(out.reshape(1, -1).shape[1])
