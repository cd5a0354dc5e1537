"""Pretext tasks and configuration constants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import tfbound
from tests.conftest import write_pipeline
from tfbound.models import MLP, MLPEncoder, ViTEncoder
from tfbound.pretext import ContextEncoderTask, MaskedAutoencoderTask, pretext_batch


@pytest.mark.parametrize(
    ("ratio", "patches", "expected"), [(0.29, 100, 29), (0.57, 100, 57), (0.5, 16, 8)]
)
def test_mae_drops_floor_of_ratio_times_patches(ratio: float, patches: int, expected: int) -> None:
    assert MaskedAutoencoderTask(ratio).n_drop(patches) == expected


def test_mae_masks_partition_the_patches_and_are_seeded() -> None:
    task = MaskedAutoencoderTask(0.5)
    keep, drop = task.masks(6, 16, torch.Generator().manual_seed(3))
    keep2, drop2 = task.masks(6, 16, torch.Generator().manual_seed(3))
    assert torch.equal(keep, keep2) and torch.equal(drop, drop2)
    both = torch.cat([keep, drop], 1).sort(1).values
    assert torch.equal(both, torch.arange(16).expand(6, 16))


def test_mae_encoder_sees_only_visible_patches() -> None:
    """Changing a dropped patch changes neither the encoder's view nor the prediction."""
    torch.manual_seed(0)
    enc, dec = ViTEncoder(8, 2, 1, 16, 1, 2, 2.0).eval(), MLP(16, [8], 64).eval()
    x = torch.rand(1, 64)
    keep, drop = MaskedAutoencoderTask(0.5).masks(1, 16, torch.Generator().manual_seed(0))
    patches = enc.patchify(x).clone()
    patches[0, drop[0, 0]] += 1.0
    g = 4  # 8 / 2 patches per side; rebuild the image from patches
    x2 = patches.reshape(1, g, g, 2, 2).permute(0, 1, 3, 2, 4).reshape(1, 64)
    with torch.no_grad():
        assert torch.allclose(enc.forward_visible(x, keep), enc.forward_visible(x2, keep))
        p1, t1 = pretext_batch(
            MaskedAutoencoderTask(0.5), enc, dec, x, torch.Generator().manual_seed(0)
        )
        p2, t2 = pretext_batch(
            MaskedAutoencoderTask(0.5), enc, dec, x2, torch.Generator().manual_seed(0)
        )
    assert torch.allclose(p1, p2) and not torch.allclose(t1, t2)


def test_context_encoder_zeroes_exactly_the_block() -> None:
    task = ContextEncoderTask((1, 4, 4), (1, 1, 2, 2))
    x = torch.arange(1, 17, dtype=torch.float32).reshape(1, 16)
    masked, target = task.corrupt(x)
    assert target.tolist() == [[6.0, 7.0, 10.0, 11.0]]
    assert masked.reshape(4, 4)[1:3, 1:3].eq(0).all() and masked.ne(0).sum() == 12
    enc, dec = MLPEncoder(16, [4], 3), MLP(3, [], 4)
    pred, tgt = pretext_batch(task, enc, dec, x)
    assert pred.shape == tgt.shape == (1, 4)


def test_encoder_candidates_divide_delta_1_and_delta_mc(tmp_path: Path) -> None:
    cfg = write_pipeline(tmp_path / "t", with_pretext=False)
    one = tfbound.estimate(cfg)
    raw = yaml.safe_load(cfg.read_text())
    raw["bound"]["encoder_candidates"] = 10
    cfg.write_text(yaml.safe_dump(raw))
    ten = tfbound.estimate(cfg)
    b1, b10 = one.get("certified_test_error_bound"), ten.get("certified_test_error_bound")
    assert b1 is not None and b10 is not None
    assert b10.details["delta_1"] == pytest.approx(b1.details["delta_1"] / 10)
    assert b10.confidence == b1.confidence  # the union over J candidates keeps the total
    assert b10.value is not None and b1.value is not None and b10.value >= b1.value
    assert json.loads(json.dumps(ten.to_dict()))["config"]["bound"]["encoder_candidates"] == 10
