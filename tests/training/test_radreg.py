"""RadReg: the closed form against rirc_linear, gradients, scale invariance, adversarial heads."""

from __future__ import annotations

import math

import pytest
import torch

from tests.tolerances import FLOAT64_EXACT, FLOAT64_SOLVER, GRADCHECK_ATOL, ITERATIVE
from tfbound.measures.rirc import rirc_linear
from tfbound.pretext import ContextEncoderTask
from tfbound.training.loops import MLPArch, RadRegOptions, features, pretrain_ce
from tfbound.training.radreg import (
    AdversarialRadReg,
    RadReg,
    _project_l1,
    effective_rank,
    normalize_features,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _features(m: int = 30, d: int = 6, seed: int = 0, shift: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=gen, dtype=torch.float64) + shift


@pytest.mark.parametrize("normalize", ["rms", "l2", "none"])
@pytest.mark.parametrize("bias_const", [None, 0.5])
def test_value_equals_rirc_linear_on_the_same_signs(normalize: str, bias_const: float | None):
    z = _features()
    reg = RadReg(300, 2.5, 30, seed=7, normalize=normalize, bias_const=bias_const)  # type: ignore[arg-type]
    ref = rirc_linear(reg.normalized(z), 2.5, signs=reg.signs, bias_const=bias_const)
    assert float(reg(z)) == pytest.approx(ref.value, rel=FLOAT64_EXACT, abs=0)
    # The signs are fair coins drawn once from the seed, the same for the same seed.
    assert bool(torch.all(reg.signs.abs() == 1)) and abs(float(reg.signs.mean())) < 0.02
    assert torch.equal(reg.signs, RadReg(300, 2.5, 30, seed=7).signs)


def test_gradient_matches_finite_differences():
    z = _features(8, 3).requires_grad_(True)
    for normalize in ("rms", "l2", "none"):
        reg = RadReg(32, 1.0, 8, seed=1, normalize=normalize, bias_const=1.0)  # type: ignore[arg-type]
        assert torch.autograd.gradcheck(reg, (z,), eps=1e-6, atol=GRADCHECK_ATOL)


def test_gradient_through_a_small_model_matches_finite_differences():
    gen = torch.Generator().manual_seed(3)
    u = torch.rand(10, 5, generator=gen, dtype=torch.float64)
    w1 = torch.randn(5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    reg = RadReg(50, 1.0, 10, seed=2)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return reg(torch.tanh(u @ a) @ b)

    assert torch.autograd.gradcheck(loss, (w1, w2), eps=1e-6, atol=GRADCHECK_ATOL)


@pytest.mark.parametrize("normalize", ["rms", "l2"])
def test_shrinking_the_features_does_not_pay(normalize: str):
    z = _features()
    reg = RadReg(200, 1.0, 30, seed=0, normalize=normalize, bias_const=1.0)  # type: ignore[arg-type]
    base = float(reg(z))
    for a in (0.9, 0.5, 1e-3):
        assert float(reg(a * z)) == pytest.approx(base, rel=FLOAT64_EXACT)
    # No gradient along the shrinking direction: d/da RadReg(a z) = 0 at a = 1.
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(reg(a * z), a)
    assert abs(float(grad)) < FLOAT64_EXACT
    # The control: on raw features shrinking would pay, which is why it is not the default.
    raw = RadReg(200, 1.0, 30, seed=0, normalize="none")
    assert float(raw(0.5 * z)) == pytest.approx(0.5 * float(raw(z)), rel=FLOAT64_EXACT)


def test_normalised_value_lies_in_the_khintchine_kahane_sandwich():
    m = 40
    for z in (_features(m, 8), _features(m, 1), torch.ones(m, 3, dtype=torch.float64)):
        reg = RadReg(4000, 1.0, m, seed=0, bias_const=1.0)
        jensen = math.sqrt((1 + 1.0**2) / m)  # sum ||z~'||^2 = m (1 + c^2) after rms
        value = float(reg(z))
        assert jensen / math.sqrt(2) <= value <= jensen * (1 + FLOAT64_EXACT)


def test_effective_rank():
    assert effective_rank(torch.ones(20, 5)) == pytest.approx(1.0)
    assert effective_rank(torch.eye(6)) == pytest.approx(6.0)
    z = _features(50, 4, shift=0.0)
    assert effective_rank(3.0 * z) == pytest.approx(effective_rank(z))
    rank = effective_rank(z)
    assert rank > 1.0 and rank <= 4.0


def test_project_l1_is_the_euclidean_projection():
    gen = torch.Generator().manual_seed(0)
    v = 2.0 * torch.randn(50, 7, generator=gen, dtype=torch.float64)
    v[0] = 0.01  # already inside
    p = _project_l1(v, 1.0)
    assert torch.equal(p[0], v[0])
    assert bool((p.abs().sum(dim=1) <= 1.0 + FLOAT64_EXACT).all())
    # Projection onto {||x||_1 <= 1}: soft-thresholding at the tau found by bisection.
    for row, prow in zip(v[1:], p[1:], strict=True):
        lo, hi = 0.0, float(row.abs().max())
        for _ in range(200):
            tau = (lo + hi) / 2
            lo, hi = (tau, hi) if (row.abs() - tau).clamp_min(0).sum() > 1.0 else (lo, tau)
        ref = row.sign() * (row.abs() - hi).clamp_min(0)
        assert torch.allclose(prow, ref, atol=FLOAT64_SOLVER)


@pytest.mark.parametrize("bias_const", [None, 1.0])
def test_adversarial_linear_heads_never_exceed_the_closed_form_and_approach_it(bias_const):
    z = _features(30, 5)
    closed = RadReg(100, 2.0, 30, seed=4, bias_const=bias_const)
    adv = AdversarialRadReg(100, 2.0, 30, seed=4, feature_dim=5, bias_const=bias_const)
    per_draw = closed.radius / closed.unlabeled_size * closed.draw_norms(z)
    values = []
    for _ in range(25):
        per_head = adv.per_head(z)
        assert bool(
            (per_head <= per_draw * (1 + FLOAT64_EXACT)).all()
        )  # Cauchy-Schwarz, every draw
        values.append(float(adv(z)))
        adv.ascend(z)
    assert values[-1] <= float(closed(z)) * (1 + FLOAT64_EXACT)
    assert values[-1] == pytest.approx(float(closed(z)), rel=ITERATIVE)
    assert values[0] < 0.5 * float(closed(z))  # it started far below


def test_adversarial_relu_heads_are_a_lower_estimate_between_the_known_limits():
    z = _features(30, 5)
    closed = float(RadReg(100, 2.0, 30, seed=4, bias_const=1.0)(z))
    adv = AdversarialRadReg(
        100, 2.0, 30, seed=4, feature_dim=5, head="mlp", hidden=8, bias_const=1.0
    )
    adv.ascend(z, steps=60)
    value = float(adv(z))
    # The path-norm ball of radius R holds every linear head of norm R/2 (two ReLU units), so the
    # ascent should find at least half the linear closed form; in expectation the class is at most
    # twice it (contraction), and a supremum found by ascent is a lower estimate of the class's.
    assert 0.5 * closed <= value <= 2.0 * closed
    path_norms = adv.v.abs().sum(dim=1)  # ||w_kj|| = 1
    assert bool((path_norms <= 2.0 + 1e-9).all())


def test_radreg_lowers_the_held_out_normalised_rirc_on_a_toy_run():
    # Centred inputs and tanh features: near-isotropic features leave RadReg room to act (ReLU
    # features with a large common mean start near the rank-one floor of the sandwich).
    gen = torch.Generator().manual_seed(0)
    x = 2 * torch.rand(120, 16, generator=gen) - 1
    u = 2 * torch.rand(40, 16, generator=gen) - 1  # the RadReg set
    held = 2 * torch.rand(60, 16, generator=gen) - 1  # held-out unlabeled inputs, never trained on
    arch = MLPArch(16, (12,), 8, "tanh", decoder_hidden=(6,))
    task = ContextEncoderTask((1, 4, 4), (1, 1, 2, 2))
    measured, ranks = {}, {}
    for lam in (0.0, 3.0):
        opts = RadRegOptions(lam=lam, unlabeled_x=u, n_draws=128, seed=0)
        res = pretrain_ce(arch, task, x, epochs=60, lr=3e-3, seed=0, batch_size=40, radreg=opts)
        z = normalize_features(features(res.encoder, held).to(torch.float64))
        measured[lam] = rirc_linear(z, 1.0, n_draws=4000, seed=99).value  # fresh signs
        ranks[lam] = effective_rank(z)
    assert measured[3.0] < 0.95 * measured[0.0]
    assert ranks[3.0] < ranks[0.0]  # by lowering the effective rank (bound-spec section 9)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="normalize"):
        RadReg(10, 1.0, 5, 0, normalize="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="radius"):
        RadReg(10, 0.0, 5, 0)
    reg = RadReg(10, 1.0, 5, 0)
    with pytest.raises(ValueError, match="fixed unlabeled"):
        reg(torch.ones(6, 3))
