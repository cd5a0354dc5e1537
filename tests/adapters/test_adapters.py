"""Layer handlers: per-head attention products against hand-built attention, BatchNorm folding,
the kinds read off names and modules, and skipped parameters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.tolerances import FLOAT64_EXACT, FLOAT64_SOLVER
from tfbound.adapters import (
    MODULE_HANDLERS,
    TensorInfo,
    batchnorm_inputs,
    describe_modules,
    plan_tensors,
    qk_products,
    register_module_handler,
    vo_products,
)
from tfbound.errors import InputError
from tfbound.inspect import inspect_module, inspect_state_dict
from tfbound.measures.conv import fold_batchnorm
from tfbound.measures.norms import l21_norm, spectral_norm
from tfbound.models import ViTEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _seeded_mha(d: int = 8, heads: int = 2, seed: int = 0) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(d, heads, batch_first=True).double()
    with torch.no_grad():  # PyTorch initialises the biases to 0; make them matter
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha.eval()


def test_qk_product_gives_the_logits_of_torch_attention() -> None:
    d, heads, t = 8, 2, 5
    mha = _seeded_mha(d, heads)
    w, b = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
    wq, wk = w[:d], w[d : 2 * d]
    bq = b[:d]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, t, d, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        _, attn = mha(x, x, x, need_weights=True, average_attn_weights=False)
    dh = d // heads
    for h, qk in enumerate(qk_products(wq, wk, heads)):
        hs = slice(h * dh, (h + 1) * dh)
        assert qk.shape == (d, d)
        # logits up to terms constant over keys, which the softmax removes:
        # x_i^T QK_h x_j + (Wk_h^T bq_h) . x_j
        logits = x[0] @ qk @ x[0].T + (x[0] @ (wk[hs].T @ bq[hs])).unsqueeze(0)
        expected = torch.softmax(logits / math.sqrt(dh), dim=-1)
        torch.testing.assert_close(attn[0, h], expected, rtol=FLOAT64_SOLVER, atol=FLOAT64_EXACT)
        # the common bug: Wq_h Wk_h^T is a different (d_head x d_head) matrix
        wrong = wq[hs] @ wk[hs].T
        assert wrong.shape == (dh, dh)


def test_vo_product_gives_the_output_of_torch_attention() -> None:
    d, heads, t = 8, 2, 4
    mha = _seeded_mha(d, heads, seed=3)
    w, b = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
    wv, bv = w[2 * d :], b[2 * d :]
    wo, bo = mha.out_proj.weight.detach(), mha.out_proj.bias.detach()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, t, d, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out, attn = mha(x, x, x, need_weights=True, average_attn_weights=False)
    dh = d // heads
    expected = bo.expand(t, d).clone()
    for h, vo in enumerate(vo_products(wv, wo, heads)):
        hs = slice(h * dh, (h + 1) * dh)
        mixed = attn[0, h] @ x[0]  # (t, d): the head's attention average of the inputs
        expected += mixed @ vo.T + wo[:, hs] @ bv[hs]
    torch.testing.assert_close(out[0], expected, rtol=FLOAT64_SOLVER, atol=FLOAT64_EXACT)


def _direct_head_norms(
    wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, wo: torch.Tensor, heads: int
) -> list[tuple[float, float, float, float]]:
    out = []
    for qk, vo in zip(qk_products(wq, wk, heads), vo_products(wv, wo, heads), strict=True):
        out.append((spectral_norm(qk), l21_norm(qk), spectral_norm(vo), l21_norm(vo)))
    return out


def _check_heads(result_heads: list, direct: list, block: str) -> None:
    rows = [h for h in result_heads if h.block == block]
    assert len(rows) == len(direct)
    for row, (qs, ql, vs, vl) in zip(rows, direct, strict=True):
        assert row.qk_spectral_norm.status == "certified"
        assert row.qk_spectral_norm.value == pytest.approx(qs, rel=FLOAT64_SOLVER)
        assert row.qk_l21_norm.value == pytest.approx(ql, rel=FLOAT64_EXACT)
        assert row.vo_spectral_norm.value == pytest.approx(vs, rel=FLOAT64_SOLVER)
        assert row.vo_l21_norm.value == pytest.approx(vl, rel=FLOAT64_EXACT)


def test_torch_mha_module_and_bare_state_dict() -> None:
    d, heads = 8, 2
    mha = _seeded_mha(d, heads, seed=4)
    w = mha.in_proj_weight.detach()
    direct = _direct_head_norms(w[:d], w[d : 2 * d], w[2 * d :], mha.out_proj.weight, heads)
    res = inspect_module(mha)
    _check_heads(list(res.heads), direct, "")
    assert {r.name for r in res.layers} == {"in_proj", "out_proj"}
    assert res.heads[0].style == "torch_mha"
    # bare state dict: the number of heads must be given
    bare = inspect_state_dict(mha.state_dict())
    assert not bare.heads
    assert any("heads unknown" in n for n in bare.notes)
    with pytest.raises(InputError, match="heads unknown"):
        inspect_state_dict(mha.state_dict(), strict=True)
    bare = inspect_state_dict(mha.state_dict(), heads=heads)
    _check_heads(list(bare.heads), direct, "")
    # query and key biases are reported per head
    b = mha.in_proj_bias.detach()
    assert bare.heads[1].query_bias_norm == pytest.approx(float(b[4:8].norm()))
    assert bare.heads[1].key_bias_norm == pytest.approx(float(b[12:16].norm()))
    assert bare.heads[1].logit_bias_norm == pytest.approx(float((w[12:16].T @ b[4:8]).norm()))


def test_fused_qkv_of_the_vit_encoder() -> None:
    torch.manual_seed(0)
    vit = ViTEncoder(image_size=8, patch_size=4, dim=12, depth=2, heads=3).double()
    res = inspect_module(vit)
    for i in range(2):
        qkv = vit.blocks[i].attn.qkv.weight.detach()
        proj = vit.blocks[i].attn.proj.weight.detach()
        direct = _direct_head_norms(qkv[:12], qkv[12:24], qkv[24:], proj, 3)
        _check_heads(list(res.heads), direct, f"blocks.{i}.attn")
    assert {h.style for h in res.heads} == {"fused_qkv"}
    kinds = {r.name: r.kind for r in res.layers}
    assert kinds["patch_embed.proj"] == "conv"
    assert kinds["pos_embed"] == "embedding"
    assert kinds["blocks.0.norm1"] == "layernorm"
    assert kinds["blocks.0.mlp.fc1"] == "linear"
    # bare state dict with the heads given: the same per-head rows
    bare = inspect_state_dict(vit.state_dict(), heads=3)
    assert [h.qk_spectral_norm for h in bare.heads] == [h.qk_spectral_norm for h in res.heads]


class _BertSelf(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads = heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)


class _BertOutput(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d, d)
        self.LayerNorm = nn.LayerNorm(d)


class _BertAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.self = _BertSelf(d, heads)
        self.output = _BertOutput(d)


def _bert_like(d: int = 8, heads: int = 4) -> nn.Module:
    torch.manual_seed(5)
    model = nn.Module()
    model.attention = _BertAttention(d, heads)
    return model.double()


def test_bert_style_separate_projections() -> None:
    model = _bert_like()
    att = model.attention
    sa = att.self
    direct = _direct_head_norms(
        sa.query.weight, sa.key.weight, sa.value.weight, att.output.dense.weight, 4
    )
    res = inspect_module(model)  # heads from the module's num_attention_heads
    _check_heads(list(res.heads), direct, "attention")
    assert res.heads[0].heads == 4 and res.heads[0].head_dim == 2
    bare = inspect_state_dict(model.state_dict(), heads=4)
    _check_heads(list(bare.heads), direct, "attention")
    layer_names = {r.name for r in bare.layers}
    assert {"attention.self.query", "attention.output.dense"} <= layer_names
    ln = next(r for r in bare.layers if r.kind == "layernorm")
    g = att.output.LayerNorm.weight.detach()
    assert ln.spectral_norm is not None and ln.frobenius_norm is not None
    assert ln.spectral_norm.value == pytest.approx(float(g.abs().max()))
    assert ln.frobenius_norm.value == pytest.approx(float(g.norm()))
    assert ln.bias_norm == pytest.approx(float(att.output.LayerNorm.bias.detach().norm()))


def test_wrong_head_count_is_a_note_not_a_crash() -> None:
    res = inspect_state_dict(_bert_like().state_dict(), heads=3)
    assert not res.heads
    assert any("do not divide" in n for n in res.notes)


def _conv_bn() -> nn.Sequential:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3, eps=1e-3), nn.ReLU())
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(-2, 2)
        model[1].bias.uniform_(-1, 1)
    return model.double()


def test_batchnorm_folded_when_the_module_is_known() -> None:
    model = _conv_bn()
    assert batchnorm_inputs(model) == {"1": ("0", "torch.fx graph")}
    conv, bn = model[0], model[1]
    w, _ = fold_batchnorm(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps
    )
    res = inspect_module(model, example_input=torch.zeros(1, 2, 5, 5, dtype=torch.float64))
    assert [r.name for r in res.layers] == ["0"]
    row = res.layers[0]
    assert "BatchNorm 1 folded" in row.note
    assert "1.running_mean" in row.params
    # the folded operator at input 5x5 against the explicit eval-mode linear map
    basis = torch.eye(50, dtype=torch.float64).reshape(50, 2, 5, 5)
    model.eval()
    with torch.no_grad():
        zero = model[1](model[0](torch.zeros(1, 2, 5, 5, dtype=torch.float64)))
        op = (model[1](model[0](basis)) - zero).reshape(50, -1).T
    model.train()
    assert row.spectral_norm is not None and row.frobenius_norm is not None
    assert row.spectral_norm.status == "certified"
    assert row.spectral_norm.value >= float(torch.linalg.svdvals(op)[0]) * (1 - 1e-12)
    assert row.frobenius_norm.value == pytest.approx(float(op.norm()), rel=FLOAT64_SOLVER)
    # without the input size: reshaped-kernel proxies of the folded kernel
    proxy = inspect_module(model).layers[0]
    assert proxy.spectral_norm is not None and proxy.spectral_norm.status == "proxy"
    assert proxy.spectral_norm.value == pytest.approx(spectral_norm(w.reshape(3, -1)))
    assert model.training  # modes restored
    # bare state dict: the BatchNorm is skipped with its reason, not folded
    bare = inspect_state_dict(model.state_dict())
    assert {s.name for s in bare.skipped} == {
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    }
    assert all("needs the module structure" in s.reason for s in bare.skipped)


class _PreActivation(nn.Module):
    """BatchNorm *before* the conv: nothing to fold; the BatchNorm gets its own row."""

    def __init__(self) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(2)
        self.conv1 = nn.Conv2d(2, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(torch.relu(self.bn1(x)))


class _Shared(nn.Module):
    """The conv output feeds the BatchNorm and a skip path: folding would misstate the layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_batchnorm_not_folded_when_not_fed_by_one_layer() -> None:
    for model in (_PreActivation(), _Shared()):
        assert batchnorm_inputs(model) == {}
        res = inspect_module(model)
        kinds = sorted(r.kind for r in res.layers)
        assert kinds == ["batchnorm", "conv"]
        bn_row = next(r for r in res.layers if r.kind == "batchnorm")
        bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        assert bn_row.spectral_norm is not None
        assert bn_row.spectral_norm.value == pytest.approx(float(scale.abs().max()))
        assert not res.skipped


def test_sequential_fallback_when_tracing_fails() -> None:
    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.body(x)
            return self.body(-x)

    assert batchnorm_inputs(Untraceable()) == {"body.1": ("body.0", "nn.Sequential order")}


def test_skipped_parameters_are_listed_with_reasons_and_strict_raises() -> None:
    tensors = {
        "fc.weight": torch.ones(3, 4),
        "fc.bias": torch.ones(3),
        "lonely.bias": torch.ones(3),
        "scale": torch.tensor(2.0),
        "mystery.weight": torch.ones(5),
        "cls_token": torch.zeros(1, 1, 4),
        "steps": torch.tensor(3),
        "bank": torch.ones(2, 3, 4, 5, 6, 7),
    }
    res = inspect_state_dict(tensors)
    reasons = {s.name: s.reason for s in res.skipped}
    assert set(reasons) == set(tensors) - {"fc.weight", "fc.bias"}
    assert "no weight" in reasons["lonely.bias"]
    assert "scalar" in reasons["scale"]
    assert "norm layer" in reasons["mystery.weight"]
    assert "token" in reasons["cls_token"]
    assert "non-floating" in reasons["steps"]
    assert "no handler" in reasons["bank"]
    with pytest.raises(InputError, match="strict: 6 item"):
        inspect_state_dict(tensors, strict=True)
    inspect_state_dict({"fc.weight": torch.ones(3, 4)}, strict=True)  # nothing skipped: fine


def test_registry_ignore_on_purpose_and_module_unchanged() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3, 3))

    model = nn.Sequential(nn.Linear(3, 3), Gate())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = inspect_module(model)
    assert [r.name for r in res.layers] == ["0", "1"]  # Gate: inferred from its 2-D weight
    assert "inferred" in res.layers[1].note
    saved = MODULE_HANDLERS.get(Gate)
    try:
        register_module_handler(Gate, None)
        res = inspect_module(model)
        assert [r.name for r in res.layers] == ["0"]
        assert "ignored on purpose" in res.skipped[0].reason
    finally:
        MODULE_HANDLERS.pop(Gate, None)
        if saved is not None:
            MODULE_HANDLERS[Gate] = saved
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_describe_modules_reads_options() -> None:
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, stride=2, padding=1, dilation=1, padding_mode="circular"),
        nn.MultiheadAttention(4, 2),
        nn.Embedding(10, 4),
    )
    info = describe_modules(model)
    assert info["0"].kind == "conv" and info["0"].conv is not None
    assert info["0"].conv.stride == (2,) and info["0"].conv.padding_mode == "circular"
    assert info["1"].heads == 2
    assert info["2"].kind == "embedding"
    assert info[""].kind is None


def test_conv1d_module_operator_norm_with_example_input() -> None:
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, padding_mode="circular")).double()
    res = inspect_module(model, example_input=torch.zeros(2, 2, 9, dtype=torch.float64))
    row = res.layers[0]
    basis = torch.eye(18, dtype=torch.float64).reshape(18, 2, 9)
    with torch.no_grad():
        op = F.conv1d(F.pad(basis, (1, 1), mode="circular"), model[0].weight).reshape(18, -1).T
    assert row.spectral_norm is not None
    assert row.spectral_norm.method == "fft_circular_exact"
    assert row.spectral_norm.value == pytest.approx(
        float(torch.linalg.svdvals(op)[0]), rel=FLOAT64_SOLVER
    )
    assert "input size (9,)" in row.note


def test_plan_from_names_only() -> None:
    infos = [
        TensorInfo("enc.embed_tokens.weight", (50, 8), "float32"),
        TensorInfo("enc.ln_f.weight", (8,), "float32"),
        TensorInfo("enc.ln_f.bias", (8,), "float32"),
        TensorInfo("enc.conv.weight", (4, 2, 3), "float16"),
        TensorInfo("enc.mlp.weight", (4, 8), "bfloat16"),
        TensorInfo("decoder_embed.weight", (6, 8), "float32"),  # MAE: an nn.Linear
        TensorInfo("decoder_embed.bias", (6,), "float32"),
    ]
    plan = plan_tensors(infos)
    assert [(lp.name, lp.kind) for lp in plan.layers] == [
        ("enc.embed_tokens", "embedding"),
        ("enc.ln_f", "layernorm"),
        ("enc.conv", "conv"),
        ("enc.mlp", "linear"),
        ("decoder_embed", "linear"),
    ]
    assert not plan.skipped


def test_embedding_module_and_a_failing_example_input() -> None:
    torch.manual_seed(8)
    model = nn.Sequential(nn.Embedding(11, 4), nn.Linear(4, 2))
    res = inspect_module(model)
    row = res.layers[0]
    table = model[0].weight.detach().double()
    assert row.kind == "embedding" and row.shape == (11, 4)
    assert row.spectral_norm is not None and row.l21_norm is not None
    assert row.spectral_norm.value == pytest.approx(float(torch.linalg.svdvals(table)[0]))
    assert row.l21_norm.value == pytest.approx(float(table.norm(dim=1).sum()))
    with pytest.raises(InputError, match="forward pass"):
        inspect_module(model, example_input=torch.zeros(3, 5))  # floats into an Embedding
    assert model.training
