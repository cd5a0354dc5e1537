"""Modules as functions of their parameters, for bounds that sample heads (bound-spec 10.4).

``tfbound.bounds`` takes tensors and functions, never modules: :func:`pac_bayes_mlp_gibbs` reads
a head's parameters, calls the bound with ``torch.func.functional_call`` as the forward, and
leaves the module's training mode as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from tfbound.bounds.pac_bayes_mlp import MlpGibbsResult, pac_bayes_sampled_gibbs


def float64_params(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's named parameters, detached, in float64."""
    return {k: v.detach().to(torch.float64) for k, v in module.named_parameters()}


def pac_bayes_mlp_gibbs(
    head: nn.Module,
    prior_heads: Sequence[nn.Module],
    z2: np.ndarray | torch.Tensor,
    y2: np.ndarray | torch.Tensor,
    *,
    sigma_grid: Sequence[float],
    n_samples: int,
    delta_pb: float,
    delta_s: float,
    seed: int,
    batch: int = 64,
) -> MlpGibbsResult:
    """:func:`tfbound.bounds.pac_bayes_mlp.pac_bayes_sampled_gibbs` for a head module (eval mode
    during the call, its mode restored after) and prior heads of the same architecture."""

    def scores_of(params: Mapping[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(head, dict(params), (z,))

    was_training = head.training
    head.eval()
    try:
        return pac_bayes_sampled_gibbs(
            float64_params(head),
            [float64_params(p) for p in prior_heads],
            scores_of,
            z2,
            y2,
            sigma_grid=sigma_grid,
            n_samples=n_samples,
            delta_pb=delta_pb,
            delta_s=delta_s,
            seed=seed,
            batch=batch,
        )
    finally:
        head.train(was_training)


__all__ = ["float64_params", "pac_bayes_mlp_gibbs"]
