"""The section-2 bound against a hand computation, and the certified sum."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.tolerances import FLOAT64_EXACT
from tfbound.adapters.chain import mlp_chain
from tfbound.bounds.margin import ROUNDING, linear_head_norm, margin_bound, relu_path_norm
from tfbound.measures.margin import ramp_loss
from tfbound.measures.network import Affine
from tfbound.models import LinearHead, MLPHead


def test_ramp_loss_values() -> None:
    t = np.array([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0])
    assert ramp_loss(t, 0.5).tolist() == [1.0, 1.0, 0.5, 0.0, 0.0, 0.0]
    assert np.all(ramp_loss(t) >= (t <= 0))


def test_hand_computed_bound() -> None:
    # Four examples, head norm 2, U_sigma = 3, delta_1 = 0.1, rho0 = 0.5.
    scores = np.array([2.0, -1.0, 0.5, 4.0])
    y = np.array([1.0, 1.0, 1.0, 1.0])
    mb = margin_bound(scores, y, 2.0, 3.0, delta_1=0.1, rho0=0.5)
    unit = y * scores / 2.0  # [1, -0.5, 0.25, 2]
    totals = []
    for k in range(1, mb.n_cells + 1):
        rho = 0.5 * 2 ** (k - 1)
        emp = np.mean(np.clip(1 - rho * unit, 0, 1))
        comp = 2 * rho * 3.0 / 4
        conf = 3 * math.sqrt(math.log(2 * k * (k + 1) / 0.1) / 8)
        totals.append(emp + comp + conf)
    k_star = int(np.argmin(totals)) + 1
    assert mb.best is not None and mb.best.k == k_star
    assert mb.total == pytest.approx(min(totals), rel=FLOAT64_EXACT)
    # k=1: rho=0.5 -> emp = mean(clip(1 - [0.5, -0.25, 0.125, 1])) = (0.5 + 1 + 0.875 + 0)/4.
    assert totals[0] == pytest.approx(2.375 / 4 + 0.75 + 3 * math.sqrt(math.log(40) / 8))
    assert mb.best.total == pytest.approx(
        mb.best.empirical_risk + mb.best.rirc_term + mb.best.confidence
    )
    assert mb.gamma == pytest.approx(2.0 / mb.best.rho)
    # Scanning stops at the first cell whose complexity term alone reaches 1.
    last_rho = 0.5 * 2 ** (mb.n_cells - 1)
    assert 2 * last_rho * 3.0 / 4 >= 1 > 2 * (last_rho / 2) * 3.0 / 4


def test_zero_head_is_trivial() -> None:
    mb = margin_bound(np.zeros(3), np.ones(3), 0.0, 1.0, delta_1=0.1, rho0=1.0)
    assert mb.best is None and mb.total == 1.0


def _chain(module: torch.nn.Module) -> list[Affine]:
    chain = mlp_chain(module)
    assert chain is not None
    return chain


def test_head_norms() -> None:
    head = LinearHead(3)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[3.0, 0.0, 4.0]]))
        head.linear.bias.fill_(6.0)
    assert linear_head_norm(_chain(head)[0], 2.0) == pytest.approx(
        math.sqrt(25 + 9) * ROUNDING, rel=FLOAT64_EXACT
    )
    mlp = MLPHead(2, 2)
    with torch.no_grad():
        mlp.fc1.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        mlp.fc1.bias.copy_(torch.tensor([0.0, 2.0]))
        mlp.fc2.weight.copy_(torch.tensor([[2.0, -1.0]]))
        mlp.fc2.bias.fill_(-3.0)
    # P = |2| * 5 + |-1| * sqrt(1 + (2/1)^2) + |-3| / 1
    expected = 10 + math.sqrt(5) + 3
    assert relu_path_norm(_chain(mlp), 1.0) == pytest.approx(expected * ROUNDING, rel=FLOAT64_EXACT)


def test_relu_path_norm_bounds_the_head_output() -> None:
    """|f(z)| <= P_hat * ||(z, c)|| for a ReLU head (positive homogeneity)."""
    gen = torch.Generator().manual_seed(0)
    mlp = MLPHead(5, 7)
    z = torch.randn(200, 5, generator=gen)
    c = 1.5
    p = relu_path_norm(_chain(mlp), c)
    zp = torch.cat([z, torch.full((200, 1), c)], 1)
    with torch.no_grad():
        assert torch.all(mlp(z).abs() <= p * zp.norm(dim=1) + 1e-6)
