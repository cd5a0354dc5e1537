"""Sample-model modules and arrays for the in-memory route: built from the sample configs by the
config route's own builder, so the two routes see the same weights and the same inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from torch import nn

from tests.helpers import REPO_ROOT

DATA = REPO_ROOT / "sample_models" / "data" / "digits_splits.npz"


@dataclass
class Sample:
    name: str
    encoder: nn.Module
    head: nn.Module
    decoder: nn.Module
    arrays: dict[str, np.ndarray]
    pretext: dict[str, Any]  # the config's pretext section

    def kwargs(self) -> dict[str, Any]:
        """The in-memory ``tfbound.estimate`` call equivalent to the sample config."""
        a = self.arrays
        return {
            "encoder": self.encoder,
            "head": self.head,
            "train": (a["downstream_train_x"], a["downstream_train_y"]),
            "test": (a["downstream_test_x"], a["downstream_test_y"]),
            "pool": a["downstream_pool_x"],
            "pretext": {
                **self.pretext,
                "decoder": self.decoder,
                "train": a["pretrain_train_x"],
                "val": a["pretrain_val_x"],
            },
            "delta": 0.05,
            "encoder_candidates": 20,
            "seed": 0,
        }


def load_sample(name: str) -> Sample:
    from tfbound.config import load_config
    from tfbound.io.datasets import load_labeled
    from tfbound.pipeline.stages import build_models

    cfg = load_config(REPO_ROOT / "sample_models" / name)
    models = build_models(cfg, load_labeled(cfg.data.downstream_train))
    assert models.decoder is not None and cfg.pretext is not None
    with np.load(DATA) as z:
        arrays = {k: z[k] for k in z.files}
    return Sample(name, models.encoder, models.head, models.decoder, arrays, cfg.pretext.to_dict())


@pytest.fixture(scope="module")
def ce_mlp() -> Sample:
    return load_sample("ce_mlp")
