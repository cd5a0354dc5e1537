"""``tfbound inspect CONFIG``: the norms of the models a configuration names (a stage: it builds
modules and reads the first training example)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tfbound.config import load_config
from tfbound.inspect import InspectResult, inspect_module, merge_results
from tfbound.models.build import build_head, build_module, feature_dim_of
from tfbound.pipeline.stages import data_loaders


def inspect_config(
    path: Path,
    reference: Path | None,
    heads: int | None,
    strict: bool,
    spectral: str,
    progress: Callable[[str, int, int], None] | None,
) -> InspectResult:
    """The per-layer norms of a tfbound.yaml's encoder and head, built as ``estimate`` builds them
    and inspected as modules (``encoder.`` and ``head.`` prefixes); ``reference`` defaults to the
    config's ``encoder.reference``."""
    cfg = load_config(path)
    encoder = build_module(cfg.encoder)
    load_lab, _ = data_loaders(cfg)
    train = load_lab(cfg.data.downstream_train)
    example = torch.from_numpy(np.asarray(train.x[:1], dtype=np.float32))
    head = build_head(cfg.head, feature_dim_of(encoder, example))
    ref = reference if reference is not None else cfg.encoder.reference
    common: dict[str, Any] = {"heads": heads, "strict": strict, "spectral": spectral}
    enc = inspect_module(encoder, reference=ref, example_input=example, progress=progress, **common)
    hd = inspect_module(head, progress=progress, **common)
    return merge_results([("encoder", enc), ("head", hd)], source=str(cfg.path))


__all__ = ["inspect_config"]
