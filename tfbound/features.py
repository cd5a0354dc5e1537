"""The one batched pass of an encoder over an input array, shared by every command.

Inputs are read ``batch_size`` rows at a time (a memory-mapped ``.npy`` is never loaded whole),
checked for NaN/Inf, optionally corrupted by a pretext task (:class:`Corruption`: the Context
Encoder's block zeroed, or only the MAE ``keep`` patches seen), and encoded under
``torch.inference_mode()``; the features are checked too.

An :class:`EncoderPlacement` (``--device``, ``--dtype``; :func:`placement`) runs the encoder pass
on another device or in another dtype: a copy of the encoder is moved there once, each batch is
moved to it, and the features come back to the CPU as float64 before anything else reads them.
Without one (and for ``cpu`` with ``float32``) the pass is the plain float32 CPU pass.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tfbound.errors import DataError, DeviceError, UsageError, first_line
from tfbound.pretext import ContextEncoderTask, PretextTask

#: ``progress(task, done, total)`` is called after every batch.
ProgressFn = Callable[[str, int, int], None]


DEVICES = ("cpu", "cuda", "auto")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


@dataclass(frozen=True, eq=False)
class EncoderPlacement:
    """Where and in which dtype the encoder pass runs: ``module`` is a copy of the encoder
    moved to ``device`` in ``dtype`` (the original stays on the CPU for the norms)."""

    module: nn.Module
    device: torch.device
    dtype: torch.dtype

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch on the device; floating inputs in the pass's dtype, token ids unchanged."""
        if batch.is_floating_point():
            return batch.to(device=self.device, dtype=self.dtype)
        return batch.to(device=self.device)


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (refused with a ``DeviceError`` without a GPU) or ``auto``."""
    if device not in DEVICES:
        raise UsageError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is available (use cpu or auto)")
    return torch.device(device)


def placement(
    encoder: nn.Module, device: str | None = None, dtype: str | None = None
) -> EncoderPlacement | None:
    """The placement of the encoder pass, or None for the plain CPU float32 pass (also what
    ``cpu`` with ``float32`` gives: the same pass, no copy)."""
    if dtype is not None and dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    where = resolve_device(device or "cpu")
    kind = DTYPES[dtype or "float32"]
    if where.type == "cpu" and kind == torch.float32:
        return None
    module = copy.deepcopy(encoder).to(device=where, dtype=kind)
    module.eval()
    return EncoderPlacement(module, where, kind)


def input_batches(
    x: np.ndarray,
    batch_size: int,
    *,
    what: str = "inputs",
    path: Path | None = None,
    task: str = "",
    progress: ProgressFn | None = None,
) -> Iterator[torch.Tensor]:
    """float32 row batches of ``x``; NaN or Inf is a ``DataError`` naming ``what`` and ``path``."""
    n = x.shape[0]
    for start in range(0, n, batch_size):
        batch = torch.from_numpy(np.asarray(x[start : start + batch_size], dtype=np.float32))
        if not bool(torch.isfinite(batch).all()):
            raise DataError(f"{what} contain NaN or Inf", path=path)
        yield batch
        if progress is not None:
            progress(task, min(n, start + batch_size), n)


@dataclass(frozen=True)
class Corruption:
    """The pretext corruption applied before the encoder: a Context Encoder task (the block
    zeroed), or an MAE task with ``keep`` ``(n, n_keep)``, the visible patches of each row."""

    task: PretextTask
    keep: torch.Tensor | None = None


def _forward(encoder: nn.Module, batch: torch.Tensor, path: Path | None) -> torch.Tensor:
    """``encoder(batch)``; an input the encoder cannot take (a shape or channel mismatch, raised
    inside the model) is a one-line ``DataError`` naming the input's shape."""
    try:
        out: torch.Tensor = encoder(batch)
    except (RuntimeError, ValueError, IndexError) as exc:
        shape = "x".join(str(s) for s in batch.shape[1:])
        raise DataError(
            f"the encoder cannot take these inputs (one example of shape {shape}): "
            f"{first_line(exc)}",
            path=path,
        ) from exc
    return out


def _encode_batch(
    encoder: nn.Module,
    batch: torch.Tensor,
    start: int,
    corruption: Corruption | None,
    where: EncoderPlacement | None = None,
    path: Path | None = None,
) -> torch.Tensor:
    if where is not None:
        z = _encode_batch(where.module, where.to_device(batch), start, corruption, None, path)
        return z.to(device="cpu", dtype=torch.float64)
    if corruption is None:
        return _forward(encoder, batch, path)
    if isinstance(corruption.task, ContextEncoderTask):
        masked, _ = corruption.task.corrupt(batch)
        return encoder(masked)
    forward_visible = getattr(encoder, "forward_visible", None)
    if corruption.keep is None or forward_visible is None:
        raise ValueError("an MAE corruption needs keep indices and a ViT encoder")
    keep = corruption.keep[start : start + batch.shape[0]].to(batch.device)
    return forward_visible(batch, keep)


def feature_batches(
    encoder: nn.Module,
    x: np.ndarray,
    batch_size: int,
    *,
    corruption: Corruption | None = None,
    what: str = "inputs",
    path: Path | None = None,
    task: str = "",
    progress: ProgressFn | None = None,
    where: EncoderPlacement | None = None,
) -> Iterator[torch.Tensor]:
    """``h(x)`` (or ``h(x~)`` under ``corruption``) batch by batch, ``(b, d)``; call under
    ``torch.inference_mode()`` in eval mode. With ``where``, the pass runs on its device and
    dtype and each batch of features comes back as float64 on the CPU.

    Inputs that offer ``sorted_batches`` (texts: ``tfbound.io.text.TextInputs``) are encoded in
    their own order (texts of similar length together, each batch padded to its longest) and the
    features are yielded in the split's order, ``batch_size`` rows at a time."""
    if corruption is None and callable(getattr(x, "sorted_batches", None)):
        yield from _sorted_feature_batches(encoder, x, batch_size, path, task, progress, where)
        return
    start = 0
    for batch in input_batches(x, batch_size, what=what, path=path, task=task, progress=progress):
        z = _encode_batch(encoder, batch, start, corruption, where, path)
        z = z.reshape(batch.shape[0], -1)
        if not bool(torch.isfinite(z).all()):
            raise DataError("the encoder produced NaN or Inf features", path=path)
        start += batch.shape[0]
        yield z


def _sorted_feature_batches(
    encoder: nn.Module,
    x: Any,
    batch_size: int,
    path: Path | None,
    task: str,
    progress: ProgressFn | None,
    where: EncoderPlacement | None = None,
) -> Iterator[torch.Tensor]:
    n = int(x.shape[0])
    out: torch.Tensor | None = None
    done = 0
    for index, rows in x.sorted_batches(batch_size):
        z = _encode_batch(encoder, torch.from_numpy(rows), 0, None, where, path)
        z = z.reshape(z.shape[0], -1)
        if not bool(torch.isfinite(z).all()):
            raise DataError("the encoder produced NaN or Inf features", path=path)
        if out is None:
            out = torch.empty((n, z.shape[1]), dtype=z.dtype)
        out[torch.from_numpy(np.asarray(index, dtype=np.int64))] = z
        done += len(index)
        if progress is not None:
            progress(task, done, n)
    assert out is not None
    for start in range(0, n, batch_size):
        yield out[start : start + batch_size]


@torch.inference_mode()
def encode(
    encoder: nn.Module,
    x: np.ndarray,
    batch_size: int = 512,
    *,
    corruption: Corruption | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> np.ndarray:
    """``h(x)`` (or ``h(x~)``) as float64 ``(n, d)``; the encoder is put in eval mode and
    restored after. ``device`` (``cpu``, ``cuda``, ``auto``) and ``dtype`` (``float32``,
    ``float64``, ``bfloat16``) place the pass (:func:`placement`); the result is float64 on
    the CPU either way."""
    was_training = encoder.training
    encoder.eval()
    try:
        where = placement(encoder, device, dtype)
        return np.concatenate(
            [
                z.to(torch.float64).numpy()
                for z in feature_batches(encoder, x, batch_size, corruption=corruption, where=where)
            ]
        )
    finally:
        encoder.train(was_training)
