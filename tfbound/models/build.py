"""Rebuild the networks named in a config and load their weights."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from tfbound.config import ModuleSpec
from tfbound.errors import CheckpointError, ConfigError, InputError
from tfbound.io.checkpoints import load_module_weights, load_tensors
from tfbound.models.heads import LinearHead, MLPHead
from tfbound.models.mlp import MLP, MLPEncoder
from tfbound.models.renaming import rename_keys
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
    kwargs = spec.options.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"'{spec.role}.kwargs' must be a mapping")
    with _importable(spec.base):
        try:
            fn = cast(Callable[..., Any], getattr(importlib.import_module(module_name), attr))
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import {spec.role} factory {target!r}: {exc}") from exc
        module = fn(**kwargs)
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"{spec.role} factory {target!r} returned {type(module).__name__}, not an nn.Module"
        )
    return module


@contextmanager
def _importable(folder: Path | None) -> Iterator[None]:
    """The config's folder first on ``sys.path`` while its factory is imported and called (no
    ``PYTHONPATH`` needed); removed again after."""
    entry = None if folder is None else str(folder)
    if entry is None or entry in sys.path:
        yield
        return
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


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


def _renamed_tensors(spec: ModuleSpec, path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with ``prefix`` / ``key_map`` applied."""
    o = spec.options
    return rename_keys(load_tensors(path), str(o.get("prefix", "")), o.get("key_map"))


def _load_strict(module: nn.Module, spec: ModuleSpec, path: Path) -> None:
    if "prefix" not in spec.options and "key_map" not in spec.options:
        load_module_weights(module, path, spec.role)
        return
    tensors = _renamed_tensors(spec, path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad = [k for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or bad:
        raise CheckpointError(
            f"weights do not fit the {spec.role} architecture after renaming: missing "
            f"{missing[:4]}, unexpected {unexpected[:4]}, shape mismatch {bad[:4]}",
            path=path,
        )
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)


def build_module(spec: ModuleSpec) -> nn.Module:
    """Encoder or decoder from its spec, weights loaded strictly, in eval mode."""
    if spec.role == "encoder" and spec.arch == "bert":
        from tfbound.models.bert import build_bert_encoder

        return build_bert_encoder(spec)
    if spec.role == "encoder" and spec.arch == "hf":
        from tfbound.models.hf import build_hf_encoder, check_hf_options

        check_hf_options(spec)
        return build_hf_encoder(spec)
    module = _construct(spec)
    if spec.weights is not None:
        _load_strict(module, spec, spec.weights)
    return module.eval()


# ---------------------------------------------------------------------------------------------
# Heads: the layouts users save, reduced to tfbound's LinearHead / MLPHead


@dataclass(frozen=True)
class LoadedHead:
    """A head as tfbound certifies it, with what the report should say about how it was read:
    ``details`` (e.g. ``{"form": "two_logit_difference"}``) and ``notes`` (warning lines)."""

    head: LinearHead | MLPHead
    details: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


#: the layer names of each head layout, first layer first
_LINEAR_LAYOUTS = (("linear",), ("",), ("0",))
_MLP_LAYOUTS = (("fc1", "fc2"), ("dense", "out_proj"))
TWO_LOGIT_NOTE = (
    "the head has 2 logits: certified through the difference head (w1 - w0, b1 - b0), whose "
    "sign is the argmax decision"
)


def _layers_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, Any]]:
    """``{layer: (weight, bias or None)}`` for every 2-D ``<layer>.weight`` (``""``: bare)."""
    out: dict[str, tuple[torch.Tensor, Any]] = {}
    for key, t in tensors.items():
        if (key == "weight" or key.endswith(".weight")) and t.ndim == 2:
            name = key[: -len("weight")].removesuffix(".")
            out[name] = (t, tensors.get(f"{name}.bias" if name else "bias"))
    return out


def _wanted(arch: str) -> str:
    if arch == "linear":
        return (
            "'linear.weight' (1 or 2 rows) and 'linear.bias', an nn.Linear's 'weight'/'bias' "
            "or an nn.Sequential's '0.weight'/'0.bias'"
        )
    return (
        "'fc1.*' and 'fc2.*', 'dense.*' and 'out_proj.*', or an nn.Sequential's two Linear "
        "layers ('0.weight' ... '2.weight')"
    )


def _pick_layers(
    layers: dict[str, tuple[torch.Tensor, Any]], arch: str
) -> list[tuple[torch.Tensor, Any]] | None:
    layouts = _LINEAR_LAYOUTS if arch == "linear" else _MLP_LAYOUTS
    for names in layouts:
        if set(names) == set(layers):
            return [layers[n] for n in names]
    numbered = sorted((n for n in layers if n.isdigit()), key=int)
    want = 1 if arch == "linear" else 2
    if len(numbered) == want == len(layers):
        return [layers[n] for n in numbered]
    return None


def _bias(weight: torch.Tensor, bias: Any, path: Path | None = None) -> torch.Tensor:
    """A layer's bias (zeros when absent), refused unless it has one entry per weight row."""
    if weight.ndim != 2:
        raise CheckpointError(
            f"a head layer's weight must be a matrix (outputs x inputs), got shape "
            f"{tuple(weight.shape)}",
            path=path,
        )
    if bias is None:
        return torch.zeros(weight.shape[0], dtype=torch.float32)
    b = torch.as_tensor(bias)
    if b.ndim != 1 or b.shape[0] != weight.shape[0]:
        raise CheckpointError(
            f"a head layer's bias has shape {tuple(b.shape)}, its weight {tuple(weight.shape)}: "
            f"the bias needs one entry per output ({weight.shape[0]})",
            path=path,
        )
    return b.to(torch.float32)


def _one_output(
    weight: torch.Tensor, bias: torch.Tensor, path: Path | None, where: str
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(w, b)`` of a 1-output layer; a 2-logit layer becomes its difference row."""
    w = weight.to(torch.float64)
    b = bias.to(torch.float64)
    if w.shape[0] == 1:
        return w.float(), b.float(), False
    if w.shape[0] == 2:
        return (w[1] - w[0]).reshape(1, -1).float(), (b[1] - b[0]).reshape(1).float(), True
    raise CheckpointError(
        f"{where} has {w.shape[0]} outputs: a binary head has 1 score or 2 logits", path=path
    )


def head_from_layers(
    layers: list[tuple[torch.Tensor, Any]],
    activation: str,
    feature_dim: int,
    path: Path | None = None,
) -> LoadedHead:
    """A ``LinearHead`` (one layer) or ``MLPHead`` (two) from ``(weight, bias)`` pairs; a
    2-logit output layer is certified through its difference row."""
    first_w = layers[0][0]
    for weight, bias in layers:
        _bias(weight, bias, path)  # every layer's shapes checked before any is used
    head_dim = int(first_w.shape[1])
    if head_dim != feature_dim:
        raise InputError(
            f"feature dimension mismatch: the encoder gives {feature_dim} features, "
            f"the head expects {head_dim}",
            path=path,
        )
    head: LinearHead | MLPHead
    last_w, last_b = layers[-1][0], _bias(layers[-1][0], layers[-1][1])
    w, b, two = _one_output(last_w, last_b, path, "the head's last layer")
    with torch.no_grad():
        if len(layers) == 1:
            head = LinearHead(head_dim)
            head.linear.weight.copy_(w)
            head.linear.bias.copy_(b)
        else:
            hidden_w, hidden_b = layers[0][0], _bias(layers[0][0], layers[0][1])
            if int(last_w.shape[1]) != int(hidden_w.shape[0]):
                raise CheckpointError(
                    f"the head's layers do not chain: {tuple(hidden_w.shape)} then "
                    f"{tuple(last_w.shape)}",
                    path=path,
                )
            try:
                head = MLPHead(head_dim, int(hidden_w.shape[0]), activation)
            except ValueError as exc:
                raise ConfigError(f"'head.activation': {exc}") from exc
            head.fc1.weight.copy_(hidden_w.to(torch.float32))
            head.fc1.bias.copy_(hidden_b)
            head.fc2.weight.copy_(w)
            head.fc2.bias.copy_(b)
    details: dict[str, Any] = {"output_logits": 2 if two else 1}
    if two:
        details["form"] = "two_logit_difference"
    return LoadedHead(head.eval(), details, (TWO_LOGIT_NOTE,) if two else ())


def load_head(spec: ModuleSpec, feature_dim: int) -> LoadedHead:
    """The head of ``spec`` as tfbound certifies it (see :class:`LoadedHead`).

    ``arch: linear`` / ``mlp``: the layouts users save (tfbound's ``linear.*`` / ``fc1.*``,
    ``nn.Linear``, ``nn.Sequential``, ``dense``/``out_proj``), after ``prefix`` / ``key_map``;
    ``arch: factory``: the user's module, reduced to one of those and checked on probe inputs.
    """
    if spec.arch == "factory":
        return _factory_head(spec, feature_dim)
    assert spec.weights is not None
    tensors = _renamed_tensors(spec, spec.weights)
    if spec.arch == "linear":
        # a stochastic head of tfbound fit-head --stochastic: its mean is the linear head
        tensors.pop("posterior.scale", None)
    layers = _layers_of(tensors)
    picked = _pick_layers(layers, spec.arch)
    extra = set(tensors) - {
        f"{n}.{leaf}" if n else leaf for n in layers for leaf in ("weight", "bias")
    }
    if picked is None or extra:
        found = ", ".join(sorted(tensors)[:6]) + (" ..." if len(tensors) > 6 else "")
        hint = "; set 'head.prefix' to strip a wrapper's prefix" if picked is None else ""
        raise CheckpointError(
            f"a {spec.arch} head wants {_wanted(spec.arch)}; found: {found}{hint}",
            path=spec.weights,
        )
    return head_from_layers(
        picked, str(spec.options.get("activation", "relu")), feature_dim, spec.weights
    )


def build_head(spec: ModuleSpec, feature_dim: int) -> LinearHead | MLPHead:
    """The head, its input dimension read from its weights and checked against the encoder's."""
    return load_head(spec, feature_dim).head


_ACTIVATION_NAMES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.GELU: "gelu",
    nn.Tanh: "tanh",
    nn.Identity: "identity",
}


def _factory_head(spec: ModuleSpec, feature_dim: int) -> LoadedHead:
    """A user's head module reduced to a linear or one-hidden-layer MLP head: its Linear layers
    (and the activation between them) in module order, checked against the module's own output
    on seeded probe features."""
    module = _construct(spec)
    if spec.weights is not None:
        _load_strict(module, spec, spec.weights)
    module.eval()
    leaves = [m for m in module.modules() if not list(m.children())]
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    acts = [m for m in leaves if not isinstance(m, nn.Linear | nn.Dropout)]
    activation = "relu"
    ok = len(linears) in (1, 2) and len(acts) == len(linears) - 1
    if ok and acts:
        name = _ACTIVATION_NAMES.get(type(acts[0]))
        ok = name is not None
        activation = str(name)
    if not ok:
        raise ConfigError(
            f"the head factory's module ({type(module).__name__}) is not a linear or "
            "one-hidden-layer MLP head (Linear, or Linear -> activation -> Linear): tfbound "
            "certifies only those"
        )
    layers = [(m.weight.detach(), None if m.bias is None else m.bias.detach()) for m in linears]
    loaded = head_from_layers(layers, activation, feature_dim, spec.weights)
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(64, feature_dim, generator=gen)
    with torch.inference_mode():
        raw = module(probe).to(torch.float64).reshape(64, -1)
        ours = loaded.head(probe).to(torch.float64)
    score = raw[:, 0] if raw.shape[1] == 1 else raw[:, 1] - raw[:, 0]
    if raw.shape[1] > 2 or not torch.allclose(score, ours, rtol=1e-4, atol=1e-5):
        raise ConfigError(
            f"the head factory's module ({type(module).__name__}) does not compute its Linear "
            "layers in order (checked on probe inputs): tfbound cannot certify it"
        )
    return loaded


@torch.inference_mode()
def feature_dim_of(encoder: nn.Module, example: torch.Tensor) -> int:
    """The encoder's output dimension on one example (eval mode)."""
    out = encoder(example[:1])
    return int(out.reshape(1, -1).shape[1])
