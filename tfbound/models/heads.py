"""Binary-classification heads on top of a frozen feature map: ``f(z)`` is a real score."""

from __future__ import annotations

import torch
from torch import nn

from tfbound.models.mlp import activation_module


class LinearHead(nn.Module):
    """``f(z) = theta . z + b``, stored as ``linear.weight`` (1, d) and ``linear.bias`` (1,)."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(int(feature_dim), 1)
        self.feature_dim = int(feature_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z).squeeze(-1)


class MLPHead(nn.Module):
    """``f(z) = sum_j v_j s(w_j . z + c_j) + b_0``: ``fc1`` holds (w, c), ``fc2`` holds (v, b_0)."""

    def __init__(self, feature_dim: int, hidden: int, activation: str = "relu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(int(feature_dim), int(hidden))
        self.act = activation_module(activation)
        self.fc2 = nn.Linear(int(hidden), 1)
        self.feature_dim = int(feature_dim)
        self.activation = activation

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(z))).squeeze(-1)
