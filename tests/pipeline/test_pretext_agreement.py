"""Estimate and transfer evaluate one pretext loss on one corrupted pass: their numbers agree.

``estimate`` gathers the counted coordinates batch by batch (float32, masks drawn batch by batch
from the pretext seed); ``transfer`` keeps the full target layout with a mask and draws the masks
for the whole split in one call. On the configured decoder both give the same held-out pretext
risk, to float32 accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import REPO_ROOT
from tfbound.config import load_config
from tfbound.features import Corruption, encode
from tfbound.io.datasets import load_inputs
from tfbound.models.build import build_module
from tfbound.pipeline import estimate
from tfbound.pretext import pretext_task
from tfbound.transfer.features import draw_masks, masked_pretext_losses

ROOT = REPO_ROOT / "sample_models"
FLOAT32_MEAN = 1e-6  # a mean of float32 squared errors, recomputed through another layout


@pytest.mark.parametrize("name", ["ce_mlp", "mae_vit"])
def test_estimate_and_transfer_pretext_risks_agree(name: str) -> None:
    torch.manual_seed(0)
    cfg = load_config(ROOT / name / "tfbound.yaml")
    assert cfg.pretext is not None and cfg.decoder is not None
    assert cfg.data.pretrain_val is not None
    report = estimate(cfg)
    held = report.get("pretext_heldout_risk")
    assert held is not None and held.value is not None

    encoder, decoder = build_module(cfg.encoder), build_module(cfg.decoder)
    task = pretext_task(cfg.pretext)
    x = load_inputs(cfg.data.pretrain_val)
    targets = draw_masks(task, encoder, x, cfg.pretext.seed + 1)
    z = encode(encoder, x, 97, corruption=Corruption(task, targets.keep))  # another batch size
    with torch.inference_mode():
        pred = decoder(torch.from_numpy(z).float()).reshape(targets.targets.shape)
    losses = masked_pretext_losses(pred.double().numpy(), targets, cfg.pretext.box)
    assert float(np.mean(losses)) == pytest.approx(held.value, abs=FLOAT32_MEAN)
