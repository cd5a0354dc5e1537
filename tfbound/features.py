"""The one batched pass of an encoder over an input array, shared by every command.

Inputs are read ``batch_size`` rows at a time (a memory-mapped ``.npy`` is never loaded whole),
checked for NaN/Inf, optionally corrupted by a pretext task (:class:`Corruption`: the Context
Encoder's block zeroed, or only the MAE ``keep`` patches seen), and encoded under
``torch.inference_mode()``; the features are checked too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tfbound.errors import DataError, first_line
from tfbound.pretext import ContextEncoderTask, PretextTask

#: ``progress(task, done, total)`` is called after every batch.
ProgressFn = Callable[[str, int, int], None]


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
    path: Path | None = None,
) -> torch.Tensor:
    if corruption is None:
        return _forward(encoder, batch, path)
    if isinstance(corruption.task, ContextEncoderTask):
        masked, _ = corruption.task.corrupt(batch)
        return encoder(masked)
    forward_visible = getattr(encoder, "forward_visible", None)
    if corruption.keep is None or forward_visible is None:
        raise ValueError("an MAE corruption needs keep indices and a ViT encoder")
    return forward_visible(batch, corruption.keep[start : start + batch.shape[0]])


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
) -> Iterator[torch.Tensor]:
    """``h(x)`` (or ``h(x~)`` under ``corruption``) batch by batch, ``(b, d)``; call under
    ``torch.inference_mode()`` in eval mode.

    Inputs that offer ``sorted_batches`` (texts: ``tfbound.io.text.TextInputs``) are encoded in
    their own order (texts of similar length together, each batch padded to its longest) and the
    features are yielded in the split's order, ``batch_size`` rows at a time."""
    if corruption is None and callable(getattr(x, "sorted_batches", None)):
        yield from _sorted_feature_batches(encoder, x, batch_size, path, task, progress)
        return
    start = 0
    for batch in input_batches(x, batch_size, what=what, path=path, task=task, progress=progress):
        z = _encode_batch(encoder, batch, start, corruption, path).reshape(batch.shape[0], -1)
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
) -> Iterator[torch.Tensor]:
    n = int(x.shape[0])
    out: torch.Tensor | None = None
    done = 0
    for index, rows in x.sorted_batches(batch_size):
        z = _forward(encoder, torch.from_numpy(rows), path)
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
) -> np.ndarray:
    """``h(x)`` (or ``h(x~)``) as float64 ``(n, d)``; the encoder is put in eval mode and
    restored after."""
    was_training = encoder.training
    encoder.eval()
    try:
        return np.concatenate(
            [
                z.to(torch.float64).numpy()
                for z in feature_batches(encoder, x, batch_size, corruption=corruption)
            ]
        )
    finally:
        encoder.train(was_training)
