"""Network complexity terms of ``tfbound estimate`` (bound-spec sections 4, 5, 6.1 and 8).

What the weights say about capacity, each number a ``Term`` with its status:

- MLP encoders (with a linear or MLP head), the whole scalar network ``head o encoder`` written
  bias-free with the constant ``c`` carried through the layers (``x' = (x, c)``; hidden layer
  ``A_j = [[W_j, b_j / c], [0, 1]]``, output layer ``A_L = [W_L, b_L / c]``):

  - ``grs_complexity`` (certified, ``complexity``): Golowich-Rakhlin-Shamir 2018 Thm 1,
    ``(sqrt(2 log(2) L) + 1) prod_j ||A_j||_F sqrt(sum ||x'_i||^2) / n``, an upper bound on the
    empirical Rademacher complexity of every such network with the trained model's product of
    Frobenius norms (a deterministic inequality; a test-error bound needs the grid of spec 5);
  - ``spectral_complexity`` (proxy): Bartlett-Foster-Telgarsky's ``R_A``, and
    ``spectral_capacity_ratio = R_A sqrt(sum ||x'_i||^2) / (n q)`` (proxy), ``q`` the margin
    quantile of the bound's configuration;
  - ``feature_norm`` (certified, quantity ``feature_norm``): the data-free bound
    ``b_l = rho_l (||W_l||_2 b_{l-1} + ||c_l||_2)`` from the a-priori input box (the pretext box).

- MLP heads on any encoder: ``grs_complexity_head`` over the features; for a ReLU head the
  certified RIRC is the report's ``rirc`` (path norm, spec section 2), not repeated here; for
  other activations ``rirc_mlp_head`` (spec section 2, ``a >= ||v||_1``, ``b >= max ||w'_j||``).
- The Context Encoder MLP of ``ce_mlp``: the certified pretext bound of spec 6.1 over encoder +
  decoder as one bias-free network (``pretext_risk_bound``, quantity ``pretext_population_risk``;
  never summed into the downstream bound).
- A fine-tuned encoder (``encoder.reference``: the pre-trained weights it was fine-tuned from on
  ``S``): the frozen-encoder certificates no longer hold and are shown as ``diagnostic``; for MLP
  encoders with ReLU (or leaky ReLU / identity) the certified route of spec 5
  (``finetuned_test_error_bound``), with ``spectral_complexity_reference`` (proxy) and the
  per-layer distances ``encoder_distance_to_reference``; for transformer encoders no certified
  route exists (a warning says so).
- ViT/BERT encoders: ``feature_norm`` after the final LayerNorm (certified), the per-head norms
  summary (``attention_qk_spectral_max``, ``attention_vo_spectral_max``, diagnostic) and two
  transformer capacity numbers (``transformer_capacity_egkz``, ``transformer_capacity_tt``, proxy).

Every norm entering a certified term is exact (``tfbound.measures.norms``) and multiplied by
``1 + 1e-10`` for rounding. Nothing here is ever a component of ``certified_test_error_bound``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from tfbound.bounds.margin import MARGIN_SOURCE, ROUNDING, margin_bound
from tfbound.measures.norms import l21_norm, spectral_norm
from tfbound.terms import Status, Term

GRS_SOURCE = (
    "Golowich, Rakhlin, Shamir (COLT 2018), Thm 1: Rhat <= (sqrt(2 log(2) L) + 1) "
    "prod_j ||W_j||_F sqrt(sum ||x_i||^2) / n for depth-L bias-free networks with elementwise "
    "1-Lipschitz positively homogeneous activations; bound-spec section 4"
)
BFT_SOURCE = (
    "Bartlett, Foster, Telgarsky (NeurIPS 2017, arXiv 1706.08498), spectral complexity R_A: a "
    "covering-number result whose appendix constants are not carried here (bound-spec section 4: "
    "proxy)"
)
FEATURE_NORM_SOURCE = (
    "bound-spec section 4: b_l = rho_l (||W_l||_2 b_{l-1} + ||c_l||_2), b_0 = B_x; "
    "||LN(x)|| <= min(sqrt(d) ||g||_inf, sqrt(d-1) ||g||_2) + ||beta||_2; a mean of vectors "
    "keeps their common norm bound"
)
PRETEXT_SOURCE = (
    "bound-spec 6.1: Maurer (2016) vector contraction (factor sqrt(2)) of the clipped square "
    "loss (2 (hi-lo)/sqrt(D)-Lipschitz), vector-output Golowich-Rakhlin-Shamir Thm 1 with one "
    "grid over Q, McDiarmid on a loss in [0, (hi-lo)^2]"
)
FINETUNED_SOURCE = (
    "bound-spec section 5: " + MARGIN_SOURCE + "; the class is head o encoder as one bias-free "
    "network (Golowich, Rakhlin, Shamir 2018, Thm 1), grid over prod_j ||A_j||_F / gamma"
)
EGKZ_SOURCE = (
    "after Edelman, Goel, Kakade, Zhang (ICML 2022, arXiv 2110.10090): per-block Lipschitz "
    "factors times a sum of norm ratios, with a log T dependence on the sequence length; their "
    "constants, log factors and exact norms are not reproduced or verified here (proxy)"
)
TT_SOURCE = (
    "after Trauger, Tewari (AISTATS 2024, arXiv 2310.13088): norm-based and independent of the "
    "sequence length; their covering lemmas' constants and exact norms are not reproduced or "
    "verified here (proxy)"
)
NO_TRANSFORMER_ROUTE = (
    "the encoder was fine-tuned (encoder.reference is set) and is a transformer: no certified "
    "route exists for a fine-tuned transformer encoder (bound-spec section 5); per-layer "
    "distances to the pre-trained weights and the transformer capacity terms are proxies or "
    "diagnostics only"
)
FROZEN_ONLY = (
    "NOT A CERTIFICATE HERE: the encoder was fine-tuned on the labeled sample "
    "(encoder.reference), so the frozen-encoder route (bound-spec sections 2 and 10) does not "
    "apply; shown for comparison only. "
)

#: Lipschitz constant of exact (erf) GELU (bound-spec section 2).
GELU_LIPSCHITZ = 1.1290
#: The pretext grid ``Q_k = PRETEXT_Q0 * 2^(k-1)``, fixed in advance (bound-spec 6.1).
PRETEXT_Q0 = 1.0
#: Held-out terms that stay valid when the encoder was fine-tuned on S (they use the test split).
_STILL_VALID = frozenset({"test_set_bound"})


# ---------------------------------------------------------------------------------------------
# Plain MLP chains and their norms (pure functions)


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: ``lipschitz``, ``norm_ratio = sup |s(t)| / |t|`` and whether it
    is positively homogeneous with ``s(c) = c`` for ``c > 0`` (so a constant can be carried)."""

    name: str
    lipschitz: float
    norm_ratio: float
    homogeneous: bool


IDENTITY = Activation("identity", 1.0, 1.0, True)


def activation_of(module: nn.Module) -> Activation | None:
    """The activation a module applies, or None when it is not a known elementwise one."""
    if isinstance(module, nn.ReLU):
        return Activation("relu", 1.0, 1.0, True)
    if isinstance(module, nn.LeakyReLU):
        slope = abs(float(module.negative_slope))
        return Activation(
            f"leaky_relu({module.negative_slope:g})", max(1.0, slope), max(1.0, slope), slope <= 1
        )
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            return None
        return Activation("gelu", GELU_LIPSCHITZ, 1.0, False)  # |x Phi(x)| <= |x|
    if isinstance(module, nn.Tanh):
        return Activation("tanh", 1.0, 1.0, False)
    if isinstance(module, nn.Identity):
        return IDENTITY
    return None


@dataclass(frozen=True)
class Affine:
    """One affine layer of a plain MLP and the activation after it (identity for the output)."""

    name: str
    weight: torch.Tensor  # float64 (out, in)
    bias: torch.Tensor | None  # float64 (out,)
    activation: Activation


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float64)


def _sequential_chain(seq: nn.Sequential, prefix: str) -> list[Affine] | None:
    layers: list[Affine] = []
    children = list(seq.named_children())
    i = 0
    while i < len(children):
        name, child = children[i]
        if not isinstance(child, nn.Linear):
            return None
        act = IDENTITY
        if i + 1 < len(children) and not isinstance(children[i + 1][1], nn.Linear):
            found = activation_of(children[i + 1][1])
            if found is None:
                return None  # dropout, BatchNorm, an unknown module: not a plain MLP
            act = found
            i += 1
        bias = None if child.bias is None else _f64(child.bias)
        layers.append(Affine(f"{prefix}{name}", _f64(child.weight), bias, act))
        i += 1
    return layers or None


def mlp_chain(module: nn.Module) -> list[Affine] | None:
    """The affine layers of a plain MLP, or None when ``module`` is not one.

    Plain: tfbound's ``MLP``/``MLPEncoder`` (``net``), ``LinearHead``, ``MLPHead``, or an
    ``nn.Sequential`` alternating ``nn.Linear`` and known elementwise activations.
    """
    from tfbound.models.heads import LinearHead, MLPHead

    if isinstance(module, LinearHead):
        lin = module.linear
        return [Affine("linear", _f64(lin.weight), _f64(lin.bias), IDENTITY)]
    if isinstance(module, MLPHead):
        act = activation_of(module.act)
        if act is None:
            return None
        return [
            Affine("fc1", _f64(module.fc1.weight), _f64(module.fc1.bias), act),
            Affine("fc2", _f64(module.fc2.weight), _f64(module.fc2.bias), IDENTITY),
        ]
    if isinstance(module, nn.Sequential):
        return _sequential_chain(module, "")
    net = getattr(module, "net", None)
    if isinstance(net, nn.Sequential) and set(dict(module.named_children())) == {"net"}:
        return _sequential_chain(net, "net.")
    return None


def augmented_matrices(layers: Sequence[Affine], bias_const: float) -> list[torch.Tensor]:
    """The bias-free network computing the same function on ``x' = (x, c)``.

    Hidden layers ``[[W, b / c], [0, ..., 0, 1]]`` (the last unit carries ``c``: every activation
    must map ``c`` to itself), the output layer ``[W, b / c]``.
    """
    if bias_const <= 0:
        raise ValueError("the carried constant must be positive")
    mats = []
    for j, layer in enumerate(layers):
        w = layer.weight
        b = layer.bias if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        a = torch.cat([w, (b / bias_const)[:, None]], dim=1)
        if j < len(layers) - 1:
            carry = torch.zeros(1, a.shape[1], dtype=a.dtype)
            carry[0, -1] = 1.0
            a = torch.cat([a, carry], dim=0)
        mats.append(a)
    return mats


def grs_factor(depth: int) -> float:
    """``sqrt(2 log(2) L) + 1``."""
    return math.sqrt(2.0 * math.log(2.0) * depth) + 1.0


def frobenius_product(mats: Sequence[torch.Tensor]) -> float:
    """``prod_j ||A_j||_F``, each factor inflated by ``1 + 1e-10`` for rounding."""
    return math.prod(float(torch.linalg.matrix_norm(a, ord="fro")) * ROUNDING for a in mats)


def grs_rademacher(mats: Sequence[torch.Tensor], sum_sq_inputs: float, n: int) -> float:
    """Golowich-Rakhlin-Shamir Thm 1 at ``Q = prod ||A_j||_F``:
    ``(sqrt(2 log(2) L) + 1) Q sqrt(sum ||x'_i||^2) / n``."""
    return grs_factor(len(mats)) * frobenius_product(mats) * math.sqrt(sum_sq_inputs) / n


def spectral_complexity(
    mats: Sequence[torch.Tensor],
    lipschitz: Sequence[float],
    references: Sequence[torch.Tensor | None] | None = None,
) -> tuple[float, list[float], list[float]]:
    """Bartlett-Foster-Telgarsky ``R_A = (prod rho_i ||A_i||_2)
    (sum_i (||(A_i - M_i)^T||_{2,1} / ||A_i||_2)^{2/3})^{3/2}``; also the spectral norms and the
    (2,1) distances. ``lipschitz[i]`` is the constant of the activation after layer ``i``."""
    refs = list(references) if references is not None else [None] * len(mats)
    spectral = [spectral_norm(a) for a in mats]
    l21 = [l21_norm(a, m) for a, m in zip(mats, refs, strict=True)]
    if any(s == 0 for s in spectral):
        return 0.0, spectral, l21
    prod = math.prod(r * s for r, s in zip(lipschitz, spectral, strict=True))
    total = sum((d / s) ** (2.0 / 3.0) for d, s in zip(l21, spectral, strict=True))
    return prod * total**1.5, spectral, l21


def feature_norm_bound(layers: Sequence[Affine], input_bound: float) -> list[float]:
    """``b_l = rho_l (||W_l||_2 b_{l-1} + ||c_l||_2)``, ``b_0 = input_bound``; every ``b_l``.

    ``rho_l = sup |s(t)| / |t|`` of the activation after layer ``l`` (1 for ReLU, GELU, tanh).
    """
    bounds = [input_bound]
    for layer in layers:
        bias = 0.0 if layer.bias is None else float(layer.bias.norm())
        s = spectral_norm(layer.weight) * ROUNDING
        bounds.append(layer.activation.norm_ratio * (s * bounds[-1] + bias * ROUNDING))
    return bounds[1:]


def layernorm_output_bound(gain: torch.Tensor, shift: torch.Tensor | None) -> float:
    """``min(sqrt(d) ||g||_inf, sqrt(d - 1) ||g||_2) + ||beta||_2``, times ``1 + 1e-10``: a bound
    on the norm of any LayerNorm output (the normalised vector ``u`` has ``||u||^2 <= d`` and
    ``sum u = 0``, so ``u_i^2 <= d - 1``)."""
    g = _f64(gain).reshape(-1)
    d = g.numel()
    scale = min(math.sqrt(d) * float(g.abs().max()), math.sqrt(max(d - 1, 0)) * float(g.norm()))
    beta = 0.0 if shift is None else float(_f64(shift).norm())
    return (scale + beta) * ROUNDING


def sum_sq_with_constant(x: np.ndarray, bias_const: float) -> float:
    """``sum_i ||x'_i||^2 = sum_i ||x_i||^2 + n c^2`` in float64 (rows flattened)."""
    flat = np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
    return float(np.einsum("ij,ij->", flat, flat)) + flat.shape[0] * bias_const**2


# ---------------------------------------------------------------------------------------------
# The report's terms


@dataclass
class CapacityInputs:
    """What the capacity terms read: the config, the built modules and the training pass."""

    cfg: Any  # tfbound.config.Config
    encoder: nn.Module
    head: nn.Module
    train_x: np.ndarray
    train_y: np.ndarray
    scores: np.ndarray  # f_hat on the training inputs
    features: np.ndarray  # float64 (n, d)
    u_sigma: float  # certified upper value of E||sum sigma z'|| (spec section 3)
    deltas: Mapping[str, float]
    decoder: nn.Module | None = None
    #: (training mean of the clipped pretext loss, N, D) when the pipeline computed it
    pretext_train: tuple[float, int, int] | None = None
    load_inputs: Callable[[Any], np.ndarray] | None = None


@dataclass
class CapacityResult:
    terms: list[Term] = field(default_factory=list)
    bounds: list[Term] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    finetuned: bool = False

    def apply(self, terms: Sequence[Term], bounds: Sequence[Term]) -> tuple[list[Term], list[Term]]:
        """The report's terms and bounds with these added. For a fine-tuned encoder, every
        frozen-encoder certificate becomes a ``diagnostic`` term (the held-out test-set bound
        stays certified): none of them holds when the encoder saw the labeled sample."""
        if not self.finetuned:
            return [*terms, *self.terms], [*bounds, *self.bounds]
        out = [_demote(t) for t in terms] + [_demote(t) for t in bounds]
        return out + self.terms, list(self.bounds)


def _demote(t: Term) -> Term:
    if t.status is not Status.CERTIFIED or t.key in _STILL_VALID:
        return t
    return replace(t, status=Status.DIAGNOSTIC, formula=FROZEN_ONLY + t.formula, components=())


def _margin_quantile(margins: np.ndarray, q: float) -> float:
    return float(np.quantile(margins, q))


def capacity_terms(inp: CapacityInputs) -> CapacityResult:
    """Every capacity term that applies to the configured encoder, head and decoder."""
    from tfbound.models.bert import BertEncoder
    from tfbound.models.vit import ViTEncoder

    res = CapacityResult(finetuned=inp.cfg.encoder.reference is not None)
    enc_chain = mlp_chain(inp.encoder)
    head_chain = mlp_chain(inp.head)
    if head_chain is not None and len(head_chain) > 1:
        res.terms += _head_terms(inp, head_chain)
    if enc_chain is not None and head_chain is not None:
        res.terms += _mlp_network_terms(inp, enc_chain, head_chain)
        if res.finetuned:
            _finetuned_mlp(inp, enc_chain, head_chain, res)
        pre = _pretext_certificate(inp, enc_chain, res.warnings)
        res.terms += pre
    elif isinstance(inp.encoder, ViTEncoder | BertEncoder):
        res.terms += _transformer_terms(inp, res.warnings)
        if res.finetuned:
            res.warnings.append(NO_TRANSFORMER_ROUTE)
            res.terms += _distance_terms(inp)
    else:
        res.warnings.append(
            "capacity terms left out: the encoder is neither a plain MLP (Linear and elementwise "
            "activations) nor tfbound's ViT or BERT encoder"
        )
        if res.finetuned:
            res.warnings.append(
                "the encoder was fine-tuned (encoder.reference) but no certified route is "
                "implemented for its architecture (bound-spec section 5)"
            )
    if res.finetuned:
        res.warnings.append(
            "frozen-encoder certificates (bound-spec sections 2 and 10) are shown as diagnostic: "
            "the encoder was fine-tuned on the labeled sample (encoder.reference)"
        )
    return res


def _head_terms(inp: CapacityInputs, chain: list[Affine]) -> list[Term]:
    """GRS over an MLP head alone (features in), and the norm-ball RIRC for non-ReLU heads."""
    c = inp.cfg.bound.bias_const
    n = inp.features.shape[0]
    s_z = sum_sq_with_constant(inp.features, c)
    out: list[Term] = []
    act = chain[0].activation
    if act.homogeneous:
        mats = augmented_matrices(chain, c)
        ref = "for a ReLU head the certified RIRC of the chosen ball is `rirc` (path norm, "
        ref += "bound-spec section 2): tighter, and the one inside certified_test_error_bound"
        out.append(
            Term(
                key="grs_complexity_head",
                value=grs_rademacher(mats, s_z, n),
                status=Status.CERTIFIED,
                quantity="complexity",
                formula="(sqrt(2 log(2) L) + 1) prod_j ||A_j||_F sqrt(sum ||z'_i||^2) / n over "
                "the head alone (bias-free, c carried): an upper bound on the empirical "
                "Rademacher complexity of every such head with the trained product of norms; "
                + ref,
                source=GRS_SOURCE,
                confidence=1.0,
                details={
                    "L": len(mats),
                    "frobenius_norms": [float(torch.linalg.matrix_norm(a)) for a in mats],
                    "sum_sq_features_with_constant": s_z,
                    "n": n,
                    "bias_const": c,
                },
            )
        )
    else:
        w, cj = chain[0].weight, chain[0].bias
        assert cj is not None and chain[1].bias is not None
        v = chain[1].weight.reshape(-1)
        a = float(v.abs().sum()) * ROUNDING
        b = float(torch.sqrt((w * w).sum(dim=1) + (cj / c) ** 2).max()) * ROUNDING
        b0 = abs(float(chain[1].bias.reshape(()))) * ROUNDING
        value = (2.0 * act.lipschitz * a * b * inp.u_sigma + b0 * math.sqrt(n)) / n
        out.append(
            Term(
                key="rirc_mlp_head",
                value=value,
                status=Status.CERTIFIED,
                quantity="complexity",
                formula="(2 L_s a b U_sigma + B_0 sqrt(n)) / n with a = ||v||_1, b = max_j "
                "||(w_j, c_j/c)||, B_0 = |b_0| of the trained head (the RIRC of the ball of "
                "those norms; a test-error bound needs the three-way grid of spec section 2, "
                "not implemented)",
                source="bound-spec section 2 (MLP head, L_s-Lipschitz activation with s(0) = 0; "
                "Ledoux-Talagrand contraction); U_sigma as in section 3",
                confidence=1.0 - inp.deltas["mc"] / inp.cfg.bound.encoder_candidates,
                details={
                    "L_s": act.lipschitz,
                    "activation": act.name,
                    "a": a,
                    "b": b,
                    "B_0": b0,
                    "U_sigma": inp.u_sigma,
                    "n": n,
                },
            )
        )
    return out


def _lipschitz_list(chain: Sequence[Affine]) -> list[float]:
    return [layer.activation.lipschitz for layer in chain]


def _mlp_network_terms(inp: CapacityInputs, enc: list[Affine], head: list[Affine]) -> list[Term]:
    cfg = inp.cfg
    c = cfg.bound.bias_const
    chain = [*enc, *head]
    n = inp.train_x.shape[0]
    s_x = sum_sq_with_constant(inp.train_x, c)
    mats = augmented_matrices(chain, c)
    out: list[Term] = []
    homogeneous = all(layer.activation.homogeneous for layer in chain)
    names = [f"encoder.{layer.name}" for layer in enc] + [f"head.{layer.name}" for layer in head]
    if homogeneous:
        out.append(
            Term(
                key="grs_complexity",
                value=grs_rademacher(mats, s_x, n),
                status=Status.CERTIFIED,
                quantity="complexity",
                formula="(sqrt(2 log(2) L) + 1) prod_j ||A_j||_F sqrt(sum ||x'_i||^2) / n for "
                "head o encoder as one bias-free network (c carried): an upper bound on the "
                "empirical Rademacher complexity of every such network with the trained product "
                "of Frobenius norms (no probability); a test-error bound needs the grid of "
                "bound-spec section 5",
                source=GRS_SOURCE,
                confidence=1.0,
                details={
                    "L": len(mats),
                    "layers": names,
                    "frobenius_norms": [float(torch.linalg.matrix_norm(a)) for a in mats],
                    "frobenius_product": frobenius_product(mats),
                    "sum_sq_inputs_with_constant": s_x,
                    "n": n,
                    "bias_const": c,
                },
            )
        )
    r_a, spectral, l21 = spectral_complexity(mats, _lipschitz_list(chain))
    q = _margin_quantile(inp.train_y * inp.scores, cfg.bound.margin_quantile)
    bft_details = {
        "layers": names,
        "spectral_norms": spectral,
        "l21_norms": l21,
        "lipschitz": _lipschitz_list(chain),
    }
    out.append(
        Term(
            key="spectral_complexity",
            value=r_a,
            status=Status.PROXY,
            quantity="complexity",
            formula="R_A = (prod_i rho_i ||A_i||_2) "
            "(sum_i (||A_i^T||_{2,1} / ||A_i||_2)^(2/3))^(3/2) over head o encoder (bias-free, "
            "c carried; M_i = 0)",
            source=BFT_SOURCE,
            details=bft_details,
        )
    )
    out.append(
        Term(
            key="spectral_capacity_ratio",
            value=r_a * math.sqrt(s_x) / (n * q) if q > 0 else None,
            status=Status.PROXY,
            quantity="complexity",
            formula=f"R_A sqrt(sum ||x'_i||^2) / (n q), q the {cfg.bound.margin_quantile:g} "
            "quantile of the training margins y_i f_hat(x_i) (the leading term of BFT's margin "
            "bound without its constants and log factors; null when q <= 0)",
            source=BFT_SOURCE,
            details={"q": q, "margin_quantile": cfg.bound.margin_quantile},
        )
    )
    fn = _mlp_feature_norm(inp, enc)
    if fn is not None:
        out.append(fn)
    return out


def _observed_max_norm(features: np.ndarray) -> float:
    return float(np.sqrt(np.max(np.einsum("ij,ij->i", features, features))))


def _mlp_feature_norm(inp: CapacityInputs, enc: list[Affine]) -> Term | None:
    cfg = inp.cfg
    if cfg.pretext is None:
        return None  # no a-priori input box in the config
    lo, hi = cfg.pretext.box
    x = np.asarray(inp.train_x, dtype=np.float64)
    dim = int(np.prod(x.shape[1:]))
    b_x = math.sqrt(dim) * max(abs(lo), abs(hi))
    bounds = feature_norm_bound(enc, b_x)
    inside = bool(np.all((x >= lo) & (x <= hi)))
    observed = _observed_max_norm(inp.features)
    formula = (
        "b_L with b_l = rho_l (||W_l||_2 b_{l-1} + ||c_l||_2), b_0 = B_x = sqrt(input dim) "
        f"max(|lo|, |hi|) for inputs in the pretext box [{lo:g}, {hi:g}] (a-priori, data-free; "
        "a deterministic bound given the box)"
    )
    status = Status.CERTIFIED
    if not inside:
        status = Status.DIAGNOSTIC
        formula = "NOT CERTIFIED (training inputs leave the box): " + formula
    return Term(
        key="feature_norm",
        value=bounds[-1],
        status=status,
        quantity="feature_norm",
        formula=formula,
        source=FEATURE_NORM_SOURCE,
        confidence=1.0 if inside else None,
        details={
            "B_x": b_x,
            "box": [lo, hi],
            "per_layer": bounds,
            "observed_max_train": observed,
            "train_inputs_in_box": inside,
        },
    )


def _finetuned_mlp(
    inp: CapacityInputs, enc: list[Affine], head: list[Affine], res: CapacityResult
) -> None:
    """Bound-spec section 5: GRS over head o encoder inside the margin bound of section 2."""
    cfg = inp.cfg
    b = cfg.bound
    c = b.bias_const
    chain = [*enc, *head]
    mats = augmented_matrices(chain, c)
    ref_module = _reference_module(cfg)
    ref_chain = mlp_chain(ref_module)
    if ref_chain is None or len(ref_chain) != len(enc):
        res.warnings.append("the reference weights do not form the same MLP as the encoder")
        return
    ref_mats = augmented_matrices([*ref_chain, *head], c)[: len(enc)]
    refs: list[torch.Tensor | None] = [*ref_mats, *([None] * len(head))]
    r_a, spectral, l21 = spectral_complexity(mats, _lipschitz_list(chain), refs)
    res.terms.append(
        Term(
            key="spectral_complexity_reference",
            value=r_a,
            status=Status.PROXY,
            quantity="complexity",
            formula="R_A with M_i = the pre-trained encoder weights (augmented), M = 0 for the "
            "head: (prod_i rho_i ||A_i||_2) "
            "(sum_i (||(A_i - M_i)^T||_{2,1} / ||A_i||_2)^(2/3))^(3/2)",
            source=BFT_SOURCE,
            details={"spectral_norms": spectral, "l21_distances": l21},
        )
    )
    res.terms += _distance_terms(inp, ref_module)
    if not all(layer.activation.homogeneous for layer in chain):
        res.warnings.append(
            "no certified fine-tuned route: an activation of head o encoder is not ReLU, leaky "
            "ReLU or identity (bound-spec section 5)"
        )
        return
    s_x = sum_sq_with_constant(inp.train_x, c)
    q_hat = frobenius_product(mats)
    u = grs_factor(len(mats)) * math.sqrt(s_x) * ROUNDING
    j = b.encoder_candidates
    delta_1 = inp.deltas["finetune"] / j
    mb = margin_bound(inp.scores, inp.train_y, q_hat, u, delta_1=delta_1, rho0=b.rho0)
    if mb.best is None:
        res.warnings.append("the network is zero: the fine-tuned certificate is the trivial 1")
        return
    best = mb.best
    common = {"k_star": best.k, "rho_k_star": best.rho, "gamma": mb.gamma, "Q_hat": q_hat}
    res.terms += [
        Term(
            key="finetuned_empirical_risk",
            value=best.empirical_risk,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="(1/n) sum_i phi_1(y_i f_k*(x_i)), f_k = (rho_k / Q_hat) f_hat, "
            "Q_hat = prod_j ||A_j||_F of head o encoder",
            source=FINETUNED_SOURCE,
            details=common,
        ),
        Term(
            key="finetuned_complexity",
            value=best.rirc,
            status=Status.CERTIFIED,
            quantity="complexity",
            formula="rho_k* (sqrt(2 log(2) L) + 1) sqrt(sum ||x'_i||^2) / n (GRS over the ball "
            "prod_j ||A_j||_F <= rho_k*, in 0-1 units after /gamma)",
            source=GRS_SOURCE,
            details={**common, "L": len(mats), "sum_sq_inputs_with_constant": s_x},
        ),
        Term(
            key="finetuned_complexity_term",
            value=best.rirc_term,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="2 * finetuned_complexity",
            source=FINETUNED_SOURCE,
        ),
        Term(
            key="confidence_finetuned",
            value=best.confidence,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="3 sqrt(log(2 k*(k*+1) / delta_1) / (2 n))",
            source=FINETUNED_SOURCE,
            details={"delta_1": delta_1, "delta_k": best.delta_k},
        ),
    ]
    res.bounds.append(
        Term(
            key="finetuned_test_error_bound",
            value=best.total,
            status=Status.CERTIFIED,
            quantity="downstream_test_error",
            formula="min_k [finetuned_empirical_risk + finetuned_complexity_term + "
            "confidence_finetuned] (at k*): the margin bound over head o encoder, encoder "
            "fine-tuned on S",
            source=FINETUNED_SOURCE,
            confidence=1.0 - inp.deltas["finetune"],
            components=(
                "finetuned_empirical_risk",
                "finetuned_complexity_term",
                "confidence_finetuned",
            ),
            details={
                **common,
                "delta_1": delta_1,
                "encoder_candidates": j,
                "rho0": b.rho0,
                "cells_scanned": mb.n_cells,
                "vacuous": best.total >= 1.0,
                "assumes": "the pre-trained weights, c, rho0 fixed independently of S; "
                "activations ReLU/leaky ReLU/identity; no dropout or BatchNorm",
            },
        )
    )
    if best.total >= 1.0:
        res.warnings.append("the fine-tuned certificate is vacuous (>= 1) for this network")


def _reference_module(cfg: Any) -> nn.Module:
    from dataclasses import replace as dc_replace

    from tfbound.models.build import build_module

    spec = dc_replace(cfg.encoder, weights=cfg.encoder.reference, reference=None)
    return build_module(spec)


def _distance_terms(inp: CapacityInputs, ref_module: nn.Module | None = None) -> list[Term]:
    """Per-layer ``||W - M||_F`` to the pre-trained weights (diagnostic)."""
    from tfbound.inspect import inspect_module

    ref = ref_module if ref_module is not None else _reference_module(inp.cfg)
    result = inspect_module(inp.encoder, reference=ref)
    per_layer = {
        r.name: r.distance_to_reference.value
        for r in result.layers
        if r.distance_to_reference is not None
    }
    total = math.sqrt(sum(v * v for v in per_layer.values()))
    return [
        Term(
            key="encoder_distance_to_reference",
            value=total,
            status=Status.DIAGNOSTIC,
            quantity="distance_to_reference",
            formula="sqrt(sum_layers ||W - M||_F^2), M the pre-trained weights of the same "
            "layer (per layer in details; `tfbound inspect --reference` gives gateable rows)",
            source="bound-spec sections 4 and 5 (distance to reference)",
            details={"per_layer": per_layer, "reference": str(inp.cfg.encoder.reference)},
        )
    ]


def _pretext_certificate(inp: CapacityInputs, enc: list[Affine], warnings: list[str]) -> list[Term]:
    """Bound-spec 6.1: the certified pretext bound of an MLP Context Encoder (encoder + decoder
    as one bias-free network, the constant carried through both)."""
    cfg = inp.cfg
    if cfg.pretext is None or inp.decoder is None or inp.pretext_train is None:
        return []
    if cfg.pretext.kind != "ce":
        return []
    dec = mlp_chain(inp.decoder)
    why = ""
    if dec is None:
        why = "the decoder is not a plain MLP"
    elif not all(layer.activation.homogeneous for layer in [*enc, *dec]):
        why = "an activation of encoder + decoder is not ReLU, leaky ReLU or identity"
    elif cfg.data.pretrain_train is None or inp.load_inputs is None:
        why = "no pre-training inputs"
    if why:
        warnings.append(f"no certified pretext bound (bound-spec 6.1): {why}")
        return []
    assert dec is not None and cfg.data.pretrain_train is not None and inp.load_inputs is not None
    from tfbound.pretext import ContextEncoderTask

    train_mean, n_pre, d_out = inp.pretext_train
    c = cfg.bound.bias_const
    lo, hi = cfg.pretext.box
    assert cfg.pretext.image_shape is not None and cfg.pretext.block is not None
    task = ContextEncoderTask(cfg.pretext.image_shape, cfg.pretext.block)
    x = inp.load_inputs(cfg.data.pretrain_train)
    s_x = 0.0
    for start in range(0, x.shape[0], 4096):
        batch = torch.from_numpy(np.asarray(x[start : start + 4096], dtype=np.float32))
        masked, _ = task.corrupt(batch)
        s_x += sum_sq_with_constant(masked.to(torch.float64).numpy(), c)
    n = int(x.shape[0])
    mats = augmented_matrices([*enc, *dec], c)
    depth = len(mats)
    q_hat = frobenius_product(mats[:-1]) * float(mats[-1].norm(dim=1).max()) * ROUNDING
    k = 1 if q_hat <= PRETEXT_Q0 else math.ceil(math.log2(q_hat / PRETEXT_Q0) - 1e-12) + 1
    q_k = PRETEXT_Q0 * 2.0 ** (k - 1)
    while q_k < q_hat:  # guard against rounding in log2
        k, q_k = k + 1, q_k * 2.0
    rhat_vec = grs_factor(depth) * d_out * q_k * math.sqrt(s_x) / n
    lip = 2.0 * (hi - lo) / math.sqrt(d_out)
    complexity = 2.0 * math.sqrt(2.0) * lip * rhat_vec
    delta_pre = inp.deltas["pre"]
    conf = 3.0 * (hi - lo) ** 2 * math.sqrt(math.log(2.0 * k * (k + 1) / delta_pre) / (2.0 * n))
    total = train_mean + complexity + conf
    details = {
        "k": k,
        "Q_hat": q_hat,
        "Q_k": q_k,
        "Q0": PRETEXT_Q0,
        "L": depth,
        "D": d_out,
        "N": n,
        "box": [lo, hi],
        "bias_const": c,
        "sum_sq_masked_inputs_with_constant": s_x,
        "delta_pre": delta_pre,
    }
    if n != n_pre:
        warnings.append(f"pretext inputs: {n} for the certificate, {n_pre} for the loss")
    terms = [
        Term(
            key="pretext_rademacher_vec",
            value=rhat_vec,
            status=Status.CERTIFIED,
            quantity="complexity",
            formula="(sqrt(2 log(2) L) + 1) D Q_k sqrt(sum ||x~'_i||^2) / N, Q = prod_{j<L} "
            "||A_j||_F max_c ||A_L[c, :]|| over encoder + decoder (bias-free, c carried), "
            "x~ the masked inputs, Q_k = Q0 2^(k-1) the first grid cell above Q_hat",
            source=GRS_SOURCE,
            details=details,
        ),
        Term(
            key="pretext_complexity_term",
            value=complexity,
            status=Status.CERTIFIED,
            quantity="pretext_population_risk",
            formula="2 sqrt(2) (2 (hi - lo) / sqrt(D)) pretext_rademacher_vec",
            source=PRETEXT_SOURCE,
        ),
        Term(
            key="confidence_pretext",
            value=conf,
            status=Status.CERTIFIED,
            quantity="pretext_population_risk",
            formula="3 (hi - lo)^2 sqrt(log(2 k (k+1) / delta_pre) / (2 N))",
            source=PRETEXT_SOURCE,
            details={"k": k, "delta_pre": delta_pre, "N": n},
        ),
        Term(
            key="pretext_risk_bound",
            value=total,
            status=Status.CERTIFIED,
            quantity="pretext_population_risk",
            formula="pretrain_empirical_risk + pretext_complexity_term + confidence_pretext: "
            "the population pretext loss L_U (clipped square loss, CE masks) of this encoder + "
            "decoder; a different quantity from the downstream test error, never summed into it",
            source=PRETEXT_SOURCE,
            confidence=1.0 - delta_pre,
            details={
                **details,
                "pretrain_empirical_risk": train_mean,
                "vacuous": total >= (hi - lo) ** 2,
                "assumes": "one bias-free network (constant carried through encoder and "
                "decoder), ReLU/leaky ReLU/identity activations, no dropout or BatchNorm, the "
                "CE mask fixed in advance, the N pre-training inputs i.i.d. from U",
            },
        ),
    ]
    if total >= (hi - lo) ** 2:
        warnings.append("the certified pretext bound is vacuous (>= (hi - lo)^2)")
    return terms


# ---------------------------------------------------------------------------------------------
# Transformers (proxies and the certified feature norm)


def _transformer_feature_norm(encoder: nn.Module) -> tuple[float, str]:
    from tfbound.models.bert import BertEncoder
    from tfbound.models.vit import ViTEncoder

    if isinstance(encoder, ViTEncoder):
        ln = encoder.norm
        pool = "CLS token" if encoder.pool == "cls" else "mean over tokens"
        return layernorm_output_bound(ln.weight, ln.bias), f"final LayerNorm `norm`, {pool}"
    assert isinstance(encoder, BertEncoder)
    last = encoder.encoder.layer[-1]
    assert isinstance(last, nn.Module)
    final = last.get_submodule("output.LayerNorm")
    assert isinstance(final, nn.LayerNorm)
    bound = layernorm_output_bound(final.weight, final.bias)
    if encoder.normalize:
        return min(1.0, bound), "l2-normalised features (norm 1)"
    return bound, f"last post-norm LayerNorm, {encoder.pooling} pooling"


def _transformer_terms(inp: CapacityInputs, warnings: list[str]) -> list[Term]:
    from tfbound.inspect import inspect_module

    result = inspect_module(inp.encoder)
    bound, where = _transformer_feature_norm(inp.encoder)
    observed = _observed_max_norm(inp.features)
    out = [
        Term(
            key="feature_norm",
            value=bound,
            status=Status.CERTIFIED,
            quantity="feature_norm",
            formula="min(sqrt(d) ||g||_inf, sqrt(d-1) ||g||_2) + ||beta||_2 of the LayerNorm "
            f"that ends the encoder ({where}); data-free, any input",
            source=FEATURE_NORM_SOURCE,
            confidence=1.0,
            details={"observed_max_train": observed},
        )
    ]
    if not result.heads:
        warnings.append("no per-head attention norms: the encoder's heads were not found")
        return out
    blocks: dict[str, list[Any]] = {}
    for h in result.heads:
        blocks.setdefault(h.block, []).append(h)
    linear = [r for r in result.layers if r.kind == "linear"]
    ln_bounds = [
        layernorm_output_bound(*_ln_tensors(inp.encoder, r.name))
        for r in result.layers
        if r.kind == "layernorm"
    ]
    b_tok = max(ln_bounds) if ln_bounds else float("nan")
    per_block = []
    kappa_prod, ratio21, ratio_f = 1.0, 0.0, 0.0
    for block, heads in blocks.items():
        parent = block.rsplit(".", 1)[0] if "." in block else ""
        mlp = [
            r
            for r in linear
            if r.name.startswith(parent + ".") and not r.name.startswith(block + ".")
        ]
        d_head = heads[0].head_dim
        s_qk = max(h.qk_spectral_norm.value for h in heads) / math.sqrt(d_head)
        s_vo = sum(h.vo_spectral_norm.value for h in heads)
        s_mlp = math.prod(r.spectral_norm.value for r in mlp if r.spectral_norm is not None)
        kappa = (1.0 + s_vo * (1.0 + 2.0 * s_qk * b_tok**2)) * (1.0 + GELU_LIPSCHITZ * s_mlp)
        r21 = sum(
            (h.qk_l21_norm.value / h.qk_spectral_norm.value) ** (2 / 3)
            + (h.vo_l21_norm.value / h.vo_spectral_norm.value) ** (2 / 3)
            for h in heads
            if h.qk_spectral_norm.value > 0 and h.vo_spectral_norm.value > 0
        )
        rf = sum(
            (h.qk_frobenius_norm.value / h.qk_spectral_norm.value) ** (2 / 3)
            + (h.vo_frobenius_norm.value / h.vo_spectral_norm.value) ** (2 / 3)
            for h in heads
            if h.qk_spectral_norm.value > 0 and h.vo_spectral_norm.value > 0
        )
        for r in mlp:
            s = r.spectral_norm.value if r.spectral_norm is not None else 0.0
            if s > 0 and r.l21_norm is not None and r.frobenius_norm is not None:
                r21 += (r.l21_norm.value / s) ** (2 / 3)
                rf += (r.frobenius_norm.value / s) ** (2 / 3)
        kappa_prod *= kappa
        ratio21 += r21
        ratio_f += rf
        per_block.append(
            {
                "block": block,
                "heads": len(heads),
                "qk_spectral_max": max(h.qk_spectral_norm.value for h in heads),
                "vo_spectral_max": max(h.vo_spectral_norm.value for h in heads),
                "vo_spectral_sum": s_vo,
                "logit_bias_max": max((h.logit_bias_norm or 0.0) for h in heads),
                "mlp_layers": [r.name for r in mlp],
                "mlp_spectral_product": s_mlp,
                "kappa": kappa,
            }
        )
    tokens = int(inp.train_x.shape[-1]) if inp.train_x.ndim == 3 else _vit_tokens(inp.encoder)
    qk_max = max(result.heads, key=lambda h: h.qk_spectral_norm.value)
    vo_max = max(result.heads, key=lambda h: h.vo_spectral_norm.value)
    block_details = {"blocks": per_block, "token_norm_bound": b_tok}
    egkz = b_tok * kappa_prod * ratio21**1.5 * math.sqrt(math.log(max(tokens, 2)))
    tt = b_tok * kappa_prod * ratio_f**1.5
    kappa_text = (
        "kappa_l = (1 + sum_h ||VO_h||_2 (1 + 2 B^2 max_h ||QK_h||_2 / sqrt(d_head))) "
        "(1 + 1.129 prod ||W_mlp||_2), B the largest LayerNorm output norm bound"
    )
    out += [
        Term(
            key="attention_qk_spectral_max",
            value=qk_max.qk_spectral_norm.value,
            status=Status.DIAGNOSTIC,
            quantity="norm",
            formula="max over blocks and heads of ||QK_h||_2, QK_h = Wq[H_h]^T Wk[H_h] "
            "(exact; per block in details; `tfbound inspect` lists every head)",
            source="bound-spec section 4 (attention)",
            details={"block": qk_max.block, "head": qk_max.head, **block_details},
        ),
        Term(
            key="attention_vo_spectral_max",
            value=vo_max.vo_spectral_norm.value,
            status=Status.DIAGNOSTIC,
            quantity="norm",
            formula="max over blocks and heads of ||VO_h||_2, VO_h = Wo[:, H_h] Wv[H_h] (exact)",
            source="bound-spec section 4 (attention)",
            details={"block": vo_max.block, "head": vo_max.head},
        ),
        Term(
            key="transformer_capacity_egkz",
            value=egkz,
            status=Status.PROXY,
            quantity="complexity",
            formula="B prod_l kappa_l "
            "(sum_l sum_{M in block l} (||M||_{2,1} / ||M||_2)^(2/3))^(3/2) "
            f"sqrt(log T), M over QK_h, VO_h and the MLP matrices, T = {tokens} tokens; "
            + kappa_text,
            source=EGKZ_SOURCE,
            details={"T": tokens, "kappa_product": kappa_prod, "ratio_sum": ratio21},
        ),
        Term(
            key="transformer_capacity_tt",
            value=tt,
            status=Status.PROXY,
            quantity="complexity",
            formula="B prod_l kappa_l (sum_l sum_{M in block l} (||M||_F / ||M||_2)^(2/3))^(3/2) "
            "(no dependence on the sequence length); " + kappa_text,
            source=TT_SOURCE,
            details={"kappa_product": kappa_prod, "ratio_sum": ratio_f},
        ),
    ]
    return out


def _ln_tensors(encoder: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    module = encoder.get_submodule(name)
    assert isinstance(module, nn.LayerNorm)
    return module.weight, module.bias


def _vit_tokens(encoder: nn.Module) -> int:
    n = int(getattr(encoder, "num_patches", 1))
    return n + (1 if getattr(encoder, "pool", "") == "cls" else 0)


__all__ = [
    "Activation",
    "Affine",
    "CapacityInputs",
    "CapacityResult",
    "activation_of",
    "augmented_matrices",
    "capacity_terms",
    "feature_norm_bound",
    "frobenius_product",
    "grs_factor",
    "grs_rademacher",
    "layernorm_output_bound",
    "mlp_chain",
    "spectral_complexity",
    "sum_sq_with_constant",
]
