"""Network complexity terms (bound-spec 4, 5, 6.1, 8) against closed forms, hand-built networks,
brute force and independent numpy recomputations; their statuses in real reports."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.numpy import load_file as load_np
from safetensors.torch import save_file
from torch import nn

from tests.conftest import write_pipeline
from tests.helpers import REPO_ROOT
from tests.tolerances import FLOAT64_EXACT, FLOAT64_SOLVER, ITERATIVE
from tfbound.adapters.chain import activation_of, mlp_chain
from tfbound.bounds.budget import DeltaBudget
from tfbound.config import load_config
from tfbound.io.datasets import LabeledArrays
from tfbound.measures.margin import ramp_loss
from tfbound.measures.network import (
    ROUNDING,
    Affine,
    augmented_matrices,
    feature_norm_bound,
    grs_factor,
    grs_rademacher,
    layernorm_output_bound,
    spectral_complexity,
    sum_sq_with_constant,
)
from tfbound.measures.rirc import RircSums, augment
from tfbound.models import MLP, LinearHead, MLPEncoder, MLPHead, ViTEncoder
from tfbound.pipeline import estimate
from tfbound.pipeline.capacity import CapacityOut, capacity_stage
from tfbound.pipeline.stages import Models, Splits
from tfbound.pipeline.stream import TrainStream

REPO = REPO_ROOT
RELU = activation_of(nn.ReLU())
assert RELU is not None


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _augmented_forward(mats: list[torch.Tensor], x: torch.Tensor, c: float, act: Any) -> Any:
    h = torch.cat([x, torch.full((x.shape[0], 1), c, dtype=x.dtype)], dim=1).T
    for j, a in enumerate(mats):
        h = a @ h
        if j < len(mats) - 1:
            h = act(h)
    return h.T


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
def test_augmented_network_computes_head_o_encoder(act: str) -> None:
    torch.manual_seed(0)
    enc, head = MLPEncoder(5, [7, 6], 4, act).double(), MLPHead(4, 3, act).double()
    enc_chain, head_chain = mlp_chain(enc), mlp_chain(head)
    assert enc_chain is not None and head_chain is not None
    assert [a.activation.name for a in enc_chain] == [
        act if act == "relu" else "leaky_relu(0.01)"
    ] * 3
    x = torch.randn(11, 5, dtype=torch.float64)
    mats = augmented_matrices([*enc_chain, *head_chain], 0.7)
    fn = nn.functional.relu if act == "relu" else nn.functional.leaky_relu
    got = _augmented_forward(mats, x, 0.7, fn)
    with torch.no_grad():
        torch.testing.assert_close(got[:, 0], head(enc(x)), rtol=0, atol=FLOAT64_EXACT)
    assert [tuple(a.shape) for a in mats] == [(8, 6), (7, 8), (5, 7), (4, 5), (1, 4)]


def test_mlp_chain_recognises_plain_mlps_only() -> None:
    lin = mlp_chain(LinearHead(3))
    assert lin is not None and len(lin) == 1 and lin[0].activation.name == "identity"
    gelu_head = mlp_chain(MLPHead(3, 2, "gelu"))
    assert gelu_head is not None and gelu_head[0].activation.lipschitz == pytest.approx(1.129)
    assert not gelu_head[0].activation.homogeneous
    decoder = mlp_chain(MLP(4, [3], 2, "tanh"))
    assert decoder is not None and [a.activation.name for a in decoder] == ["tanh", "identity"]
    seq = mlp_chain(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)))
    assert seq is not None and [a.name for a in seq] == ["0", "2"]
    for not_plain in (
        nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 1)),
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)),
        nn.Sequential(nn.Linear(3, 4), nn.GELU(approximate="tanh"), nn.Linear(4, 1)),
        ViTEncoder(4, 2, 1, 8, 1, 2),
    ):
        assert mlp_chain(not_plain) is None


def test_grs_closed_form_and_above_the_exact_rademacher_complexity() -> None:
    mats = [torch.tensor([[3.0, 4.0]], dtype=torch.float64)]
    x = np.eye(2)
    value = grs_rademacher(mats, float((x * x).sum()), 2)
    assert value == pytest.approx((math.sqrt(2 * math.log(2)) + 1) * 5 * math.sqrt(2) / 2)
    assert grs_factor(3) == pytest.approx(math.sqrt(6 * math.log(2)) + 1)
    # the linear class {x -> w.x : ||w|| <= 5}: Rhat = 5 E||sum sigma_i x_i|| / n, enumerated
    gen = np.random.default_rng(0)
    pts = gen.normal(size=(8, 3))
    exact = np.mean(
        [
            np.linalg.norm(np.asarray(s) @ pts)
            for s in itertools.product((-1.0, 1.0), repeat=pts.shape[0])
        ]
    )
    bound = grs_rademacher([torch.tensor([[5.0, 0.0, 0.0]])], float((pts**2).sum()), 8)
    assert 5 * exact / 8 <= bound


def test_spectral_complexity_closed_form() -> None:
    a1 = torch.diag(torch.tensor([2.0, 1.0], dtype=torch.float64))
    a2 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    r_a, spec, l21 = spectral_complexity([a1, a2], [1.0, 1.0])
    assert spec == pytest.approx([2.0, 1.0]) and l21 == pytest.approx([3.0, 1.0])
    assert r_a == pytest.approx(2.0 * ((3 / 2) ** (2 / 3) + 1.0) ** 1.5)
    lip, _, _ = spectral_complexity([a1, a2], [1.129, 1.0])
    assert lip == pytest.approx(1.129 * r_a)
    same, _, dist = spectral_complexity([a1, a2], [1.0, 1.0], [a1, a2])
    assert same == 0.0 and dist == [0.0, 0.0]
    # homogeneity: scaling one layer by t scales R_A by t
    scaled, _, _ = spectral_complexity([3.0 * a1, a2], [1.0, 1.0])
    assert scaled == pytest.approx(3.0 * r_a)


def test_feature_norm_bound_hand_built_and_above_every_output() -> None:
    w = Affine("a", 2.0 * torch.eye(2, dtype=torch.float64), torch.tensor([3.0, 4.0]), RELU)
    assert feature_norm_bound([w], 1.5) == pytest.approx(
        [(2 * 1.5 + 5) * ROUNDING], rel=FLOAT64_SOLVER
    )
    torch.manual_seed(1)
    enc = MLPEncoder(6, [9], 5).double()
    chain = mlp_chain(enc)
    assert chain is not None
    lo, hi = -0.5, 1.0
    b_x = math.sqrt(6) * max(abs(lo), abs(hi))
    bound = feature_norm_bound(chain, b_x)[-1]
    corners = torch.tensor(list(itertools.product((lo, hi), repeat=6)), dtype=torch.float64)
    inside = lo + (hi - lo) * torch.rand(2000, 6, dtype=torch.float64)
    with torch.no_grad():
        norms = enc(torch.cat([corners, inside])).norm(dim=1)
    assert float(norms.max()) <= bound


def test_layernorm_bound_holds_and_is_nearly_tight() -> None:
    d = 16
    gen = torch.Generator().manual_seed(0)
    ln = nn.LayerNorm(d, eps=1e-12).double()
    with torch.no_grad():
        ln.weight.copy_(torch.randn(d, generator=gen, dtype=torch.float64))
        ln.bias.copy_(torch.randn(d, generator=gen, dtype=torch.float64))
    x = 10 * torch.randn(5000, d, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert float(ln(x).norm(dim=1).max()) <= layernorm_output_bound(ln.weight, ln.bias)
    # one non-zero gain: sqrt(d - 1) is reached at x = e_1
    gain = torch.zeros(d, dtype=torch.float64)
    gain[0] = 2.0
    bound = layernorm_output_bound(gain, None)
    # the exact bound of real arithmetic, widened for float32 rounding by 1 + 8 d 2^-24
    assert bound == pytest.approx(2 * math.sqrt(d - 1) * (1 + 8 * d * 2.0**-24), rel=FLOAT64_SOLVER)
    e1 = torch.zeros(1, d, dtype=torch.float64)
    e1[0, 0] = 1.0
    out = nn.functional.layer_norm(e1, (d,), gain, None, eps=1e-12)
    assert float(out.norm()) == pytest.approx(bound / (1 + 8 * d * 2.0**-24), rel=FLOAT64_SOLVER)
    # in float32 the exact value is exceeded by rounding, and the widened bound still holds
    out32 = nn.functional.layer_norm(e1.float(), (d,), gain.float(), None, eps=1e-12)
    assert float(out32.double().norm()) <= bound


def _report(path: Path, **bound: Any) -> dict[str, Any]:
    cfg = load_config(path)
    return estimate(cfg.with_bound(**bound) if bound else cfg).to_dict()


def _augmented_np(w: np.ndarray, b: np.ndarray, c: float, carry: bool) -> np.ndarray:
    a = np.concatenate([w, b[:, None] / c], axis=1).astype(np.float64)
    if carry:
        row = np.zeros((1, a.shape[1]))
        row[0, -1] = 1.0
        a = np.concatenate([a, row])
    return a


def test_ce_mlp_report_terms_statuses_and_pretext_certificate() -> None:
    report = _report(REPO / "sample_models" / "ce_mlp", n_draws=500)
    terms, bounds = report["terms"], report["bounds"]
    # nothing of ours inside the section-2 certificate
    assert bounds["certified_test_error_bound"]["components"] == [
        "downstream_empirical_risk",
        "rirc_term",
        "confidence_finetune",
    ]
    expected = {
        "grs_complexity": ("certified", "complexity"),
        "spectral_complexity": ("proxy", "complexity"),
        "spectral_capacity_ratio": ("proxy", "complexity"),
        "feature_norm": ("certified", "feature_norm"),
        "pretext_rademacher_vec": ("certified", "complexity"),
        "pretext_complexity_term": ("certified", "pretext_population_risk"),
        "pretext_confidence": ("certified", "pretext_population_risk"),
        "pretext_risk_bound": ("certified", "pretext_population_risk"),
    }
    for key, (status, quantity) in expected.items():
        assert (terms[key]["status"], terms[key]["quantity"]) == (status, quantity), key
    assert not any(k in bounds for k in expected)
    assert report["deltas"]["pretext_certificate"] == pytest.approx(0.05)  # its own statement
    # the pretext certificate recomputed from the files in numpy
    folder = REPO / "sample_models" / "ce_mlp"
    enc, dec = (
        load_np(str(folder / "encoder.safetensors")),
        load_np(str(folder / "decoder.safetensors")),
    )
    data = np.load(REPO / "sample_models" / "data" / "digits_splits.npz")
    x = data["pretrain_train_x"].astype(np.float64).reshape(-1, 1, 8, 8).copy()
    x[:, :, 2:6, 2:6] = 0.0  # the CE block [2, 2, 4, 4]
    x = x.reshape(x.shape[0], -1)
    n, c = x.shape[0], 1.0
    mats = [
        _augmented_np(enc["net.0.weight"], enc["net.0.bias"], c, True),
        _augmented_np(enc["net.2.weight"], enc["net.2.bias"], c, True),
        _augmented_np(dec["net.0.weight"], dec["net.0.bias"], c, True),
        _augmented_np(dec["net.2.weight"], dec["net.2.bias"], c, False),
    ]
    q_hat = np.prod([np.linalg.norm(a) for a in mats[:-1]]) * np.linalg.norm(mats[-1], axis=1).max()
    k = next(k for k in range(1, 100) if 2.0 ** (k - 1) >= q_hat)
    d_out = 16
    s_x = float((x * x).sum()) + n * c**2
    rhat = (math.sqrt(2 * math.log(2) * 4) + 1) * d_out * 2.0 ** (k - 1) * math.sqrt(s_x) / n
    det = terms["pretext_risk_bound"]["details"]
    assert det["k"] == k and det["n_pretrain"] == n and det["output_dim"] == d_out
    assert terms["pretext_rademacher_vec"]["value"] == pytest.approx(rhat, rel=ITERATIVE)
    complexity = 2 * math.sqrt(2) * (2 / math.sqrt(d_out)) * rhat
    conf = 3 * math.sqrt(
        math.log(2 * k * (k + 1) / report["deltas"]["pretext_certificate"]) / (2 * n)
    )
    total = terms["pretext_empirical_risk"]["value"] + complexity + conf
    assert terms["pretext_risk_bound"]["value"] == pytest.approx(total, rel=ITERATIVE)
    assert terms["pretext_risk_bound"]["confidence"] == pytest.approx(
        1 - report["deltas"]["pretext_certificate"]
    )
    # the feature norm bound holds on the data it never saw
    fn = terms["feature_norm"]
    assert fn["details"]["observed_max_train"] <= fn["value"]
    assert fn["details"]["input_norm_bound"] == pytest.approx(8.0)


def test_pretext_certificate_needs_relu_identity_activations(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path / "p")
    ok = _report(path)
    assert ok["terms"]["pretext_risk_bound"]["status"] == "certified"
    cfg = yaml.safe_load(path.read_text())
    cfg["decoder"]["activation"] = "gelu"
    path.write_text(yaml.safe_dump(cfg))
    gelu = _report(path)
    assert "pretext_risk_bound" not in gelu["terms"]
    assert any("no certified pretext bound" in w for w in gelu["warnings"])
    # GRS needs homogeneous activations throughout; BFT does not
    cfg["encoder"]["activation"] = "tanh"
    path.write_text(yaml.safe_dump(cfg))
    tanh = _report(path)
    assert "grs_complexity" not in tanh["terms"]
    assert tanh["terms"]["spectral_complexity"]["status"] == "proxy"


def test_mlp_head_terms_reference_the_path_norm_route(tmp_path: Path) -> None:
    relu = _report(write_pipeline(tmp_path / "relu", head="mlp", with_pretext=False))
    grs = relu["terms"]["grs_complexity_head"]
    assert grs["status"] == "certified" and "`rirc`" in grs["formula"]
    assert "rirc_mlp_head" not in relu["terms"]
    assert relu["bounds"]["certified_test_error_bound"]["components"][1] == "rirc_term"
    path = write_pipeline(tmp_path / "gelu", head="mlp", with_pretext=False)
    cfg = yaml.safe_load(path.read_text())
    cfg["head"]["activation"] = "gelu"
    path.write_text(yaml.safe_dump(cfg))
    report = _report(path)
    term = report["terms"]["rirc_mlp_head"]
    assert term["status"] == "certified" and term["details"][
        "activation_lipschitz"
    ] == pytest.approx(1.129)
    head = load_np(str(path.parent / "head.safetensors"))
    a = np.abs(head["fc2.weight"]).sum()
    b = np.sqrt((head["fc1.weight"] ** 2).sum(1) + head["fc1.bias"] ** 2).max()
    assert term["details"]["v_l1_norm"] == pytest.approx(a, rel=ITERATIVE)
    assert term["details"]["max_row_norm"] == pytest.approx(b, rel=ITERATIVE)
    det = term["details"]
    n, u = det["n"], det["u_sigma"]
    expected = (
        2 * 1.129 * det["v_l1_norm"] * det["max_row_norm"] * u
        + det["output_bias_abs"] * math.sqrt(n)
    ) / n
    assert term["value"] == pytest.approx(expected, rel=FLOAT64_EXACT)
    # U_sigma within the Khintchine-Jensen sandwich of sum ||z'_i||^2, features in numpy
    enc = load_np(str(path.parent / "encoder.safetensors"))
    z = np.load(path.parent / "data.npz")["train_x"].astype(np.float64)
    for layer in ("net.0", "net.2"):
        z = np.maximum(z @ enc[f"{layer}.weight"].T + enc[f"{layer}.bias"], 0.0)
    s = float((z * z).sum()) + n
    assert math.sqrt(s / 2) <= u <= math.sqrt(s) * (1 + 1e-6)


def _finetuned(tmp_path: Path, activation: str = "relu") -> Path:
    path = write_pipeline(tmp_path / "ft", with_pretext=False, bound={"n_draws": 300})
    tensors = load_np(str(path.parent / "encoder.safetensors"))
    gen = np.random.default_rng(3)
    pre = {k: (v + 0.05 * gen.normal(size=v.shape)).astype(np.float32) for k, v in tensors.items()}
    save_file(
        {k: torch.from_numpy(v) for k, v in pre.items()}, str(path.parent / "pre.safetensors")
    )
    cfg = yaml.safe_load(path.read_text())
    cfg["encoder"]["reference"] = "pre.safetensors"
    cfg["encoder"]["activation"] = activation
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_finetuned_mlp_encoder_route(tmp_path: Path) -> None:
    path = _finetuned(tmp_path)
    report = _report(path)
    terms, bounds = report["terms"], report["bounds"]
    # the frozen certificates are demoted before the best one is chosen: the fine-tuned
    # certificate is the only candidate, at the finetune share alone
    assert list(bounds) == ["best_certified_test_error_bound", "finetuned_test_error_bound"]
    ft = bounds["finetuned_test_error_bound"]
    headline = bounds["best_certified_test_error_bound"]
    assert headline["details"]["chosen"] == "finetuned_test_error_bound"
    assert headline["value"] == ft["value"]
    assert headline["details"]["delta_shares"] == {"finetune": report["deltas"]["finetune"]}
    assert terms["tightness_pac_bayes_deterministic"]["status"] == "diagnostic"
    assert ft["status"] == "certified" and ft["quantity"] == "downstream_test_error"
    assert all(terms[k]["status"] == "certified" for k in ft["components"])
    assert ft["value"] == pytest.approx(sum(terms[k]["value"] for k in ft["components"]))
    # the frozen-encoder certificates are shown, never as certificates
    frozen = terms["certified_test_error_bound"]
    assert frozen["status"] == "diagnostic" and frozen["formula"].startswith("NOT A CERTIFICATE")
    assert "components" not in frozen
    assert terms["downstream_empirical_risk"]["status"] == "diagnostic"
    assert terms["test_set_bound"]["status"] == "certified"  # the held-out check stays valid
    assert terms["spectral_complexity_reference"]["status"] == "proxy"
    # independent recomputation: GRS over head o encoder inside the section-2 margin bound
    enc = load_np(str(path.parent / "encoder.safetensors"))
    pre = load_np(str(path.parent / "pre.safetensors"))
    head = load_np(str(path.parent / "head.safetensors"))
    data = np.load(path.parent / "data.npz")
    x, y = data["train_x"].astype(np.float64), 2.0 * data["train_y"] - 1.0
    c, n = 1.0, x.shape[0]
    mats = [
        _augmented_np(enc["net.0.weight"], enc["net.0.bias"], c, True),
        _augmented_np(enc["net.2.weight"], enc["net.2.bias"], c, True),
        _augmented_np(head["linear.weight"], head["linear.bias"], c, False),
    ]
    q_hat = float(np.prod([np.linalg.norm(a) for a in mats]))
    h = np.concatenate([x, np.full((n, 1), c)], 1).T
    for j, a in enumerate(mats):
        h = a @ h
        h = np.maximum(h, 0) if j < 2 else h
    margins = y * h[0]
    u = (math.sqrt(2 * math.log(2) * 3) + 1) * math.sqrt(float((x * x).sum()) + n * c**2)
    delta_1 = report["deltas"]["finetune"]
    best = min(
        np.mean(ramp_loss(rho * margins / q_hat))
        + 2 * rho * u / n
        + 3 * math.sqrt(math.log(2 * k * (k + 1) / delta_1) / (2 * n))
        for k in range(1, 60)
        for rho in [1e-3 * 2.0 ** (k - 1)]
    )
    assert ft["value"] == pytest.approx(best, rel=ITERATIVE)
    dist = math.sqrt(
        sum(float(((enc[k] - pre[k]) ** 2).sum()) for k in enc if k.endswith("weight"))
    )
    assert terms["encoder_distance_to_reference"]["value"] == pytest.approx(dist, rel=ITERATIVE)
    assert any("shown as diagnostic" in w for w in report["warnings"])


def test_finetuned_route_needs_homogeneous_activations(tmp_path: Path) -> None:
    report = _report(_finetuned(tmp_path, activation="gelu"))
    assert report["bounds"] == {}
    assert any("no certified fine-tuned route" in w for w in report["warnings"])
    assert report["terms"]["certified_test_error_bound"]["status"] == "diagnostic"


def _vit_capacity(tmp_path: Path, reference: bool) -> tuple[CapacityOut, np.ndarray]:
    torch.manual_seed(0)
    vit = ViTEncoder(4, 2, 1, 8, 2, 2).eval()
    save_file(vit.state_dict(), str(tmp_path / "vit.safetensors"))
    raw: dict[str, Any] = {
        "encoder": {
            "arch": "vit",
            "weights": "vit.safetensors",
            "image_size": 4,
            "patch_size": 2,
            "dim": 8,
            "depth": 2,
            "heads": 2,
            "mlp_ratio": 2.0,
        },
        "head": {"arch": "linear", "weights": "head.safetensors"},
        "data": {"downstream_train": "d.npz"},
    }
    if reference:
        raw["encoder"]["reference"] = "vit.safetensors"
    (tmp_path / "tfbound.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "tfbound.yaml")
    x = 5 * torch.randn(64, 16)
    with torch.no_grad():
        z = vit(x).double().numpy()
    y = np.where(np.arange(64) % 2 == 0, 1.0, -1.0)
    models = Models(vit, LinearHead(8), 8, reference=vit if reference else None)
    train = LabeledArrays(x.numpy(), y, cfg.data.downstream_train)
    splits = Splits(train, None, None, None, None)
    budget = DeltaBudget(0.05, {"finetune": 0.2, "monte_carlo": 0.02, "pretext_certificate": 0.78})
    sums = RircSums(1, 9, 0)
    sums.add(np.arange(64), augment(z, cfg.bound.bias_const))
    max_norm = float(np.sqrt(np.max(np.sum(z * z, axis=1))))
    train_pass = TrainStream(64, np.zeros(64), sums, max_norm, None, None)
    out = capacity_stage(
        cfg, models, splits, train_pass, u_sigma=1.0, budget=budget, pretext_train=None
    )
    return out, z


def test_vit_terms_and_the_finetuned_transformer_statement(tmp_path: Path) -> None:
    res, features = _vit_capacity(tmp_path, reference=False)
    terms = {t.key: t for t in res.terms}
    fn = terms["feature_norm"]
    assert fn.status.value == "certified" and fn.value is not None
    assert float(np.linalg.norm(features, axis=1).max()) <= fn.value
    for key in ("transformer_capacity_egkz", "transformer_capacity_tt"):
        assert terms[key].status.value == "proxy" and (terms[key].value or 0) > 0
    assert "Edelman" in terms["transformer_capacity_egkz"].source
    assert "Trauger" in terms["transformer_capacity_tt"].source
    assert terms["transformer_capacity_egkz"].details["tokens"] == 4
    blocks = terms["attention_qk_spectral_max"].details["blocks"]
    assert [b["block"] for b in blocks] == ["blocks.0.attn", "blocks.1.attn"]
    assert blocks[0]["mlp_layers"] == ["blocks.0.mlp.fc1", "blocks.0.mlp.fc2"]
    assert not res.bounds and not any("fine-tuned" in w for w in res.warnings)
    ft, _ = _vit_capacity(tmp_path, reference=True)
    assert not ft.bounds
    assert any("no certified route exists for a fine-tuned transformer" in w for w in ft.warnings)
    dist = next(t for t in ft.terms if t.key == "encoder_distance_to_reference")
    assert dist.value == 0.0 and dist.status.value == "diagnostic"


def test_sum_sq_with_constant() -> None:
    x = np.arange(6.0).reshape(2, 3)
    assert sum_sq_with_constant(x, 2.0) == pytest.approx(55.0 + 8.0)
