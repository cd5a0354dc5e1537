"""Pretext targets of the transfer family in a fixed layout, and their losses (the encoder pass on
corrupted inputs is ``tfbound.features.encode`` with a ``Corruption``).

The corruption is the configured pretext task of ``tfbound.pretext``: Context Encoder inputs have
the block zeroed; MAE inputs keep only the visible patches (``ViTEncoder.forward_visible``). MAE
masks are drawn once per split by :func:`draw_masks` from a seeded generator and then shared by
every family member, so members are compared on the same corrupted inputs (paired differences).

A pretext *target* is written in a fixed layout with a 0/1 ``mask`` of the coordinates the loss
counts: CE, the block's ``D`` pixels (mask all ones); MAE, every patch's pixels (``P x patch_dim``)
with the dropped patches' ``D = n_drop x patch_dim`` coordinates marked. A decoder predicts the
whole layout; the loss is ``(1/D) sum_j mask_j (clip(pred_j) - t_j)^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tfbound.errors import ConfigError
from tfbound.models.vit import ViTEncoder
from tfbound.pretext import ContextEncoderTask, PretextTask, clipped_square_loss


@dataclass(frozen=True)
class PretextTargets:
    """Targets ``(n, D_full)``, the loss mask ``(n, D_full)`` and MAE ``keep`` indices (or None)."""

    targets: np.ndarray
    mask: np.ndarray
    keep: torch.Tensor | None

    @property
    def n_counted(self) -> int:
        """``D``: coordinates counted per example (constant across examples)."""
        return int(self.mask[0].sum())


def draw_masks(task: PretextTask, encoder: nn.Module, x: np.ndarray, seed: int) -> PretextTargets:
    """The pretext targets of ``x`` and (MAE) one mask per example from a generator seeded ``seed``.

    The MAE masks are drawn in one call for the whole split, in row order.
    """
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    n = xt.shape[0]
    if isinstance(task, ContextEncoderTask):
        try:
            _, target = task.corrupt(xt)
        except RuntimeError as exc:
            raise ConfigError(f"the pretext block does not fit the inputs: {exc}") from exc
        t = target.to(torch.float64).numpy()
        return PretextTargets(t, np.ones_like(t), None)
    if not isinstance(encoder, ViTEncoder):
        raise ConfigError("the MAE pretext task needs a ViT encoder")
    try:
        keep, drop = task.masks(n, encoder.num_patches, torch.Generator().manual_seed(seed))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    patches = encoder.patchify(xt).to(torch.float64)  # (n, P, patch_dim)
    mask = torch.zeros(patches.shape, dtype=torch.float64)
    mask.scatter_(1, drop.unsqueeze(-1).expand(-1, -1, patches.shape[-1]), 1.0)
    return PretextTargets(patches.flatten(1).numpy(), mask.flatten(1).numpy(), keep)


def masked_pretext_losses(
    pred: np.ndarray, targets: PretextTargets, box: tuple[float, float]
) -> np.ndarray:
    """Per-example pretext losses of predictions in the full target layout (float64), by the one
    loss ``tfbound.pretext.clipped_square_loss`` with the layout's mask."""
    losses = clipped_square_loss(
        torch.from_numpy(np.asarray(pred, dtype=np.float64)),
        torch.from_numpy(targets.targets),
        box,
        torch.from_numpy(targets.mask),
    )
    return np.asarray(losses.numpy(), dtype=np.float64)


__all__ = ["PretextTargets", "draw_masks", "masked_pretext_losses"]
