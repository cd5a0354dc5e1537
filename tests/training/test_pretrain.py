"""Pre-training loops, the head fit, the checkpoint series and `tfbound pretrain`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import tfbound
from tests.helpers import REPO_ROOT
from tests.tolerances import FLOAT32_REFIT
from tfbound.cli import app
from tfbound.config import load_config
from tfbound.models import MLPEncoder, ViTEncoder
from tfbound.pretext import ContextEncoderTask, MaskedAutoencoderTask
from tfbound.training.loops import (
    MLPArch,
    RadRegOptions,
    ViTArch,
    features,
    fit_linear_head,
    log_spaced_epochs,
    pretrain_ce,
    pretrain_mae,
)

SAMPLES = REPO_ROOT / "sample_models"
TINY_MLP = MLPArch(input_dim=16, hidden=(12,), feature_dim=8, decoder_hidden=(6,))
TINY_CE = ContextEncoderTask((1, 4, 4), (1, 1, 2, 2))
TINY_VIT = ViTArch(image_size=4, patch_size=2, dim=8, depth=1, heads=2, decoder_hidden=(8,))
TINY_MAE = MaskedAutoencoderTask(0.5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _x(n: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretraining_is_seeded_and_reproducible():
    x, u = _x(60), _x(20, seed=1)
    opts = RadRegOptions(lam=0.5, unlabeled_x=u, n_draws=32)
    runs = [pretrain_ce(TINY_MLP, TINY_CE, x, epochs=3, lr=1e-2, seed=5, radreg=opts) for _ in "ab"]
    assert _same(_state(runs[0].encoder), _state(runs[1].encoder))
    assert runs[0].pretext_mse == runs[1].pretext_mse and len(runs[0].radreg) == 3
    other = pretrain_ce(TINY_MLP, TINY_CE, x, epochs=3, lr=1e-2, seed=6, radreg=opts)
    assert not _same(_state(runs[0].encoder), _state(other.encoder))
    assert not torch.are_deterministic_algorithms_enabled()  # the setting is restored


def test_lambda_zero_is_plain_pretraining_and_radreg_changes_the_weights():
    x, u = _x(60), _x(20, seed=1)
    plain = pretrain_mae(TINY_VIT, TINY_MAE, x, epochs=2, lr=1e-2, seed=0)
    zero = pretrain_mae(
        TINY_VIT, TINY_MAE, x, epochs=2, lr=1e-2, seed=0, radreg=RadRegOptions(0.0, u)
    )
    reg = pretrain_mae(
        TINY_VIT, TINY_MAE, x, epochs=2, lr=1e-2, seed=0, radreg=RadRegOptions(1.0, u, 32)
    )
    assert isinstance(plain.encoder, ViTEncoder)
    assert _same(_state(plain.encoder), _state(zero.encoder)) and zero.radreg == ()
    assert not _same(_state(plain.encoder), _state(reg.encoder))


def test_checkpoints_at_the_requested_epochs(tmp_path: Path):
    x = _x(40)
    epochs = log_spaced_epochs(5)
    assert epochs == (0, 1, 2, 4, 5)
    seen: list[int] = []
    res = pretrain_ce(
        TINY_MLP,
        TINY_CE,
        x,
        epochs=5,
        lr=1e-2,
        seed=0,
        checkpoint_epochs=epochs,
        on_checkpoint=lambda e, enc, dec: seen.append(e),
    )
    assert seen == list(epochs) and res.checkpoints == epochs
    res2 = pretrain_ce(
        TINY_MLP,
        TINY_CE,
        x,
        epochs=5,
        lr=1e-2,
        seed=0,
        checkpoint_epochs=(0, 2, 5),
        on_checkpoint=tmp_path,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch0", "epoch2", "epoch5"]
    final = load_file(str(tmp_path / "epoch5" / "encoder.safetensors"))
    assert _same(final, _state(res2.encoder)) and _same(final, _state(res.encoder))
    first = load_file(str(tmp_path / "epoch0" / "encoder.safetensors"))
    torch.manual_seed(0)
    assert _same(first, _state(MLPEncoder(16, [12], 8)))  # epoch 0 is the seeded initialisation
    with pytest.raises(ValueError, match="checkpoint epochs"):
        pretrain_ce(
            TINY_MLP,
            TINY_CE,
            x,
            epochs=2,
            lr=1e-2,
            seed=0,
            checkpoint_epochs=(3,),
            on_checkpoint=tmp_path,
        )


def test_linear_head_fit_separates_separable_data():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(200, 5, generator=gen)
    y = (z[:, 0] - 0.5 * z[:, 1] > 0.2).long()
    head = fit_linear_head(z, y, lam=1e-4)
    pred = (head(z) > 0).long()
    assert float((pred == y).float().mean()) > 0.97


@pytest.mark.parametrize("name", ["ce_mlp", "mae_vit"])
def test_shipped_head_is_refitted_to_float32_tolerance(name: str):
    cfg = load_config(SAMPLES / name)
    from tfbound.models.build import build_module

    encoder = build_module(cfg.encoder)
    with np.load(SAMPLES / "data" / "digits_splits.npz") as raw:
        x, y = (
            torch.from_numpy(raw["downstream_train_x"]),
            torch.from_numpy(raw["downstream_train_y"]),
        )
    head = fit_linear_head(features(encoder, x), y, lam=1e-3)
    shipped = load_file(str(SAMPLES / name / "head.safetensors"))  # made on another machine
    refit = _state(head)
    assert refit.keys() == shipped.keys()
    for k in refit:
        torch.testing.assert_close(refit[k], shipped[k], rtol=FLOAT32_REFIT, atol=FLOAT32_REFIT)


def test_checkpoint_index_lists_two_seeds_of_both_pipelines():
    root = SAMPLES / "checkpoints"
    index = json.loads((root / "index.json").read_text())
    for name in ("ce_mlp", "mae_vit"):
        entry = index["pipelines"][name]
        assert entry["seeds"] == [0, 1]
        epochs = [c["epoch"] for c in entry["checkpoints"] if c["seed"] == 1]
        assert epochs == list(log_spaced_epochs(entry["epochs"]))
        for c in entry["checkpoints"]:
            assert (root / c["encoder"]).is_file() and (root / c["decoder"]).is_file()
        last = root / name / "seed0" / f"epoch{entry['epochs']}" / "encoder.safetensors"
        assert last.read_bytes() == (SAMPLES / name / "encoder.safetensors").read_bytes()
        mse = [c["train_mse"] for c in entry["checkpoints"] if c["seed"] == 0 and c["epoch"]]
        assert mse[-1] < mse[0]


def _tiny_data(path: Path, *, with_radreg: bool = True) -> Path:
    gen = np.random.default_rng(0)

    def x(n: int) -> np.ndarray:
        return gen.random((n, 64), dtype=np.float32)

    arrays = {
        "pretrain_train_x": x(60),
        "pretrain_val_x": x(20),
        "downstream_train_x": x(50),
        "downstream_train_y": gen.integers(0, 2, 50),
        "downstream_test_x": x(30),
        "downstream_test_y": gen.integers(0, 2, 30),
        "downstream_pool_x": x(15),
    }
    if with_radreg:
        arrays["radreg_x"] = x(15)
    np.savez(path, **arrays)
    return path


def test_cli_pretrain_writes_a_folder_that_estimate_reads(tmp_path: Path):
    data = _tiny_data(tmp_path / "data.npz")
    runner = CliRunner()
    for kind in ("ce", "mae"):
        out = tmp_path / f"out_{kind}"
        args = ["pretrain", kind, "--radreg", "0.1", "--epochs", "2", "--radreg-draws", "16"]
        result = runner.invoke(app, [*args, "--data", str(data), "--out-dir", str(out), "-q"])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.iterdir()) == [
            "decoder.safetensors",
            "encoder.safetensors",
            "head.safetensors",
            "pretrain.json",
            "tfbound.yaml",
        ]
        summary = json.loads((out / "pretrain.json").read_text())
        assert summary["radreg"]["lambda"] == 0.1 and len(summary["radreg"]["per_epoch"]) == 2
        cfg = load_config(out).with_bound(n_draws=200)
        assert cfg.bound.encoder_candidates == 1  # not the bundled data
        report = tfbound.estimate(cfg)
        assert report.get("certified_test_error_bound") is not None
        assert report.get("pretext_heldout_risk") is not None
    # The folder is not overwritten without --force; with it, it is replaced whole.
    out = tmp_path / "out_ce"
    again = ["pretrain", "ce", "--epochs", "1", "--data", str(data), "--out-dir", str(out), "-q"]
    result = runner.invoke(app, again)
    assert result.exit_code == 2 and "--force" in result.output
    assert runner.invoke(app, [*again, "--force"]).exit_code == 0
    assert json.loads((out / "pretrain.json").read_text())["radreg"] is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_cli_pretrain_bad_inputs(tmp_path: Path):
    data = _tiny_data(tmp_path / "data.npz", with_radreg=False)
    runner = CliRunner()
    out = tmp_path / "out"
    base = ["pretrain", "ce", "--epochs", "1", "--data", str(data), "-q"]
    result = runner.invoke(app, [*base, "--radreg", "0.1", "--out-dir", str(out)])
    assert result.exit_code == 3 and "radreg_x" in result.output
    assert not out.exists()
    result = runner.invoke(app, [*base, "--out-dir", str(tmp_path / "missing" / "out")])
    assert result.exit_code == 3 and "does not exist" in result.output
    np.savez(tmp_path / "wide.npz", pretrain_train_x=np.zeros((5, 10), np.float32))
    result = runner.invoke(
        app, ["pretrain", "mae", "--data", str(tmp_path / "wide.npz"), "--out-dir", str(out), "-q"]
    )
    assert result.exit_code == 3 and "64 values" in result.output


def test_bundled_sample_data_is_package_data_found_by_importlib_resources() -> None:
    import importlib.resources

    from tfbound.training.recipes import is_sample_data, sample_splits

    path = sample_splits()
    expected = importlib.resources.files("tfbound.training").joinpath("data/digits_splits.npz")
    assert path == Path(str(expected)) and path.is_file()
    assert "sample_models" not in path.parts  # not the repository's copy (parents[1])
    repo_copy = SAMPLES / "data" / "digits_splits.npz"
    assert path.read_bytes() == repo_copy.read_bytes()  # the two copies agree
    assert is_sample_data(repo_copy) and not is_sample_data(SAMPLES / "data" / "digits.npz")
