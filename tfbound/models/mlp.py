"""Multilayer perceptrons: the MLP encoder and the MLP decoder share one module."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


def activation_module(name: str) -> nn.Module:
    """Return a fresh activation module for ``name`` (one of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None


class MLP(nn.Module):
    """``Linear -> act -> ... -> Linear``; the last layer has no activation unless ``final_act``.

    Parameters are named ``net.<i>.weight`` / ``net.<i>.bias`` with ``i`` the index in the
    ``nn.Sequential`` (activations occupy the odd slots).
    """

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int],
        output_dim: int,
        activation: str = "relu",
        *,
        final_act: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        dims = [int(input_dim), *(int(h) for h in hidden), int(output_dim)]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(d_in, d_out, bias=bias))
            if i < len(dims) - 2 or final_act:
                layers.append(activation_module(activation))
        self.net = nn.Sequential(*layers)
        self.input_dim = dims[0]
        self.output_dim = dims[-1]
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1))


class MLPEncoder(MLP):
    """An MLP encoder: flattens its input, every layer (the last too) followed by the activation."""

    def __init__(
        self, input_dim: int, hidden: Sequence[int], feature_dim: int, activation: str = "relu"
    ) -> None:
        super().__init__(input_dim, hidden, feature_dim, activation, final_act=True)
        self.feature_dim = int(feature_dim)
