"""Norms of convolution layers as linear operators at a given input size, and BatchNorm folding.

A ``Conv1d``/``Conv2d``/``Conv3d`` with weight ``K`` of shape ``(c_out, c_in / groups, k_1, ...)``
maps ``R^{c_in x n_1 x ...}`` to ``R^{c_out x o_1 x ...}``. Its operator norm (spec section 4):

- **circular padding, stride 1, output size = input size**: a (shifted) multi-channel circular
  convolution on the ``n_1 x n_2`` grid. Its singular values are those of the ``c_out x c_in``
  symbols ``P(w) = sum_t K[:, :, t] exp(-2 pi i <w, t>)`` over the ``n_1 n_2`` frequencies, so
  ``||T||_2 = max_w sigma_max(P(w))`` **exactly** (Sedghi, Gupta, Long 2019). Taps that wrap
  around (``dil (k - 1) >= n``) are summed modulo ``n`` first.
- circular padding otherwise (stride > 1, or an output larger or smaller than the input): the
  output is a selection of rows of that circulant operator, so the same maximum times
  ``sqrt(max row multiplicity)`` is an **upper** bound (the multiplicity is 1 unless the output
  is longer than the input).
- **zero padding** (PyTorch's default), any stride: with left/right padding ``p_l, p_r``, the
  layer is ``R C_N E``: ``E`` embeds the input in an ``N``-grid, ``C_N`` is the circular
  convolution on that grid, ``R`` selects output rows, and nothing aliases once
  ``N >= n + max(p_l, p_r)`` and ``N >= o``. We take
  ``N = max(n + dil (k - 1), n + p_l, n + p_r, o)`` per axis (at least the spec's
  ``n + dil (k - 1)``); then ``||T|| <= max_w sigma_max(P_N(w))``,
  an **upper** bound, status ``certified``.
- reflect / replicate padding: the zero-padding value, status ``proxy`` (no bound is claimed).
- ``reshaped_kernel_spectral_norm``: ``sigma_max`` of ``K`` reshaped to ``(c_out, c_in k_1 ...)``,
  status ``proxy`` (not the operator norm).

Grouped convolutions are block-diagonal over groups: the norm is the maximum over groups.

The Frobenius and (2,1) norms of the full operator are exact and cheap: each row of the operator
is one output channel ``o`` at one output position, holding the taps of ``K[o]`` that land inside
the input (summed modulo ``n`` under circular padding). For zero padding
``||T||_F^2 = sum_t count(t) ||K[:, :, t]||_F^2`` with ``count(t)`` the number of output positions
where tap ``t`` lands inside the input, and ``||T^T||_{2,1} = sum_{o, position} ||row||_2``; both
are at most ``sqrt(P_out) ||K||_F`` and ``P_out sum_o ||K_o||_F`` (``P_out`` output positions)
unless circular taps wrap onto each other.

``fold_batchnorm`` turns ``BN(conv(x))`` (eval mode) into one affine layer ``(W', b')``:
``s = gamma / sqrt(running_var + eps)``, ``W' = s[:, None, ...] * W``, ``b' = s (b - mean) + beta``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tfbound.measures.norms import ArrayLike, NormValue, spectral_norm

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


@dataclass(frozen=True)
class ConvGeometry:
    """Per-axis geometry of a convolution at one input size (all tuples have one entry per axis)."""

    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]  # (left, right) per axis
    padding_mode: str
    groups: int
    output_size: tuple[int, ...]

    @property
    def n_output_positions(self) -> int:
        return math.prod(self.output_size)


@dataclass(frozen=True)
class ConvNorms:
    """Norms of the conv operator at ``geometry.input_size``.

    ``exact`` says whether ``spectral_norm`` is the exact operator norm (circular, stride 1, same
    size) or an upper bound; ``grid`` is the FFT grid used.
    """

    geometry: ConvGeometry
    spectral_norm: NormValue
    frobenius_norm: NormValue
    l21_norm: NormValue
    exact: bool
    grid: tuple[int, ...]


def _tuple(value: int | Sequence[int], n_axes: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (int(value),) * n_axes
    out = tuple(int(v) for v in value)
    if len(out) != n_axes:
        raise ValueError(f"{name} needs {n_axes} entries, got {out}")
    return out


def _as_kernel(weight: ArrayLike) -> torch.Tensor:
    k = torch.as_tensor(weight).detach().to(device="cpu", dtype=torch.float64)
    if k.ndim < 3:
        raise ValueError(
            f"a conv weight has shape (c_out, c_in/groups, k_1, ...), got {tuple(k.shape)}"
        )
    if not bool(torch.isfinite(k).all()):
        raise ValueError("conv weight contains non-finite values")
    return k


def conv_geometry(
    weight_shape: Sequence[int],
    input_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> ConvGeometry:
    """Resolve PyTorch's conv arguments (``padding`` may be ``'same'`` or ``'valid'``)."""
    n_axes = len(weight_shape) - 2
    if n_axes < 1:
        raise ValueError(f"weight shape {tuple(weight_shape)} is not a conv weight")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, not {padding_mode!r}")
    ks = tuple(int(k) for k in weight_shape[2:])
    n = _tuple(input_size, n_axes, "input_size")
    st = _tuple(stride, n_axes, "stride")
    dil = _tuple(dilation, n_axes, "dilation")
    if min(n) < 1 or min(st) < 1 or min(dil) < 1 or groups < 1:
        raise ValueError("input size, stride, dilation and groups must be >= 1")
    if isinstance(padding, str):
        if padding == "valid":
            pads = tuple((0, 0) for _ in range(n_axes))
        elif padding == "same":
            if any(s != 1 for s in st):
                raise ValueError("padding='same' needs stride 1 (as in PyTorch)")
            total = [d * (k - 1) for d, k in zip(dil, ks, strict=True)]
            pads = tuple((t // 2, t - t // 2) for t in total)
        else:
            raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', not {padding!r}")
    else:
        pads = tuple((p, p) for p in _tuple(padding, n_axes, "padding"))
    out = tuple(
        (ni + pl + pr - d * (k - 1) - 1) // s + 1
        for ni, (pl, pr), d, k, s in zip(n, pads, dil, ks, st, strict=True)
    )
    if min(out) < 1:
        raise ValueError(f"the output would be empty: input {n}, kernel {ks}, padding {pads}")
    return ConvGeometry(n, ks, st, dil, pads, padding_mode, int(groups), out)


def _grid(g: ConvGeometry) -> tuple[int, ...]:
    if g.padding_mode == "circular":
        return g.input_size
    return tuple(
        max(n + d * (k - 1), n + pl, n + pr, o_stride1)
        for n, d, k, (pl, pr), o_stride1 in zip(
            g.input_size, g.dilation, g.kernel_size, g.padding, _stride1_output(g), strict=True
        )
    )


def _stride1_output(g: ConvGeometry) -> tuple[int, ...]:
    return tuple(
        n + pl + pr - d * (k - 1)
        for n, (pl, pr), d, k in zip(
            g.input_size, g.padding, g.dilation, g.kernel_size, strict=True
        )
    )


def _wrapped_kernel(k: torch.Tensor, g: ConvGeometry, grid: tuple[int, ...]) -> torch.Tensor:
    """The kernel's taps placed on the ``grid`` at offsets ``dil * t - p_left`` modulo the grid."""
    out = torch.zeros(*k.shape[:2], *grid, dtype=k.dtype)
    for taps in itertools.product(*(range(ki) for ki in g.kernel_size)):
        pos = tuple(
            (d * t - pl) % n
            for d, t, (pl, _), n in zip(g.dilation, taps, g.padding, grid, strict=True)
        )
        dst: tuple[slice | int, ...] = (slice(None), slice(None), *pos)
        src: tuple[slice | int, ...] = (slice(None), slice(None), *taps)
        out[dst] += k[src]
    return out


def _fft_max_sigma(k: torch.Tensor, g: ConvGeometry, grid: tuple[int, ...]) -> float:
    """``max_w sigma_max(P(w))`` over the grid's frequencies, the maximum over groups."""
    n_axes = len(grid)
    c_out = k.shape[0]
    per_group = c_out // g.groups
    best = 0.0
    for gi in range(g.groups):
        kg = _wrapped_kernel(k[gi * per_group : (gi + 1) * per_group], g, grid)
        sym = torch.fft.fftn(kg, dim=tuple(range(2, 2 + n_axes)))
        sym = sym.permute(*range(2, 2 + n_axes), 0, 1).reshape(-1, kg.shape[0], kg.shape[1])
        best = max(best, float(torch.linalg.matrix_norm(sym, ord=2).max()))
    return best


def _tap_masks(g: ConvGeometry) -> list[torch.Tensor]:
    """Per axis, a ``(o, k)`` 0/1 matrix: tap ``t`` lands inside the input at output ``i``."""
    masks = []
    for n, k, s, d, (pl, _), o in zip(
        g.input_size, g.kernel_size, g.stride, g.dilation, g.padding, g.output_size, strict=True
    ):
        pos = torch.arange(o).unsqueeze(1) * s + torch.arange(k).unsqueeze(0) * d - pl
        masks.append(((pos >= 0) & (pos < n)).to(torch.float64))
    return masks


def _row_sq_norms(k: torch.Tensor, g: ConvGeometry) -> torch.Tensor:
    """Squared l2 norms of every operator row, shape ``(c_out, o_1, ..., o_D)``."""
    if g.padding_mode == "circular":
        # Every row holds the whole kernel, taps that coincide modulo n summed.
        grid = g.input_size
        wrapped = _wrapped_kernel(k, g, grid).reshape(k.shape[0], -1)
        per_channel = (wrapped * wrapped).sum(dim=1)
        return per_channel.reshape(-1, *([1] * len(grid))).expand(-1, *g.output_size)
    tap_sq = (k * k).sum(dim=1)  # (c_out, k_1, ..., k_D)
    out = tap_sq
    for axis, mask in enumerate(_tap_masks(g)):
        # contract the tap axis (position 1 + axis after earlier contractions) with mask (o, k)
        out = torch.tensordot(out, mask, dims=([1 + axis], [1]))
        out = out.movedim(-1, 1 + axis)
    return out


def conv_operator_norms(
    weight: ArrayLike,
    input_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> ConvNorms:
    """Spectral, Frobenius and (2,1) norms of the conv operator at ``input_size`` (module doc)."""
    k = _as_kernel(weight)
    g = conv_geometry(
        tuple(k.shape),
        input_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
    )
    if k.shape[0] % g.groups:
        raise ValueError(f"c_out {k.shape[0]} is not divisible by groups {g.groups}")
    grid = _grid(g)
    sigma = _fft_max_sigma(k, g, grid)
    exact = False
    if g.padding_mode == "circular":
        multiplicity = math.prod(
            -(-o1 // n) for o1, n in zip(_stride1_output(g), g.input_size, strict=True)
        )
        exact = (
            multiplicity == 1
            and all(s == 1 for s in g.stride)
            and (_stride1_output(g) == g.input_size)
        )
        sigma *= math.sqrt(multiplicity)
        method = "fft_circular_exact" if exact else "fft_circular_upper"
        status = "certified"
    elif g.padding_mode == "zeros":
        method, status = f"fft_zero_padding_upper(grid={grid})", "certified"
    else:
        method, status = f"fft_zero_padding_grid(grid={grid}; {g.padding_mode} padding)", "proxy"
    rows = _row_sq_norms(k, g)
    row_status = "certified" if g.padding_mode in ("zeros", "circular") else "proxy"
    row_method = "operator_rows" if row_status == "certified" else "operator_rows_as_zero_padding"
    return ConvNorms(
        geometry=g,
        spectral_norm=NormValue(sigma, status, method),
        frobenius_norm=NormValue(math.sqrt(float(rows.sum())), row_status, row_method),
        l21_norm=NormValue(float(rows.sqrt().sum()), row_status, row_method),
        exact=exact,
        grid=grid,
    )


def conv_operator_norm(
    weight: ArrayLike,
    input_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> NormValue:
    """The conv operator's spectral norm at ``input_size``: exact, upper bound or proxy."""
    return conv_operator_norms(
        weight,
        input_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
    ).spectral_norm


def conv_module_norms(conv: nn.Module, input_size: int | Sequence[int]) -> ConvNorms:
    """``conv_operator_norms`` with the geometry of an ``nn.Conv1d/2d/3d`` (its bias is ignored)."""
    if not isinstance(conv, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        raise TypeError(f"expected nn.Conv1d/2d/3d, got {type(conv).__name__}")
    return conv_operator_norms(
        conv.weight,
        input_size,
        stride=tuple(conv.stride),
        padding=conv.padding if isinstance(conv.padding, str) else tuple(conv.padding),
        dilation=tuple(conv.dilation),
        groups=conv.groups,
        padding_mode=conv.padding_mode,
    )


def reshaped_kernel_spectral_norm(weight: ArrayLike) -> NormValue:
    """``sigma_max(K.reshape(c_out, -1))``, status ``proxy``: not the operator norm."""
    k = _as_kernel(weight)
    return NormValue(spectral_norm(k.reshape(k.shape[0], -1)), "proxy", "reshaped_kernel")


def fold_batchnorm(
    weight: ArrayLike,
    bias: ArrayLike | None,
    running_mean: ArrayLike,
    running_var: ArrayLike,
    bn_weight: ArrayLike | None,
    bn_bias: ArrayLike | None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the conv/linear before it: float64 ``(W', b')``.

    ``s = gamma / sqrt(var + eps)``, ``W' = s * W`` (scaling output channel ``o`` of ``W``),
    ``b' = s * (b - mean) + beta``; ``gamma = 1`` and ``beta = 0`` when the BN is not affine.
    """

    def f64(x: ArrayLike) -> torch.Tensor:
        return torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float64)

    w = f64(weight)
    c = w.shape[0]
    mean, var = f64(running_mean), f64(running_var)
    gamma = torch.ones(c, dtype=torch.float64) if bn_weight is None else f64(bn_weight)
    beta = torch.zeros(c, dtype=torch.float64) if bn_bias is None else f64(bn_bias)
    b = torch.zeros(c, dtype=torch.float64) if bias is None else f64(bias)
    for name, t in (
        ("running_mean", mean),
        ("running_var", var),
        ("gamma", gamma),
        ("beta", beta),
        ("bias", b),
    ):
        if tuple(t.shape) != (c,):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected ({c},)")
    if not eps >= 0 or bool((var + eps <= 0).any()):
        raise ValueError("running_var + eps must be > 0")
    scale = gamma / torch.sqrt(var + eps)
    w_folded = w * scale.reshape(c, *([1] * (w.ndim - 1)))
    return w_folded, scale * (b - mean) + beta
