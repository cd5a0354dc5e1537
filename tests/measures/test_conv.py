"""Conv operator norms against the explicit operator matrix of a small input; BatchNorm folding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.tolerances import FLOAT64_EXACT, FLOAT64_SOLVER
from tfbound.measures.conv import (
    conv_geometry,
    conv_module_norms,
    conv_operator_norm,
    conv_operator_norms,
    fold_batchnorm,
    reshaped_kernel_spectral_norm,
)
from tfbound.measures.norms import spectral_norm

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _conv(
    nd: int, c_in: int, c_out: int, k: int, seed: int, **kwargs: object
) -> nn.Conv1d | nn.Conv2d:
    torch.manual_seed(seed)
    cls = nn.Conv1d if nd == 1 else nn.Conv2d
    return cls(c_in, c_out, k, bias=False, **kwargs).double()  # type: ignore[arg-type]


def _operator_matrix(conv: nn.Module, c_in: int, size: tuple[int, ...]) -> torch.Tensor:
    """The layer as an explicit (out, in) matrix: apply it to every basis vector."""
    dim = c_in * int(torch.tensor(size).prod())
    basis = torch.eye(dim, dtype=torch.float64).reshape(dim, c_in, *size)
    with torch.no_grad():
        return conv(basis).reshape(dim, -1).T


def _truth(conv: nn.Module, c_in: int, size: tuple[int, ...]) -> tuple[float, float, float]:
    t = _operator_matrix(conv, c_in, size)
    return (
        float(torch.linalg.svdvals(t)[0]),
        float(torch.linalg.matrix_norm(t)),
        float(t.norm(dim=1).sum()),
    )


CASES = [
    # nd, c_in, c_out, k, n, kwargs
    (2, 2, 3, 3, 5, {"padding": 1, "padding_mode": "circular"}),
    (2, 3, 2, 3, 6, {"padding": 2, "dilation": 2, "padding_mode": "circular"}),
    (2, 2, 2, 4, 3, {"padding": "same", "padding_mode": "circular"}),  # taps wrap around
    (1, 2, 3, 5, 7, {"padding": 2, "padding_mode": "circular"}),
    (1, 4, 4, 3, 8, {"padding": 1, "groups": 2, "padding_mode": "circular"}),
]


@pytest.mark.parametrize(("nd", "c_in", "c_out", "k", "n", "kwargs"), CASES)
def test_circular_stride1_same_size_is_exact(
    nd: int, c_in: int, c_out: int, k: int, n: int, kwargs: dict
) -> None:
    conv = _conv(nd, c_in, c_out, k, seed=nd * 10 + k, **kwargs)
    size = (n,) * nd
    spec, fro, l21 = _truth(conv, c_in, size)
    out = conv_module_norms(conv, n)
    assert out.exact and out.spectral_norm.status == "certified"
    assert out.spectral_norm.method == "fft_circular_exact"
    assert out.spectral_norm.value == pytest.approx(spec, rel=FLOAT64_SOLVER)
    assert out.frobenius_norm.value == pytest.approx(fro, rel=FLOAT64_SOLVER)
    assert out.l21_norm.value == pytest.approx(l21, rel=FLOAT64_SOLVER)


def _sweep() -> list[tuple[int, int, int, int, int, int, int, str, int]]:
    gen = torch.Generator().manual_seed(2024)
    cases = []
    for i in range(40):
        nd = 1 + i % 2
        k = int(torch.randint(1, 5, (1,), generator=gen))
        n = int(torch.randint(max(2, k), 8, (1,), generator=gen))
        dil = int(torch.randint(1, 4, (1,), generator=gen))
        stride = int(torch.randint(1, 3, (1,), generator=gen))
        pad = int(torch.randint(0, dil * (k - 1) + 2, (1,), generator=gen))
        mode = "circular" if i % 4 >= 2 else "zeros"
        groups = 2 if i % 3 == 0 else 1
        if mode == "circular":
            pad = min(pad, n)
        if n + 2 * pad - dil * (k - 1) < 1:
            continue
        cases.append((nd, k, n, dil, stride, pad, groups, mode, i))
    return cases


@pytest.mark.parametrize(
    ("nd", "k", "n", "dil", "stride", "pad", "groups", "mode", "seed"), _sweep()
)
def test_bound_is_at_least_the_true_norm_and_rows_are_exact(
    nd: int, k: int, n: int, dil: int, stride: int, pad: int, groups: int, mode: str, seed: int
) -> None:
    c = 2 * groups
    conv = _conv(
        nd,
        c,
        c,
        k,
        seed,
        stride=stride,
        padding=pad,
        dilation=dil,
        groups=groups,
        padding_mode=mode,
    )
    spec, fro, l21 = _truth(conv, c, (n,) * nd)
    out = conv_module_norms(conv, n)
    assert out.spectral_norm.status == "certified"
    assert out.spectral_norm.value >= spec * (1 - 1e-12)
    if out.exact:
        assert out.spectral_norm.value == pytest.approx(spec, rel=FLOAT64_SOLVER)
    # Frobenius and (2,1) norms of the full operator are exact in every geometry
    assert out.frobenius_norm.value == pytest.approx(fro, rel=FLOAT64_SOLVER)
    assert out.l21_norm.value == pytest.approx(l21, rel=FLOAT64_SOLVER)
    if mode == "circular":
        return  # taps that wrap onto each other can exceed the simple values below
    # and below the spec's simple upper values (zero padding)
    p_out = out.geometry.n_output_positions
    kernel = conv.weight.detach()
    assert out.frobenius_norm.value <= (p_out**0.5) * float(kernel.norm()) * (1 + FLOAT64_EXACT)
    per_out = float(kernel.reshape(kernel.shape[0], -1).norm(dim=1).sum())
    assert out.l21_norm.value <= p_out * per_out * (1 + FLOAT64_EXACT)


def test_zero_padding_grid_is_large_enough() -> None:
    # Dilation 4: a grid of n + k - 1 aliases taps and can be far too low; ours may not be.
    conv = _conv(2, 2, 2, 3, seed=5, padding=4, dilation=4)
    n = 6
    spec, _, _ = _truth(conv, 2, (n, n))
    out = conv_module_norms(conv, n)
    assert out.grid == (n + 4 * 2, n + 4 * 2)
    assert out.spectral_norm.value >= spec
    assert not out.exact


def test_one_by_one_conv_is_the_channel_matrix() -> None:
    # A 1x1 convolution acts on every pixel with the same c_out x c_in matrix.
    conv = _conv(2, 3, 4, 1, seed=8)
    w = conv.weight.detach().reshape(4, 3)
    out = conv_module_norms(conv, 5)
    assert out.spectral_norm.value == pytest.approx(spectral_norm(w), rel=FLOAT64_SOLVER)
    assert reshaped_kernel_spectral_norm(conv.weight).value == pytest.approx(spectral_norm(w))


def test_reflect_and_replicate_are_proxies() -> None:
    for mode in ("reflect", "replicate"):
        conv = _conv(2, 2, 2, 3, seed=9, padding=1, padding_mode=mode)
        out = conv_module_norms(conv, 5)
        assert out.spectral_norm.status == "proxy"
        assert out.frobenius_norm.status == "proxy"
        assert not out.exact
    assert reshaped_kernel_spectral_norm(torch.ones(2, 2, 3, 3)).status == "proxy"


def test_function_and_geometry_arguments() -> None:
    w = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = conv_operator_norm(w, (5, 6), padding=1)
    b = conv_operator_norms(w, [5, 6], padding=(1, 1)).spectral_norm
    assert a == b
    g = conv_geometry((3, 2, 4), 7, padding="same", dilation=2)
    assert g.padding == ((3, 3),) and g.output_size == (7,)
    g = conv_geometry((3, 2, 4, 4), 8, padding="same")
    assert g.padding == ((1, 2), (1, 2))
    assert conv_geometry((1, 1, 3), 5, padding="valid", stride=2).output_size == (2,)
    with pytest.raises(ValueError, match="padding_mode"):
        conv_geometry((1, 1, 3), 5, padding_mode="mirror")
    with pytest.raises(ValueError, match="empty"):
        conv_geometry((1, 1, 5), 2)
    with pytest.raises(ValueError, match="conv weight"):
        conv_operator_norm(torch.ones(2, 2), 4)
    with pytest.raises(TypeError):
        conv_module_norms(nn.Linear(2, 2), 3)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_even_kernel_matches_torch() -> None:
    conv = _conv(2, 2, 2, 4, seed=12, padding="same")
    spec, fro, _ = _truth(conv, 2, (5, 5))
    out = conv_module_norms(conv, 5)
    assert out.spectral_norm.value >= spec
    assert out.frobenius_norm.value == pytest.approx(fro, rel=FLOAT64_SOLVER)


@pytest.mark.parametrize("affine", [True, False])
def test_fold_batchnorm_conv_matches_eval_forward(affine: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    bn = nn.BatchNorm2d(4, eps=1e-3, affine=affine).double()
    bn.train()
    with torch.no_grad():
        for _ in range(3):  # give the running statistics non-trivial values
            bn(conv(torch.randn(8, 3, 6, 6, dtype=torch.float64) * 2 + 1))
        if affine:
            bn.weight.uniform_(-2, 2)
            bn.bias.uniform_(-1, 1)
    bn.eval()
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = bn(conv(x))
    w, b = fold_batchnorm(
        conv.weight,
        conv.bias,
        bn.running_mean,
        bn.running_var,
        bn.weight if affine else None,
        bn.bias if affine else None,
        eps=bn.eps,
    )
    got = torch.nn.functional.conv2d(x, w, b, padding=1)
    torch.testing.assert_close(got, expected, rtol=FLOAT64_EXACT, atol=FLOAT64_EXACT)


def test_fold_batchnorm_linear_without_bias() -> None:
    torch.manual_seed(1)
    lin = nn.Linear(5, 3, bias=False).double()
    bn = nn.BatchNorm1d(3).double()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    x = torch.randn(7, 5, dtype=torch.float64)
    w, b = fold_batchnorm(
        lin.weight, None, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps
    )
    with torch.no_grad():
        torch.testing.assert_close(x @ w.T + b, bn(lin(x)), rtol=FLOAT64_EXACT, atol=FLOAT64_EXACT)
    with pytest.raises(ValueError, match="running_mean"):
        fold_batchnorm(lin.weight, None, torch.zeros(4), torch.ones(3), None, None)
    with pytest.raises(ValueError, match="running_var"):
        fold_batchnorm(lin.weight, None, torch.zeros(3), -torch.ones(3), None, None, eps=0.0)
