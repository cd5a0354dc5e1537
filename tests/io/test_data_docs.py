"""Every YAML block of docs/data.md is a valid configuration section (with an encoder and a head
where the block has none)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.helpers import REPO_ROOT
from tfbound.config import parse_config

DOC = REPO_ROOT / "docs" / "data.md"


def test_every_yaml_block_parses(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 5
    for block in blocks:
        raw = yaml.safe_load(block)
        raw.setdefault(
            "encoder",
            {"arch": "mlp", "weights": "e.safetensors", "input_dim": 64, "feature_dim": 32},
        )
        raw.setdefault("head", {"arch": "linear", "weights": "h.safetensors"})
        cfg = parse_config(raw, tmp_path / "tfbound.yaml")
        assert cfg.data.downstream_train.path.parent == tmp_path
