"""Checkpoints: ``.safetensors`` (preferred) and weights-only PyTorch state dicts.

A file whose unpickling would run code is refused. Every tensor is checked for NaN and Inf.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from tfbound.errors import CheckpointError

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Name -> tensor from a safetensors file or a weights-only PyTorch state dict."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError("checkpoint file not found", path=p)
    if p.suffix == ".safetensors":
        try:
            tensors = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"not a valid safetensors file (truncated or corrupt): {_first_line(exc)}", path=p
            ) from exc
    else:
        tensors = _load_torch_state_dict(p)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"tensor '{name}' contains NaN or Inf", path=p)
    return tensors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_torch_state_dict(p: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            "refused: loading this file would unpickle code (only weights-only state dicts and "
            "safetensors are read; save `model.state_dict()` or use safetensors)",
            path=p,
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"not a readable PyTorch checkpoint (truncated or corrupt): {_first_line(exc)}", path=p
        ) from exc
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping) and len(obj) <= 4:
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError("expected a state dict mapping names to tensors", path=p)
    return dict(obj)


def load_module_weights(module: nn.Module, path: str | Path, role: str) -> None:
    """Load a checkpoint into ``module`` strictly; a mismatch is a ``CheckpointError``."""
    tensors = load_tensors(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs {role} {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    problems = []
    if mismatched:
        problems.append("shape mismatch " + "; ".join(mismatched[:3]))
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        more = " ..." if len(unexpected) > 5 else ""
        problems.append(f"unexpected {', '.join(unexpected[:5])}{more}")
    if problems:
        raise CheckpointError(
            f"weights do not fit the {role} architecture: {'; '.join(problems)}", path=path
        )
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)
