"""Heads as users save them: nn.Linear, nn.Sequential, 2 logits, a prefix, a factory module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tfbound.config import parse_config
from tfbound.errors import CheckpointError, ConfigError
from tfbound.models.build import TWO_LOGIT_NOTE, allow_code, load_head
from tfbound.models.heads import LinearHead, MLPHead


def _spec(tmp: Path, arch: str, **extra: object):
    raw = {
        "encoder": {"arch": "mlp", "weights": "e.safetensors", "input_dim": 4, "feature_dim": 6},
        "head": {"arch": arch, **extra},
        "data": {"downstream_train": "d.npz"},
    }
    return parse_config(raw, tmp / "tfbound.yaml").head


def _save(module: nn.Module, path: Path, prefix: str = "") -> Path:
    save_file({prefix + k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def _scores(module: nn.Module, z: torch.Tensor) -> torch.Tensor:
    out = module(z).reshape(z.shape[0], -1)
    return out[:, 0] if out.shape[1] == 1 else out[:, 1] - out[:, 0]


@pytest.mark.parametrize(
    "module",
    [
        nn.Linear(6, 1),
        nn.Linear(6, 2),
        nn.Sequential(nn.Linear(6, 1)),
        nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1)),
        nn.Sequential(nn.Dropout(0.1), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)),
    ],
)
@pytest.mark.parametrize("prefix", ["", "module."])
def test_saved_heads_give_the_same_decisions(
    tmp_path: Path, module: nn.Module, prefix: str
) -> None:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p)
    module.eval()
    weights = _save(module, tmp_path / "head.safetensors", prefix)
    n_linear = sum(isinstance(m, nn.Linear) for m in module.modules())
    arch = "linear" if n_linear == 1 else "mlp"
    extra = {"prefix": prefix} if prefix else {}
    loaded = load_head(_spec(tmp_path, arch, weights=str(weights), **extra), 6)
    assert isinstance(loaded.head, LinearHead if arch == "linear" else MLPHead)
    z = torch.randn(50, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.head(z), _scores(module, z), rtol=1e-5, atol=1e-5)
    two = module(z).reshape(50, -1).shape[1] == 2
    assert loaded.details["output_logits"] == (2 if two else 1)
    assert loaded.notes == ((TWO_LOGIT_NOTE,) if two else ())


def test_a_head_that_does_not_fit_names_found_and_wanted(tmp_path: Path) -> None:
    weights = _save(nn.Linear(6, 1), tmp_path / "h.safetensors", "model.classifier.")
    with pytest.raises(CheckpointError) as err:
        load_head(_spec(tmp_path, "mlp", weights=str(weights)), 6)
    msg = str(err.value)
    assert "found: model.classifier.bias, model.classifier.weight" in msg
    assert "'fc1.*' and 'fc2.*'" in msg and "head.prefix" in msg
    ok = load_head(_spec(tmp_path, "linear", weights=str(weights), prefix="model.classifier."), 6)
    assert isinstance(ok.head, LinearHead)
    three = _save(nn.Linear(6, 3), tmp_path / "h3.safetensors")
    with pytest.raises(CheckpointError, match="3 outputs"):
        load_head(_spec(tmp_path, "linear", weights=str(three)), 6)
    with pytest.raises(Exception, match="feature dimension mismatch"):
        load_head(_spec(tmp_path, "linear", weights=str(three)), 7)


def test_factory_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "myhead.py").write_text(
        "from torch import nn\n"
        "class Head(nn.Module):\n"
        "    def __init__(self, d):\n"
        "        super().__init__()\n"
        "        self.hidden = nn.Linear(d, 4)\n"
        "        self.act = nn.Tanh()\n"
        "        self.out = nn.Linear(4, 2)\n"
        "    def forward(self, z):\n"
        "        return self.out(self.act(self.hidden(z)))\n"
        "class Skip(Head):\n"
        "    def forward(self, z):\n"
        "        return self.out(self.act(self.hidden(z)) + 1.0)\n"
        "def build(d): return Head(d)\n"
        "def skip(d): return Skip(d)\n"
    )
    spec = _spec(tmp_path, "factory", factory="myhead:build", kwargs={"d": 6})
    with pytest.raises(ConfigError, match="--allow-code"):
        load_head(spec, 6)
    monkeypatch.setattr("tfbound.models.build._allow_code", [False])
    allow_code(True)
    loaded = load_head(spec, 6)  # the config's folder is importable without PYTHONPATH
    assert isinstance(loaded.head, MLPHead) and loaded.head.activation == "tanh"
    assert loaded.details["form"] == "two_logit_difference"
    with pytest.raises(ConfigError, match="does not compute its Linear layers in order"):
        load_head(_spec(tmp_path, "factory", factory="myhead:skip", kwargs={"d": 6}), 6)
