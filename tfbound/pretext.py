"""The two pretext tasks, shared by pre-training (sample models, RadReg) and evaluation.

- Context Encoder (CE): zero a fixed rectangular block of each image; the decoder reconstructs
  the block's ``D = height * width * channels`` pixels from the encoder's features.
- Masked Autoencoder (MAE): split the image into patches, drop ``floor(r * P)`` of the ``P`` patches
  uniformly at random (one mask per example, from a seeded generator); the encoder sees the visible
  patches only and the decoder predicts every patch from the pooled features; the loss counts the
  ``D = n_drop * patch_dim`` pixels of the dropped patches only.

``pretext_batch`` returns ``(prediction, target)`` of shape ``(n, D)`` for either task;
``pretext_losses`` the per-example clipped square loss, the one loss every command evaluates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tfbound.config import PretextSpec
from tfbound.errors import ConfigError, DataError
from tfbound.models.vit import ViTEncoder


@dataclass(frozen=True)
class ContextEncoderTask:
    """Zero ``block = (top, left, height, width)`` of ``(channels, height, width)`` images."""

    image_shape: tuple[int, int, int]
    block: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        c, h, w = self.image_shape
        top, left, bh, bw = self.block
        if min(c, h, w, bh, bw) < 1 or top < 0 or left < 0 or top + bh > h or left + bw > w:
            raise ValueError(f"block {self.block} does not fit images of shape {self.image_shape}")

    @property
    def output_dim(self) -> int:
        return self.image_shape[0] * self.block[2] * self.block[3]

    def corrupt(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x with the block zeroed, flattened like x; the block's pixels (n, D))``."""
        c, h, w = self.image_shape
        top, left, bh, bw = self.block
        imgs = x.reshape(x.shape[0], c, h, w)
        target = imgs[:, :, top : top + bh, left : left + bw].reshape(x.shape[0], -1).clone()
        masked = imgs.clone()
        masked[:, :, top : top + bh, left : left + bw] = 0
        return masked.reshape(x.shape), target


@dataclass(frozen=True)
class MaskedAutoencoderTask:
    """Drop ``floor(mask_ratio * num_patches)`` patches per example."""

    mask_ratio: float

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {self.mask_ratio}")

    def n_drop(self, num_patches: int) -> int:
        n_drop = math.floor(self.mask_ratio * num_patches + 1e-9)  # floor(r P), rounding-safe
        if not 0 < n_drop < num_patches:
            raise ValueError(
                f"mask_ratio {self.mask_ratio} drops {n_drop} of {num_patches} patches"
            )
        return n_drop

    def masks(
        self, n: int, num_patches: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch indices ``keep`` (n, P - n_drop) and ``drop`` (n, n_drop), sorted per row."""
        n_drop = self.n_drop(num_patches)
        order = torch.argsort(torch.rand(n, num_patches, generator=generator), dim=1)
        keep = order[:, n_drop:].sort(dim=1).values
        drop = order[:, :n_drop].sort(dim=1).values
        return keep, drop


PretextTask = ContextEncoderTask | MaskedAutoencoderTask


def pretext_task(spec: PretextSpec) -> PretextTask:
    """The task a config's ``pretext`` section describes; a block that does not fit is a
    ``ConfigError``."""
    if spec.kind == "ce":
        assert spec.image_shape is not None and spec.block is not None
        try:
            return ContextEncoderTask(spec.image_shape, spec.block)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    assert spec.mask_ratio is not None
    return MaskedAutoencoderTask(spec.mask_ratio)


def pretext_batch(
    task: PretextTask,
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and targets, each ``(n, D)``, for one batch of clean inputs ``x``.

    For MAE the masks come from ``generator``: drawing batches in a fixed order from a generator
    seeded in advance gives one fixed mask per example.
    """
    if isinstance(task, ContextEncoderTask):
        masked, target = task.corrupt(x)
        return decoder(encoder(masked)), target
    if not isinstance(encoder, ViTEncoder):
        raise TypeError("the MAE pretext task needs a ViT encoder")
    if generator is None:
        raise ValueError("the MAE pretext task needs a seeded generator for its masks")
    keep, drop = task.masks(x.shape[0], encoder.num_patches, generator)
    patches = encoder.patchify(x)  # (n, P, patch_dim)
    pred = decoder(encoder.forward_visible(x, keep)).reshape(patches.shape)
    idx = drop.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
    return pred.gather(1, idx).flatten(1), patches.gather(1, idx).flatten(1)


def clipped_square_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    box: tuple[float, float],
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-example ``(1/D) sum_j mask_j (clip(pred_j) - t_j)^2`` with ``clip`` onto
    ``[lo, hi]``, ``D = sum_j mask_j``; without ``mask`` every coordinate counts (the mean).

    The one pretext loss: estimate and pre-training take the counted coordinates only; transfer
    keeps MAE targets in the full patch layout with the dropped patches marked in ``mask``.
    """
    lo, hi = box
    sq = (pred.clamp(lo, hi) - target).pow(2)
    if mask is None:
        return sq.mean(dim=1)
    return (sq * mask).sum(dim=1) / mask.sum(dim=1)


def pretext_losses(
    task: PretextTask,
    encoder: nn.Module,
    decoder: nn.Module,
    x: torch.Tensor,
    box: tuple[float, float],
    generator: torch.Generator | None = None,
    *,
    path: Path | None = None,
) -> tuple[torch.Tensor, int]:
    """Per-example clipped square losses ``(n,)`` of encoder + decoder on the clean batch ``x``,
    and the number ``D`` of targets per example.

    A decoder that does not fit the encoder or the task is a ``ConfigError``; targets outside
    ``box`` (the loss would not be bounded) a ``DataError`` naming ``path``.
    """
    try:
        pred, target = pretext_batch(task, encoder, decoder, x, generator)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"the pretext task does not fit the models or data: {exc}") from exc
    if pred.shape != target.shape:
        raise ConfigError(
            f"the decoder predicts {tuple(pred.shape[1:])} values, the pretext target has "
            f"{tuple(target.shape[1:])}"
        )
    lo, hi = box
    if bool((target < lo).any() or (target > hi).any()):
        raise DataError(f"pretext targets leave the box [{lo}, {hi}]", path=path)
    return clipped_square_loss(pred, target, box), int(target.shape[1])
